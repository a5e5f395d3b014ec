//! An orchestrator under test: a real registry file in a temp dir, the real API served
//! in-process on 127.0.0.1, stand-in nodes (see `stand_in`), and a local HTTP server that
//! serves users' public keys the way GitHub's `<login>.keys` does.

#![allow(dead_code, clippy::unwrap_used)]

pub mod stand_in;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use boxcutter_auth::ClusterSecret;
use boxcutter_orchestrator::{GuestRange, HeartbeatConfig, Orchestrator, OrchestratorConfig};
use boxcutter_types::api::ApiError;
use boxcutter_types::orch::{NodeInfo, NodeState, OrchLine, VmInfo, USER_HEADER};
use serde::de::DeserializeOwned;

#[allow(unused_imports)]
pub use stand_in::{Behaviour, StandInNode};

/// The guest range of every test cluster.
pub const GUEST_RANGE: &str = "10.240.0.0/24";

/// Heartbeats fast enough for tests: a node is down 2 × 200 ms after it goes silent.
pub const HEARTBEAT: HeartbeatConfig = HeartbeatConfig {
    interval: Duration::from_millis(200),
    misses: 2,
};

/// A fresh OpenSSH public key line (from `ssh-keygen`), and its private key's path.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}_ed25519"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// Serves `GET /<login>.keys` from a table, 404 for anyone else.
#[derive(Clone, Default)]
pub struct KeysServer {
    table: Arc<Mutex<HashMap<String, String>>>,
    addr: Option<SocketAddr>,
}

impl KeysServer {
    pub async fn start() -> Self {
        let table: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let app = axum::Router::new()
            .route("/{file}", axum::routing::get(serve_keys))
            .with_state(table.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            table,
            addr: Some(addr),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// Publishes `keys` (a file's text) as `login`'s keys.
    pub fn publish(&self, login: &str, keys: &str) {
        self.table
            .lock()
            .unwrap()
            .insert(format!("{login}.keys"), keys.into());
    }
}

async fn serve_keys(
    State(table): State<Arc<Mutex<HashMap<String, String>>>>,
    UrlPath(file): UrlPath<String>,
) -> axum::response::Response {
    match table.lock().unwrap().get(&file) {
        Some(text) => text.clone().into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// An orchestrator with an admin user `admin`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub secret: ClusterSecret,
    pub keys: KeysServer,
    pub admin_key: String,
    guest_range: GuestRange,
    orchestrator: Option<Orchestrator>,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Cluster {
    /// Starts an orchestrator and registers `nodes` (waiting until they are up).
    pub async fn start(secret: &ClusterSecret, nodes: &[&StandInNode]) -> Self {
        Self::start_with_range(secret, nodes, GUEST_RANGE).await
    }

    /// [`Self::start`] with guest subnets from `range`.
    pub async fn start_with_range(
        secret: &ClusterSecret,
        nodes: &[&StandInNode],
        range: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (_, admin_key) = keygen(dir.path(), "admin");
        let key_file = dir.path().join("admin.pub");
        std::fs::write(&key_file, &admin_key).unwrap();
        boxcutter_orchestrator::cluster::add_admin(&db_path(dir.path()), "admin", &key_file)
            .unwrap();
        let keys = KeysServer::start().await;
        let mut cluster = Self {
            dir,
            secret: secret.clone(),
            keys,
            admin_key,
            guest_range: range.parse().unwrap(),
            orchestrator: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            client: reqwest::Client::new(),
        };
        cluster.boot().await;
        for node in nodes {
            cluster.register(&node.id, &node.url()).await;
        }
        for node in nodes {
            cluster.wait_node(&node.id, NodeState::Up).await;
        }
        cluster
    }

    /// Starts the in-process orchestrator over the registry file.
    pub async fn boot(&mut self) {
        let config = OrchestratorConfig {
            db: db_path(self.dir.path()),
            secret: self.secret.clone(),
            guest_range: self.guest_range,
            keys_url: self.keys.url(),
            heartbeat: HEARTBEAT,
            route_guests: false,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let orchestrator = Orchestrator::start(config, listener).await.unwrap();
        self.addr = orchestrator.addr();
        self.orchestrator = Some(orchestrator);
    }

    /// Stops the in-process orchestrator.
    pub async fn halt(&mut self) {
        if let Some(o) = self.orchestrator.take() {
            o.shutdown().await;
        }
    }

    /// The admin's private key.
    pub fn admin_identity(&self) -> PathBuf {
        self.dir.path().join("admin_ed25519")
    }

    pub fn db(&self) -> PathBuf {
        db_path(self.dir.path())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with a cluster token, acting for `user` if given.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(self.secret.issue("orchestrator", 60));
        match user {
            Some(user) => request.header(USER_HEADER, user),
            None => request,
        }
    }

    /// `GET path` as `user`: the status and the body.
    pub async fn get<T: DeserializeOwned>(
        &self,
        user: Option<&str>,
        path: &str,
    ) -> Result<T, (u16, ApiError)> {
        answer(
            self.request(reqwest::Method::GET, path, user)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// `method path` with a JSON body as `user`.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        user: Option<&str>,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, (u16, ApiError)> {
        let request = self.request(method, path, user).json(&body);
        answer(request.send().await.unwrap()).await
    }

    /// `DELETE path` as `user`: the status (and error).
    pub async fn delete(&self, user: &str, path: &str) -> Result<(), (u16, ApiError)> {
        let response = self
            .request(reqwest::Method::DELETE, path, Some(user))
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            return Ok(());
        }
        Err((response.status().as_u16(), response.json().await.unwrap()))
    }

    /// Posts to a streaming endpoint; all the lines, or the up-front error.
    pub async fn stream(
        &self,
        user: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<Vec<OrchLine>, (u16, ApiError)> {
        let response = self
            .request(reqwest::Method::POST, path, Some(user))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err((status, response.json().await.unwrap()));
        }
        let text = response.text().await.unwrap();
        Ok(text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect())
    }

    /// Creates a VM and expects success: the VM and the progress messages.
    pub async fn create(&self, user: &str, body: serde_json::Value) -> (VmInfo, Vec<String>) {
        let lines = self.stream(user, "/v1/vms", body).await.unwrap();
        let messages = progress_messages(&lines);
        match lines.last() {
            Some(OrchLine::Done { vm }) => ((**vm).clone(), messages),
            other => panic!("create did not succeed: {other:?}\n{messages:#?}"),
        }
    }

    /// The names of the VMs `user` sees.
    pub async fn names(&self, user: &str) -> Vec<String> {
        let vms: Vec<VmInfo> = self.get(Some(user), "/v1/vms").await.unwrap();
        vms.into_iter().map(|v| v.name.to_string()).collect()
    }

    pub async fn register(&self, id: &str, url: &str) -> NodeInfo {
        let body = serde_json::json!({ "id": id, "url": url });
        self.send(reqwest::Method::POST, None, "/v1/nodes", body)
            .await
            .unwrap()
    }

    /// Waits until node `id` is in `state`.
    pub async fn wait_node(&self, id: &str, state: NodeState) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let nodes: Vec<NodeInfo> = self.get(None, "/v1/nodes").await.unwrap();
            if nodes.iter().any(|n| n.id == id && n.state == state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {id} never became {state:?}");
    }

    /// Waits until `check` holds for the VMs `user` sees.
    pub async fn wait_vms(&self, user: &str, what: &str, check: impl Fn(&[VmInfo]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let vms: Vec<VmInfo> = self.get(Some(user), "/v1/vms").await.unwrap();
            if check(&vms) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("VMs never {what}");
    }
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("registry.db")
}

async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, (u16, ApiError)> {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    if (200..300).contains(&status) {
        Ok(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    } else {
        Err((
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        ))
    }
}

/// The progress messages of a stream.
pub fn progress_messages(lines: &[OrchLine]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| match l {
            OrchLine::Progress { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// A test secret.
pub fn secret() -> ClusterSecret {
    ClusterSecret::from_bytes(b"a test cluster secret, 32 bytes!".to_vec())
}
