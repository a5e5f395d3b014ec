//! The API contract `FakeFirecracker` enforces: request parsing, the order rules and the
//! state they act on. Synchronous and free of I/O but for the files Firecracker itself
//! would open or write, so the server runs it on the blocking pool.
//!
//! ```text
//!                InstanceStart               PATCH /vm Paused
//!   Not started ---------------> Running ----------------------> Paused --+
//!        |                        ^     <----------------------   ^  ^    | snapshot/create
//!        |  snapshot/load with    |         PATCH /vm Resumed     |  +----+ (only here)
//!        +------ resume_vm -------+                               |
//!        |                                                        |
//!        +--------------- snapshot/load (stays paused) -----------+
//! ```
//!
//! A snapshot loads only on a fresh instance: nothing but the logger and metrics may have
//! been configured before. A failed load ends the process, as it ends Firecracker. So does
//! Ctrl-Alt-Del on a running guest (a Linux guest reboots, and a reboot ends Firecracker);
//! a paused guest reacts once resumed.
//!
//! Pre-boot resources (`boot-source`, `machine-config`, `drives`, `network-interfaces`,
//! `vsock`, `balloon`, `logger`, `metrics`) are refused once the guest started or was
//! loaded; `PATCH /vm`, snapshots and the other actions are refused before. Refusals carry
//! Firecracker's own fault messages where we know them.

use std::os::unix::net::UnixListener;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::faults::Fault;
use super::resources::{open_existing, Resources};
use super::snapshot_files::{self, Completion};
use super::FAKE_VMM_VERSION;
use crate::firecracker::api::{
    ActionType, DriveUpdate, InstanceAction, InstanceState, Logger, MemoryBackendType, Metrics,
    SnapshotCreate, SnapshotLoad, SnapshotType, VmState, VmStateUpdate,
};

/// Firecracker's limit on request bodies.
pub(super) const MAX_PAYLOAD_BYTES: usize = 51_200;

/// Where the guest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    NotStarted,
    Running,
    Paused,
}

/// What a request asks of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Describe,
    Configure,
    LoadSnapshot,
    Start,
    Pause,
    Resume,
    CreateSnapshot,
    CtrlAltDel,
    FlushMetrics,
    UpdateDevice,
}

/// Why the state machine refuses an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    PreBoot,
    PostBoot,
    NotPaused,
}

/// The one transition function: every (phase, action) pair, no wildcard.
fn transition(phase: Phase, action: Action) -> Result<Phase, Denial> {
    use Action::*;
    use Phase::*;
    match (phase, action) {
        (NotStarted, Describe) => Ok(NotStarted),
        (Running, Describe) => Ok(Running),
        (Paused, Describe) => Ok(Paused),
        (NotStarted, Configure) => Ok(NotStarted),
        (NotStarted, LoadSnapshot) => Ok(Paused),
        (NotStarted, Start) => Ok(Running),
        (Running | Paused, Configure | LoadSnapshot | Start) => Err(Denial::PostBoot),
        (
            NotStarted,
            Pause | Resume | CreateSnapshot | CtrlAltDel | FlushMetrics | UpdateDevice,
        ) => Err(Denial::PreBoot),
        (Running | Paused, Pause) => Ok(Paused),
        (Running | Paused, Resume) => Ok(Running),
        (Paused, CreateSnapshot) => Ok(Paused),
        (Running, CreateSnapshot) => Err(Denial::NotPaused),
        (Running, CtrlAltDel | FlushMetrics | UpdateDevice) => Ok(Running),
        (Paused, CtrlAltDel | FlushMetrics | UpdateDevice) => Ok(Paused),
    }
}

impl Denial {
    fn refusal(self) -> Refusal {
        Refusal::bad_request(match self {
            Denial::PreBoot => {
                "The requested operation is not supported before starting the microVM."
            }
            Denial::PostBoot => {
                "The requested operation is not supported after starting the microVM."
            }
            Denial::NotPaused => {
                "Create snapshot error: Cannot save the microVM state: Operation not \
                 allowed: save/restore unavailable while running"
            }
        })
    }
}

/// A refused request: its status, fault message and whether Firecracker exits after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
    fatal: bool,
}

impl Refusal {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            fatal: false,
        }
    }

    /// Firecracker answers, then exits: it considers itself too dirty to go on.
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            fatal: true,
            ..Self::bad_request(message)
        }
    }

    fn reply(self) -> Reply {
        let body = json!({ "fault_message": self.message }).to_string();
        let after = if self.fatal {
            After::Exit(1)
        } else {
            After::Nothing
        };
        Reply {
            status: self.status,
            body: Some(body),
            after,
        }
    }
}

/// The answer to a request and what the process does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub status: StatusCode,
    pub body: Option<String>,
    pub after: After,
}

/// What the fake process does once the reply is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// Go on serving.
    Nothing,
    /// Send the reply, then exit with this status.
    Exit(i32),
    /// Exit with this status without replying.
    Die(i32),
    /// Never reply.
    Hang,
}

impl Reply {
    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            after: After::Nothing,
        }
    }

    fn json(body: String) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(body),
            after: After::Nothing,
        }
    }

    fn then(mut self, after: After) -> Self {
        self.after = after;
        self
    }
}

/// One fake Firecracker instance's API state.
#[derive(Debug)]
pub(super) struct Contract {
    id: String,
    phase: Phase,
    resources: Resources,
    logger: Option<Logger>,
    metrics: Option<Metrics>,
    /// A boot-specific resource was configured: loading a snapshot is no longer allowed.
    boot_path: bool,
    dirty_tracking: bool,
    vsock_listener: Option<UnixListener>,
    ctrl_alt_del_pending: bool,
    faults: Vec<Fault>,
    log: Vec<String>,
    guest_work: Vec<GuestWork>,
}

/// What the simulated guest (`super::guest`) is to do once the guest runs: its vsock
/// device's listener, and whether it just booted (and so announces itself).
#[derive(Debug)]
pub(super) struct GuestWork {
    pub listener: UnixListener,
    pub uds_path: std::path::PathBuf,
    pub booted: bool,
}

type Handled = Result<Reply, Refusal>;

/// Whether a resource belongs to the boot path (everything but the logger and metrics).
const BOOT: bool = true;

impl Contract {
    pub fn new(id: String, faults: Vec<Fault>) -> Self {
        Self {
            id,
            phase: Phase::NotStarted,
            resources: Resources::default(),
            logger: None,
            metrics: None,
            boot_path: false,
            dirty_tracking: false,
            vsock_listener: None,
            ctrl_alt_del_pending: false,
            faults,
            log: Vec::new(),
            guest_work: Vec::new(),
        }
    }

    /// Hands the simulated guest what became its job since the last call.
    pub fn take_guest_work(&mut self) -> Vec<GuestWork> {
        std::mem::take(&mut self.guest_work)
    }

    /// Records what happened on the vsock device, in the request log.
    pub fn note(&mut self, line: String) {
        self.log.push(line);
    }

    /// Whether the guest's vCPUs run (a paused guest answers nothing on vsock).
    pub fn guest_running(&self) -> bool {
        self.phase == Phase::Running
    }

    fn hand_vsock_to_guest(&mut self, booted: bool) {
        let (Some(listener), Some(vsock)) = (self.vsock_listener.take(), &self.resources.vsock)
        else {
            return;
        };
        self.guest_work.push(GuestWork {
            listener,
            uds_path: vsock.uds_path.clone(),
            booted,
        });
    }

    /// Answers one request; `body` is `None` when the request has none.
    pub fn handle(&mut self, method: &Method, path: &str, body: Option<&[u8]>) -> Reply {
        let reply = match self.injected(method, path) {
            Some(reply) => reply,
            None => self
                .route(method, path, body)
                .unwrap_or_else(Refusal::reply),
        };
        self.log
            .push(format!("{method} {path} {}", reply.status.as_u16()));
        reply
    }

    /// The guest's state as `GET /` reports it.
    pub fn state(&self) -> InstanceState {
        match self.phase {
            Phase::NotStarted => InstanceState::NotStarted,
            Phase::Running => InstanceState::Running,
            Phase::Paused => InstanceState::Paused,
        }
    }

    /// Every request answered so far, as `METHOD /path STATUS`.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    fn injected(&self, method: &Method, path: &str) -> Option<Reply> {
        self.faults.iter().find_map(|fault| match fault {
            Fault::InternalError(at) if at.matches(method, path) => Some(Reply {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: Some(json!({ "fault_message": format!("injected: {fault}") }).to_string()),
                after: After::Nothing,
            }),
            Fault::Hang(at) if at.matches(method, path) => {
                Some(Reply::no_content().then(After::Hang))
            }
            _ => None,
        })
    }

    fn route(&mut self, method: &Method, path: &str, body: Option<&[u8]>) -> Handled {
        let tokens: Vec<&str> = path.trim_start_matches('/').split_terminator('/').collect();
        match (method.as_str(), tokens.as_slice(), body) {
            ("GET", _, Some(_)) => Err(Refusal::bad_request("GET request cannot have a body.")),
            ("GET", [], None) => self.describe(),
            ("GET", ["version"], None) => Ok(Reply::json(
                json!({ "firecracker_version": FAKE_VMM_VERSION }).to_string(),
            )),
            ("GET", ["vm", "config"], None) => Ok(Reply::json(
                self.resources.vm_config_json(&self.logger, &self.metrics),
            )),
            ("GET", ["machine-config"], None) => Ok(Reply::json(
                self.resources.machine_config_json().to_string(),
            )),
            ("PUT", _, None) => Err(Refusal::bad_request("Empty PUT request.")),
            ("PATCH", _, None) => Err(Refusal::bad_request("Empty PATCH request.")),
            ("PUT", ["actions"], Some(body)) => self.action(parse(body)?),
            ("PUT", ["snapshot", "create"], Some(body)) => self.create_snapshot(parse(body)?),
            ("PUT", ["snapshot", "load"], Some(body)) => self.load_snapshot(parse(body)?),
            ("PATCH", ["vm"], Some(body)) => self.set_vm_state(parse(body)?),
            ("PATCH", ["drives", id], Some(body)) => self.update_drive(id, parse(body)?),
            ("PUT", ["machine-config"], Some(body)) => self.configure(body, BOOT, |s, config| {
                s.resources.set_machine_config(config)
            }),
            ("PUT", ["boot-source"], Some(body)) => {
                self.configure(body, BOOT, |s, boot| s.resources.set_boot_source(boot))
            }
            ("PUT", ["drives", id], Some(body)) => {
                self.configure(body, BOOT, |s, drive| s.resources.set_drive(id, drive))
            }
            ("PUT", ["network-interfaces", id], Some(body)) => {
                self.configure(body, BOOT, |s, nic| s.resources.set_nic(id, nic))
            }
            ("PUT", ["vsock"], Some(body)) => self.configure(body, BOOT, Self::set_vsock),
            ("PUT", ["balloon"], Some(body)) => {
                self.configure(body, BOOT, |s, balloon| s.resources.set_balloon(balloon))
            }
            ("PUT", ["logger"], Some(body)) => self.configure(body, !BOOT, Self::set_logger),
            ("PUT", ["metrics"], Some(body)) => self.configure(body, !BOOT, Self::set_metrics),
            _ => Err(Refusal::bad_request(format!(
                "Invalid request method and/or path: {method} {path}."
            ))),
        }
    }

    fn describe(&mut self) -> Handled {
        transition(self.phase, Action::Describe).map_err(Denial::refusal)?;
        let info = json!({
            "id": self.id,
            "state": self.state(),
            "vmm_version": FAKE_VMM_VERSION,
            "app_name": "Firecracker",
        });
        Ok(Reply::json(info.to_string()))
    }

    /// A pre-boot resource. The body is parsed first, as Firecracker does, so a malformed
    /// body is refused as such in any state.
    fn configure<T: DeserializeOwned>(
        &mut self,
        body: &[u8],
        boot_specific: bool,
        apply: impl FnOnce(&mut Self, T) -> Result<(), Refusal>,
    ) -> Handled {
        let request = parse(body)?;
        transition(self.phase, Action::Configure).map_err(Denial::refusal)?;
        // Firecracker marks the boot path before it validates, so even a refused drive
        // rules out a later snapshot load.
        self.boot_path |= boot_specific;
        apply(self, request)?;
        Ok(Reply::no_content())
    }

    fn set_vsock(&mut self, vsock: crate::firecracker::api::Vsock) -> Result<(), Refusal> {
        let listener = Resources::bind_vsock(&vsock)?;
        self.vsock_listener = Some(listener);
        self.resources.vsock = Some(vsock);
        Ok(())
    }

    fn set_logger(&mut self, logger: Logger) -> Result<(), Refusal> {
        if let Some(path) = &logger.log_path {
            open_existing(path, "Logger error")?;
        }
        self.logger = Some(logger);
        Ok(())
    }

    fn set_metrics(&mut self, metrics: Metrics) -> Result<(), Refusal> {
        if self.metrics.is_some() {
            return Err(Refusal::bad_request(
                "Metrics error: Reinitialization of metrics not allowed.",
            ));
        }
        open_existing(&metrics.metrics_path, "Metrics error")?;
        self.metrics = Some(metrics);
        Ok(())
    }

    fn action(&mut self, action: InstanceAction) -> Handled {
        match action.action_type {
            ActionType::InstanceStart => self.start(),
            ActionType::SendCtrlAltDel => self.ctrl_alt_del(),
            ActionType::FlushMetrics => {
                self.phase =
                    transition(self.phase, Action::FlushMetrics).map_err(Denial::refusal)?;
                Ok(Reply::no_content())
            }
        }
    }

    fn start(&mut self) -> Handled {
        let next = transition(self.phase, Action::Start).map_err(Denial::refusal)?;
        if self.resources.boot.is_none() {
            return Err(Refusal::bad_request(
                "Start microvm error: Cannot start the VM because the kernel was not configured.",
            ));
        }
        if self.faults.contains(&Fault::DieDuringBoot) {
            return Ok(Reply::no_content().then(After::Die(1)));
        }
        self.phase = next;
        self.dirty_tracking = self.resources.machine.track_dirty_pages.unwrap_or(false);
        self.hand_vsock_to_guest(true);
        Ok(Reply::no_content())
    }

    /// A Linux guest reboots on Ctrl-Alt-Del, and a rebooting guest ends Firecracker. A
    /// paused guest reacts once resumed.
    fn ctrl_alt_del(&mut self) -> Handled {
        self.phase = transition(self.phase, Action::CtrlAltDel).map_err(Denial::refusal)?;
        if self.faults.contains(&Fault::IgnoreCtrlAltDel) {
            return Ok(Reply::no_content());
        }
        match self.phase {
            Phase::Running => Ok(Reply::no_content().then(After::Exit(0))),
            Phase::NotStarted | Phase::Paused => {
                self.ctrl_alt_del_pending = true;
                Ok(Reply::no_content())
            }
        }
    }

    fn set_vm_state(&mut self, update: VmStateUpdate) -> Handled {
        let action = match update.state {
            VmState::Paused => Action::Pause,
            VmState::Resumed => Action::Resume,
        };
        self.phase = transition(self.phase, action).map_err(Denial::refusal)?;
        if self.phase == Phase::Running && self.ctrl_alt_del_pending {
            return Ok(Reply::no_content().then(After::Exit(0)));
        }
        Ok(Reply::no_content())
    }

    /// `PATCH /drives/{id}`: a new backing file for a drive the guest has.
    fn update_drive(&mut self, path_id: &str, update: DriveUpdate) -> Handled {
        transition(self.phase, Action::UpdateDevice).map_err(Denial::refusal)?;
        if update.drive_id != path_id {
            return Err(Refusal::bad_request(
                "The id from the path does not match the id from the body!",
            ));
        }
        let Some(path) = &update.path_on_host else {
            return Ok(Reply::no_content());
        };
        self.resources.update_drive_file(path_id, path)?;
        Ok(Reply::no_content())
    }

    fn create_snapshot(&mut self, request: SnapshotCreate) -> Handled {
        transition(self.phase, Action::CreateSnapshot).map_err(Denial::refusal)?;
        let snapshot_type = request.snapshot_type.unwrap_or(SnapshotType::Full);
        if snapshot_type == SnapshotType::Diff && !self.dirty_tracking {
            return Err(Refusal::bad_request(
                "Diff snapshots are not allowed on uVMs with dirty page tracking disabled.",
            ));
        }
        let completion = if self.faults.contains(&Fault::SnapshotHalfway) {
            Completion::Halfway
        } else {
            Completion::Whole
        };
        snapshot_files::write(
            snapshot_type,
            &self.resources,
            &request.snapshot_path,
            &request.mem_file_path,
            completion,
        )
        .map_err(|e| Refusal::bad_request(format!("Create snapshot error: {e}")))?;
        if completion == Completion::Halfway {
            return Err(Refusal::bad_request(
                "Create snapshot error: Cannot write memory file: stopped halfway (injected \
                 fault snapshot-halfway)",
            ));
        }
        Ok(Reply::no_content())
    }

    fn load_snapshot(&mut self, request: SnapshotLoad) -> Handled {
        let memory = match (&request.mem_backend, &request.mem_file_path) {
            (Some(_), Some(_)) => {
                return Err(deserialize_error(
                    "too many fields: either `mem_backend` or `mem_file_path` exclusively \
                     is required",
                ))
            }
            (None, None) => {
                return Err(deserialize_error(
                    "missing field: either `mem_backend` or `mem_file_path` is required",
                ))
            }
            // Limitation: no userfaultfd page-fault handler protocol; such loads are refused.
            (Some(backend), None) if backend.backend_type == MemoryBackendType::Uffd => {
                return Err(Refusal::bad_request(
                    "Load snapshot error: fake-firecracker serves no userfaultfd backend",
                ))
            }
            (Some(backend), None) => backend.backend_path.clone(),
            (None, Some(path)) => path.clone(),
        };
        let next = transition(self.phase, Action::LoadSnapshot).map_err(Denial::refusal)?;
        if self.boot_path {
            return Err(Refusal::bad_request(
                "Load snapshot error: Loading a microVM snapshot not allowed after \
                 configuring boot-specific resources.",
            ));
        }
        self.restore(&request, &memory).map_err(|e| {
            Refusal::fatal(format!(
                "Load snapshot error: Failed to restore from snapshot: {e}"
            ))
        })?;
        self.phase = next;
        self.dirty_tracking = request.enable_diff_snapshots.unwrap_or(false)
            || request.track_dirty_pages.unwrap_or(false);
        self.resources.machine.track_dirty_pages = Some(self.dirty_tracking);
        self.hand_vsock_to_guest(false);
        if request.resume_vm.unwrap_or(false) {
            self.phase = transition(self.phase, Action::Resume).map_err(Denial::refusal)?;
        }
        Ok(Reply::no_content())
    }

    /// Rebuilds the guest from the snapshot: its drives must open and its vsock socket
    /// must bind again, as when it was first configured.
    fn restore(&mut self, request: &SnapshotLoad, memory: &std::path::Path) -> Result<(), String> {
        let mut saved = snapshot_files::read(&request.snapshot_path, memory)?.resources;
        for nic_override in request.network_overrides.iter().flatten() {
            let nic = saved
                .nics
                .iter_mut()
                .find(|nic| nic.iface_id == nic_override.iface_id)
                .ok_or_else(|| {
                    format!(
                        "Invalid network override: no interface {}",
                        nic_override.iface_id
                    )
                })?;
            nic.host_dev_name = nic_override.host_dev_name.clone();
        }
        let mut resources = Resources {
            machine: saved.machine.clone(),
            ..Resources::default()
        };
        for drive in std::mem::take(&mut saved.drives) {
            let id = drive.drive_id.clone();
            resources.set_drive(&id, drive).map_err(|r| r.message)?;
        }
        if let Some(mut vsock) = saved.vsock.take() {
            if let Some(vsock_override) = &request.vsock_override {
                vsock.uds_path = vsock_override.uds_path.clone();
            }
            self.vsock_listener = Some(Resources::bind_vsock(&vsock).map_err(|r| r.message)?);
            resources.vsock = Some(vsock);
        }
        resources.nics = saved.nics;
        resources.balloon = saved.balloon;
        // After a load, Firecracker reports no boot source.
        self.resources = resources;
        Ok(())
    }
}

/// Decodes a request body into its type: unknown fields, missing required fields and
/// wrong types are refused with Firecracker's message.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(deserialize_error)
}

fn deserialize_error(error: impl std::fmt::Display) -> Refusal {
    Refusal::bad_request(format!(
        "An error occurred when deserializing the json body of a request: {error}."
    ))
}
