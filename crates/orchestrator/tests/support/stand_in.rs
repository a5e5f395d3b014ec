//! `StandInNode`: a stand-in for a node agent, for tests that must not boot guests.
//!
//! It serves the node agent's HTTP API (same paths, bodies, token check and NDJSON
//! streams as `crates/node/src/api.rs`) over an in-memory VM table, records every request
//! it gets, and can be told to misbehave: refuse creates with an error status, fail them
//! inside the stream, or go silent (stop listening) and come back. That is what makes
//! retry-on-another-node and heartbeat down/up deterministic. It is a fake at the
//! node-API boundary only; `e2e_orchestrator` runs the same flows against a real agent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use boxcutter_auth::ClusterSecret;
use boxcutter_types::api::{
    ApiError, CopyRequest, DescribeRequest, ErrorCode, NodeHealth, ProgressLine, Resources,
    VmCounts,
};
use boxcutter_types::guest::VmType;
use boxcutter_types::{VmRecord, VmSpec, VmState};
use tokio::sync::oneshot;

/// How the stand-in answers creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Creates succeed when there is room.
    Normal,
    /// Creates are refused up front with this code's status.
    Refuse(ErrorCode),
    /// Creates start streaming, then fail with this code.
    FailStream(ErrorCode),
}

#[derive(Debug)]
struct Inner {
    vms: BTreeMap<String, VmRecord>,
    requests: Vec<String>,
    specs: Vec<VmSpec>,
    behaviour: Behaviour,
    totals: Resources,
    supports: Vec<VmType>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    secret: ClusterSecret,
    inner: Mutex<Inner>,
}

/// A stand-in node agent on 127.0.0.1.
pub struct StandInNode {
    /// The node's id.
    pub id: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl StandInNode {
    /// A node with `ram_mib` of RAM, a vCPU per GiB of it (at least 16) and 1 TiB of disk,
    /// running `supports`.
    pub async fn start(
        id: &str,
        secret: &ClusterSecret,
        ram_mib: u64,
        supports: &[VmType],
    ) -> Self {
        let shared = Arc::new(Shared {
            id: id.into(),
            secret: secret.clone(),
            inner: Mutex::new(Inner {
                vms: BTreeMap::new(),
                requests: Vec::new(),
                specs: Vec::new(),
                behaviour: Behaviour::Normal,
                totals: Resources {
                    vcpus: (ram_mib / 1024).max(16),
                    ram_mib,
                    disk_bytes: 1 << 40,
                },
                supports: supports.to_vec(),
            }),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut node = Self {
            id: id.into(),
            addr,
            shared,
            stop: None,
            server: None,
        };
        node.serve(listener);
        node
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        }));
        self.stop = Some(stop);
    }

    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops answering (connections are refused) until [`Self::come_back`].
    pub async fn go_silent(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Answers again, on the same address.
    pub async fn come_back(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Sets how creates are answered.
    pub fn behave(&self, behaviour: Behaviour) {
        self.shared.inner.lock().unwrap().behaviour = behaviour;
    }

    /// Every request so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().requests.clone()
    }

    /// Requests other than heartbeats (`GET /v1/health`, `GET /v1/vms`).
    pub fn calls(&self) -> Vec<String> {
        let beats = ["GET /v1/health", "GET /v1/vms"];
        self.requests()
            .into_iter()
            .filter(|r| !beats.contains(&r.as_str()))
            .collect()
    }

    /// Every create spec received.
    pub fn specs(&self) -> Vec<VmSpec> {
        self.shared.inner.lock().unwrap().specs.clone()
    }

    /// The VMs it holds, by name.
    pub fn vms(&self) -> Vec<String> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .vms
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets a VM, as if it vanished from the node.
    pub fn forget(&self, name: &str) {
        self.shared.inner.lock().unwrap().vms.remove(name);
    }

    /// Holds a running VM called `name` on subnet `subnet` (a base address), as if a
    /// create had finished while nobody listened.
    pub fn adopt_running(&self, name: &str, subnet: &str) {
        let spec = VmSpec {
            name: name.parse().unwrap(),
            vm_type: VmType::Qemu,
            vcpus: 1,
            ram_mib: 512,
            disk: boxcutter_types::ByteSize(1 << 30),
            mode: Default::default(),
            subnet: boxcutter_types::GuestSubnet::new(subnet.parse().unwrap()).unwrap(),
            authorized_keys: Vec::new(),
            description: String::new(),
        };
        let vm = record(spec);
        self.shared
            .inner
            .lock()
            .unwrap()
            .vms
            .insert(name.into(), vm);
    }

    /// Sets a VM's state behind the orchestrator's back.
    pub fn set_state(&self, name: &str, state: VmState) {
        if let Some(vm) = self.shared.inner.lock().unwrap().vms.get_mut(name) {
            vm.state = state;
        }
    }
}

impl Drop for StandInNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type St = State<Arc<Shared>>;

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{name}", get(get_vm).delete(destroy))
        .route("/v1/vms/{name}/start", post(start))
        .route("/v1/vms/{name}/stop", post(stop))
        .route("/v1/vms/{name}/copy", post(copy))
        .route("/v1/vms/{name}/description", put(describe))
        .route("/v1/vms/{name}/logs", get(logs))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            record_and_authenticate,
        ))
        .with_state(shared)
}

async fn record_and_authenticate(State(s): St, request: Request, next: Next) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    s.inner.lock().unwrap().requests.push(line);
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.map(|t| s.secret.verify(t, "node")) {
        Some(Ok(())) => next.run(request).await,
        _ => error(ErrorCode::Unauthorized, "unauthorized"),
    }
}

fn error(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap();
    (status, Json(ApiError::new(code, message))).into_response()
}

fn ndjson(lines: &[ProgressLine]) -> Response {
    let body: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap() + "\n")
        .collect();
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn step(phase: &str) -> ProgressLine {
    ProgressLine::Progress {
        phase: phase.into(),
        message: format!("stand-in {phase}"),
        elapsed_ms: 1,
    }
}

fn held(vms: &BTreeMap<String, VmRecord>) -> Resources {
    let mut sum = Resources::default();
    for vm in vms.values() {
        let runs = matches!(vm.state, VmState::Creating | VmState::Running);
        if runs {
            sum.vcpus += u64::from(vm.spec.vcpus);
            sum.ram_mib += u64::from(vm.spec.ram_mib);
        }
        sum.disk_bytes += vm.spec.disk.bytes();
    }
    sum
}

async fn health(State(s): St) -> Response {
    let inner = s.inner.lock().unwrap();
    let (totals, allocated) = (inner.totals, held(&inner.vms));
    let count = |st| inner.vms.values().filter(|v| v.state == st).count() as u64;
    Json(NodeHealth {
        node: s.id.clone(),
        totals,
        allocated,
        free: Resources {
            vcpus: totals.vcpus.saturating_sub(allocated.vcpus),
            ram_mib: totals.ram_mib.saturating_sub(allocated.ram_mib),
            disk_bytes: totals.disk_bytes.saturating_sub(allocated.disk_bytes),
        },
        disk_used_bytes: 0,
        vms: VmCounts {
            total: inner.vms.len() as u64,
            running: count(VmState::Running),
            stopped: count(VmState::Stopped),
            other: 0,
        },
        supports: inner.supports.clone(),
        unsupported: Default::default(),
    })
    .into_response()
}

async fn list(State(s): St) -> Response {
    let vms: Vec<VmRecord> = s.inner.lock().unwrap().vms.values().cloned().collect();
    Json(vms).into_response()
}

fn record(spec: VmSpec) -> VmRecord {
    VmRecord {
        host_key: format!("ssh-ed25519 AAAAstandin{}", spec.name),
        spec,
        state: VmState::Running,
        failure: None,
        pid: Some(4242),
        created_at: 1,
    }
}

async fn create(State(s): St, body: Bytes) -> Response {
    let Ok(spec) = serde_json::from_slice::<VmSpec>(&body) else {
        return error(ErrorCode::BadRequest, "bad request body");
    };
    let mut inner = s.inner.lock().unwrap();
    inner.specs.push(spec.clone());
    match inner.behaviour {
        Behaviour::Refuse(code) => return error(code, "stand-in refuses"),
        Behaviour::FailStream(code) => {
            let failed = ProgressLine::Failed {
                error: ApiError::new(code, "stand-in failed the create"),
            };
            return ndjson(&[step("disk"), failed]);
        }
        Behaviour::Normal => {}
    }
    if inner.vms.contains_key(spec.name.as_str()) {
        return error(ErrorCode::Conflict, "name taken");
    }
    let free = inner
        .totals
        .ram_mib
        .saturating_sub(held(&inner.vms).ram_mib);
    if u64::from(spec.ram_mib) > free {
        return error(ErrorCode::NoCapacity, "node has no capacity: ram");
    }
    let vm = record(spec);
    inner.vms.insert(vm.spec.name.to_string(), vm.clone());
    ndjson(&[
        step("disk"),
        step("boot"),
        ProgressLine::Done { vm: Box::new(vm) },
    ])
}

async fn copy(State(s): St, Path(name): Path<String>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<CopyRequest>(&body) else {
        return error(ErrorCode::BadRequest, "bad request body");
    };
    let mut inner = s.inner.lock().unwrap();
    let Some(source) = inner.vms.get(&name).cloned() else {
        return error(ErrorCode::NotFound, "no such VM");
    };
    let vm = record(VmSpec {
        name: request.name,
        subnet: request.subnet,
        ..source.spec
    });
    inner.vms.insert(vm.spec.name.to_string(), vm.clone());
    ndjson(&[step("disk"), ProgressLine::Done { vm: Box::new(vm) }])
}

fn with_vm(s: &Shared, name: &str, change: impl FnOnce(&mut VmRecord)) -> Response {
    match s.inner.lock().unwrap().vms.get_mut(name) {
        Some(vm) => {
            change(vm);
            Json(vm.clone()).into_response()
        }
        None => error(ErrorCode::NotFound, "no such VM"),
    }
}

async fn get_vm(State(s): St, Path(name): Path<String>) -> Response {
    with_vm(&s, &name, |_| {})
}

async fn start(State(s): St, Path(name): Path<String>) -> Response {
    with_vm(&s, &name, |vm| vm.state = VmState::Running)
}

async fn stop(State(s): St, Path(name): Path<String>) -> Response {
    with_vm(&s, &name, |vm| vm.state = VmState::Stopped)
}

async fn describe(State(s): St, Path(name): Path<String>, body: Bytes) -> Response {
    let request: DescribeRequest = serde_json::from_slice(&body).unwrap();
    with_vm(&s, &name, |vm| vm.spec.description = request.description)
}

async fn destroy(State(s): St, Path(name): Path<String>) -> Response {
    match s.inner.lock().unwrap().vms.remove(&name) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(ErrorCode::NotFound, "no such VM"),
    }
}

async fn logs(State(s): St, Path(name): Path<String>) -> Response {
    if s.inner.lock().unwrap().vms.contains_key(&name) {
        format!("console of {name}\n").into_response()
    } else {
        error(ErrorCode::NotFound, "no such VM")
    }
}
