//! The real `boxcutter-orchestrator` binary, SIGKILLed and restarted: nothing is lost,
//! and VMs a killed orchestrator left half-done are reconciled with their node. Nodes are
//! stand-ins (see `support::stand_in`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxcutter_auth::ClusterSecret;
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{NodeInfo, NodeState, OrchLine, VmInfo, USER_HEADER};
use boxcutter_types::VmState;
use serde_json::json;
use support::{keygen, StandInNode};

/// `boxcutter-orchestrator run` as a child process.
struct Daemon {
    child: Child,
    url: String,
    secret: ClusterSecret,
    client: reqwest::Client,
}

impl Daemon {
    async fn start(dir: &Path) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("orchestrator.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_boxcutter-orchestrator"))
            .arg("run")
            .arg("--db")
            .arg(dir.join("registry.db"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--secret-file")
            .arg(secret_file(dir))
            .args([
                "--guest-range",
                "10.240.0.0/24",
                "--keys-url",
                "http://127.0.0.1:9",
            ])
            .args(["--heartbeat-secs", "1", "--heartbeat-misses", "2"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let daemon = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            secret: ClusterSecret::load_or_create(&secret_file(dir)).unwrap(),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.nodes().await.is_err() {
            assert!(Instant::now() < deadline, "orchestrator never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(self.secret.issue("orchestrator", 60))
            .header(USER_HEADER, "admin")
    }

    async fn nodes(&self) -> reqwest::Result<Vec<NodeInfo>> {
        self.request(reqwest::Method::GET, "/v1/nodes")
            .send()
            .await?
            .json()
            .await
    }

    async fn vms(&self) -> Vec<VmInfo> {
        let response = self.request(reqwest::Method::GET, "/v1/vms").send().await;
        response.unwrap().json().await.unwrap()
    }

    async fn create(&self, name: &str) -> VmInfo {
        let response = self
            .request(reqwest::Method::POST, "/v1/vms")
            .json(&json!({"name": name}));
        let text = response.send().await.unwrap().text().await.unwrap();
        match serde_json::from_str(text.lines().last().unwrap()).unwrap() {
            OrchLine::Done { vm } => *vm,
            other => panic!("{other:?}"),
        }
    }

    async fn wait_node_up(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let nodes = self.nodes().await.unwrap();
            if nodes.iter().any(|n| n.id == id && n.state == NodeState::Up) {
                return;
            }
            assert!(Instant::now() < deadline, "node {id} never up: {nodes:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secret_file(dir: &Path) -> PathBuf {
    dir.join("cluster.key")
}

fn add_admin(dir: &Path, key_file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_boxcutter-orchestrator"))
        .arg("add-admin")
        .arg("--db")
        .arg(dir.join("registry.db"))
        .args(["--name", "admin", "--key-file"])
        .arg(key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Inserts a row as an orchestrator killed mid-create would have left it.
fn leave_half_created(dir: &Path, name: &str, subnet: u32) {
    let conn = rusqlite::Connection::open(dir.join("registry.db")).unwrap();
    conn.execute(
        "INSERT INTO vms (name, owner, node, subnet, type, vcpus, ram_mib, disk_bytes, mode,
                          state, created_at)
         VALUES (?1, 'admin', 'node-1', ?2, 'qemu', 1, 512, 1073741824, 'normal', 'creating', 0)",
        rusqlite::params![name, subnet],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_orchestrator_restarts_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let secret = ClusterSecret::load_or_create(&secret_file(dir.path())).unwrap();
    let (_, key) = keygen(dir.path(), "admin");
    std::fs::write(dir.path().join("admin.pub"), &key).unwrap();
    let said = add_admin(dir.path(), &dir.path().join("admin.pub"));
    assert_eq!(said.trim(), "admin is an admin with 1 key(s)");
    assert_eq!(
        add_admin(dir.path(), &dir.path().join("admin.pub")),
        said,
        "not idempotent"
    );

    let node = StandInNode::start("node-1", &secret, 16384, &[VmType::Qemu]).await;
    let mut daemon = Daemon::start(dir.path()).await;
    let register = json!({"id": "node-1", "url": node.url()});
    let response = daemon
        .request(reqwest::Method::POST, "/v1/nodes")
        .json(&register);
    assert!(response.send().await.unwrap().status().is_success());
    daemon.wait_node_up("node-1").await;
    daemon.create("one").await;
    daemon.create("two").await;
    let before = daemon.vms().await;

    daemon.kill();
    // While it is dead: one create it never finished, and one the node did finish.
    leave_half_created(dir.path(), "never-made", 0x0af0_0040);
    leave_half_created(dir.path(), "made-meanwhile", 0x0af0_0044);
    node.adopt_running("made-meanwhile", "10.240.0.68");

    let daemon = Daemon::start(dir.path()).await;
    daemon.wait_node_up("node-1").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let vms = daemon.vms().await;
        let reconciled = vms.iter().all(|v| v.state == VmState::Running)
            && !vms.iter().any(|v| v.name.as_str() == "never-made");
        if reconciled || Instant::now() > deadline {
            break vms;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = after.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["made-meanwhile", "one", "two"]);
    assert_eq!(&after[1..], &before[..], "a VM changed across the restart");
    let three = daemon.create("three").await;
    assert!(
        after.iter().all(|v| v.ip != three.ip),
        "an address was handed out twice"
    );
    let log = std::fs::read_to_string(dir.path().join("orchestrator.log")).unwrap();
    assert!(log.contains("unfinished VM unknown to its node"), "{log}");
}
