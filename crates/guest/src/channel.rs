//! Boot step 7: the agent channel to the node, one JSON [`AgentEvent`] per line.
//!
//! Ownership: boot steps, the init loop and the command readers hold a [`Reporter`] and
//! never block on the channel; one writer thread owns the [`Transport`]. Writing to a
//! virtio-serial port blocks while nobody on the host has it open, and a vsock connection
//! may have to wait for the node to listen, so only that thread ever waits on them.
//! Events sent before the transport is ready queue up in order.
//!
//! Transports: QEMU guests use the virtio-serial port named [`AGENT_PORT_NAME`], opened
//! for reading too, since the host's commands come in on it ([`crate::commands`]).
//! Firecracker guests connect a vsock stream to the host ([`HOST_CID`], port
//! [`AGENT_VSOCK_PORT`]), which Firecracker hands to the node's Unix socket; the
//! [`Reconnecting`] transport waits for the node to listen and reconnects after a break.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boxcutter_types::guest::{AgentEvent, VmType, AGENT_PORT_NAME, AGENT_VSOCK_PORT, HOST_CID};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};

use crate::layout::Layout;

/// How long the writer looks for the port before giving up; the port normally exists
/// before the agent starts, but virtio-console announces port names asynchronously.
/// Also how long the first vsock connection is retried while the node is not listening.
pub const PORT_WAIT: Duration = Duration::from_secs(10);

/// The first pause between vsock connection attempts; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(10);

/// The longest pause between vsock connection attempts.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Where events go.
pub trait Transport: Send {
    /// Writes one complete line (ending in `\n`).
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    /// Names the transport for the log.
    fn describe(&self) -> String;
}

/// A virtio-serial port device such as `/dev/vport0p1`.
pub struct VirtioSerial {
    path: PathBuf,
    file: File,
}

impl VirtioSerial {
    /// Opens the port for reading and writing. A port may be open only once at a time.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(VirtioSerial {
            path: path.to_path_buf(),
            file,
        })
    }

    /// A second handle on the open port, for the thread that reads the host's commands.
    pub fn command_reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// The port's device.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Transport for VirtioSerial {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line)
    }

    fn describe(&self) -> String {
        format!("virtio-serial {}", self.path.display())
    }
}

/// Which transport a guest uses, from its VM type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A virtio-serial port, found by name under sysfs.
    VirtioSerial {
        /// The port name to look for.
        name: &'static str,
    },
    /// A vsock stream to the host's [`AGENT_VSOCK_PORT`], for Firecracker.
    Vsock,
}

impl Endpoint {
    /// The endpoint for `vm_type`; an unknown type (bad command line) tries virtio-serial.
    pub fn for_vm(vm_type: Option<VmType>) -> Self {
        match vm_type {
            Some(VmType::Firecracker) => Endpoint::Vsock,
            Some(VmType::Qemu) | None => Endpoint::VirtioSerial {
                name: AGENT_PORT_NAME,
            },
        }
    }
}

/// The device of the virtio-serial port named `name`: the `vportNpM` under
/// `sys/class/virtio-ports` whose `name` file holds it, as `dev/vportNpM`.
pub fn find_virtio_port(layout: &Layout, name: &str) -> Option<PathBuf> {
    let ports = fs::read_dir(layout.sys.join("class/virtio-ports")).ok()?;
    let mut matching: Vec<String> = ports
        .flatten()
        .filter(|port| {
            fs::read_to_string(port.path().join("name")).is_ok_and(|found| found.trim() == name)
        })
        .filter_map(|port| port.file_name().into_string().ok())
        .collect();
    matching.sort();
    matching.first().map(|port| layout.dev.join(port))
}

enum Message {
    Event(AgentEvent),
    Flush(Sender<()>),
}

/// Sends events to the node; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Reporter {
    tx: Sender<Message>,
}

/// The writer's end, waiting for [`Pending::start`] to give it a transport.
pub struct Pending {
    rx: Receiver<Message>,
}

/// A reporter whose events queue until the writer starts.
pub fn reporter() -> (Reporter, Pending) {
    let (tx, rx) = mpsc::channel();
    (Reporter { tx }, Pending { rx })
}

impl Reporter {
    /// Queues `event`, and logs it so the console shows the protocol too.
    pub fn send(&self, event: AgentEvent) {
        info!("agent event: {}", to_line(&event).trim_end());
        let _ = self.tx.send(Message::Event(event));
    }

    /// Waits up to `timeout` until every event sent so far is written; returns whether
    /// they were (false if the port is missing, or the host is not reading).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, written) = mpsc::channel();
        self.tx.send(Message::Flush(done)).is_ok() && written.recv_timeout(timeout).is_ok()
    }
}

impl Pending {
    /// Starts the writer thread: it opens a transport with `open` (which may wait for the
    /// device), then writes every queued and future event to it.
    pub fn start<F>(self, open: F) -> io::Result<JoinHandle<()>>
    where
        F: FnOnce() -> Option<Box<dyn Transport>> + Send + 'static,
    {
        std::thread::Builder::new()
            .name("agent-channel".into())
            .spawn(move || write_events(self.rx, open()))
    }
}

/// Opens the transport for `endpoint`: waits up to `wait` for a virtio-serial port; a
/// vsock transport connects at its first event, retrying for up to `wait`.
pub fn open_endpoint(
    layout: &Layout,
    endpoint: &Endpoint,
    wait: Duration,
) -> Option<Box<dyn Transport>> {
    match endpoint {
        Endpoint::VirtioSerial { name } => {
            let port = open_virtio_port(layout, name, wait)?;
            Some(Box::new(port))
        }
        Endpoint::Vsock => Some(Box::new(Reconnecting::new(
            format!("vsock {HOST_CID}:{AGENT_VSOCK_PORT}"),
            wait,
            || vsock_connect(HOST_CID, AGENT_VSOCK_PORT),
        ))),
    }
}

/// Waits up to `wait` for the virtio-serial port named `name` and opens it.
pub fn open_virtio_port(layout: &Layout, name: &str, wait: Duration) -> Option<VirtioSerial> {
    let started = Instant::now();
    let path = loop {
        if let Some(path) = find_virtio_port(layout, name) {
            break path;
        }
        if started.elapsed() >= wait {
            warn!(
                "agent channel: no virtio-serial port named {name}; events go to the console only"
            );
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    VirtioSerial::open(&path)
        .inspect_err(|e| warn!("agent channel: cannot open {}: {e}", path.display()))
        .ok()
}

/// Connects a vsock stream socket to `cid:port`. The socket is returned as a [`File`]:
/// reads and writes on it are plain `read(2)` and `write(2)`.
///
/// Untested here: the machines that run the tests have no vsock transport (even binding
/// the local CID fails), so this is exercised only inside a Firecracker guest. Everything
/// around it is tested through [`Reconnecting`] with a Unix socket in its place.
pub fn vsock_connect(cid: u32, port: u32) -> io::Result<File> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &VsockAddr::new(cid, port))?;
    Ok(File::from(fd))
}

type Connector<S> = Box<dyn FnMut() -> io::Result<S> + Send>;

/// A stream transport that connects when it has an event to write and again after the
/// connection breaks: the node may not listen yet when the guest first reports, and may
/// close the connection (a restart) between events.
///
/// The first connection is retried, pausing 10 ms and doubling up to 500 ms, for up to
/// the wait given to [`Reconnecting::new`]; if it still fails, that event goes to the
/// console only. Every later event without a connection makes one attempt, so the channel
/// comes back whenever the node listens again, and never holds events up for long.
pub struct Reconnecting<S> {
    name: String,
    connect: Connector<S>,
    stream: Option<S>,
    first_wait: Option<Duration>,
}

impl<S: Write + AsFd + Send> Reconnecting<S> {
    /// A transport named `name` that opens its streams with `connect`.
    pub fn new(
        name: String,
        first_wait: Duration,
        connect: impl FnMut() -> io::Result<S> + Send + 'static,
    ) -> Self {
        Reconnecting {
            name,
            connect: Box::new(connect),
            stream: None,
            first_wait: Some(first_wait),
        }
    }

    /// The open stream, connected now if there is none (or the peer closed it).
    fn stream(&mut self) -> io::Result<&mut S> {
        if self.stream.as_ref().is_some_and(peer_closed) {
            info!(
                "agent channel: {} closed by the host; reconnecting",
                self.name
            );
            self.stream = None;
        }
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let wait = self.first_wait.take().unwrap_or(Duration::ZERO);
                let stream = connect_with_retry(&mut self.connect, wait)?;
                info!("agent channel: connected to {}", self.name);
                stream
            }
        };
        Ok(self.stream.insert(stream))
    }
}

impl<S: Write + AsFd + Send> Transport for Reconnecting<S> {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let written = self.stream()?.write_all(line);
        if written.is_err() {
            // Broken under our feet: one fresh connection gets this line, whole.
            self.stream = None;
            return self.stream()?.write_all(line);
        }
        written
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Calls `connect` until it succeeds or `wait` has passed, pausing between attempts.
fn connect_with_retry<S>(connect: &mut Connector<S>, wait: Duration) -> io::Result<S> {
    let started = Instant::now();
    let mut pause = RETRY_FIRST;
    loop {
        match connect() {
            Ok(stream) => return Ok(stream),
            Err(e) if started.elapsed() + pause > wait => return Err(e),
            Err(_) => std::thread::sleep(pause),
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Whether the other end of `stream` has closed it (so a write would be lost or fail).
fn peer_closed(stream: &impl AsFd) -> bool {
    // nix has no name for POLLRDHUP, the peer's shutdown of its sending side.
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(stream.as_fd(), rdhup)];
    let hung_up = rdhup | PollFlags::POLLHUP | PollFlags::POLLERR;
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1..))
        && fds[0].revents().is_some_and(|r| r.intersects(hung_up))
}

fn write_events(rx: Receiver<Message>, mut transport: Option<Box<dyn Transport>>) {
    if let Some(t) = &transport {
        info!("agent channel: writing to {}", t.describe());
    }
    let mut failing = false;
    for message in rx {
        match message {
            Message::Flush(done) => {
                let _ = done.send(());
            }
            Message::Event(event) => {
                let Some(t) = transport.as_mut() else {
                    continue;
                };
                match t.write_line(to_line(&event).as_bytes()) {
                    Ok(()) => failing = false,
                    // Logged once per outage: the node cannot read a broken channel anyway.
                    Err(e) if !std::mem::replace(&mut failing, true) => warn!(
                        "agent channel: write to {} failed: {e}; events go to the console only",
                        t.describe()
                    ),
                    Err(_) => {}
                }
            }
        }
    }
}

/// One event as its JSON line.
pub fn to_line(event: &AgentEvent) -> String {
    // Serialising these plain enums cannot fail.
    let mut line = serde_json::to_string(event).unwrap_or_default();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn fake_port(layout: &Layout, port: &str, name: &str) {
        let dir = layout.sys.join("class/virtio-ports").join(port);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        fs::create_dir_all(&layout.dev).unwrap();
        fs::write(layout.dev.join(port), b"").unwrap();
    }

    #[test]
    fn port_is_found_by_name_among_others() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        assert_eq!(find_virtio_port(&layout, AGENT_PORT_NAME), None);
        fake_port(&layout, "vport0p0", "org.qemu.guest_agent.0");
        fake_port(&layout, "vport1p1", AGENT_PORT_NAME);
        assert_eq!(
            find_virtio_port(&layout, AGENT_PORT_NAME),
            Some(layout.dev.join("vport1p1"))
        );
    }

    #[test]
    fn events_sent_before_the_writer_starts_arrive_in_order_as_lines() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        fake_port(&layout, "vport0p1", AGENT_PORT_NAME);
        let (reporter, pending) = reporter();
        reporter.send(AgentEvent::Failed {
            step: "network".into(),
            error: "no ethernet interface".into(),
        });

        let endpoint = Endpoint::for_vm(Some(VmType::Qemu));
        let opened = layout.clone();
        pending
            .start(move || open_endpoint(&opened, &endpoint, Duration::ZERO))
            .unwrap();
        reporter.send(AgentEvent::Ready { uptime_ms: 2500 });
        assert!(reporter.flush(Duration::from_secs(5)));

        let written = fs::read_to_string(layout.dev.join("vport0p1")).unwrap();
        assert_eq!(
            written,
            "{\"event\":\"failed\",\"step\":\"network\",\"error\":\"no ethernet interface\"}\n\
             {\"event\":\"ready\",\"uptime_ms\":2500}\n"
        );
    }

    #[test]
    fn firecracker_without_a_vsock_host_still_answers_flush() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let endpoint = Endpoint::for_vm(Some(VmType::Firecracker));
        assert_eq!(endpoint, Endpoint::Vsock);
        let (reporter, pending) = reporter();
        pending
            .start(move || open_endpoint(&layout, &endpoint, Duration::ZERO))
            .unwrap();
        reporter.send(AgentEvent::ShuttingDown);
        assert!(reporter.flush(Duration::from_secs(5)));
    }

    /// What a node listening on a Unix socket received: its lines, per connection.
    fn accept_lines(listener: &UnixListener, count: usize) -> Vec<String> {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let lines = BufReader::new(conn).lines().take(count);
        lines.map(|l| l.unwrap()).collect()
    }

    /// A [`Reconnecting`] transport over a Unix socket at `path`, counting its attempts.
    fn unix_transport(
        path: &Path,
        first_wait: Duration,
    ) -> (Reconnecting<UnixStream>, Arc<AtomicUsize>) {
        let attempts = Arc::new(AtomicUsize::new(0));
        let (path, counted) = (path.to_path_buf(), attempts.clone());
        let connect = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            UnixStream::connect(&path)
        };
        (
            Reconnecting::new("unix".into(), first_wait, connect),
            attempts,
        )
    }

    #[test]
    fn first_connection_waits_for_the_node_and_events_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let (transport, attempts) = unix_transport(&socket, Duration::from_secs(10));
        let (reporter, pending) = reporter();
        reporter.send(AgentEvent::Ready { uptime_ms: 1 });
        reporter.send(AgentEvent::ShuttingDown);
        pending
            .start(move || Some(Box::new(transport) as Box<_>))
            .unwrap();

        // The node starts listening only after the guest's first attempts failed.
        std::thread::sleep(Duration::from_millis(150));
        let listener = UnixListener::bind(&socket).unwrap();
        assert_eq!(
            accept_lines(&listener, 2),
            [
                r#"{"event":"ready","uptime_ms":1}"#,
                r#"{"event":"shutting_down"}"#
            ]
        );
        let tried = attempts.load(Ordering::SeqCst);
        // Retried, but with pauses: no busy loop while the node is not there.
        assert!((2..=10).contains(&tried), "{tried} attempts in 150 ms");
    }

    #[test]
    fn a_closed_connection_is_reopened_for_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (transport, attempts) = unix_transport(&socket, Duration::from_secs(10));
        let (reporter, pending) = reporter();
        pending
            .start(move || Some(Box::new(transport) as Box<_>))
            .unwrap();

        reporter.send(AgentEvent::Ready { uptime_ms: 1 });
        assert_eq!(accept_lines(&listener, 1).len(), 1); // and the node closes it
        reporter.send(AgentEvent::Refreshed { uptime_ms: 2 });
        assert_eq!(
            accept_lines(&listener, 1),
            [r#"{"event":"refreshed","uptime_ms":2}"#]
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn after_giving_up_events_are_dropped_until_the_node_listens_again() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let (transport, attempts) = unix_transport(&socket, Duration::from_millis(100));
        let (reporter, pending) = reporter();
        pending
            .start(move || Some(Box::new(transport) as Box<_>))
            .unwrap();

        let started = Instant::now();
        reporter.send(AgentEvent::Ready { uptime_ms: 1 });
        assert!(reporter.flush(Duration::from_secs(5)));
        assert!(started.elapsed() >= Duration::from_millis(70));
        let after_first_wait = attempts.load(Ordering::SeqCst);
        reporter.send(AgentEvent::ShuttingDown);
        assert!(reporter.flush(Duration::from_secs(5)));
        assert_eq!(attempts.load(Ordering::SeqCst), after_first_wait + 1);

        let listener = UnixListener::bind(&socket).unwrap();
        reporter.send(AgentEvent::Refreshed { uptime_ms: 3 });
        assert_eq!(
            accept_lines(&listener, 1),
            [r#"{"event":"refreshed","uptime_ms":3}"#]
        );
    }
}
