//! A typed, async client for QEMU's machine protocol (QMP) on a Unix socket.
//!
//! The wire format is QEMU's `docs/interop/qmp-spec.rst`: one JSON object per line. The
//! server greets with `{"QMP": {"version", "capabilities"}}`, the client negotiates with
//! `qmp_capabilities`, then sends `{"execute", "arguments", "id"}` and receives
//! `{"return", "id"}` or `{"error": {"class", "desc"}, "id"}`. Asynchronous events
//! (`{"event", "data", "timestamp"}`) may arrive between any two messages.
//!
//! Ownership: a [`QmpClient`] belongs to one task (the VM's actor). Every method takes
//! `&mut self`, so at most one command is in flight. There is no background reader: the
//! socket is read only while a method runs. Events read while waiting for a response are
//! kept in a bounded buffer and handed out by [`QmpClient::next_event`] and
//! [`QmpClient::wait_for_event`]; responses carrying the id of an earlier, abandoned
//! command are dropped.
//!
//! Every wait is bounded by a timeout, so a dead QEMU never hangs the caller. Reading is
//! cancel-safe (partial lines stay in the client's buffer); a write cancelled halfway leaves
//! the stream unusable and later commands fail with [`QmpError::Desynchronized`].
//!
//! Commands are types implementing [`Command`], each naming its wire name and its
//! `Response` type, so a new command is added without touching the client. Enumerations
//! keep values this client does not know (a newer QEMU) as `Other(String)` instead of
//! failing, as the spec asks of clients.
//!
//! Layout: this file holds the client; [`QmpError`] is in `error`, the message framing and
//! decoding in `wire`, the command types in `commands` and `migration`, the event types in
//! `events`, and the `qapi_enum!` macro they share in `qapi`. Tests: `tests` for the wire
//! format and serde forms, `client_tests` for the client against `FakeQmpServer` (`fake`)
//! and against a real QEMU.

#[macro_use]
mod qapi;

mod commands;
mod error;
mod events;
mod migration;
mod wire;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::net::UnixStream;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use commands::{
    Command, Cont, Empty, MigrateCancel, QueryMigrate, QueryStatus, Quit, RunState, StatusInfo,
    Stop, SystemPowerdown,
};
pub use error::QmpError;
pub use events::{
    Event, MigrationEvent, MigrationPassEvent, PowerdownEvent, QmpEvent, ResumeEvent,
    ShutdownCause, ShutdownEvent, StopEvent, Timestamp,
};
pub use migration::{
    InetSocketAddress, Migrate, MigrateIncoming, MigrateSetCapabilities, MigrateSetParameters,
    MigrationAddress, MigrationCapability, MigrationCapabilityStatus, MigrationChannel,
    MigrationChannelType, MigrationInfo, MigrationRamStats, MigrationStatus, SocketAddress,
};
pub use wire::{Greeting, QemuVersion, VersionTriple};

use commands::QmpCapabilities;
use events::decode_event_data;
use wire::{encode_command, id_matches, ErrorBody, ServerMessage};

/// How long [`QmpClient::connect`] and each command wait for QEMU by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Events kept unread before the oldest is dropped; a guest can trigger events at will.
const MAX_BUFFERED_EVENTS: usize = 1024;

/// A connected, negotiated QMP session. See the module documentation for ownership.
#[derive(Debug)]
pub struct QmpClient {
    stream: UnixStream,
    socket: PathBuf,
    greeting: Greeting,
    timeout: Duration,
    next_id: u64,
    read_buf: Vec<u8>,
    scanned: usize,
    events: VecDeque<QmpEvent>,
    dropped_events: u64,
    write_interrupted: bool,
}

impl QmpClient {
    /// Connects to the QMP socket at `path`, reads the greeting and leaves capabilities
    /// negotiation, waiting at most [`DEFAULT_TIMEOUT`] for each step.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        Self::connect_with_timeout(path, DEFAULT_TIMEOUT).await
    }

    /// Like [`QmpClient::connect`], with `timeout` for each step and for later commands.
    pub async fn connect_with_timeout(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(QmpError::Connect {
                    socket: path.to_owned(),
                    source,
                });
            }
            Err(_) => return Err(timed_out(path, "the connection", timeout)),
        };
        let mut client = Self {
            stream,
            socket: path.to_owned(),
            greeting: Greeting::default(),
            timeout,
            next_id: 1,
            read_buf: Vec::new(),
            scanned: 0,
            events: VecDeque::new(),
            dropped_events: 0,
            write_interrupted: false,
        };

        client.greeting = client.read_greeting().await?;
        client.execute(QmpCapabilities).await?;
        debug!(socket = %path.display(), qemu = %client.greeting.version.qemu, "qmp connected");
        Ok(client)
    }

    /// The QEMU version announced in the greeting.
    pub fn version(&self) -> &QemuVersion {
        &self.greeting.version
    }

    /// The greeting QEMU sent on connect.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// The timeout applied to each command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the timeout applied to each later command.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs `command` and decodes its return value; events arriving meanwhile are buffered.
    pub async fn execute<C: Command>(&mut self, command: C) -> Result<C::Response, QmpError> {
        if self.write_interrupted {
            return Err(QmpError::Desynchronized {
                socket: self.socket.clone(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let line = encode_command(&command, id)?;
        let waiting_for = format!("the response to `{}`", C::NAME);

        let timeout = self.timeout;
        let round_trip = tokio::time::timeout(timeout, self.round_trip(&line, id, &waiting_for));
        match round_trip.await {
            Ok(answer) => decode_answer::<C>(answer?),
            Err(_) => Err(timed_out(&self.socket, &waiting_for, timeout)),
        }
    }

    /// `query-status`: whether the guest runs, and QEMU's run state.
    pub async fn query_status(&mut self) -> Result<StatusInfo, QmpError> {
        self.execute(QueryStatus).await
    }

    /// `stop`: pauses the guest's vCPUs.
    pub async fn stop(&mut self) -> Result<(), QmpError> {
        self.execute(Stop).await.map(drop)
    }

    /// `cont`: starts or resumes the guest's vCPUs.
    pub async fn cont(&mut self) -> Result<(), QmpError> {
        self.execute(Cont).await.map(drop)
    }

    /// `system_powerdown`: presses the virtual power button (ACPI); the guest decides.
    pub async fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute(SystemPowerdown).await.map(drop)
    }

    /// `query-migrate`: the state and statistics of the current or last migration.
    pub async fn query_migrate(&mut self) -> Result<MigrationInfo, QmpError> {
        self.execute(QueryMigrate).await
    }

    /// `quit`: makes QEMU exit. QEMU may close the socket before or after it answers, so
    /// the socket closing counts as success. The client is consumed: nothing follows.
    pub async fn quit(mut self) -> Result<(), QmpError> {
        match self.execute(Quit).await {
            Ok(Empty {}) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(QmpError::Io { source, .. }) if is_disconnect(&source) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The oldest buffered event, or the next one to arrive within `timeout`; `None` when
    /// none arrives in time.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<QmpEvent>, QmpError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        match tokio::time::timeout(timeout, self.read_event("an event")).await {
            Ok(event) => event.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The first event named `name`, buffered or arriving within `timeout`. Other events
    /// stay buffered in their order.
    pub async fn wait_for_event(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<QmpEvent, QmpError> {
        let buffered = self.events.iter().position(|event| event.name == name);
        if let Some(event) = buffered.and_then(|index| self.events.remove(index)) {
            return Ok(event);
        }
        let waiting_for = format!("event {name}");
        let deadline = Instant::now() + timeout;
        loop {
            let read = tokio::time::timeout_at(deadline, self.read_event(&waiting_for));
            let event = match read.await {
                Ok(event) => event?,
                Err(_) => return Err(timed_out(&self.socket, &waiting_for, timeout)),
            };
            if event.name == name {
                return Ok(event);
            }
            self.buffer_event(event);
        }
    }

    /// Like [`QmpClient::wait_for_event`], decoding the event's data as `E`.
    pub async fn wait_for<E: Event>(&mut self, timeout: Duration) -> Result<E, QmpError> {
        let event = self.wait_for_event(E::NAME, timeout).await?;
        decode_event_data(&event)
    }

    /// Takes every buffered event, oldest first.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        self.dropped_events = 0;
        self.events.drain(..).collect()
    }

    async fn read_greeting(&mut self) -> Result<Greeting, QmpError> {
        let waiting_for = "the greeting";
        let read = tokio::time::timeout(self.timeout, self.read_message(waiting_for));
        let message = match read.await {
            Ok(message) => message?,
            Err(_) => return Err(timed_out(&self.socket, waiting_for, self.timeout)),
        };
        match message {
            ServerMessage::Greeting(greeting) => Ok(greeting),
            other => Err(self.protocol(waiting_for, format!("got {}", other.kind()))),
        }
    }

    /// Sends one command line and reads until the response carrying `id`. The outer
    /// `Result` is the transport; the inner one is QEMU's success or error answer.
    async fn round_trip(
        &mut self,
        line: &str,
        id: u64,
        waiting_for: &str,
    ) -> Result<Result<Value, ErrorBody>, QmpError> {
        self.write_line(line, waiting_for).await?;
        loop {
            match self.read_message(waiting_for).await? {
                ServerMessage::Event(event) => self.buffer_event(event),
                ServerMessage::Return { id: got, value } if id_matches(got.as_ref(), id) => {
                    return Ok(Ok(value));
                }
                ServerMessage::Error { id: got, error } if id_matches(got.as_ref(), id) => {
                    return Ok(Err(error));
                }
                ServerMessage::Return { id: got, .. } | ServerMessage::Error { id: got, .. } => {
                    debug!(socket = %self.socket.display(), id = ?got, "dropping stale response");
                }
                other => return Err(self.protocol(waiting_for, format!("got {}", other.kind()))),
            }
        }
    }

    /// Reads until the next event, dropping stale responses on the way.
    async fn read_event(&mut self, waiting_for: &str) -> Result<QmpEvent, QmpError> {
        loop {
            match self.read_message(waiting_for).await? {
                ServerMessage::Event(event) => return Ok(event),
                ServerMessage::Return { id, .. } | ServerMessage::Error { id, .. } => {
                    debug!(socket = %self.socket.display(), id = ?id, "dropping stale response");
                }
                other => return Err(self.protocol(waiting_for, format!("got {}", other.kind()))),
            }
        }
    }

    fn buffer_event(&mut self, event: QmpEvent) {
        if self.events.len() >= MAX_BUFFERED_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
            // Once per overflow episode: the guest may be flooding us.
            if self.dropped_events == 1 {
                warn!(socket = %self.socket.display(), "qmp event buffer full, dropping oldest");
            }
        }
        self.events.push_back(event);
    }

    fn protocol(&self, waiting_for: &str, detail: String) -> QmpError {
        QmpError::Protocol {
            socket: self.socket.clone(),
            waiting_for: waiting_for.into(),
            detail,
        }
    }
}

/// Decodes QEMU's answer to `C`: its return value, or its error as [`QmpError::Command`].
fn decode_answer<C: Command>(answer: Result<Value, ErrorBody>) -> Result<C::Response, QmpError> {
    let command = C::NAME.to_owned();
    match answer {
        Ok(value) => {
            serde_json::from_value(value).map_err(|source| QmpError::Response { command, source })
        }
        Err(ErrorBody { class, desc }) => Err(QmpError::Command {
            command,
            class,
            desc,
        }),
    }
}

fn timed_out(socket: &Path, waiting_for: &str, after: Duration) -> QmpError {
    QmpError::Timeout {
        socket: socket.to_owned(),
        waiting_for: waiting_for.into(),
        after,
    }
}

fn is_disconnect(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}
