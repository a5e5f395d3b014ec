//! [`StandInOrchestrator`]: a small in-test HTTP server that answers the orchestrator
//! API's contract (`boxcutter_types::orch`) from memory, so the `boxcutter` binary can be
//! driven the way sshd drives it. It checks tokens and the user header, keeps VMs per
//! user and streams NDJSON progress. It stands in for the other end of the wire only:
//! the real orchestrator is tested in its own crate, and the whole chain (real sshd,
//! real orchestrator, real guests) end to end.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use boxcutter_auth::ClusterSecret;
use boxcutter_types::api::{ApiError, DescribeRequest, ErrorCode, Resources};
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{
    AddUserRequest, ClusterStatus, CopyVmRequest, NewVmRequest, NodeInfo, NodeState, OrchLine,
    RepoRequest, SshTarget, UserInfo, VmInfo, USER_HEADER,
};
use boxcutter_types::{ByteSize, NetMode, VmName, VmState};

use super::HOST_KEY;

/// RAM the stand-in's one node can give a VM, MiB.
const MAX_RAM_MIB: u32 = 65_536;

/// Stands in for the orchestrator's HTTP API in these tests (see the module docs).
pub struct StandInOrchestrator {
    pub(super) secret: ClusterSecret,
    pub(super) ssh_port: u16,
    /// What it holds and has seen; tests inspect it.
    pub state: Mutex<OrchState>,
}

#[derive(Default)]
pub struct OrchState {
    pub users: HashMap<String, UserInfo>,
    pub vms: Vec<VmInfo>,
    pub repos: HashMap<String, Vec<String>>,
    /// Every `new` request, as received.
    pub created: Vec<NewVmRequest>,
    /// `<user header> <method> <path>` of every authenticated request.
    pub calls: Vec<String>,
}

/// An API error answer.
struct Reject(StatusCode, ApiError);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn reject(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Reject {
    Reject(status, ApiError::new(code, message))
}

fn no_such_vm(name: &str) -> Reject {
    reject(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no such VM: {name}"),
    )
}

pub type Orch = Arc<StandInOrchestrator>;
type Answer<T> = Result<T, Reject>;

impl StandInOrchestrator {
    /// Serves on a loopback port; returns the base URL.
    pub(super) fn start(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let app = self.router();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        url
    }

    fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/vms", post(new_vm).get(list_vms))
            .route("/v1/vms/{name}", get(get_vm).delete(destroy_vm))
            .route("/v1/vms/{name}/start", post(start_vm))
            .route("/v1/vms/{name}/stop", post(stop_vm))
            .route("/v1/vms/{name}/copy", post(copy_vm))
            .route("/v1/vms/{name}/logs", get(logs))
            .route("/v1/vms/{name}/description", put(describe))
            .route("/v1/vms/{name}/ssh", get(ssh_target))
            .route("/v1/vms/{name}/repos", post(add_repo).get(list_repos))
            .route("/v1/status", get(status))
            .route("/v1/nodes", get(nodes))
            .route("/v1/users", post(add_user))
            .route("/v1/auth/key", get(key_owner))
            .layer(middleware::from_fn_with_state(self.clone(), authenticate))
            .with_state(self.clone())
    }

    /// The user the request acts for, from the user header.
    fn caller(&self, headers: &HeaderMap) -> Answer<UserInfo> {
        let name = headers
            .get(USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let state = self.state.lock().unwrap();
        state
            .users
            .values()
            .find(|u| u.name == name)
            .cloned()
            .ok_or_else(|| {
                reject(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "unknown user",
                )
            })
    }

    /// Runs `f` on the caller's VM `name`; another user's VM does not exist.
    fn with_vm<T>(
        &self,
        headers: &HeaderMap,
        name: &str,
        f: impl FnOnce(&mut VmInfo) -> T,
    ) -> Answer<T> {
        let user = self.caller(headers)?;
        let mut state = self.state.lock().unwrap();
        let vm = state
            .vms
            .iter_mut()
            .find(|vm| vm.name.as_str() == name && (user.admin || vm.owner == user.name))
            .ok_or_else(|| no_such_vm(name))?;
        Ok(f(vm))
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn vm_names(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.vms.iter().map(|vm| vm.name.to_string()).collect()
    }
}

async fn authenticate(State(orch): State<Orch>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if let Err(e) = orch.secret.verify(token, "orchestrator") {
        return reject(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            e.to_string(),
        )
        .into_response();
    }
    let user = request
        .headers()
        .get(USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let call = format!("{user} {} {}", request.method(), request.uri().path());
    orch.state.lock().unwrap().calls.push(call);
    next.run(request).await
}

/// A running VM of `owner`'s, as the stand-in first holds it.
pub(super) fn vm(name: &str, owner: &str, vm_type: VmType, ram_mib: u32) -> VmInfo {
    VmInfo {
        name: VmName::new(name).unwrap(),
        owner: owner.into(),
        node: "boxcutter-node-1".into(),
        vm_type,
        vcpus: 2,
        ram_mib,
        disk: ByteSize(50 << 30),
        mode: NetMode::Normal,
        state: VmState::Running,
        ip: "100.64.1.42".parse().unwrap(),
        description: String::new(),
        host_key: HOST_KEY.into(),
        created_at: 1_700_000_000,
    }
}

/// An NDJSON answer: progress lines, then the outcome.
fn stream(outcome: OrchLine) -> Response {
    let lines = [
        OrchLine::Progress {
            phase: "scheduling".into(),
            message: "boxcutter-node-1 has the most free RAM".into(),
            elapsed_ms: 1,
        },
        OrchLine::Progress {
            phase: "boot".into(),
            message: "guest ready".into(),
            elapsed_ms: 212,
        },
        outcome,
    ];
    let body: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap() + "\n")
        .collect();
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn new_vm(
    State(orch): State<Orch>,
    headers: HeaderMap,
    Json(request): Json<NewVmRequest>,
) -> Answer<Response> {
    let user = orch.caller(&headers)?;
    let ram = request.ram_mib.unwrap_or(2048);
    if ram > MAX_RAM_MIB {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("--ram {ram} MiB is more than a VM may have ({MAX_RAM_MIB} MiB)"),
        ));
    }
    let mut state = orch.state.lock().unwrap();
    state.created.push(request.clone());
    let name = request.name.map_or("bold-fox".into(), String::from);
    if state.vms.iter().any(|vm| vm.name.as_str() == name) {
        return Err(reject(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!("a VM named {name} exists"),
        ));
    }
    if request.node.as_deref() == Some("full-node") {
        let error = ApiError::new(ErrorCode::NoCapacity, "full-node has no room for 2048 MiB");
        return Ok(stream(OrchLine::Failed { error }));
    }
    let vm_type = request.vm_type.unwrap_or(VmType::Firecracker);
    let new = VmInfo {
        vcpus: request.vcpus.unwrap_or(2),
        disk: request.disk.unwrap_or(ByteSize(50 << 30)),
        mode: request.mode.unwrap_or_default(),
        description: request.description,
        ..vm(&name, &user.name, vm_type, ram)
    };
    state.vms.push(new.clone());
    Ok(stream(OrchLine::Done { vm: Box::new(new) }))
}

async fn list_vms(State(orch): State<Orch>, headers: HeaderMap) -> Answer<Json<Vec<VmInfo>>> {
    let user = orch.caller(&headers)?;
    let state = orch.state.lock().unwrap();
    let mine = state
        .vms
        .iter()
        .filter(|vm| user.admin || vm.owner == user.name);
    Ok(Json(mine.cloned().collect()))
}

async fn get_vm(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Answer<Json<VmInfo>> {
    orch.with_vm(&headers, &name, |vm| Json(vm.clone()))
}

async fn destroy_vm(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Answer<StatusCode> {
    orch.with_vm(&headers, &name, |_| ())?;
    let mut state = orch.state.lock().unwrap();
    state.vms.retain(|vm| vm.name.as_str() != name);
    Ok(StatusCode::NO_CONTENT)
}

async fn start_vm(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Answer<Json<VmInfo>> {
    orch.with_vm(&headers, &name, |vm| {
        vm.state = VmState::Running;
        Json(vm.clone())
    })
}

async fn stop_vm(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Answer<Json<VmInfo>> {
    orch.with_vm(&headers, &name, |vm| {
        vm.state = VmState::Stopped;
        Json(vm.clone())
    })
}

async fn copy_vm(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Json(request): Json<CopyVmRequest>,
) -> Answer<Response> {
    let source = orch.with_vm(&headers, &name, |vm| vm.clone())?;
    let copy = VmInfo {
        name: request
            .name
            .unwrap_or_else(|| VmName::new("calm-otter").unwrap()),
        ip: "100.64.1.43".parse().unwrap(),
        ..source
    };
    orch.state.lock().unwrap().vms.push(copy.clone());
    Ok(stream(OrchLine::Done { vm: Box::new(copy) }))
}

async fn logs(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<String> {
    orch.with_vm(&headers, &name, |_| ())?;
    let all = [
        "[    0.000000] Linux version 6.1.0",
        "boxcutter-guest: ready",
    ];
    let lines: usize = query.get("lines").map_or(100, |n| n.parse().unwrap());
    let shown = &all[all.len().saturating_sub(lines)..];
    Ok(shown.join("\n"))
}

async fn describe(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Json(request): Json<DescribeRequest>,
) -> Answer<Json<VmInfo>> {
    orch.with_vm(&headers, &name, |vm| {
        vm.description = request.description;
        Json(vm.clone())
    })
}

async fn ssh_target(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Answer<Json<SshTarget>> {
    orch.with_vm(&headers, &name, |vm| {
        Json(SshTarget {
            ip: "127.0.0.1".parse().unwrap(),
            port: orch.ssh_port,
            host_key: vm.host_key.clone(),
        })
    })
}

async fn add_repo(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Json(request): Json<RepoRequest>,
) -> Answer<StatusCode> {
    orch.with_vm(&headers, &name, |_| ())?;
    if request.repo.split('/').count() != 2 {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("repo {:?} is not owner/repo", request.repo),
        ));
    }
    let mut state = orch.state.lock().unwrap();
    state.repos.entry(name).or_default().push(request.repo);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_repos(
    State(orch): State<Orch>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Answer<Json<Vec<String>>> {
    orch.with_vm(&headers, &name, |_| ())?;
    let state = orch.state.lock().unwrap();
    Ok(Json(state.repos.get(&name).cloned().unwrap_or_default()))
}

fn resources(vcpus: u64, ram_gib: u64, disk_gib: u64) -> Resources {
    Resources {
        vcpus,
        ram_mib: ram_gib * 1024,
        disk_bytes: disk_gib << 30,
    }
}

async fn status(State(orch): State<Orch>, headers: HeaderMap) -> Answer<Json<ClusterStatus>> {
    orch.caller(&headers)?;
    Ok(Json(ClusterStatus {
        nodes_up: 1,
        nodes_down: 1,
        totals: resources(16, 64, 500),
        allocated: resources(4, 8, 100),
        free: resources(12, 56, 400),
        vms: orch.state.lock().unwrap().vms.len() as u64,
    }))
}

async fn nodes(State(orch): State<Orch>, headers: HeaderMap) -> Answer<Json<Vec<NodeInfo>>> {
    orch.caller(&headers)?;
    let node = |id: &str, state| NodeInfo {
        id: id.into(),
        url: "http://192.0.2.1:8800".into(),
        state,
        last_seen: None,
        health: None,
    };
    Ok(Json(vec![
        node("boxcutter-node-1", NodeState::Up),
        node("boxcutter-node-2", NodeState::Down),
    ]))
}

async fn add_user(
    State(orch): State<Orch>,
    headers: HeaderMap,
    Json(request): Json<AddUserRequest>,
) -> Answer<Json<UserInfo>> {
    if !orch.caller(&headers)?.admin {
        return Err(reject(
            StatusCode::FORBIDDEN,
            ErrorCode::Unauthorized,
            "only admins can add users",
        ));
    }
    Ok(Json(UserInfo {
        name: request.github,
        admin: false,
        keys: 2,
    }))
}

async fn key_owner(
    State(orch): State<Orch>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<Json<UserInfo>> {
    let key = query.get("key").cloned().unwrap_or_default();
    let state = orch.state.lock().unwrap();
    state
        .users
        .get(&key)
        .cloned()
        .map(Json)
        .ok_or_else(|| reject(StatusCode::NOT_FOUND, ErrorCode::NotFound, "unknown key"))
}
