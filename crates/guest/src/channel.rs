//! Boot step 7: the agent channel to the node, one JSON [`AgentEvent`] per line.
//!
//! Ownership: boot steps and the init loop hold a [`Reporter`] and never block on the
//! channel; one writer thread owns the [`Transport`]. Writing to a virtio-serial port
//! blocks while nobody on the host has it open, so only that thread ever waits on it.
//! Events sent before the port is found (or before the host connects) queue up in order.
//!
//! Transports: QEMU guests use the virtio-serial port named [`AGENT_PORT_NAME`].
//! Limitation: Firecracker has no virtio-serial; its channel will be vsock, which is not
//! implemented yet, so a Firecracker guest's events reach only its console and its node
//! must judge readiness another way (for example by connecting to its sshd).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boxcutter_types::guest::{AgentEvent, VmType, AGENT_PORT_NAME};

use crate::layout::Layout;

/// How long the writer looks for the port before giving up; the port normally exists
/// before the agent starts, but virtio-console announces port names asynchronously.
pub const PORT_WAIT: Duration = Duration::from_secs(10);

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
    /// Opens the port for writing. A port may be open only once at a time.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(VirtioSerial {
            path: path.to_path_buf(),
            file,
        })
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
    /// Limitation: vsock, for Firecracker, is not implemented; events are only logged.
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

/// Opens the transport for `endpoint`, waiting up to `wait` for a virtio-serial port.
pub fn open_endpoint(
    layout: &Layout,
    endpoint: &Endpoint,
    wait: Duration,
) -> Option<Box<dyn Transport>> {
    let Endpoint::VirtioSerial { name } = endpoint else {
        warn!("agent channel: vsock is not implemented; events go to the console only");
        return None;
    };
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
    match VirtioSerial::open(&path) {
        Ok(port) => Some(Box::new(port)),
        Err(e) => {
            warn!("agent channel: cannot open {}: {e}", path.display());
            None
        }
    }
}

fn write_events(rx: Receiver<Message>, mut transport: Option<Box<dyn Transport>>) {
    if let Some(t) = &transport {
        info!("agent channel: writing to {}", t.describe());
    }
    let mut failed = false;
    for message in rx {
        match message {
            Message::Flush(done) => {
                let _ = done.send(());
            }
            Message::Event(event) => {
                let Some(t) = transport.as_mut() else {
                    continue;
                };
                if let Err(e) = t.write_line(to_line(&event).as_bytes()) {
                    // Logged once: the node cannot read a broken channel anyway.
                    if !std::mem::replace(&mut failed, true) {
                        warn!("agent channel: write to {} failed: {e}", t.describe());
                    }
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
    fn firecracker_has_no_transport_yet_but_flush_still_answers() {
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
}
