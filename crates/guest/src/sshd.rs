//! Boot step 6 and after: OpenSSH's sshd as a child of the agent.
//!
//! Boot launches it as soon as its host key is installed, does its other steps while sshd
//! starts, then waits until it accepts TCP connections on `127.0.0.1:22`; ready is
//! reported only then. Afterwards the init loop owns its pid through a [`Supervisor`]: when
//! sshd dies it is restarted, at most [`RestartPolicy::max_starts`] times a minute, so a
//! crash loop cannot flood the console or the CPU.
//!
//! A refresh installs a new host key and has sshd reload it: it asks the init loop (which
//! alone knows sshd's pid) with a SIGHUP to PID 1, the loop passes SIGHUP on to sshd, and
//! sshd re-executes itself. [`await_relisten`] tells when that is done: sshd's listening
//! sockets are all new ones.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::console;
use crate::files;
use crate::layout::Layout;
use crate::programs;

/// The sshd binary; it must be started by absolute path to re-exec itself per connection.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Where readiness is checked.
pub const SSH_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 22);

/// How long sshd may take to listen; generous, for slow TCG guests.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long sshd may take to listen again after a reload.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// `TCP_LISTEN` in the `st` column of `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Starting sshd failed.
#[derive(Debug, thiserror::Error)]
pub enum SshdError {
    /// Its privilege separation directory could not be made.
    #[error("prepare {path}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It could not be started.
    #[error("start {SSHD}")]
    Spawn(#[source] io::Error),
    /// It exited before accepting connections.
    #[error("sshd exited before accepting connections ({status})")]
    Exited {
        /// Its exit status.
        status: String,
    },
    /// It did not accept connections in time.
    #[error("sshd did not accept connections on {SSH_ADDR} within {waited_ms} ms")]
    Timeout {
        /// How long we waited.
        waited_ms: u64,
    },
    /// Its status could not be read.
    #[error("check on sshd")]
    Wait(#[source] io::Error),
    /// The init loop could not be asked to reload sshd.
    #[error("ask init to reload sshd")]
    Signal(#[source] nix::Error),
    /// The listening sockets could not be read.
    #[error("read {path}")]
    Sockets {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It did not listen on new sockets in time after a reload.
    #[error("sshd did not listen again on port {port} within {waited_ms} ms of its reload")]
    Reload {
        /// The port.
        port: u16,
        /// How long we waited.
        waited_ms: u64,
    },
}

/// Prepares and starts sshd, without waiting for it.
pub fn launch(layout: &Layout) -> Result<Child, SshdError> {
    prepare(layout)?;
    spawn()
}

/// Waits until `child` accepts connections on [`SSH_ADDR`]; a sshd that dies or hangs is
/// reported (and a hung one killed, so the supervisor starts a fresh one).
pub fn await_ready(mut child: Child) -> Result<Child, SshdError> {
    if let Err(e) = wait_accepting(&mut child, SSH_ADDR, READY_TIMEOUT) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(child)
}

/// Makes sshd's privilege separation directory, `/run/sshd` (mode 0755).
pub fn prepare(layout: &Layout) -> Result<(), SshdError> {
    let path = layout.file("/run/sshd");
    files::dir_ensure(&path, 0o755, None).map_err(|source| SshdError::Prepare { path, source })
}

/// Starts `sshd -D -e`: in the foreground, logging to the console.
pub fn spawn() -> Result<Child, SshdError> {
    programs::command(SSHD)
        .args(["-D", "-e"])
        .stdout(console::child_stdio())
        .stderr(console::child_stdio())
        .spawn()
        .map_err(SshdError::Spawn)
}

/// Polls `addr` until a TCP connection succeeds, `child` exits or `timeout` passes.
pub fn wait_accepting(
    child: &mut Child,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), SshdError> {
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait().map_err(SshdError::Wait)? {
            return Err(SshdError::Exited {
                status: status.to_string(),
            });
        }
        if started.elapsed() >= timeout {
            return Err(SshdError::Timeout {
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asks the init loop to reload sshd: a SIGHUP to our own process, which the loop reads
/// from its signalfd and passes on to sshd. Only for PID 1: anywhere else the signal
/// would reach whatever this process does with SIGHUP.
pub fn request_reload() -> Result<(), SshdError> {
    kill(Pid::this(), Signal::SIGHUP).map_err(SshdError::Signal)
}

/// The socket inodes of the TCP listeners on `port`, IPv4 and IPv6, from `proc/net`.
pub fn listeners(proc: &Path, port: u16) -> Result<Vec<u64>, SshdError> {
    let mut inodes = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        let path = proc.join(table);
        match std::fs::read_to_string(&path) {
            Ok(text) => inodes.extend(parse_listeners(&text, port)),
            // A kernel without IPv6 has no tcp6 table.
            Err(e) if e.kind() == io::ErrorKind::NotFound && table == "net/tcp6" => {}
            Err(source) => return Err(SshdError::Sockets { path, source }),
        }
    }
    Ok(inodes)
}

/// The inodes of the sockets listening on `port` in a `/proc/net/tcp`-format `table`:
/// `sl local_address rem_address st ... inode`, addresses as `HEXADDR:HEXPORT`.
pub fn parse_listeners(table: &str, port: u16) -> Vec<u64> {
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&TCP_LISTEN);
            let on_port = fields.get(1).is_some_and(|local| local.ends_with(&port));
            (listening && on_port).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// Waits until something listens on `port` and none of its sockets is among `before`
/// (the listeners before a reload): sshd has re-executed itself and loaded its keys.
pub fn await_relisten(
    proc: &Path,
    port: u16,
    before: &[u64],
    timeout: Duration,
) -> Result<(), SshdError> {
    let started = Instant::now();
    loop {
        let now = listeners(proc, port)?;
        if !now.is_empty() && now.iter().all(|inode| !before.contains(inode)) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(SshdError::Reload {
                port,
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When a dead sshd may be started again.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// The least time between an exit and the next start.
    pub delay: Duration,
    /// The window over which starts are counted.
    pub window: Duration,
    /// Starts allowed per window.
    pub max_starts: usize,
    starts: VecDeque<Instant>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            delay: Duration::from_secs(1),
            window: Duration::from_secs(60),
            max_starts: 5,
            starts: VecDeque::new(),
        }
    }
}

impl RestartPolicy {
    /// Notes that sshd was started at `at`.
    pub fn record_start(&mut self, at: Instant) {
        self.starts.push_back(at);
        while self.starts.len() > self.max_starts {
            self.starts.pop_front();
        }
    }

    /// The earliest time sshd may be started again after it exited at `exited`.
    pub fn next_start(&self, exited: Instant) -> Instant {
        let after_delay = exited + self.delay;
        match self.starts.front() {
            Some(oldest) if self.starts.len() >= self.max_starts => {
                after_delay.max(*oldest + self.window)
            }
            _ => after_delay,
        }
    }
}

/// Keeps one sshd running after boot. The init loop reaps children and reports sshd's
/// exit here; [`Supervisor::restart_if_due`] starts a new one when the policy allows.
#[derive(Debug)]
pub struct Supervisor {
    pid: Option<Pid>,
    restart_at: Option<Instant>,
    policy: RestartPolicy,
}

impl Supervisor {
    /// Supervises the sshd boot started (`pid`, first started at `started`), or schedules a
    /// first start if boot could not start one.
    pub fn new(pid: Option<Pid>, started: Instant, policy: RestartPolicy) -> Self {
        let mut supervisor = Supervisor {
            pid,
            restart_at: None,
            policy,
        };
        supervisor.policy.record_start(started);
        if pid.is_none() {
            supervisor.restart_at = Some(supervisor.policy.next_start(started));
        }
        supervisor
    }

    /// The running sshd's pid.
    pub fn pid(&self) -> Option<Pid> {
        self.pid
    }

    /// Handles the exit of child `pid` at `now`; returns whether it was sshd.
    pub fn child_exited(&mut self, pid: Pid, now: Instant) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        self.restart_at = Some(self.policy.next_start(now));
        true
    }

    /// When the loop must wake to restart sshd, if it must.
    pub fn deadline(&self) -> Option<Instant> {
        self.restart_at
    }

    /// Starts sshd through `spawn` if a restart is due at `now`.
    pub fn restart_if_due(
        &mut self,
        now: Instant,
        spawn: impl FnOnce() -> Result<Pid, SshdError>,
    ) -> Option<Result<Pid, SshdError>> {
        if self.restart_at.is_none_or(|at| at > now) {
            return None;
        }
        self.policy.record_start(now);
        let result = spawn();
        match &result {
            Ok(pid) => {
                self.pid = Some(*pid);
                self.restart_at = None;
            }
            Err(_) => self.restart_at = Some(self.policy.next_start(now)),
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::Command;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn crash_loop_is_held_to_five_starts_a_minute() {
        let t0 = Instant::now();
        let mut policy = RestartPolicy::default();
        let mut now = t0;
        for _ in 0..4 {
            policy.record_start(now);
            let next = policy.next_start(now);
            assert_eq!(next, now + SEC, "early restarts wait only the delay");
            now = next;
        }
        policy.record_start(now);
        // Five starts within 4 s: the sixth waits until the first leaves the window.
        assert_eq!(policy.next_start(now), t0 + 60 * SEC);
    }

    #[test]
    fn supervisor_restarts_only_its_own_child_when_due() {
        let t0 = Instant::now();
        let sshd = Pid::from_raw(100);
        let mut sup = Supervisor::new(Some(sshd), t0, RestartPolicy::default());
        assert_eq!(sup.deadline(), None);
        assert!(!sup.child_exited(Pid::from_raw(7), t0));
        assert!(sup.child_exited(sshd, t0 + SEC));
        assert_eq!(sup.deadline(), Some(t0 + 2 * SEC));

        assert!(sup
            .restart_if_due(t0 + SEC, || panic!("too early"))
            .is_none());
        let started = sup.restart_if_due(t0 + 2 * SEC, || Ok(Pid::from_raw(101)));
        assert_eq!(started.unwrap().unwrap(), Pid::from_raw(101));
        assert_eq!(
            (sup.pid(), sup.deadline()),
            (Some(Pid::from_raw(101)), None)
        );
    }

    #[test]
    fn supervisor_retries_a_failed_start() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(None, t0, RestartPolicy::default());
        assert_eq!(sup.deadline(), Some(t0 + SEC));
        let failed = sup.restart_if_due(t0 + SEC, || Err(SshdError::Spawn(io::Error::other("x"))));
        assert!(failed.unwrap().is_err());
        assert_eq!(sup.deadline(), Some(t0 + 2 * SEC));
    }

    /// An address that refuses connections: bound, never listening. Its port stays
    /// taken, so a connect cannot get it as its own source port and "connect" to itself.
    fn refusing_addr() -> (std::os::fd::OwnedFd, SocketAddr) {
        use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType};
        use nix::sys::socket::{SockaddrIn, SockaddrLike};
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
        let bound: SockaddrIn = getsockname(fd.as_raw_fd()).unwrap();
        assert_eq!(bound.family(), Some(AddressFamily::Inet));
        (fd, SocketAddr::from((Ipv4Addr::LOCALHOST, bound.port())))
    }

    #[test]
    fn listeners_are_found_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
            retrnsmt   uid  timeout inode\n\
            0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1234 1\n\
            1: 0100007F:0016 0100007F:B2C4 01 00000000:00000000 00:00000000 00000000 0 0 999 1\n\
            2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 55 1\n";
        assert_eq!(parse_listeners(table, 22), [1234]);
        assert_eq!(parse_listeners(table, 8080), [55]);
        assert_eq!(parse_listeners(table, 2), Vec::<u64>::new());
    }

    #[test]
    fn relisten_is_seen_only_on_new_sockets() {
        let proc = Path::new("/proc");
        let old = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = old.local_addr().unwrap().port();
        let before = listeners(proc, port).unwrap();
        assert_eq!(before.len(), 1, "{before:?}");

        let err = await_relisten(proc, port, &before, Duration::from_millis(60)).unwrap_err();
        assert!(matches!(err, SshdError::Reload { .. }), "{err}");

        // As sshd's re-exec does: close the listener, then open a new one on the port.
        drop(old);
        let reopened = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            TcpListener::bind(("127.0.0.1", port)).unwrap()
        });
        await_relisten(proc, port, &before, 5 * SEC).unwrap();
        let new = reopened.join().unwrap();
        assert_ne!(listeners(proc, port).unwrap(), before);
        drop(new);
    }

    #[test]
    fn readiness_waits_for_a_listener_and_notices_a_dead_child() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sleeper = Command::new("sleep").arg("5").spawn().unwrap();
        wait_accepting(&mut sleeper, addr, SEC).unwrap();
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();

        let (_taken, refusing) = refusing_addr();
        let mut quitter = Command::new("false").spawn().unwrap();
        let err = wait_accepting(&mut quitter, refusing, 5 * SEC).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sshd exited before accepting connections (exit status: 1)"
        );
    }
}
