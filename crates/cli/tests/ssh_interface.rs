//! The `boxcutter` binary, driven the way sshd drives it: `ssh-command` with
//! `$SSH_ORIGINAL_COMMAND` and an `$SSH_USER_AUTH` file, and `authorized-keys %u %t %k`.
//!
//! It talks to [`StandInOrchestrator`], a small in-test HTTP server that answers the
//! orchestrator API's contract (`boxcutter_types::orch`) from memory: it checks tokens
//! and the user header, keeps VMs per user and streams NDJSON progress. It is a
//! stand-in for the other end of the wire only; the real orchestrator is tested in its
//! own crate, and the whole chain (real sshd, real orchestrator, real guests) end to end.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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

const ALICE_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIALICExALICExALICExALICExALICExALICExALICE";
const BOB_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBOBxBOBxBOBxBOBxBOBxBOBxBOBxBOBxBOBxBOBxB";
const STRANGER_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAISTRANGERxSTRANGERxSTRANGERxSTRANGERxST";
const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHOSTxKEY";
/// RAM the stand-in's one node can give a VM, MiB.
const MAX_RAM_MIB: u32 = 65_536;

/// Stands in for the orchestrator's HTTP API in these tests (see the module docs).
struct StandInOrchestrator {
    secret: ClusterSecret,
    ssh_port: u16,
    state: Mutex<OrchState>,
}

#[derive(Default)]
struct OrchState {
    users: HashMap<String, UserInfo>,
    vms: Vec<VmInfo>,
    repos: HashMap<String, Vec<String>>,
    /// Every `new` request, as received.
    created: Vec<NewVmRequest>,
    /// `<user header> <method> <path>` of every authenticated request.
    calls: Vec<String>,
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

type Orch = Arc<StandInOrchestrator>;
type Answer<T> = Result<T, Reject>;

impl StandInOrchestrator {
    /// Serves on a loopback port; returns the base URL.
    fn start(self: &Arc<Self>) -> String {
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

    fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    fn vm_names(&self) -> Vec<String> {
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

fn vm(name: &str, owner: &str, vm_type: VmType, ram_mib: u32) -> VmInfo {
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

/// One SSH-connection's worth of surroundings: a stand-in orchestrator with alice
/// (admin, VM `dev-box`) and bob (VM `bob-box`), a config file and the cluster secret.
struct Cluster {
    orch: Orch,
    dir: tempfile::TempDir,
    config: PathBuf,
}

struct Ran {
    stdout: String,
    stderr: String,
    code: i32,
}

impl Cluster {
    fn new() -> Self {
        Self::with_ssh_port(0)
    }

    fn with_ssh_port(ssh_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("cluster.key");
        let secret = ClusterSecret::load_or_create(&secret_file).unwrap();
        let mut state = OrchState::default();
        for (key, name, admin) in [(ALICE_KEY, "alice", true), (BOB_KEY, "bob", false)] {
            let user = UserInfo {
                name: name.into(),
                admin,
                keys: 1,
            };
            state.users.insert(key.into(), user);
        }
        state.vms = vec![
            vm("dev-box", "alice", VmType::Firecracker, 2048),
            VmInfo {
                ip: "100.64.1.50".parse().unwrap(),
                ..vm("bob-box", "bob", VmType::Qemu, 4096)
            },
        ];
        let orch = Arc::new(StandInOrchestrator {
            secret,
            ssh_port,
            state: Mutex::new(state),
        });
        let url = orch.start();
        let config = dir.path().join("cli.toml");
        write_config(&config, &url, &secret_file, Some("boxcutter"));
        Self { orch, dir, config }
    }

    /// `ssh boxcutter <command>` as the owner of `key`.
    fn ssh(&self, key: &str, command: &str) -> Ran {
        self.ssh_with_stdin(key, command, b"")
    }

    fn ssh_with_stdin(&self, key: &str, command: &str, stdin: &[u8]) -> Ran {
        let auth_info = self.dir.path().join(format!("auth-{}", &key[30..40]));
        std::fs::write(&auth_info, format!("publickey ssh-ed25519 {key}\n")).unwrap();
        let mut cmd = boxcutter(&self.config, &["ssh-command"]);
        cmd.env("SSH_ORIGINAL_COMMAND", command)
            .env("SSH_USER_AUTH", &auth_info);
        run(cmd, stdin)
    }

    /// sshd's `AuthorizedKeysCommand boxcutter authorized-keys %u %t %k`.
    fn authorized_keys(&self, login: &str, key_type: &str, key: &str) -> Ran {
        run(
            boxcutter(&self.config, &["authorized-keys", login, key_type, key]),
            b"",
        )
    }
}

fn write_config(path: &Path, url: &str, secret: &Path, login_user: Option<&str>) {
    let mut text = format!(
        "orchestrator_url = \"{url}\"\nsecret_file = \"{}\"\n",
        secret.display()
    );
    if let Some(user) = login_user {
        text.push_str(&format!("login_user = \"{user}\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// The binary with a clean environment: only what sshd would set, plus the config.
fn boxcutter(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boxcutter"));
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("BOXCUTTER_CONFIG", config);
    cmd
}

fn run(mut cmd: Command, stdin: &[u8]) -> Ran {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Ran {
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
        code: status.code().unwrap_or(-1),
    }
}

impl Ran {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }

    /// Failed with exactly one `error:` line containing `want`, and printed no output.
    #[track_caller]
    fn failed(&self, code: i32, want: &str) {
        assert_eq!(self.code, code, "stderr: {}", self.stderr);
        assert_eq!(self.stdout, "", "stdout of a failure");
        assert!(
            self.stderr.starts_with("error: ") && self.stderr.lines().count() == 1,
            "not one error line: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.contains(want),
            "{:?} lacks {want:?}",
            self.stderr
        );
    }
}

#[test]
fn new_streams_progress_then_prints_the_readme_block() {
    let cluster = Cluster::new();
    let ran = cluster.ssh(ALICE_KEY, "new").ok();
    assert_eq!(
        ran.stdout,
        "Name: bold-fox\nNode: boxcutter-node-1\nvCPU: 2\nRAM: 2G\nDisk: 50G\n\
         IP: 100.64.1.42\nStatus: running\nConnect: ssh bold-fox\n"
    );
    assert_eq!(
        ran.stderr,
        "[ 0.0s] scheduling: boxcutter-node-1 has the most free RAM\n\
         [ 0.2s] boot: guest ready\n"
    );
    let created = cluster.orch.state.lock().unwrap().created.clone();
    assert_eq!(
        created,
        [NewVmRequest {
            vcpus: Some(2),
            ram_mib: Some(2048),
            disk: Some(ByteSize(50 << 30)),
            mode: Some(NetMode::Normal),
            ..NewVmRequest::default()
        }]
    );
    assert!(cluster
        .orch
        .calls()
        .contains(&"alice POST /v1/vms".to_string()));
}

#[test]
fn new_passes_every_flag() {
    let cluster = Cluster::new();
    let line = "new --type qemu --name my-vm --desc 'my box; with quotes' --clone org/a \
                --clone github.com/org/b --vcpu 1 --ram 1024 --disk 10G --mode paranoid \
                --node boxcutter-node-1";
    let ran = cluster.ssh(BOB_KEY, line).ok();
    assert!(ran.stdout.starts_with("Name: my-vm\n"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("vCPU: 1\nRAM: 1G\nDisk: 10G\n"),
        "{}",
        ran.stdout
    );
    let created = cluster.orch.state.lock().unwrap().created.clone();
    assert_eq!(
        created,
        [NewVmRequest {
            name: Some(VmName::new("my-vm").unwrap()),
            vm_type: Some(VmType::Qemu),
            description: "my box; with quotes".into(),
            clone: vec!["org/a".into(), "github.com/org/b".into()],
            vcpus: Some(1),
            ram_mib: Some(1024),
            disk: Some(ByteSize(10 << 30)),
            mode: Some(NetMode::Paranoid),
            node: Some("boxcutter-node-1".into()),
        }]
    );
    let list = cluster.ssh(BOB_KEY, "list").ok().stdout;
    assert!(list.contains("my-vm "), "{list}");
    assert!(list.contains(" qemu "), "{list}");
}

#[test]
fn list_shows_the_readme_columns_and_only_the_users_vms() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster.ssh(BOB_KEY, "list").ok().stdout,
        "\
NAME     TAILSCALE IP  NODE              TYPE  VCPU  RAM  MODE    STATUS
bob-box  100.64.1.50   boxcutter-node-1  qemu  2     4G   normal  running
"
    );
    // alice is an admin: she sees every VM.
    let all = cluster.ssh(ALICE_KEY, "list").ok().stdout;
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(
        all.contains("\ndev-box  100.64.1.42   boxcutter-node-1  fc "),
        "{all}"
    );
}

#[test]
fn lifecycle_commands_act_on_the_named_vm() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster.ssh(BOB_KEY, "stop bob-box").ok().stdout,
        "bob-box: stopped\n"
    );
    assert!(cluster
        .ssh(BOB_KEY, "list")
        .ok()
        .stdout
        .contains(" stopped\n"));
    assert_eq!(
        cluster.ssh(BOB_KEY, "start bob-box").ok().stdout,
        "bob-box: running\n"
    );

    let copy = cluster.ssh(BOB_KEY, "cp bob-box bob-copy").ok();
    assert!(
        copy.stdout.starts_with("Name: bob-copy\n"),
        "{}",
        copy.stdout
    );
    assert!(
        copy.stdout.ends_with("Connect: ssh bob-copy\n"),
        "{}",
        copy.stdout
    );
    assert!(
        copy.stderr.contains("] boot: guest ready\n"),
        "{}",
        copy.stderr
    );
    let random = cluster.ssh(BOB_KEY, "cp bob-box").ok();
    assert!(
        random.stdout.starts_with("Name: calm-otter\n"),
        "{}",
        random.stdout
    );

    assert_eq!(
        cluster.ssh(BOB_KEY, "destroy bob-copy").ok().stdout,
        "Destroyed bob-copy\n"
    );
    assert_eq!(
        cluster.orch.vm_names(),
        ["dev-box", "bob-box", "calm-otter"]
    );
}

#[test]
fn describe_shows_or_sets_and_logs_show_the_console() {
    let cluster = Cluster::new();
    let shown = cluster.ssh(ALICE_KEY, "describe dev-box").ok().stdout;
    for line in [
        "Name: dev-box\n",
        "Owner: alice\n",
        "Type: firecracker\n",
        "Created: 2023-11-14 22:13:20 UTC\n",
        "Description: \n",
        &format!("Host key: {HOST_KEY}\n"),
    ] {
        assert!(shown.contains(line), "{line:?} not in\n{shown}");
    }
    let set = cluster
        .ssh(ALICE_KEY, "describe dev-box 'rust builds;' and tests")
        .ok();
    assert!(
        set.stdout.contains("Description: rust builds; and tests\n"),
        "{}",
        set.stdout
    );
    assert!(cluster
        .ssh(ALICE_KEY, "describe dev-box")
        .ok()
        .stdout
        .contains("Description: rust builds; and tests\n"));

    assert_eq!(
        cluster.ssh(ALICE_KEY, "logs dev-box").ok().stdout,
        "[    0.000000] Linux version 6.1.0\nboxcutter-guest: ready\n"
    );
    assert_eq!(
        cluster.ssh(ALICE_KEY, "logs dev-box --lines 1").ok().stdout,
        "boxcutter-guest: ready\n"
    );
}

#[test]
fn cluster_users_and_repos() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster.ssh(BOB_KEY, "status").ok().stdout,
        "Nodes: 1 up, 1 down\nvCPU: 4 of 16 allocated (25%), 12 free\n\
         RAM: 8G of 64G allocated (12%), 56G free\n\
         Disk: 100G of 500G allocated (20%), 400G free\nVMs: 2\n"
    );
    assert_eq!(
        cluster.ssh(BOB_KEY, "nodes").ok().stdout,
        "\
NODE              STATE  VMS  VCPU  RAM  DISK  TYPES  LAST SEEN
boxcutter-node-1  up     -    -     -    -     -      never
boxcutter-node-2  down   -    -     -    -     -      never
"
    );
    assert_eq!(
        cluster.ssh(ALICE_KEY, "adduser octocat").ok().stdout,
        "Added user octocat with 2 SSH keys\n"
    );
    cluster
        .ssh(BOB_KEY, "adduser mallory")
        .failed(1, "only admins can add users");

    assert_eq!(
        cluster
            .ssh(BOB_KEY, "repos add bob-box org/main-repo")
            .ok()
            .stdout,
        "bob-box can now access org/main-repo\n"
    );
    cluster.ssh(BOB_KEY, "repos add bob-box org/sub").ok();
    assert_eq!(
        cluster.ssh(BOB_KEY, "repos list bob-box").ok().stdout,
        "org/main-repo\norg/sub\n"
    );
    cluster
        .ssh(BOB_KEY, "repos add bob-box not-a-repo")
        .failed(1, "is not owner/repo");
}

#[test]
fn users_never_reach_each_others_vms() {
    let cluster = Cluster::new();
    for command in [
        "describe dev-box",
        "destroy dev-box",
        "stop dev-box",
        "logs dev-box",
        "cp dev-box",
        "connect dev-box",
        "repos list dev-box",
    ] {
        cluster
            .ssh(BOB_KEY, command)
            .failed(1, "no such VM: dev-box");
    }
    assert_eq!(cluster.orch.vm_names(), ["dev-box", "bob-box"]);
    // Every call went out as bob: nothing he typed could change that.
    let calls = cluster.orch.calls();
    assert!(calls
        .iter()
        .all(|c| c.starts_with("bob ") || c.starts_with("- GET /v1/auth/key")));
}

#[test]
fn bad_input_is_one_error_line_and_changes_nothing() {
    let cluster = Cluster::new();
    let cases = [
        (
            "new --ram 0",
            2,
            "invalid value '0' for '--ram <MiB>': must be at least 1",
        ),
        (
            "new --ram 99999999",
            1,
            "--ram 99999999 MiB is more than a VM may have",
        ),
        (
            "new --type vmware",
            2,
            "invalid value 'vmware' for '--type <TYPE>'",
        ),
        ("new --name 'a;b'", 2, "invalid name \"a;b\""),
        ("new --name \"$(id)\"", 2, "invalid name \"$(id)\""),
        ("new --name dev-box", 1, "a VM named dev-box exists"),
        ("new --bogus", 2, "unexpected argument '--bogus'"),
        ("new --desc 'unclosed", 2, "unterminated single quote"),
        ("frobnicate", 2, "unrecognized subcommand 'frobnicate'"),
        ("destroy", 2, "required arguments were not provided"),
        ("cp", 2, "required arguments were not provided"),
        ("destroy ghost", 1, "no such VM: ghost"),
        ("start ghost", 1, "no such VM: ghost"),
        ("repos", 2, "requires a subcommand"),
        ("list ; destroy dev-box", 2, "unexpected argument ';'"),
    ];
    for (command, code, want) in cases {
        cluster.ssh(ALICE_KEY, command).failed(code, want);
    }
    assert_eq!(cluster.orch.vm_names(), ["dev-box", "bob-box"]);
}

#[test]
fn a_create_failing_midway_ends_its_progress_with_the_error() {
    let cluster = Cluster::new();
    let ran = cluster.ssh(ALICE_KEY, "new --node full-node");
    assert_eq!(ran.code, 1);
    assert_eq!(ran.stdout, "");
    assert_eq!(
        ran.stderr.lines().last(),
        Some("error: full-node has no room for 2048 MiB"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.starts_with("[ 0.0s] scheduling: "),
        "{}",
        ran.stderr
    );
}

#[test]
fn help_needs_no_orchestrator() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("missing.toml");
    for command in [
        "",
        "help",
        "--help",
        "new --help",
        "repos add --help",
        "help describe",
    ] {
        let mut cmd = boxcutter(&config, &["ssh-command"]);
        cmd.env("SSH_ORIGINAL_COMMAND", command);
        let ran = run(cmd, b"").ok();
        assert!(
            ran.stdout.contains("Usage: ssh boxcutter"),
            "{command}: {}",
            ran.stdout
        );
        assert_eq!(ran.stderr, "");
    }
    // No command at all (`ssh boxcutter`): sshd sets no SSH_ORIGINAL_COMMAND.
    let ran = run(boxcutter(&config, &["ssh-command"]), b"").ok();
    assert!(ran.stdout.contains("new "), "{}", ran.stdout);
}

#[test]
fn connect_pipes_stdio_to_the_vm_and_known_hosts_prints_its_key() {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = echo.accept().unwrap();
        conn.write_all(b"SSH-2.0-OpenSSH_9.2 stand-in\r\n").unwrap();
        let mut input = Vec::new();
        conn.read_to_end(&mut input).unwrap();
        conn.write_all(&input).unwrap();
    });
    let cluster = Cluster::with_ssh_port(port);
    let ran = cluster
        .ssh_with_stdin(
            ALICE_KEY,
            "connect dev-box",
            b"SSH-2.0-client\r\n\x00\x01binary",
        )
        .ok();
    assert_eq!(
        ran.stdout,
        "SSH-2.0-OpenSSH_9.2 stand-in\r\nSSH-2.0-client\r\n\x00\x01binary"
    );
    assert_eq!(
        cluster.ssh(ALICE_KEY, "known-hosts dev-box").ok().stdout,
        format!("dev-box {HOST_KEY}\n")
    );
}

#[test]
fn connect_to_a_vm_that_does_not_answer_fails_clearly() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cluster = Cluster::with_ssh_port(port);
    cluster
        .ssh(ALICE_KEY, "connect dev-box")
        .failed(1, &format!("cannot reach dev-box at 127.0.0.1:{port}"));
}

#[test]
fn authorized_keys_vouches_only_for_boxcutter_users() {
    let cluster = Cluster::new();
    assert_eq!(
        cluster
            .authorized_keys("boxcutter", "ssh-ed25519", ALICE_KEY)
            .ok()
            .stdout,
        format!("restrict ssh-ed25519 {ALICE_KEY}\n")
    );
    for (login, key_type, key) in [
        ("boxcutter", "ssh-ed25519", STRANGER_KEY),
        ("root", "ssh-ed25519", ALICE_KEY),
        ("boxcutter", "ssh-ed25519", "AAAA;touch /tmp/x"),
        ("boxcutter", "command=\"sh\" ssh-ed25519", ALICE_KEY),
    ] {
        let ran = cluster.authorized_keys(login, key_type, key).ok();
        assert_eq!(ran.stdout, "", "{login} {key_type} {key}");
    }
}

#[test]
fn authorized_keys_fails_fast_when_the_orchestrator_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    ClusterSecret::load_or_create(&secret).unwrap();
    let config = dir.path().join("cli.toml");
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    write_config(&config, &url, &secret, None);
    let started = Instant::now();
    let ran = run(
        boxcutter(
            &config,
            &["authorized-keys", "boxcutter", "ssh-ed25519", ALICE_KEY],
        ),
        b"",
    );
    ran.failed(1, "cannot reach the orchestrator at http://127.0.0.1:");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn authorized_keys_never_waits_long_for_a_stuck_orchestrator() {
    // Accepts connections and never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stuck.local_addr().unwrap());
    thread::spawn(move || {
        let held: Vec<TcpStream> = stuck.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    ClusterSecret::load_or_create(&secret).unwrap();
    let config = dir.path().join("cli.toml");
    write_config(&config, &url, &secret, None);
    let started = Instant::now();
    let ran = run(
        boxcutter(
            &config,
            &["authorized-keys", "boxcutter", "ssh-ed25519", ALICE_KEY],
        ),
        b"",
    );
    ran.failed(1, "cannot reach the orchestrator");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_user_comes_from_the_login_key_only() {
    let cluster = Cluster::new();
    cluster
        .ssh(STRANGER_KEY, "list")
        .failed(1, "belongs to no Boxcutter user");

    let mut no_auth_info = boxcutter(&cluster.config, &["ssh-command"]);
    no_auth_info.env("SSH_ORIGINAL_COMMAND", "list");
    run(no_auth_info, b"").failed(1, "ExposeAuthInfo");

    // Inside a forced session, neither --user nor a direct command is accepted.
    let mut pick_user = boxcutter(&cluster.config, &["--user", "alice", "list"]);
    pick_user.env("SSH_ORIGINAL_COMMAND", "list");
    run(pick_user, b"").failed(2, "only `boxcutter ssh-command` runs");
    let mut both = boxcutter(&cluster.config, &["--user", "alice", "ssh-command"]);
    both.env("SSH_ORIGINAL_COMMAND", "list");
    run(both, b"").failed(2, "never from --user");
    // The control grammar has no --user at all.
    cluster
        .ssh(BOB_KEY, "--user alice list")
        .failed(2, "unexpected argument '--user'");
    cluster
        .ssh(BOB_KEY, "list --user alice")
        .failed(2, "unexpected argument '--user'");

    // Outside sshd, whoever can read the secret is an admin and names the user.
    let direct = run(boxcutter(&cluster.config, &["--user", "bob", "list"]), b"").ok();
    assert!(direct.stdout.contains("bob-box"), "{}", direct.stdout);
    run(boxcutter(&cluster.config, &["list"]), b"").failed(2, "--user NAME is needed");
}

#[test]
fn a_wrong_secret_or_a_missing_config_is_reported() {
    let cluster = Cluster::new();
    let other = cluster.dir.path().join("other.key");
    ClusterSecret::load_or_create(&other).unwrap();
    let text = std::fs::read_to_string(&cluster.config).unwrap();
    let url = text.lines().next().unwrap().split('"').nth(1).unwrap();
    write_config(&cluster.config, url, &other, None);
    cluster
        .ssh(ALICE_KEY, "list")
        .failed(1, "bad token signature");

    std::fs::remove_file(&cluster.config).unwrap();
    cluster.ssh(ALICE_KEY, "list").failed(1, "cli.toml");
}
