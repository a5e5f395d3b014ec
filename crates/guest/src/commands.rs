//! Host → guest commands ([`HostCommand`]): one JSON line each, each answered by one
//! [`AgentEvent`] line, `refreshed` or `failed` with step `refresh`.
//!
//! Where they come in:
//! - **QEMU**: on the agent's virtio-serial port, the one events go out on. One thread
//!   ([`spawn_port_reader`]) reads it; answers go out through the [`Reporter`] like every
//!   other event, so lines never interleave.
//! - **Firecracker**: on vsock port [`CONTROL_VSOCK_PORT`]. One thread
//!   ([`spawn_vsock_server`]) takes one connection at a time: one line in, the answer
//!   back on the same connection, then it closes it.
//!
//! Ownership: those threads share one [`Commands`]. Its lock holds the guest's current
//! boot parameters (what boot configured, as later refreshes changed it) and serialises
//! commands, so one refresh runs at a time. Until boot hands it the boot parameters
//! ([`Commands::boot_finished`], just before it reports `ready`) every command is refused:
//! a refresh never races the boot steps, and a node that sends one as soon as it reads
//! `ready` finds it taken.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boxcutter_types::guest::{AgentEvent, BootParams, HostCommand, CONTROL_VSOCK_PORT};
use nix::sys::socket::{
    accept4, bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    VsockAddr,
};
use nix::sys::time::TimeVal;

use crate::channel::{self, Reporter};
use crate::console;
use crate::layout::Layout;
use crate::refresh::{self, RefreshError, RefreshOps, SystemOps};

/// The longest command line taken; a refresh with a host key is about 1 KiB.
pub const MAX_LINE: usize = 64 * 1024;

/// The step named in a `failed` answer to a command.
pub const STEP: &str = "refresh";

/// How often the port is read again while no host process has it open.
const PORT_IDLE: Duration = Duration::from_millis(200);

/// How long a vsock command connection may take to send its line or take the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The line is longer than [`MAX_LINE`].
    #[error("command line longer than {MAX_LINE} bytes")]
    TooLong,
    /// The line is not a [`HostCommand`].
    #[error("parse command")]
    Parse(#[source] serde_json::Error),
    /// Boot has not finished.
    #[error("the guest is still booting")]
    Booting,
    /// Boot could not read its parameters, so the VM type is unknown.
    #[error("the guest's boot parameters are unknown")]
    NoParams,
    /// The refresh failed.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// The command panicked (its message is on the console).
    #[error("panicked: {0}")]
    Panicked(String),
}

/// One line from the host, its `\n` removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A command line.
    Command(Vec<u8>),
    /// A line longer than [`MAX_LINE`], dropped.
    TooLong,
}

/// Carries out host commands; shared by the threads that read them.
pub struct Commands {
    layout: Layout,
    phase: Mutex<Phase>,
}

enum Phase {
    Booting,
    Booted(Option<BootParams>),
}

impl Commands {
    /// Commands on the system under `layout`, refused until boot finishes.
    pub fn new(layout: Layout) -> Self {
        Commands {
            layout,
            phase: Mutex::new(Phase::Booting),
        }
    }

    /// Boot is over, with `params` (if they parsed): commands are carried out from now.
    /// Only the first call counts: refreshes own the parameters from then on.
    pub fn boot_finished(&self, params: Option<BootParams>) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Booting = *phase {
            *phase = Phase::Booted(params);
        }
    }

    /// Carries out `line` on the real system; returns the answer.
    pub fn handle(&self, line: Line) -> AgentEvent {
        self.handle_with(line, &mut SystemOps::new(self.layout.clone()))
    }

    /// Carries out `line` through `ops`; returns the answer, after logging it.
    pub fn handle_with(&self, line: Line, ops: &mut impl RefreshOps) -> AgentEvent {
        let started = Instant::now();
        let result =
            catch_unwind(AssertUnwindSafe(|| self.run(line, ops))).unwrap_or_else(|panic| {
                Err(CommandError::Panicked(crate::boot::panic_message(&*panic)))
            });
        let elapsed_ms = started.elapsed().as_millis();
        match result {
            Ok(name) => {
                info!("refresh: done name={name} elapsed_ms={elapsed_ms}");
                AgentEvent::Refreshed {
                    uptime_ms: console::uptime_ms(),
                }
            }
            Err(e) => {
                let text = console::chain(&e);
                error!("refresh: failed elapsed_ms={elapsed_ms}: {text}");
                AgentEvent::Failed {
                    step: STEP.into(),
                    error: text,
                }
            }
        }
    }

    /// The boot parameters now in effect, if boot is over and they parsed.
    pub fn current(&self) -> Option<BootParams> {
        match &*self.phase.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Booting => None,
            Phase::Booted(params) => params.clone(),
        }
    }

    fn run(&self, line: Line, ops: &mut impl RefreshOps) -> Result<String, CommandError> {
        let Line::Command(bytes) = line else {
            return Err(CommandError::TooLong);
        };
        let HostCommand::Refresh(command) =
            serde_json::from_slice(&bytes).map_err(CommandError::Parse)?;
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let current = match &mut *phase {
            Phase::Booting => return Err(CommandError::Booting),
            Phase::Booted(None) => return Err(CommandError::NoParams),
            Phase::Booted(Some(params)) => params,
        };
        refresh::run(&self.layout, ops, current, &command)?;
        Ok(command.name.to_string())
    }
}

/// Splits a byte stream into [`Line`]s; blank lines are skipped, overlong ones dropped.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    overflowed: bool,
}

impl LineSplitter {
    /// The lines that `bytes` completes; the rest waits for more.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let (body, complete) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            if !self.overflowed {
                self.partial.extend_from_slice(body);
                if self.partial.len() > MAX_LINE {
                    self.overflowed = true;
                    self.partial = Vec::new();
                }
            }
            if complete {
                lines.extend(self.finish_line());
            }
        }
        lines
    }

    /// Drops a partial line: its sender went away.
    pub fn reset(&mut self) {
        *self = LineSplitter::default();
    }

    fn finish_line(&mut self) -> Option<Line> {
        if std::mem::take(&mut self.overflowed) {
            return Some(Line::TooLong);
        }
        let line = std::mem::take(&mut self.partial);
        (!line.trim_ascii().is_empty()).then_some(Line::Command(line))
    }
}

/// Starts the thread that reads commands from the agent's virtio-serial port (`port`, a
/// second handle on it) and sends each answer through `reporter`.
pub fn spawn_port_reader(
    port: File,
    commands: Arc<Commands>,
    reporter: Reporter,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("agent-commands".into())
        .spawn(move || {
            let error = read_commands(port, PORT_IDLE, |line| reporter.send(commands.handle(line)));
            warn!("commands: reading the agent port failed: {error}; no more commands are taken");
        })
}

/// Reads command lines from `port`, passing each to `handle`, until a read fails; returns
/// that error.
///
/// End of file means no host process has the port open: a virtio-serial read says so at
/// once, and `poll` then reports `POLLHUP`, so there is nothing to block on. A partial
/// line is dropped (its sender is gone) and the port read again after `idle`.
/// Limitation: so a command sent right after the host connects waits up to `idle`.
pub fn read_commands(
    mut port: impl Read,
    idle: Duration,
    mut handle: impl FnMut(Line),
) -> io::Error {
    let mut lines = LineSplitter::default();
    let mut buf = [0u8; 4096];
    loop {
        match port.read(&mut buf) {
            Ok(0) => {
                lines.reset();
                std::thread::sleep(idle);
            }
            Ok(n) => lines.push(&buf[..n]).into_iter().for_each(&mut handle),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e,
        }
    }
}

/// Starts the thread that serves commands on vsock port [`CONTROL_VSOCK_PORT`], one
/// connection at a time.
pub fn spawn_vsock_server(commands: Arc<Commands>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vsock-commands".into())
        .spawn(move || {
            let listener = match vsock_listen(CONTROL_VSOCK_PORT) {
                Ok(listener) => listener,
                Err(e) => {
                    let port = CONTROL_VSOCK_PORT;
                    warn!("commands: cannot listen on vsock port {port}: {e}; none are taken");
                    return;
                }
            };
            info!("commands: listening on vsock port {CONTROL_VSOCK_PORT}");
            loop {
                match vsock_accept(&listener) {
                    Ok(mut conn) => {
                        if let Err(e) = serve_connection(&mut conn, |line| commands.handle(line)) {
                            warn!("commands: vsock connection failed: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("commands: vsock accept failed: {e}");
                        // Out of descriptors or memory: do not spin.
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
}

/// Serves one command connection: reads its line, answers it with `handle`'s event as
/// one line. A connection closed before a whole line gets no answer.
pub fn serve_connection<C: Read + Write>(
    conn: &mut C,
    handle: impl FnOnce(Line) -> AgentEvent,
) -> io::Result<()> {
    let Some(line) = read_line(conn)? else {
        return Ok(());
    };
    let answer = channel::to_line(&handle(line));
    info!("command answer: {}", answer.trim_end());
    conn.write_all(answer.as_bytes())
}

fn read_line(conn: &mut impl Read) -> io::Result<Option<Line>> {
    let mut lines = LineSplitter::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(line) = lines.push(&buf[..n]).into_iter().next() {
            return Ok(Some(line));
        }
    }
}

/// A vsock stream socket listening on `port` for any CID.
///
/// Untested here, like [`vsock_accept`]: the test machines have no vsock transport. What
/// happens on a connection is tested through [`serve_connection`] over a Unix socket.
fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
    listen(&fd, Backlog::new(4)?)?;
    Ok(fd)
}

/// The next connection on `listener`, with [`CONNECTION_TIMEOUT`] on both directions, so
/// a host that never sends its line cannot hold the server.
fn vsock_accept(listener: &OwnedFd) -> io::Result<File> {
    let raw = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this descriptor, and nothing else owns it.
    let conn = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = TimeVal::new(CONNECTION_TIMEOUT.as_secs() as _, 0);
    setsockopt(&conn, sockopt::ReceiveTimeout, &timeout)?;
    setsockopt(&conn, sockopt::SendTimeout, &timeout)?;
    Ok(File::from(conn))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::refresh::tests::{booted_params, fake_root, refresh, FakeOps};

    fn command(text: &str) -> Line {
        Line::Command(text.as_bytes().to_vec())
    }

    fn refresh_line() -> String {
        serde_json::to_string(&HostCommand::Refresh(refresh())).unwrap()
    }

    fn booted(dir: &std::path::Path) -> Commands {
        let commands = Commands::new(fake_root(dir));
        commands.boot_finished(Some(booted_params()));
        commands
    }

    fn failure(event: AgentEvent) -> String {
        match event {
            AgentEvent::Failed { step, error } if step == STEP => error,
            other => panic!("not a refresh failure: {other:?}"),
        }
    }

    #[test]
    fn refresh_is_answered_refreshed_and_changes_the_current_params() {
        let dir = tempfile::tempdir().unwrap();
        let commands = booted(dir.path());
        let mut ops = FakeOps::new(&fake_root(dir.path()));
        let answer = commands.handle_with(command(&refresh_line()), &mut ops);
        assert!(matches!(answer, AgentEvent::Refreshed { .. }), "{answer:?}");
        assert_eq!(ops.calls.len(), 5, "{:?}", ops.calls);
        assert_eq!(commands.current().unwrap().name.as_str(), "copy-1");
    }

    #[test]
    fn bad_lines_are_refused_without_touching_the_system() {
        let dir = tempfile::tempdir().unwrap();
        let commands = booted(dir.path());
        let short = refresh_line().replace(&"ab".repeat(32), "abcd");
        let cases = [
            (command("{\"command\":"), "parse command: EOF while parsing"),
            (
                command(r#"{"command":"reboot"}"#),
                "parse command: unknown variant `reboot`, expected `refresh`",
            ),
            (
                command(&refresh_line().replace("\"name\"", "\"extra\":1,\"name\"")),
                "parse command: unknown field `extra`",
            ),
            (
                command(&short),
                "entropy is 2 bytes; at least 32 are needed",
            ),
            (Line::TooLong, "command line longer than 65536 bytes"),
        ];
        for (line, expected) in cases {
            let mut ops = FakeOps::new(&fake_root(dir.path()));
            let error = failure(commands.handle_with(line, &mut ops));
            assert!(error.starts_with(expected), "{error}");
            assert_eq!(ops.calls, Vec::<String>::new());
        }
        assert_eq!(commands.current(), Some(booted_params()));
    }

    #[test]
    fn commands_wait_for_the_end_of_boot() {
        let dir = tempfile::tempdir().unwrap();
        let commands = Commands::new(fake_root(dir.path()));
        let mut ops = FakeOps::new(&fake_root(dir.path()));
        let error = failure(commands.handle_with(command(&refresh_line()), &mut ops));
        assert_eq!(error, "the guest is still booting");

        commands.boot_finished(None);
        let error = failure(commands.handle_with(command(&refresh_line()), &mut ops));
        assert_eq!(error, "the guest's boot parameters are unknown");
        assert_eq!(ops.calls, Vec::<String>::new());

        let dir = tempfile::tempdir().unwrap();
        let commands = booted(dir.path());
        commands.boot_finished(None);
        assert_eq!(
            commands.current(),
            Some(booted_params()),
            "booted once only"
        );
    }

    #[test]
    fn a_failing_step_is_answered_with_its_cause_chain() {
        let dir = tempfile::tempdir().unwrap();
        let commands = booted(dir.path());
        let mut ops = FakeOps::new(&fake_root(dir.path()));
        ops.fail = Some("reload-sshd");
        let error = failure(commands.handle_with(command(&refresh_line()), &mut ops));
        assert_eq!(
            error,
            "reload sshd: sshd did not listen again on port 22 within 1 ms of its reload"
        );
    }

    #[test]
    fn lines_are_split_across_reads_and_oversized_ones_dropped() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"{\"a\""), []);
        assert_eq!(
            lines.push(b":1}\n\n  \nb\nc"),
            [command("{\"a\":1}"), command("b")]
        );
        lines.reset();
        assert_eq!(
            lines.push(b"d\n"),
            [command("d")],
            "the partial c was dropped"
        );

        let big = vec![b'x'; MAX_LINE + 1];
        assert_eq!(lines.push(&big), []);
        assert_eq!(lines.push(b"xx\nnext\n"), [Line::TooLong, command("next")]);
        assert_eq!(lines.push(&[b'y'; MAX_LINE]), []);
        assert_eq!(lines.push(b"\n"), [command(&"y".repeat(MAX_LINE))]);
    }

    /// A port that returns `reads` in turn, then fails.
    struct FakePort(VecDeque<io::Result<Vec<u8>>>);

    impl Read for FakePort {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let chunk = self
                .0
                .pop_front()
                .unwrap_or_else(|| Err(io::Error::other("unplugged")))?;
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn port_reader_survives_hosts_coming_and_going() {
        let reads = [
            Ok(b"one\ntw".to_vec()),
            Ok(b"o\nthr".to_vec()),
            Ok(vec![]), // the host closed the socket mid-line
            Err(io::ErrorKind::Interrupted.into()),
            Ok(b"four\n".to_vec()),
        ];
        let mut seen = Vec::new();
        let error = read_commands(FakePort(reads.into()), Duration::ZERO, |l| seen.push(l));
        assert_eq!(error.to_string(), "unplugged");
        assert_eq!(seen, [command("one"), command("two"), command("four")]);
    }

    #[test]
    fn a_connection_gets_one_answer_line_then_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let commands = Arc::new(booted(dir.path()));
        let (mut host, mut guest) = UnixStream::pair().unwrap();
        let served = {
            let commands = commands.clone();
            let layout = fake_root(dir.path());
            std::thread::spawn(move || {
                let mut ops = FakeOps::new(&layout);
                serve_connection(&mut guest, |l| commands.handle_with(l, &mut ops))
            })
        };
        // The line arrives in two writes; only the first line counts.
        host.write_all(br#"{"command":"#).unwrap();
        host.write_all(b"\"reboot\"}\n{\"command\":\"refresh\"}\n")
            .unwrap();
        let mut answer = String::new();
        BufReader::new(&host).read_line(&mut answer).unwrap();
        served.join().unwrap().unwrap();
        let event: AgentEvent = serde_json::from_str(&answer).unwrap();
        assert!(failure(event).contains("unknown variant `reboot`"));
        assert!(answer.ends_with("}\n"));

        let (host, mut guest) = UnixStream::pair().unwrap();
        drop(host);
        serve_connection(&mut guest, |_| panic!("no line, no command")).unwrap();
    }
}
