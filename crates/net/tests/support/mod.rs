//! Test support: namespaces that are deleted even when a test fails, listeners and probes
//! that run inside a namespace (a thread `setns`es into it; sockets keep the namespace
//! they were created in), and a table of expectations checked all at once, in parallel,
//! so the negative cases cost one timeout in total.

#![allow(dead_code)] // each test binary uses its own part

use std::fs::File;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boxcutter_net::{IfName, Netns, NetnsName};
use nix::sched::CloneFlags;

/// How long a probe waits before it calls a destination unreachable. Reachable ones
/// answer in well under a millisecond on veth pairs.
pub const TIMEOUT: Duration = Duration::from_millis(1000);

/// Namespaces deleted on drop, with every device and nft table inside them.
pub struct Namespaces(Vec<Netns>);

impl Namespaces {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Creates namespace `bcfw<pid>-<role>` and takes charge of deleting it.
    pub fn add(&mut self, role: &str) -> Netns {
        let name = NetnsName::new(format!("bcfw{}-{role}", std::process::id())).unwrap();
        let ns = Netns::ensure(name).unwrap();
        self.0.push(ns.clone());
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            if let Err(error) = ns.delete() {
                eprintln!("cannot delete {}: {error}", ns.name());
            }
        }
    }
}

pub fn ifname(name: &str) -> IfName {
    IfName::new(name).unwrap()
}

/// Runs `ip -n <ns> <args>`, panicking with its stderr on failure.
pub fn ip(ns: &Netns, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns.name().as_str()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs nft with `script` (a command or a file's text) inside `ns`: its stdout.
pub fn nft(ns: &Netns, script: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name().as_str(), "nft", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `f` on a thread inside `ns`.
pub fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(ns.path()).unwrap();
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// Who sent what to a listener.
pub type Seen = Arc<Mutex<Vec<(SocketAddr, String)>>>;

/// A TCP or UDP listener in some namespace recording its peers until dropped.
pub struct Listener {
    pub seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Accepts TCP connections on `addr` in `ns`, recording each peer.
    pub fn tcp(ns: &Netns, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let socket = in_ns(ns, || TcpListener::bind(addr)).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self::serve(move || match socket.accept() {
            Ok((_, peer)) => Some((peer, String::new())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("accept: {e}"),
        })
    }

    /// Receives UDP datagrams on `addr` in `ns`, recording each peer and payload.
    pub fn udp(ns: &Netns, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let socket = in_ns(ns, || UdpSocket::bind(addr)).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self::serve(move || {
            let mut buf = [0u8; 512];
            match socket.recv_from(&mut buf) {
                Ok((n, peer)) => Some((peer, String::from_utf8_lossy(&buf[..n]).into_owned())),
                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                Err(e) => panic!("recv: {e}"),
            }
        })
    }

    fn serve(mut next: impl FnMut() -> Option<(SocketAddr, String)> + Send + 'static) -> Self {
        let (seen, stop) = (Seen::default(), Arc::new(AtomicBool::new(false)));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match next() {
                    Some(entry) => seen2.lock().unwrap().push(entry),
                    None => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One expectation: a probe and whether it should get through.
pub struct Check {
    what: String,
    expect: bool,
    probe: Box<dyn FnOnce() -> bool + Send>,
}

/// A TCP connection from `from` to `to` completes (or, with `expect` false, does not).
pub fn tcp(from: &Netns, to: &str, expect: bool) -> Check {
    let (ns, addr) = (from.clone(), to.parse::<SocketAddr>().unwrap());
    Check {
        what: format!("{}: tcp {to}", from.name()),
        expect,
        probe: Box::new(move || in_ns(&ns, || TcpStream::connect_timeout(&addr, TIMEOUT).is_ok())),
    }
}

/// An ICMP echo from `from` to `to` (IPv4 or IPv6) is answered.
pub fn ping(from: &Netns, to: &str, expect: bool) -> Check {
    let (ns, to) = (from.clone(), to.to_string());
    let secs = TIMEOUT.as_secs().max(1).to_string();
    Check {
        what: format!("{}: ping {to}", from.name()),
        expect,
        probe: Box::new(move || {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns.name().as_str()]);
            cmd.args(["busybox", "ping", "-c", "1", "-W", &secs, &to]);
            cmd.output().unwrap().status.success()
        }),
    }
}

/// A UDP datagram sent from `from`, with source address `source`, to `to` reaches the
/// listener that records into `seen` (matched by a payload unique to this check).
pub fn udp(from: &Netns, source: Ipv4Addr, to: &str, seen: &Seen, expect: bool) -> Check {
    let (ns, addr) = (from.clone(), to.parse::<SocketAddr>().unwrap());
    let (seen, payload) = (
        seen.clone(),
        format!("{} from {source} to {to}", from.name()),
    );
    Check {
        what: format!("{}: udp {source} -> {to}", from.name()),
        expect,
        probe: Box::new(move || {
            in_ns(&ns, || {
                let socket = UdpSocket::bind((source, 0)).unwrap();
                socket.send_to(payload.as_bytes(), addr).unwrap();
            });
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                if seen.lock().unwrap().iter().any(|(_, p)| *p == payload) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        }),
    }
}

/// Runs every check at once and fails listing each one that went the wrong way.
pub fn assert_all(checks: Vec<Check>) {
    let failures: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = checks
            .into_iter()
            .map(|c| {
                let (what, expect) = (c.what, c.expect);
                (what, expect, s.spawn(c.probe))
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(what, expect, probe)| {
                let got = probe.join().unwrap();
                let verdict = |b| if b { "reachable" } else { "blocked" };
                (got != expect)
                    .then(|| format!("{what}: expected {}, was {}", verdict(expect), verdict(got)))
            })
            .collect()
    });
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
