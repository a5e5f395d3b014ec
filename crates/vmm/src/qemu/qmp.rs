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

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How long [`QmpClient::connect`] and each command wait for QEMU by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Events kept unread before the oldest is dropped; a guest can trigger events at will.
const MAX_BUFFERED_EVENTS: usize = 1024;

/// Longest line accepted from QEMU (`query-qmp-schema` answers with a few hundred KiB).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected.
    #[error("cannot connect to qmp socket {}", socket.display())]
    Connect {
        /// The QMP socket.
        socket: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("qmp i/o on {} failed while waiting for {waiting_for}", socket.display())]
    Io {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing, e.g. "the response to `stop`".
        waiting_for: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// QEMU closed the socket between two messages.
    #[error("qmp socket {} closed while waiting for {waiting_for}", socket.display())]
    Closed {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
    },
    /// QEMU closed the socket in the middle of a message.
    #[error(
        "qmp socket {} closed mid-message ({bytes} bytes of an unterminated line) while \
         waiting for {waiting_for}",
        socket.display()
    )]
    Truncated {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// How much of the unfinished message had arrived.
        bytes: usize,
    },
    /// QEMU did not answer in time.
    #[error("no answer on qmp socket {} within {after:?} while waiting for {waiting_for}",
        socket.display())]
    Timeout {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// QEMU ran the command and reported an error.
    #[error("qmp command {command} failed: {class}: {desc}")]
    Command {
        /// The command's wire name.
        command: String,
        /// QEMU's error class, e.g. `GenericError` or `CommandNotFound`.
        class: String,
        /// QEMU's human-readable description; not meant to be parsed.
        desc: String,
    },
    /// A line from QEMU is not a QMP message.
    #[error("invalid qmp message on {} while waiting for {waiting_for}", socket.display())]
    InvalidMessage {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// Why the line could not be decoded.
        #[source]
        source: serde_json::Error,
    },
    /// A valid QMP message arrived where the protocol does not allow it.
    #[error("unexpected qmp message on {} while waiting for {waiting_for}: {detail}",
        socket.display())]
    Protocol {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// What was wrong.
        detail: String,
    },
    /// QEMU sent a line longer than this client accepts.
    #[error("qmp message on {} exceeds {limit} bytes", socket.display())]
    MessageTooLong {
        /// The QMP socket.
        socket: PathBuf,
        /// The limit in bytes.
        limit: usize,
    },
    /// A command's arguments could not be encoded.
    #[error("cannot encode the arguments of qmp command {command}")]
    Encode {
        /// The command's wire name.
        command: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A command succeeded but its return value does not have the expected shape.
    #[error("unexpected return value from qmp command {command}")]
    Response {
        /// The command's wire name.
        command: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An event's data does not have the expected shape.
    #[error("unexpected data in qmp event {event}")]
    EventData {
        /// The event's name.
        event: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An earlier call was cancelled halfway through writing a command.
    #[error("qmp stream on {} is unusable: an earlier command was cancelled mid-write",
        socket.display())]
    Desynchronized {
        /// The QMP socket.
        socket: PathBuf,
    },
}

/// A QMP command: its wire name, its arguments (the type's serde form, an object or a unit
/// struct for none) and the type of its successful return value.
pub trait Command: Serialize {
    /// The command's name on the wire, e.g. `query-status`.
    const NAME: &'static str;
    /// What the command returns on success.
    type Response: DeserializeOwned;
}

/// A QMP event type: its wire name and the shape of its `data` member.
pub trait Event: DeserializeOwned {
    /// The event's name on the wire, e.g. `SHUTDOWN`.
    const NAME: &'static str;
}

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

    async fn write_line(&mut self, line: &str, waiting_for: &str) -> Result<(), QmpError> {
        // Set until the write completes: if this future is dropped halfway, QEMU holds a
        // partial command and the stream can no longer be trusted.
        self.write_interrupted = true;
        let written = self.stream.write_all(line.as_bytes()).await;
        self.write_interrupted = false;
        written.map_err(|source| self.io_error(waiting_for, source))
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

    /// Reads one message. Cancel-safe: bytes read stay in `read_buf` for the next call.
    async fn read_message(&mut self, waiting_for: &str) -> Result<ServerMessage, QmpError> {
        loop {
            if let Some(line) = self.take_line() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_message(&line).map_err(|source| QmpError::InvalidMessage {
                    socket: self.socket.clone(),
                    waiting_for: waiting_for.into(),
                    source,
                });
            }
            if self.read_buf.len() > MAX_MESSAGE_BYTES {
                let socket = self.socket.clone();
                return Err(QmpError::MessageTooLong {
                    socket,
                    limit: MAX_MESSAGE_BYTES,
                });
            }
            let read = self.stream.read_buf(&mut self.read_buf).await;
            match read.map_err(|source| self.io_error(waiting_for, source))? {
                0 => return Err(self.eof_error(waiting_for)),
                _ => continue,
            }
        }
    }

    /// Removes and returns the first complete line in `read_buf`, newline included.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let offset = self.read_buf[self.scanned..]
            .iter()
            .position(|b| *b == b'\n');
        match offset {
            Some(offset) => {
                let end = self.scanned + offset + 1;
                self.scanned = 0;
                Some(self.read_buf.drain(..end).collect())
            }
            None => {
                self.scanned = self.read_buf.len();
                None
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

    fn eof_error(&self, waiting_for: &str) -> QmpError {
        let (socket, waiting_for) = (self.socket.clone(), waiting_for.to_owned());
        if self.read_buf.iter().all(u8::is_ascii_whitespace) {
            QmpError::Closed {
                socket,
                waiting_for,
            }
        } else {
            QmpError::Truncated {
                socket,
                waiting_for,
                bytes: self.read_buf.len(),
            }
        }
    }

    fn io_error(&self, waiting_for: &str, source: io::Error) -> QmpError {
        QmpError::Io {
            socket: self.socket.clone(),
            waiting_for: waiting_for.into(),
            source,
        }
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

/// Whether a response's `id` answers the command sent with `sent`. QEMU omits the id only
/// when it failed before reading it (a JSON parse error); with one command in flight such
/// a response can only be ours.
fn id_matches(got: Option<&Value>, sent: u64) -> bool {
    got.is_none_or(|got| got.as_u64() == Some(sent))
}

/// Encodes `command` as one QMP line with `id`. Written by hand, not through a
/// `serde_json::Value`, so the member order is fixed whatever serde_json features are on.
fn encode_command<C: Command>(command: &C, id: u64) -> Result<String, QmpError> {
    let encode_error = |source| QmpError::Encode {
        command: C::NAME.into(),
        source,
    };
    let arguments = serde_json::to_string(command).map_err(encode_error)?;
    let name = serde_json::to_string(C::NAME).map_err(encode_error)?;

    let mut line = format!("{{\"execute\":{name}");
    match arguments.as_str() {
        "null" | "{}" => {}
        object if object.starts_with('{') => {
            line.push_str(",\"arguments\":");
            line.push_str(object);
        }
        _ => {
            let message = "arguments must serialize to a json object or a unit struct";
            return Err(encode_error(serde::ser::Error::custom(message)));
        }
    }
    line.push_str(&format!(",\"id\":{id}}}\n"));
    Ok(line)
}

/// One message from QEMU, classified by its distinguishing member.
#[derive(Debug)]
enum ServerMessage {
    Greeting(Greeting),
    Return { id: Option<Value>, value: Value },
    Error { id: Option<Value>, error: ErrorBody },
    Event(QmpEvent),
    Unknown(Value),
}

impl ServerMessage {
    fn kind(&self) -> String {
        match self {
            Self::Greeting(_) => "a greeting".into(),
            Self::Return { .. } => "a success response".into(),
            Self::Error { .. } => "an error response".into(),
            Self::Event(event) => format!("event {}", event.name),
            Self::Unknown(value) => format!("an unknown message {value}"),
        }
    }
}

/// The `error` member of an error response.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    class: String,
    desc: String,
}

fn parse_message(line: &[u8]) -> Result<ServerMessage, serde_json::Error> {
    let mut value: serde_json::Map<String, Value> = serde_json::from_slice(line)?;
    let id = value.remove("id");
    if let Some(greeting) = value.remove("QMP") {
        return serde_json::from_value(greeting).map(ServerMessage::Greeting);
    }
    if let Some(returned) = value.remove("return") {
        return Ok(ServerMessage::Return {
            id,
            value: returned,
        });
    }
    if let Some(error) = value.remove("error") {
        let error = serde_json::from_value(error)?;
        return Ok(ServerMessage::Error { id, error });
    }
    if value.contains_key("event") {
        return serde_json::from_value(Value::Object(value)).map(ServerMessage::Event);
    }
    Ok(ServerMessage::Unknown(Value::Object(value)))
}

/// The greeting QEMU sends on connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Greeting {
    /// QEMU's version, as `query-version` reports it.
    pub version: QemuVersion,
    /// Protocol capabilities QEMU offers, e.g. `oob`; this client enables none.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// QEMU's version (`VersionInfo` in the schema).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    /// The upstream version number.
    pub qemu: VersionTriple,
    /// The distributor's package version, e.g. `Debian 1:10.0.2+ds-2`.
    #[serde(default)]
    pub package: String,
}

/// A `major.minor.micro` version number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct VersionTriple {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Micro version.
    pub micro: u32,
}

impl fmt::Display for VersionTriple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// An asynchronous event, whatever its name; unknown names are kept, not rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QmpEvent {
    /// The event's name, e.g. `SHUTDOWN`.
    #[serde(rename = "event")]
    pub name: String,
    /// Event-specific data; `Null` when the event has none.
    #[serde(default)]
    pub data: Value,
    /// When QEMU emitted the event.
    pub timestamp: Timestamp,
}

impl QmpEvent {
    /// The event's data as `E` when this is an `E` event, `None` for any other event.
    pub fn decode<E: Event>(&self) -> Result<Option<E>, QmpError> {
        if self.name == E::NAME {
            decode_event_data(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn decode_event_data<E: Event>(event: &QmpEvent) -> Result<E, QmpError> {
    let data = match &event.data {
        Value::Null => Value::Object(serde_json::Map::new()),
        data => data.clone(),
    };
    serde_json::from_value(data).map_err(|source| QmpError::EventData {
        event: event.name.clone(),
        source,
    })
}

/// When an event happened, relative to the Unix epoch; both are -1 if QEMU had no clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Timestamp {
    /// Whole seconds.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

/// The return value of commands that return nothing (`{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Empty {}

/// Declares a string enumeration from QEMU's schema with an `Other` catch-all, so a value
/// added by a newer QEMU decodes instead of failing.
macro_rules! qapi_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this client does not know (a newer QEMU), kept verbatim.
            Other(String),
        }

        impl $name {
            /// The value as QEMU spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(other) => other,
                }
            }

            fn from_wire(wire: &str) -> Self {
                match wire {
                    $($wire => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let wire = String::deserialize(deserializer)?;
                Ok(Self::from_wire(&wire))
            }
        }
    };
}

/// Declares a command that takes no arguments.
macro_rules! no_argument_command {
    ($(#[$meta:meta])* $name:ident = $wire:literal -> $response:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct $name;

        impl Command for $name {
            const NAME: &'static str = $wire;
            type Response = $response;
        }
    };
}

/// `qmp_capabilities` with no capability enabled; the client sends it on connect.
#[derive(Debug, Clone, Copy, Serialize)]
struct QmpCapabilities;

impl Command for QmpCapabilities {
    const NAME: &'static str = "qmp_capabilities";
    type Response = Empty;
}

no_argument_command! {
    /// `query-status`: the guest's run state.
    QueryStatus = "query-status" -> StatusInfo
}
no_argument_command! {
    /// `stop`: pause the guest's vCPUs.
    Stop = "stop" -> Empty
}
no_argument_command! {
    /// `cont`: start or resume the guest's vCPUs.
    Cont = "cont" -> Empty
}
no_argument_command! {
    /// `system_powerdown`: press the virtual power button.
    SystemPowerdown = "system_powerdown" -> Empty
}
no_argument_command! {
    /// `quit`: make QEMU exit; prefer [`QmpClient::quit`], which tolerates the socket
    /// closing first.
    Quit = "quit" -> Empty
}
no_argument_command! {
    /// `query-migrate`: the state of the current or last migration.
    QueryMigrate = "query-migrate" -> MigrationInfo
}
no_argument_command! {
    /// `migrate_cancel`: abort the outgoing migration.
    MigrateCancel = "migrate_cancel" -> Empty
}

/// The answer to `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// Whether the vCPUs are running.
    pub running: bool,
    /// QEMU's run state.
    pub status: RunState,
}

qapi_enum! {
    /// QEMU's run state (`RunState` in `qapi/run-state.json`).
    RunState {
        /// QEMU is stopped by a debugger.
        Debug = "debug",
        /// Waiting for an incoming migration.
        InMigrate = "inmigrate",
        /// An internal error stopped the guest.
        InternalError = "internal-error",
        /// An I/O error stopped the guest.
        IoError = "io-error",
        /// Paused by `stop`.
        Paused = "paused",
        /// Paused after migrating out.
        PostMigrate = "postmigrate",
        /// Started with `-S` and not yet run.
        Prelaunch = "prelaunch",
        /// Paused for the final stage of an outgoing migration.
        FinishMigrate = "finish-migrate",
        /// Paused while loading a snapshot.
        RestoreVm = "restore-vm",
        /// Running.
        Running = "running",
        /// Paused while saving a snapshot.
        SaveVm = "save-vm",
        /// Shut down (with `-no-shutdown`).
        Shutdown = "shutdown",
        /// Suspended by the guest (ACPI S3).
        Suspended = "suspended",
        /// Paused by a watchdog.
        Watchdog = "watchdog",
        /// The guest panicked.
        GuestPanicked = "guest-panicked",
        /// In COLO fault-tolerance mode.
        Colo = "colo",
    }
}

qapi_enum! {
    /// Why QEMU shut down (`ShutdownCause`).
    ShutdownCause {
        /// No shutdown pending.
        None = "none",
        /// An error prevents further use of the guest.
        HostError = "host-error",
        /// The QMP `quit` command.
        HostQmpQuit = "host-qmp-quit",
        /// The QMP `system_reset` command.
        HostQmpSystemReset = "host-qmp-system-reset",
        /// A signal such as SIGTERM.
        HostSignal = "host-signal",
        /// A user interface action.
        HostUi = "host-ui",
        /// The guest shut itself down.
        GuestShutdown = "guest-shutdown",
        /// The guest reset, turned into a shutdown by `-no-reboot`.
        GuestReset = "guest-reset",
        /// The guest panicked, turned into a shutdown.
        GuestPanic = "guest-panic",
        /// A partial guest reset.
        SubsystemReset = "subsystem-reset",
        /// Loading a snapshot.
        SnapshotLoad = "snapshot-load",
    }
}

/// `SHUTDOWN`: QEMU is shutting down (or, with `-no-shutdown`, stopped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShutdownEvent {
    /// Whether the guest asked for it.
    pub guest: bool,
    /// Why.
    pub reason: ShutdownCause,
}

impl Event for ShutdownEvent {
    const NAME: &'static str = "SHUTDOWN";
}

/// `STOP`: the vCPUs stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct StopEvent {}

impl Event for StopEvent {
    const NAME: &'static str = "STOP";
}

/// `RESUME`: the vCPUs resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ResumeEvent {}

impl Event for ResumeEvent {
    const NAME: &'static str = "RESUME";
}

/// `POWERDOWN`: the virtual power button was pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PowerdownEvent {}

impl Event for PowerdownEvent {
    const NAME: &'static str = "POWERDOWN";
}

/// `MIGRATION`: the migration state changed (needs the `events` capability).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MigrationEvent {
    /// The new state.
    pub status: MigrationStatus,
}

impl Event for MigrationEvent {
    const NAME: &'static str = "MIGRATION";
}

/// `MIGRATION_PASS`: a new pass over dirty memory started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct MigrationPassEvent {
    /// The pass number, from 1.
    pub pass: u64,
}

impl Event for MigrationPassEvent {
    const NAME: &'static str = "MIGRATION_PASS";
}

/// `migrate`: start an outgoing migration. QEMU 10 takes exactly one of `uri` or
/// `channels`; build it with [`Migrate::to_uri`] or [`Migrate::to_address`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Migrate {
    /// Destination URI, e.g. `tcp:HOST:PORT` or `unix:PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Destination as typed channels (QEMU 8.2+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<MigrationChannel>>,
    /// Resume a paused postcopy migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
}

impl Migrate {
    /// Migrate to a URI such as `tcp:HOST:PORT`.
    pub fn to_uri(uri: impl Into<String>) -> Self {
        Self {
            uri: Some(uri.into()),
            ..Self::default()
        }
    }

    /// Migrate over one main channel to `addr`.
    pub fn to_address(addr: MigrationAddress) -> Self {
        Self {
            channels: Some(vec![MigrationChannel::main(addr)]),
            ..Self::default()
        }
    }
}

impl Command for Migrate {
    const NAME: &'static str = "migrate";
    type Response = Empty;
}

/// `migrate-incoming`: listen for an incoming migration (QEMU started with
/// `-incoming defer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateIncoming {
    /// Where to listen, e.g. `tcp:0.0.0.0:PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Where to listen, as typed channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<MigrationChannel>>,
    /// Whether QEMU exits when the migration fails (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_on_error: Option<bool>,
}

impl MigrateIncoming {
    /// Listen on a URI such as `tcp:0.0.0.0:PORT`.
    pub fn from_uri(uri: impl Into<String>) -> Self {
        Self {
            uri: Some(uri.into()),
            ..Self::default()
        }
    }

    /// Listen on one main channel at `addr`.
    pub fn from_address(addr: MigrationAddress) -> Self {
        Self {
            channels: Some(vec![MigrationChannel::main(addr)]),
            ..Self::default()
        }
    }
}

impl Command for MigrateIncoming {
    const NAME: &'static str = "migrate-incoming";
    type Response = Empty;
}

/// One migration channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationChannel {
    /// What the channel carries.
    pub channel_type: MigrationChannelType,
    /// Where it goes.
    pub addr: MigrationAddress,
}

impl MigrationChannel {
    /// The main channel to `addr`.
    pub fn main(addr: MigrationAddress) -> Self {
        Self {
            channel_type: MigrationChannelType::Main,
            addr,
        }
    }
}

qapi_enum! {
    /// What a migration channel carries (`MigrationChannelType`).
    MigrationChannelType {
        /// The migration stream.
        Main = "main",
        /// CPR state, for `cpr-transfer` mode.
        Cpr = "cpr",
    }
}

/// Where a migration channel goes (`MigrationAddress`, tagged by `transport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum MigrationAddress {
    /// A socket.
    Socket(SocketAddress),
    /// A command's stdin/stdout.
    Exec {
        /// The command and its arguments.
        args: Vec<String>,
    },
    /// RDMA to an address.
    Rdma(InetSocketAddress),
    /// A file.
    File {
        /// The file's path.
        filename: PathBuf,
        /// Where in the file the stream starts.
        offset: u64,
    },
}

/// A socket address (`SocketAddress`, tagged by `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SocketAddress {
    /// TCP.
    Inet(InetSocketAddress),
    /// A Unix socket.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
    /// A vsock port.
    Vsock {
        /// The context id.
        cid: String,
        /// The port.
        port: String,
    },
    /// A file descriptor passed earlier with `getfd`, by name or number.
    Fd {
        /// The descriptor's name or number.
        #[serde(rename = "str")]
        name: String,
    },
}

/// A host and port (`InetSocketAddress`; the optional members are not modelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InetSocketAddress {
    /// Host name or address.
    pub host: String,
    /// Port number or service name.
    pub port: String,
}

/// `migrate-set-capabilities`: turn migration capabilities on or off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrateSetCapabilities {
    /// The capabilities to change.
    pub capabilities: Vec<MigrationCapabilityStatus>,
}

impl MigrateSetCapabilities {
    /// Sets each `(capability, enabled)` pair.
    pub fn new(pairs: impl IntoIterator<Item = (MigrationCapability, bool)>) -> Self {
        let capabilities = pairs
            .into_iter()
            .map(|(capability, state)| MigrationCapabilityStatus { capability, state })
            .collect();
        Self { capabilities }
    }
}

impl Command for MigrateSetCapabilities {
    const NAME: &'static str = "migrate-set-capabilities";
    type Response = Empty;
}

/// One capability and whether it is enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCapabilityStatus {
    /// The capability.
    pub capability: MigrationCapability,
    /// Whether it is on.
    pub state: bool,
}

qapi_enum! {
    /// A migration capability (`MigrationCapability`, QEMU 10).
    MigrationCapability {
        /// XBZRLE page compression.
        Xbzrle = "xbzrle",
        /// Pin all guest memory for RDMA.
        RdmaPinAll = "rdma-pin-all",
        /// Throttle the guest when migration does not converge.
        AutoConverge = "auto-converge",
        /// Deprecated; ignored.
        ZeroBlocks = "zero-blocks",
        /// Emit `MIGRATION` and `MIGRATION_PASS` events.
        Events = "events",
        /// Allow switching to postcopy.
        PostcopyRam = "postcopy-ram",
        /// COLO fault tolerance (unstable).
        XColo = "x-colo",
        /// Free source memory as pages are sent during postcopy.
        ReleaseRam = "release-ram",
        /// A return path from destination to source.
        ReturnPath = "return-path",
        /// Pause before the final switchover (`pre-switchover` state).
        PauseBeforeSwitchover = "pause-before-switchover",
        /// Several parallel channels.
        Multifd = "multifd",
        /// Migrate dirty bitmaps.
        DirtyBitmaps = "dirty-bitmaps",
        /// Measure postcopy blocking time.
        PostcopyBlocktime = "postcopy-blocktime",
        /// Delay block activation on the destination.
        LateBlockActivate = "late-block-activate",
        /// Skip shared memory (unstable).
        XIgnoreShared = "x-ignore-shared",
        /// Check that source and destination have the same UUID.
        ValidateUuid = "validate-uuid",
        /// Background snapshot.
        BackgroundSnapshot = "background-snapshot",
        /// Zero-copy sends for multifd.
        ZeroCopySend = "zero-copy-send",
        /// Preempt channel for postcopy.
        PostcopyPreempt = "postcopy-preempt",
        /// Wait for the destination's acknowledgement before switching over.
        SwitchoverAck = "switchover-ack",
        /// Dirty-limit throttling.
        DirtyLimit = "dirty-limit",
        /// Fixed RAM offsets in a file migration.
        MappedRam = "mapped-ram",
    }
}

/// `migrate-set-parameters`: tune migration; `None` members are left as they are.
// Limitation: only the parameters live migration is expected to need are modelled (no TLS,
// compression levels or block bitmap mapping); others need a new field here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateSetParameters {
    /// Bandwidth cap in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Bandwidth to assume for the switchover estimate, bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avail_switchover_bandwidth: Option<u64>,
    /// Longest acceptable pause at switchover, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    /// Number of multifd channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u32>,
    /// Initial auto-converge throttle, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_initial: Option<u8>,
    /// Auto-converge throttle step, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_increment: Option<u8>,
    /// Highest auto-converge throttle, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu_throttle: Option<u8>,
    /// XBZRLE cache size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xbzrle_cache_size: Option<u64>,
    /// Postcopy bandwidth cap in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_postcopy_bandwidth: Option<u64>,
}

impl Command for MigrateSetParameters {
    const NAME: &'static str = "migrate-set-parameters";
    type Response = Empty;
}

qapi_enum! {
    /// The state of a migration (`MigrationStatus`).
    MigrationStatus {
        /// No migration has started.
        None = "none",
        /// Setting up.
        Setup = "setup",
        /// Being cancelled.
        Cancelling = "cancelling",
        /// Cancelled.
        Cancelled = "cancelled",
        /// Copying memory while the guest runs.
        Active = "active",
        /// In postcopy.
        PostcopyActive = "postcopy-active",
        /// Postcopy paused by a network failure.
        PostcopyPaused = "postcopy-paused",
        /// Setting up postcopy recovery.
        PostcopyRecoverSetup = "postcopy-recover-setup",
        /// Recovering postcopy.
        PostcopyRecover = "postcopy-recover",
        /// Finished successfully.
        Completed = "completed",
        /// Failed; see `error-desc`.
        Failed = "failed",
        /// In COLO mode.
        Colo = "colo",
        /// Paused before switchover (`pause-before-switchover`).
        PreSwitchover = "pre-switchover",
        /// Migrating device state after the guest paused.
        Device = "device",
        /// Waiting for a device unplug.
        WaitUnplug = "wait-unplug",
    }
}

/// The answer to `query-migrate`; most members appear only in some states.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    /// The migration's state; absent before any migration.
    pub status: Option<MigrationStatus>,
    /// Memory transfer statistics.
    pub ram: Option<MigrationRamStats>,
    /// Milliseconds since the migration started.
    pub total_time: Option<u64>,
    /// Expected downtime in milliseconds, while active.
    pub expected_downtime: Option<u64>,
    /// Actual downtime in milliseconds, once completed.
    pub downtime: Option<u64>,
    /// Setup time in milliseconds.
    pub setup_time: Option<u64>,
    /// Current auto-converge throttle, percent.
    pub cpu_throttle_percentage: Option<u64>,
    /// Why the migration failed.
    pub error_desc: Option<String>,
    /// Why migration is currently blocked.
    pub blocked_reasons: Option<Vec<String>>,
    /// Where an incoming migration listens.
    pub socket_address: Option<Vec<SocketAddress>>,
}

/// Memory transfer statistics (`MigrationStats`); missing members read as zero.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct MigrationRamStats {
    /// Bytes transferred.
    pub transferred: u64,
    /// Bytes remaining.
    pub remaining: u64,
    /// Total guest memory in bytes.
    pub total: u64,
    /// Zero pages found.
    pub duplicate: u64,
    /// Pages sent in full.
    pub normal: u64,
    /// Bytes sent as full pages.
    pub normal_bytes: u64,
    /// Pages dirtied per second.
    pub dirty_pages_rate: u64,
    /// Throughput in megabits per second.
    pub mbps: f64,
    /// Dirty bitmap syncs so far (the pass number).
    pub dirty_sync_count: u64,
    /// Page requests from the destination during postcopy.
    pub postcopy_requests: u64,
    /// Target page size in bytes.
    pub page_size: u64,
    /// Bytes sent over multifd channels.
    pub multifd_bytes: u64,
    /// Pages sent per second.
    pub pages_per_second: u64,
    /// Bytes sent while the guest ran.
    pub precopy_bytes: u64,
    /// Bytes sent while the guest was paused.
    pub downtime_bytes: u64,
    /// Bytes sent during postcopy.
    pub postcopy_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2"}, "capabilities": ["oob"]}}"#;

    fn parse(line: &str) -> ServerMessage {
        parse_message(line.as_bytes()).expect("valid message")
    }

    #[test]
    fn greeting_parse_keeps_version_and_capabilities() {
        let ServerMessage::Greeting(greeting) = parse(GREETING) else {
            panic!("not a greeting");
        };
        assert_eq!(
            greeting.version.qemu,
            VersionTriple {
                major: 10,
                minor: 0,
                micro: 2
            }
        );
        assert_eq!(greeting.version.qemu.to_string(), "10.0.2");
        assert_eq!(greeting.version.package, "Debian 1:10.0.2+ds-2");
        assert_eq!(greeting.capabilities, ["oob"]);
    }

    #[test]
    fn commands_without_arguments_serialise_exactly() {
        assert_eq!(
            encode_command(&QueryStatus, 1).expect("encodes"),
            "{\"execute\":\"query-status\",\"id\":1}\n"
        );
        assert_eq!(
            encode_command(&QmpCapabilities, 42).expect("encodes"),
            "{\"execute\":\"qmp_capabilities\",\"id\":42}\n"
        );
        let empty = MigrateIncoming::default();
        assert_eq!(
            encode_command(&empty, 3).expect("encodes"),
            "{\"execute\":\"migrate-incoming\",\"id\":3}\n"
        );
    }

    #[test]
    fn command_arguments_serialise_exactly() {
        let migrate = Migrate::to_uri("unix:/run/vm/migrate.sock");
        assert_eq!(
            encode_command(&migrate, 7).expect("encodes"),
            r#"{"execute":"migrate","arguments":{"uri":"unix:/run/vm/migrate.sock"},"id":7}"#
                .to_owned()
                + "\n"
        );

        let caps = MigrateSetCapabilities::new([
            (MigrationCapability::Events, true),
            (MigrationCapability::PauseBeforeSwitchover, false),
        ]);
        assert_eq!(
            serde_json::to_string(&caps).expect("encodes"),
            r#"{"capabilities":[{"capability":"events","state":true},{"capability":"pause-before-switchover","state":false}]}"#
        );

        let params = MigrateSetParameters {
            downtime_limit: Some(300),
            max_bandwidth: Some(1 << 30),
            ..MigrateSetParameters::default()
        };
        assert_eq!(
            serde_json::to_string(&params).expect("encodes"),
            r#"{"max-bandwidth":1073741824,"downtime-limit":300}"#
        );

        let incoming = MigrateIncoming {
            exit_on_error: Some(false),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&incoming).expect("encodes"),
            r#"{"exit-on-error":false}"#
        );
    }

    #[test]
    fn migrate_channels_serialise_as_flat_unions() {
        let inet = InetSocketAddress {
            host: "dest.example".into(),
            port: "4444".into(),
        };
        let migrate = Migrate::to_address(MigrationAddress::Socket(SocketAddress::Inet(inet)));
        let json = serde_json::to_string(&migrate).expect("encodes");
        assert_eq!(
            json,
            r#"{"channels":[{"channel-type":"main","addr":{"transport":"socket","type":"inet","host":"dest.example","port":"4444"}}]}"#
        );

        let file = MigrationAddress::File {
            filename: "/srv/vm.state".into(),
            offset: 0,
        };
        let decoded: MigrationAddress =
            serde_json::from_str(r#"{"transport":"file","filename":"/srv/vm.state","offset":0}"#)
                .expect("decodes");
        assert_eq!(decoded, file);
    }

    #[test]
    fn success_response_decodes_with_its_id() {
        let ServerMessage::Return { id, value } =
            parse(r#"{"return": {"status": "prelaunch", "running": false}, "id": 5}"#)
        else {
            panic!("not a return");
        };
        assert_eq!(id, Some(Value::from(5)));
        let status: StatusInfo = serde_json::from_value(value).expect("status");
        assert_eq!(
            status,
            StatusInfo {
                running: false,
                status: RunState::Prelaunch
            }
        );
    }

    #[test]
    fn error_response_decodes_class_and_desc() {
        let line = r#"{"id": 9, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#;
        let ServerMessage::Error { id, error } = parse(line) else {
            panic!("not an error");
        };
        assert_eq!(id, Some(Value::from(9)));
        assert_eq!(error.class, "CommandNotFound");
        assert_eq!(error.desc, "The command nope has not been found");
    }

    #[test]
    fn events_decode_with_timestamp_and_typed_data() {
        let line = r#"{"timestamp": {"seconds": 1796309673, "microseconds": 463755}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;
        let ServerMessage::Event(event) = parse(line) else {
            panic!("not an event");
        };
        assert_eq!(event.name, "SHUTDOWN");
        assert_eq!(
            event.timestamp,
            Timestamp {
                seconds: 1796309673,
                microseconds: 463755
            }
        );
        let shutdown = event.decode::<ShutdownEvent>().expect("decodes");
        let expected = ShutdownEvent {
            guest: false,
            reason: ShutdownCause::HostQmpQuit,
        };
        assert_eq!(shutdown, Some(expected));
        assert_eq!(event.decode::<StopEvent>().expect("other event"), None);

        let stop = parse(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#);
        let ServerMessage::Event(stop) = stop else {
            panic!("not an event")
        };
        assert_eq!(stop.data, Value::Null);
        assert_eq!(
            stop.decode::<StopEvent>().expect("decodes"),
            Some(StopEvent {})
        );
    }

    #[test]
    fn unknown_event_names_and_enum_values_are_kept() {
        let line = r#"{"timestamp": {"seconds": -1, "microseconds": -1}, "event": "X_NEW_THING", "data": {"a": 1}}"#;
        let ServerMessage::Event(event) = parse(line) else {
            panic!("unknown events must decode");
        };
        assert_eq!(event.name, "X_NEW_THING");
        assert_eq!(event.data, serde_json::json!({"a": 1}));

        let status: StatusInfo =
            serde_json::from_str(r#"{"running": false, "status": "hibernating"}"#).expect("ok");
        assert_eq!(status.status, RunState::Other("hibernating".into()));
        assert_eq!(status.status.to_string(), "hibernating");
    }

    #[test]
    fn run_states_round_trip_their_wire_names() {
        let names = [
            "debug",
            "inmigrate",
            "internal-error",
            "io-error",
            "paused",
            "postmigrate",
            "prelaunch",
            "finish-migrate",
            "restore-vm",
            "running",
            "save-vm",
            "shutdown",
            "suspended",
            "watchdog",
            "guest-panicked",
            "colo",
        ];
        for name in names {
            let state: RunState = serde_json::from_value(Value::from(name)).expect("decodes");
            assert!(
                !matches!(state, RunState::Other(_)),
                "{name} is a known state"
            );
            assert_eq!(
                serde_json::to_value(&state).expect("encodes"),
                Value::from(name)
            );
        }
    }

    #[test]
    fn query_migrate_answer_decodes() {
        let answer = serde_json::json!({
            "status": "active", "total-time": 12345, "setup-time": 12, "expected-downtime": 300,
            "ram": {"transferred": 123, "remaining": 123, "total": 246, "duplicate": 0,
                    "normal": 0, "normal-bytes": 0, "dirty-sync-count": 2, "mbps": 937.5,
                    "x-future-counter": 1}
        });
        let info: MigrationInfo = serde_json::from_value(answer).expect("decodes");
        assert_eq!(info.status, Some(MigrationStatus::Active));
        assert_eq!(info.expected_downtime, Some(300));
        let ram = info.ram.expect("ram stats");
        assert_eq!(
            (ram.transferred, ram.dirty_sync_count, ram.mbps),
            (123, 2, 937.5)
        );

        let idle: MigrationInfo = serde_json::from_str("{}").expect("decodes");
        assert_eq!(idle, MigrationInfo::default());
    }

    #[test]
    fn unrecognised_and_invalid_lines_are_told_apart() {
        assert!(matches!(
            parse(r#"{"surprise": 1}"#),
            ServerMessage::Unknown(_)
        ));
        assert!(parse_message(b"{\"return\": ").is_err());
        assert!(parse_message(b"[1, 2]").is_err());
    }

    mod fake {
        //! `FakeQmpServer`: a scripted stand-in for QEMU's side of the QMP socket, for
        //! tests of the client's wire handling only.

        use std::path::{Path, PathBuf};

        use serde_json::Value;
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        use tokio::net::UnixListener;
        use tokio::task::JoinHandle;

        /// One step of a scripted conversation.
        pub enum Step {
            /// Send this text as one line (greeting, events, anything).
            Send(String),
            /// Send these bytes with no newline (a message cut short).
            SendPartial(&'static str),
            /// Read one command and check its `execute` name; its id is used by `Reply`.
            Expect(&'static str),
            /// Send `{"return": VALUE, "id": <last id>}`.
            Reply(Value),
            /// Send `{"error": {"class", "desc"}, "id": <last id>}`.
            ReplyError(&'static str, &'static str),
            /// Close the connection.
            Close,
        }

        /// A fake QMP server on a Unix socket in a temporary directory.
        pub struct FakeQmpServer {
            _dir: tempfile::TempDir,
            path: PathBuf,
            task: JoinHandle<Vec<Value>>,
        }

        impl FakeQmpServer {
            /// Listens and runs `steps` against the first client.
            pub fn start(steps: Vec<Step>) -> Self {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("qmp.sock");
                let listener = UnixListener::bind(&path).expect("bind");
                let task = tokio::spawn(serve(listener, steps));
                Self {
                    _dir: dir,
                    path,
                    task,
                }
            }

            /// The socket's path.
            pub fn path(&self) -> &Path {
                &self.path
            }

            /// Waits for the script to finish; returns every command the client sent.
            pub async fn received(self) -> Vec<Value> {
                self.task.await.expect("fake server panicked")
            }
        }

        async fn serve(listener: UnixListener, steps: Vec<Step>) -> Vec<Value> {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let (mut received, mut last_id) = (Vec::new(), Value::Null);
            for step in steps {
                let line = match step {
                    Step::Send(line) => line + "\n",
                    Step::SendPartial(bytes) => bytes.to_owned(),
                    Step::Expect(name) => {
                        let command = read_command(&mut read).await;
                        assert_eq!(command["execute"], name, "unexpected command {command}");
                        last_id = command["id"].clone();
                        received.push(command);
                        continue;
                    }
                    Step::Reply(value) => {
                        serde_json::json!({"return": value, "id": last_id}).to_string() + "\n"
                    }
                    Step::ReplyError(class, desc) => {
                        let error = serde_json::json!({"class": class, "desc": desc});
                        serde_json::json!({"error": error, "id": last_id}).to_string() + "\n"
                    }
                    Step::Close => return received,
                };
                write.write_all(line.as_bytes()).await.expect("write");
            }
            // Script done: hold the connection until the client hangs up.
            let mut rest = Vec::new();
            let _ = read.read_to_end(&mut rest).await;
            received
        }

        async fn read_command(read: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Value {
            let mut line = String::new();
            read.read_line(&mut line).await.expect("read");
            assert!(
                line.ends_with('\n'),
                "command not newline-terminated: {line:?}"
            );
            serde_json::from_str(&line).expect("client sent invalid json")
        }
    }

    use fake::{FakeQmpServer, Step};

    fn send(line: &str) -> Step {
        Step::Send(line.to_owned())
    }

    fn event(name: &str) -> Step {
        Step::Send(format!(
            r#"{{"timestamp": {{"seconds": 1, "microseconds": 0}}, "event": "{name}"}}"#
        ))
    }

    /// Greeting and capabilities negotiation, then `rest`.
    fn script(rest: Vec<Step>) -> Vec<Step> {
        let mut steps = vec![
            send(GREETING),
            Step::Expect("qmp_capabilities"),
            Step::Reply(serde_json::json!({})),
        ];
        steps.extend(rest);
        steps
    }

    const SHORT: Duration = Duration::from_millis(300);

    async fn connect(server: &FakeQmpServer) -> QmpClient {
        QmpClient::connect_with_timeout(server.path(), Duration::from_secs(5))
            .await
            .expect("connects")
    }

    #[tokio::test]
    async fn connect_negotiates_and_keeps_the_version() {
        let server = FakeQmpServer::start(script(vec![
            Step::Expect("query-status"),
            Step::Reply(serde_json::json!({"status": "paused", "running": false})),
        ]));
        let mut client = connect(&server).await;
        assert_eq!(client.version().qemu.major, 10);
        assert_eq!(client.greeting().capabilities, ["oob"]);

        let status = client.query_status().await.expect("query-status");
        assert_eq!(status.status, RunState::Paused);
        drop(client);

        let received = server.received().await;
        assert_eq!(
            received[0],
            serde_json::json!({"execute": "qmp_capabilities", "id": 1})
        );
        assert_eq!(
            received[1],
            serde_json::json!({"execute": "query-status", "id": 2})
        );
    }

    #[tokio::test]
    async fn events_before_a_response_are_buffered_in_order() {
        let server = FakeQmpServer::start(script(vec![
            Step::Expect("cont"),
            event("RESUME"),
            event("X_VENDOR_EVENT"),
            Step::Reply(serde_json::json!({})),
            Step::Expect("stop"),
            event("STOP"),
            Step::Reply(serde_json::json!({})),
        ]));
        let mut client = connect(&server).await;
        client.cont().await.expect("cont");
        client.stop().await.expect("stop");

        let vendor = client
            .wait_for_event("X_VENDOR_EVENT", SHORT)
            .await
            .expect("buffered");
        assert_eq!(vendor.name, "X_VENDOR_EVENT");
        let resume = client
            .next_event(SHORT)
            .await
            .expect("read")
            .expect("buffered");
        assert_eq!(resume.name, "RESUME");
        let stop = client.wait_for::<StopEvent>(SHORT).await.expect("buffered");
        assert_eq!(stop, StopEvent {});
        assert_eq!(client.next_event(SHORT).await.expect("read"), None);
    }

    #[tokio::test]
    async fn events_are_read_from_the_socket_while_waiting() {
        let server = FakeQmpServer::start(script(vec![
            event("POWERDOWN"),
            send(
                r#"{"timestamp": {"seconds": 2, "microseconds": 5}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
            ),
        ]));
        let mut client = connect(&server).await;
        let shutdown = client
            .wait_for::<ShutdownEvent>(Duration::from_secs(5))
            .await;
        assert_eq!(
            shutdown.expect("shutdown").reason,
            ShutdownCause::GuestShutdown
        );
        let taken = client.take_events();
        assert_eq!(taken.len(), 1);
        assert_eq!(
            taken[0].decode::<PowerdownEvent>().expect("ok"),
            Some(PowerdownEvent {})
        );
    }

    #[tokio::test]
    async fn error_responses_map_to_command_errors() {
        let server = FakeQmpServer::start(script(vec![
            Step::Expect("migrate"),
            Step::ReplyError("GenericError", "There's a migration process in progress"),
        ]));
        let mut client = connect(&server).await;
        let error = client
            .execute(Migrate::to_uri("tcp:127.0.0.1:4444"))
            .await
            .unwrap_err();
        let QmpError::Command {
            command,
            class,
            desc,
        } = &error
        else {
            panic!("expected a command error, got {error:?}");
        };
        assert_eq!(
            (command.as_str(), class.as_str()),
            ("migrate", "GenericError")
        );
        assert_eq!(desc, "There's a migration process in progress");
        assert_eq!(
            error.to_string(),
            "qmp command migrate failed: GenericError: There's a migration process in progress"
        );
    }

    #[tokio::test]
    async fn responses_to_abandoned_commands_are_dropped() {
        let server = FakeQmpServer::start(script(vec![
            Step::Expect("query-status"),
            send(r#"{"return": {"status": "running", "running": true}, "id": 1000}"#),
            Step::Reply(serde_json::json!({"status": "paused", "running": false})),
        ]));
        let mut client = connect(&server).await;
        let status = client.query_status().await.expect("query-status");
        assert_eq!(status.status, RunState::Paused);
    }

    #[tokio::test]
    async fn eof_mid_response_is_a_clear_error() {
        const CUT: &str = r#"{"return": {"status": "#;
        let server = FakeQmpServer::start(script(vec![
            Step::Expect("query-status"),
            Step::SendPartial(CUT),
            Step::Close,
        ]));
        let mut client = connect(&server).await;
        let error = client.query_status().await.unwrap_err();
        assert!(matches!(error, QmpError::Truncated { bytes, .. } if bytes == CUT.len()));
        let message = error.to_string();
        assert!(message.contains("closed mid-message"), "{message}");
        assert!(
            message.contains("the response to `query-status`"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn eof_between_messages_is_closed() {
        let server = FakeQmpServer::start(script(vec![Step::Expect("stop"), Step::Close]));
        let mut client = connect(&server).await;
        let error = client.stop().await.unwrap_err();
        assert!(matches!(error, QmpError::Closed { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn quit_succeeds_whether_the_socket_closes_before_or_after_the_return() {
        let before = FakeQmpServer::start(script(vec![Step::Expect("quit"), Step::Close]));
        connect(&before)
            .await
            .quit()
            .await
            .expect("eof after quit is success");

        let after = FakeQmpServer::start(script(vec![
            Step::Expect("quit"),
            event("SHUTDOWN"),
            Step::Reply(serde_json::json!({})),
            Step::Close,
        ]));
        connect(&after).await.quit().await.expect("return then eof");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_instead_of_hanging() {
        let mute = FakeQmpServer::start(vec![]);
        let error = QmpClient::connect_with_timeout(mute.path(), SHORT)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, QmpError::Timeout { waiting_for, .. }
            if waiting_for == "the greeting"),
            "{error:?}"
        );

        let server = FakeQmpServer::start(script(vec![Step::Expect("cont")]));
        let mut client = connect(&server).await;
        client.set_timeout(SHORT);
        let error = client.cont().await.unwrap_err();
        assert!(matches!(error, QmpError::Timeout { .. }), "{error:?}");
        let timeout = client.wait_for_event("RESUME", SHORT).await.unwrap_err();
        assert!(matches!(timeout, QmpError::Timeout { .. }), "{timeout:?}");
    }

    #[tokio::test]
    async fn a_command_cancelled_mid_write_poisons_the_stream() {
        let server = FakeQmpServer::start(script(vec![]));
        let mut client = connect(&server).await;
        // What a dropped `write_line` future leaves behind.
        client.write_interrupted = true;
        let error = client.query_status().await.unwrap_err();
        assert!(
            matches!(error, QmpError::Desynchronized { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_fails_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.sock");
        let error = QmpClient::connect(&path).await.unwrap_err();
        assert!(matches!(&error, QmpError::Connect { socket, .. } if socket == &path));
    }

    #[tokio::test]
    async fn a_response_instead_of_a_greeting_is_a_protocol_error() {
        let server = FakeQmpServer::start(vec![send(r#"{"return": {}}"#)]);
        let error = QmpClient::connect_with_timeout(server.path(), SHORT)
            .await
            .unwrap_err();
        assert!(matches!(error, QmpError::Protocol { .. }), "{error:?}");
    }

    /// Kills QEMU when the test ends, however it ends.
    struct KillOnDrop(tokio::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.start_kill();
        }
    }

    async fn wait_for_socket(path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "qemu did not create {}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn qemu_status_cont_stop_and_quit_against_real_qemu() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("qmp.sock");
        let qmp = format!("unix:{},server=on,wait=off", socket.display());
        let child = tokio::process::Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "microvm",
                "-accel",
                "tcg",
                "-nodefaults",
                "-nographic",
                "-S",
            ])
            .args(["-qmp", &qmp, "-display", "none"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 must be installed (scripts/install-deps)");
        let mut qemu = KillOnDrop(child);
        wait_for_socket(&socket).await;

        let mut client = QmpClient::connect(&socket).await.expect("connect");
        assert!(client.version().qemu.major >= 9, "{:?}", client.version());
        let status = client.query_status().await.expect("query-status");
        assert_eq!(
            status,
            StatusInfo {
                running: false,
                status: RunState::Prelaunch
            }
        );

        client.cont().await.expect("cont");
        client
            .wait_for::<ResumeEvent>(Duration::from_secs(5))
            .await
            .expect("RESUME");
        assert!(client.query_status().await.expect("query-status").running);
        client.stop().await.expect("stop");
        client
            .wait_for::<StopEvent>(Duration::from_secs(5))
            .await
            .expect("STOP");
        let status = client.query_status().await.expect("query-status");
        assert_eq!(
            status,
            StatusInfo {
                running: false,
                status: RunState::Paused
            }
        );

        client.quit().await.expect("quit");
        let exit = tokio::time::timeout(Duration::from_secs(10), qemu.0.wait())
            .await
            .expect("qemu exits after quit")
            .expect("wait");
        assert!(exit.success(), "qemu exited with {exit}");
    }
}
