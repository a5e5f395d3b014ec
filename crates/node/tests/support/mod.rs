//! A node under test: real network namespaces, a real `boxcutter-node run` process, real
//! guests. Layout (all created by the test, all removed on drop, even after a panic):
//!
//! ```text
//!  test process (root ns) ──mgmt veth 10.<n>.0.0/30──► node ns ──uplink veth──► inet ns
//!                                                       │ agent :8800, TAPs,      "internet":
//!                                                       │ metadata, DNS           HTTP + DNS
//! ```
//! The "internet" namespace stands in for the outside world: an HTTP server that records
//! who called it and a DNS responder that answers every A query with one address.

#![allow(dead_code, clippy::unwrap_used)]

pub mod guest_sandbox;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxcutter_auth::ClusterSecret;
use boxcutter_net::{Netns, NetnsName};
use boxcutter_types::api::{ApiError, ProgressLine};
use boxcutter_types::{VmRecord, VmSpec};

pub const CACHE_DIR: &str = "/var/cache/boxcutter";
pub const INET_HTTP_PORT: u16 = 8080;

/// The golden image, built or reused.
pub fn test_image() -> PathBuf {
    let out = Path::new(CACHE_DIR).join("test-image");
    let exe = std::env::current_exe().unwrap();
    let agent = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("boxcutter-guest");
    assert!(
        agent.is_file(),
        "{} missing: cargo build --workspace",
        agent.display()
    );
    let config = boxcutter_image::ImageBuildConfig::from_host(agent, CACHE_DIR.into()).unwrap();
    boxcutter_image::build_image(&config, &out).unwrap();
    out
}

/// The `fake-firecracker` test double, built with the workspace's tests.
pub fn fake_firecracker() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let fake = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("fake-firecracker");
    assert!(
        fake.is_file(),
        "{} missing: cargo build -p boxcutter-vmm --features fake-firecracker",
        fake.display()
    );
    fake
}

fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("boxcutter-node")
}

/// Runs `program args` inside `ns` (network namespace only) and returns its output.
pub fn in_ns(ns: &Netns, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name().as_str(), program])
        .args(args)
        .output()
        .unwrap()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has entered `ns`.
pub fn with_netns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(ns).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns affects only this scoped thread.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    })
}

/// Who called the internet's HTTP server, by source address.
pub type Callers = Arc<Mutex<Vec<Ipv4Addr>>>;

pub struct TestNode {
    pub tag: String,
    pub node_ns: Netns,
    pub inet_ns: Netns,
    pub dir: tempfile::TempDir,
    pub mgmt_node_ip: Ipv4Addr,
    pub inet_ip: Ipv4Addr,
    pub callers: Callers,
    pub secret: ClusterSecret,
    agent: Option<Child>,
    agent_args: Vec<String>,
    agent_env: Vec<(String, String)>,
    host_veth: String,
    client: reqwest::Client,
}

impl TestNode {
    /// Builds the namespaces and starts the agent.
    pub async fn start(tag: &str, octet: u8) -> Self {
        Self::start_with(tag, octet, &[]).await
    }

    /// [`TestNode::start`], passing `agent_args` to every `boxcutter-node run`.
    pub async fn start_with(tag: &str, octet: u8, agent_args: &[&str]) -> Self {
        Self::start_with_env(tag, octet, agent_args, &[]).await
    }

    /// [`TestNode::start_with`], with `env` set for the agent (and so for what it runs).
    pub async fn start_with_env(
        tag: &str,
        octet: u8,
        agent_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let image = test_image();
        let pid = std::process::id();
        let node_ns = Netns::ensure(NetnsName::new(format!("bc-{tag}-n{pid}")).unwrap()).unwrap();
        let inet_ns = Netns::ensure(NetnsName::new(format!("bc-{tag}-i{pid}")).unwrap()).unwrap();
        let host_veth = format!("bcm{octet}-{}", pid % 10000);
        let dir = tempfile::Builder::new()
            .prefix("boxcutter-node-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let secret = ClusterSecret::load_or_create(&dir.path().join("secret")).unwrap();
        let mut node = Self {
            tag: tag.into(),
            node_ns,
            inet_ns,
            dir,
            mgmt_node_ip: Ipv4Addr::new(10, octet, 0, 2),
            inet_ip: Ipv4Addr::new(10, octet, 1, 2),
            callers: Callers::default(),
            secret,
            agent: None,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
            agent_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            host_veth,
            client: reqwest::Client::new(),
        };
        node.wire(octet);
        node.start_internet();
        node.spawn_agent(&image);
        node.wait_healthy().await;
        node
    }

    fn wire(&self, octet: u8) {
        let (n, i) = (self.node_ns.name().as_str(), self.inet_ns.name().as_str());
        let hv = self.host_veth.as_str();
        ip(&[
            "link", "add", hv, "type", "veth", "peer", "name", "mgmt0", "netns", n,
        ]);
        ip(&["addr", "add", &format!("10.{octet}.0.1/30"), "dev", hv]);
        ip(&["link", "set", hv, "up"]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("10.{octet}.0.2/30"),
            "dev",
            "mgmt0",
        ]);
        ip(&["-n", n, "link", "set", "mgmt0", "up"]);
        ip(&[
            "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", i,
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("10.{octet}.1.1/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", n, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            i,
            "addr",
            "add",
            &format!("10.{octet}.1.2/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", i, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{octet}.1.2"),
        ]);
        // The test process reaches guests' SSH through the node.
        ip(&[
            "route",
            "replace",
            &format!("10.{}.0.0/16", 200 + octet % 50),
            "via",
            &format!("10.{octet}.0.2"),
        ]);
    }

    /// The guest address space of this node: 10.(200+octet%50).0.0/16.
    pub fn guest_range(&self) -> String {
        format!("10.{}.0.0/16", self.mgmt_node_ip.octets()[1] % 50 + 200)
    }

    /// The n-th guest subnet.
    pub fn subnet(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.mgmt_node_ip.octets()[1] % 50 + 200, 0, n * 4)
    }

    fn start_internet(&self) {
        let ns = self.inet_ns.path();
        let callers = self.callers.clone();
        let inet_ip = self.inet_ip;
        std::thread::spawn(move || {
            with_netns(&ns, || {
                http_server(SocketAddr::from((inet_ip, INET_HTTP_PORT)), callers)
            })
        });
        let ns = self.inet_ns.path();
        std::thread::spawn(move || {
            with_netns(&ns, || dns_responder(SocketAddr::from((inet_ip, 53))))
        });
    }

    pub fn spawn_agent(&mut self, image: &Path) {
        let log = std::fs::File::create(self.dir.path().join("agent.log")).unwrap();
        let mut cmd = Command::new(node_binary());
        cmd.args([
            "run",
            "--id",
            &format!("node-{}", self.tag),
            "--listen",
            "0.0.0.0:8800",
        ])
        .arg("--data-dir")
        .arg(self.dir.path().join("data"))
        .arg("--image")
        .arg(image)
        .arg("--secret-file")
        .arg(self.dir.path().join("secret"))
        .arg("--run-dir")
        .arg(self.dir.path().join("run"))
        .args(["--guest-range", &self.guest_range(), "--uplink", "eth0"])
        .args([
            "--block",
            &format!("10.{}.0.0/24", self.mgmt_node_ip.octets()[1]),
        ])
        .args(["--force-loop-pool", "--pool-size", "40G"])
        .args(["--dns-upstream", &format!("{}:53", self.inet_ip)])
        .args(&self.agent_args)
        .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info,boxcutter_node=debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
        let ns_path = self.node_ns.path();
        let _ns = boxcutter_sys::proc::place_child(&mut cmd, Some(&ns_path), false).unwrap();
        self.agent = Some(cmd.spawn().unwrap());
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = self.get("/v1/health").await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("agent never became healthy:\n{}", self.agent_log());
    }

    /// SIGKILLs the agent (guests keep running).
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:8800{path}", self.mgmt_node_ip)
    }

    pub fn token(&self) -> String {
        self.secret.issue("node", 600)
    }

    pub async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .get(self.url(path))
            .bearer_auth(self.token())
            .send()
            .await
    }

    pub async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(self.token())
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap()
    }

    /// Creates a VM and reads the progress stream to its end.
    pub async fn create(&self, spec: &VmSpec) -> Result<VmRecord, ApiError> {
        let body = serde_json::to_string(spec).unwrap();
        self.stream("/v1/vms", &body).await
    }

    /// Posts to a streaming endpoint and returns its final line.
    pub async fn stream(&self, path: &str, body: &str) -> Result<VmRecord, ApiError> {
        let response = self.post(path, body).await;
        if !response.status().is_success() {
            return Err(response.json::<ApiError>().await.unwrap());
        }
        let text = response.text().await.unwrap();
        let last = text.lines().last().unwrap_or_default();
        match serde_json::from_str::<ProgressLine>(last).unwrap() {
            ProgressLine::Done { vm } => Ok(*vm),
            ProgressLine::Failed { error } => Err(error),
            ProgressLine::Progress { .. } => panic!("stream ended early:\n{text}"),
        }
    }

    pub async fn record(&self, name: &str) -> VmRecord {
        self.get(&format!("/v1/vms/{name}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill_agent();
        let vms = self.data_dir().join("pool/vms");
        let needle = vms.to_string_lossy().into_owned();
        kill_processes_mentioning(&needle);
        // Firecracker's command line names its socket, in the run directory.
        kill_processes_mentioning(&self.dir.path().join("run").to_string_lossy());
        let _ = Command::new("ip")
            .args(["route", "del", &self.guest_range()])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .status();
        let _ = self.node_ns.delete();
        let _ = self.inet_ns.delete();
        let pool = self.data_dir().join("pool");
        let _ = Command::new("umount").arg("-l").arg(&pool).status();
    }
}

/// SIGKILLs every process whose command line contains `needle`, and waits for them.
pub fn kill_processes_mentioning(needle: &str) {
    for pid in pids_mentioning(needle) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_mentioning(needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// Answers every request with 200 "hello from the internet" and records the caller.
fn http_server(addr: SocketAddr, callers: Callers) {
    let listener = TcpListener::bind(addr).unwrap();
    for conn in listener.incoming().flatten() {
        if let SocketAddr::V4(peer) = conn.peer_addr().unwrap() {
            callers.lock().unwrap().push(*peer.ip());
        }
        let mut conn = conn;
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        let body = "hello from the internet\n";
        let _ = write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Answers every DNS query with an A record 10.99.99.99 (the stand-in for the world's DNS).
fn dns_responder(addr: SocketAddr) {
    let socket = UdpSocket::bind(addr).unwrap();
    let mut buf = [0u8; 512];
    while let Ok((len, from)) = socket.recv_from(&mut buf) {
        if len < 12 {
            continue;
        }
        let mut answer = buf[..len].to_vec();
        answer[2] = 0x81; // response, recursion desired
        answer[3] = 0x80; // recursion available, no error
        answer[6..8].copy_from_slice(&1u16.to_be_bytes()); // one answer
        answer[8..12].fill(0);
        answer.truncate(12 + question_len(&buf[12..len]));
        answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 99, 99, 99]);
        let _ = socket.send_to(&answer, from);
    }
}

fn question_len(q: &[u8]) -> usize {
    let mut i = 0;
    while i < q.len() && q[i] != 0 {
        i += q[i] as usize + 1;
    }
    (i + 5).min(q.len())
}

/// SSH into a guest as `dev`, from the test process (through the node's forward rule).
pub fn ssh(ip: Ipv4Addr, key: &Path, known_hosts: &Path, remote: &str) -> (bool, String) {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .arg(format!("dev@{ip}"))
        .arg(remote)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success(), text)
}

/// The ed25519 key pair `dir/id_ed25519`, made unless it is there: (private key file,
/// public key line).
pub fn keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    if !key.exists() {
        keygen(&key);
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().into())
}

/// Makes a fresh ed25519 key pair with `ssh-keygen`: `key` and `key.pub`.
pub fn keygen(key: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(key)
        .status()
        .unwrap();
    assert!(status.success());
}
