//! Creating and copying VMs: the multi-step flows behind `new` and `cp`.
//!
//! Create, step by step (each with its undo):
//! 1. validate the request and apply the defaults (nothing to undo);
//! 2. schedule: the VM's type and the candidate nodes (nothing to undo);
//! 3. reserve: claim the name in memory, allocate a subnet and insert the VM's row
//!    (`creating`) in one transaction (undo: delete the row, which frees the subnet);
//! 4. for each candidate: point the row at it and ask the node to create the VM, relaying
//!    its progress. A node-side failure (unreachable, 5xx, a failed stream that is not a
//!    validation error) moves on to the next candidate, saying so (undo on a node whose
//!    stream broke off: destroy whatever it left);
//! 5. record the result (`running`, host key) and answer with the VM.
//!
//! Steps 1-3 answer errors as HTTP statuses; from step 4 on, the answer is a stream of
//! [`OrchLine`]s that ends in `Done` or `Failed`. The flow runs in its own task, so a
//! client that hangs up does not abandon a VM halfway.

use std::sync::Arc;
use std::time::Instant;

use boxcutter_types::api::{ApiError, CopyRequest, ErrorCode, ProgressLine};
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{
    CopyVmRequest, NewVmRequest, OrchLine, DEFAULT_DISK, DEFAULT_RAM_MIB, DEFAULT_VCPUS,
};
use boxcutter_types::{ByteSize, GuestSubnet, VmName, VmRecord, VmSpec, VmState};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::alloc::allocate;
use crate::app::{App, BusyGuard};
use crate::db::DbError;
use crate::error::{chain, OrchError};
use crate::names::random_name;
use crate::node_client::{NodeCallError, ProgressStream};
use crate::registry::{self, now, unique_violation, User, VmRow};
use crate::scheduler::{schedule, Demand, NodeView, Placement};
use crate::vms::{normalize_repo, validate_description};

/// Bounds on what one VM may ask for (the node agent's own bounds).
const MAX_VCPUS: u32 = 64;
/// RAM bounds in MiB.
const RAM_MIB: std::ops::RangeInclusive<u32> = 128..=1 << 20;
/// Smallest disk.
const MIN_DISK: ByteSize = ByteSize(1 << 30);
/// Random names tried before giving up.
const NAME_TRIES: usize = 32;

/// Starts creating a VM for `user`; the stream reports progress and the result.
pub async fn create(
    app: &Arc<App>,
    user: &User,
    request: NewVmRequest,
) -> Result<UnboundedReceiver<OrchLine>, OrchError> {
    let progress = Progress::new();
    let repos = validate(&request)?;
    let demand = demand_of(&request);
    let placement = place(app, &demand).await?;
    let template = VmRow {
        node: placement.candidates[0].clone(),
        vm_type: placement.vm_type,
        ..new_row(app, user, &request, &demand)?
    };
    let keys = user_keys(app, &user.name).await?;
    let (row, guard) = reserve(app, template, request.name.clone(), repos).await?;
    let (tx, rx) = unbounded_channel();
    let progress = progress.with_sender(tx);
    if let Some(note) = &placement.note {
        progress.step("schedule", note);
    }
    tracing::info!(vm = %row.name, owner = %row.owner, node = %row.node, "creating VM");
    let app = app.clone();
    tokio::spawn(async move {
        run_create(&app, row, placement.candidates, keys, &progress).await;
        drop(guard);
    });
    Ok(rx)
}

/// Starts copying `source` (visible to `user`) into a new VM on the same node.
pub async fn copy(
    app: &Arc<App>,
    user: &User,
    source: &str,
    request: CopyVmRequest,
) -> Result<UnboundedReceiver<OrchLine>, OrchError> {
    let progress = Progress::new();
    let source = app.visible_vm(user, source).await?;
    let source_guard = app.busy.claim(source.name.as_str())?;
    let url = app.node_url(&source.node).await?;
    let repos = {
        let name = source.name.to_string();
        app.db
            .call(move |conn| registry::repos(conn, &name).map_err(DbError::from))
            .await?
    };
    let template = VmRow {
        name: random_name(),
        owner: user.name.clone(),
        state: VmState::Creating,
        host_key: String::new(),
        created_at: now(),
        ..source.clone()
    };
    let (row, guard) = reserve(app, template, request.name, repos).await?;
    let (tx, rx) = unbounded_channel();
    let progress = progress.with_sender(tx);
    tracing::info!(vm = %row.name, source = %source.name, node = %row.node, "copying VM");
    let app = app.clone();
    tokio::spawn(async move {
        run_copy(&app, &url, &source.name, row, &progress).await;
        drop((guard, source_guard));
    });
    Ok(rx)
}

/// What the request asks for, with the defaults applied.
fn demand_of(request: &NewVmRequest) -> Demand {
    Demand {
        vm_type: request.vm_type,
        vcpus: request.vcpus.unwrap_or(DEFAULT_VCPUS),
        ram_mib: request.ram_mib.unwrap_or(DEFAULT_RAM_MIB),
        disk: request.disk.unwrap_or(DEFAULT_DISK),
        node: request.node.clone(),
    }
}

/// The row of a VM about to be created; [`reserve`] fills in its name and subnet, the
/// placement its node and type.
fn new_row(
    app: &App,
    user: &User,
    request: &NewVmRequest,
    demand: &Demand,
) -> Result<VmRow, OrchError> {
    Ok(VmRow {
        name: random_name(),
        owner: user.name.clone(),
        node: String::new(),
        subnet: first_subnet(app)?,
        vm_type: demand.vm_type.unwrap_or(VmType::Qemu),
        vcpus: demand.vcpus,
        ram_mib: demand.ram_mib,
        disk: demand.disk,
        mode: request.mode.unwrap_or_default(),
        description: request.description.clone(),
        state: VmState::Creating,
        host_key: String::new(),
        created_at: now(),
    })
}

/// Checks the request's bounds; returns its repositories, normalised.
///
/// Limitation: `--clone` repositories are recorded as the VM's repository grants but not
/// cloned: the node agent's `VmSpec` has no field for them yet, so the guest never sees
/// them.
fn validate(request: &NewVmRequest) -> Result<Vec<String>, OrchError> {
    let bad = |m: String| Err(OrchError::BadRequest(m));
    if let Some(vcpus) = request.vcpus.filter(|v| *v == 0 || *v > MAX_VCPUS) {
        return bad(format!("vcpus must be 1-{MAX_VCPUS}, not {vcpus}"));
    }
    if let Some(ram) = request.ram_mib.filter(|r| !RAM_MIB.contains(r)) {
        let (min, max) = (RAM_MIB.start(), RAM_MIB.end());
        return bad(format!("ram must be {min}-{max} MiB, not {ram}"));
    }
    if let Some(disk) = request.disk.filter(|d| *d < MIN_DISK) {
        return bad(format!("disk must be at least {MIN_DISK}, not {disk}"));
    }
    validate_description(&request.description)?;
    request.clone.iter().map(|r| normalize_repo(r)).collect()
}

/// Schedules `demand` over the registry's nodes.
async fn place(app: &App, demand: &Demand) -> Result<Placement, OrchError> {
    let views = app
        .db
        .call(|conn| {
            let held = registry::held_by_node(conn)?;
            let nodes = registry::nodes(conn)?;
            Ok::<_, DbError>(
                nodes
                    .into_iter()
                    .map(|n| NodeView {
                        held: held.get(&n.id).copied().unwrap_or_default(),
                        up: n.state == boxcutter_types::orch::NodeState::Up,
                        id: n.id,
                        health: n.health,
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
    Ok(schedule(&views, demand)?)
}

/// Claims a name (the given one, or random ones until one is free), allocates a subnet
/// and inserts `template` under them with its repositories, in one transaction.
async fn reserve(
    app: &Arc<App>,
    template: VmRow,
    name: Option<VmName>,
    repos: Vec<String>,
) -> Result<(VmRow, BusyGuard), OrchError> {
    let taken = |name: &VmName| OrchError::Conflict(format!("a VM named {name} already exists"));
    for _ in 0..NAME_TRIES {
        let candidate = name.clone().unwrap_or_else(random_name);
        let guard = match app.busy.claim(candidate.as_str()) {
            Ok(guard) => guard,
            Err(_) if name.is_none() => continue,
            Err(_) => return Err(taken(&candidate)),
        };
        let row = VmRow {
            name: candidate.clone(),
            ..template.clone()
        };
        match insert(app, row, repos.clone()).await? {
            Some(row) => return Ok((row, guard)),
            None if name.is_none() => continue,
            None => return Err(taken(&candidate)),
        }
    }
    Err(OrchError::Conflict(format!(
        "no free random name after {NAME_TRIES} tries; choose one with --name"
    )))
}

/// Inserts `row` with a freshly allocated subnet; `None` if the name is taken.
async fn insert(app: &App, mut row: VmRow, repos: Vec<String>) -> Result<Option<VmRow>, OrchError> {
    let range = app.guest_range;
    app.db
        .call(move |conn| {
            let tx = conn.transaction().map_err(DbError::from)?;
            row.subnet = allocate(&tx, range)?;
            match registry::insert_vm(&tx, &row) {
                Ok(()) => {}
                Err(e) if unique_violation(&e) == Some("vms.name") => return Ok(None),
                Err(e) => return Err(DbError::from(e).into()),
            }
            for repo in &repos {
                registry::add_repo(&tx, row.name.as_str(), repo).map_err(DbError::from)?;
            }
            tx.commit().map_err(DbError::from)?;
            Ok(Some(row))
        })
        .await
}

async fn user_keys(app: &App, user: &str) -> Result<Vec<String>, OrchError> {
    let user = user.to_string();
    Ok(app
        .db
        .call(move |conn| registry::user_keys(conn, &user).map_err(DbError::from))
        .await?)
}

/// How one node's attempt ended, when it did not produce the VM.
enum Attempt {
    /// The request itself is wrong: no node will take it.
    Final(NodeCallError),
    /// Node-side: another node may succeed.
    Retry(NodeCallError),
}

async fn run_create(
    app: &App,
    mut row: VmRow,
    candidates: Vec<String>,
    keys: Vec<String>,
    progress: &Progress,
) {
    let mut failures: Vec<(String, NodeCallError)> = Vec::new();
    for (index, node) in candidates.iter().enumerate() {
        if index > 0 {
            row.node = node.clone();
            if let Err(e) = set_node(app, &row).await {
                return fail(app, &row, progress, e.to_api()).await;
            }
        }
        progress.step("schedule", format!("creating on node {node}"));
        let spec = spec_of(&row, keys.clone());
        match attempt(app, node, &spec, progress).await {
            Ok(record) => return finish(app, row, record, progress).await,
            Err(Attempt::Final(e)) => {
                failures.push((node.clone(), e));
                break;
            }
            Err(Attempt::Retry(e)) => {
                tracing::warn!(vm = %row.name, node, error = %chain(&e), "node failed a create");
                if let Some(next) = candidates.get(index + 1) {
                    let why = chain(&e);
                    progress.step(
                        "schedule",
                        format!("node {node} failed: {why}; trying node {next}"),
                    );
                }
                failures.push((node.clone(), e));
            }
        }
    }
    fail(app, &row, progress, failure_of(failures)).await;
}

/// Asks `node` to create `spec` and relays its progress.
async fn attempt(
    app: &App,
    node: &str,
    spec: &VmSpec,
    progress: &Progress,
) -> Result<VmRecord, Attempt> {
    let url = app
        .node_url(node)
        .await
        .map_err(|e| Attempt::Retry(NodeCallError::BadAnswer(chain(&e))))?;
    let mut stream = app.nodes.create(&url, spec).await.map_err(classify)?;
    match relay(&mut stream, progress).await {
        Ok(record) => Ok(record),
        Err(Relay::Failed(error)) => Err(classify(NodeCallError::Refused(error))),
        Err(Relay::Broken(error)) => {
            // The node may still be building the VM: remove whatever it has, so the VM
            // never exists on two nodes.
            if let Err(e) = app.nodes.destroy(&url, &spec.name).await {
                tracing::warn!(vm = %spec.name, node, error = %chain(&e),
                    "cannot clean up after a broken create");
            }
            Err(Attempt::Retry(error))
        }
    }
}

fn classify(error: NodeCallError) -> Attempt {
    match &error {
        NodeCallError::Refused(e) if e.code == ErrorCode::BadRequest => Attempt::Final(error),
        _ => Attempt::Retry(error),
    }
}

enum Relay {
    Failed(ApiError),
    Broken(NodeCallError),
}

/// Relays a node's progress lines until its result.
async fn relay(stream: &mut ProgressStream, progress: &Progress) -> Result<VmRecord, Relay> {
    loop {
        match stream.next().await {
            Ok(Some(ProgressLine::Progress { phase, message, .. })) => {
                progress.step(&phase, message)
            }
            Ok(Some(ProgressLine::Done { vm })) => return Ok(*vm),
            Ok(Some(ProgressLine::Failed { error })) => return Err(Relay::Failed(error)),
            Ok(None) => {
                let why = "the progress stream ended without a result".to_string();
                return Err(Relay::Broken(NodeCallError::BadAnswer(why)));
            }
            Err(e) => return Err(Relay::Broken(e)),
        }
    }
}

/// The error a create ends with after every candidate failed.
fn failure_of(failures: Vec<(String, NodeCallError)>) -> ApiError {
    let all_full = failures
        .iter()
        .all(|(_, e)| e.code() == ErrorCode::NoCapacity);
    let text: Vec<String> = failures
        .iter()
        .map(|(node, e)| format!("node {node}: {}", chain(e)))
        .collect();
    match failures.last() {
        Some(_) if all_full => ApiError::new(
            ErrorCode::NoCapacity,
            format!("every node is out of capacity ({})", text.join("; ")),
        ),
        Some((_, last)) if failures.len() == 1 => ApiError::new(last.code(), text.join("")),
        Some((_, last)) => ApiError::new(
            last.code(),
            format!("every candidate node failed ({})", text.join("; ")),
        ),
        None => ApiError::new(ErrorCode::Internal, "no node was tried"),
    }
}

fn spec_of(row: &VmRow, authorized_keys: Vec<String>) -> VmSpec {
    VmSpec {
        name: row.name.clone(),
        vm_type: row.vm_type,
        vcpus: row.vcpus,
        ram_mib: row.ram_mib,
        disk: row.disk,
        mode: row.mode,
        subnet: row.subnet,
        authorized_keys,
        description: row.description.clone(),
    }
}

async fn run_copy(app: &App, url: &str, source: &VmName, row: VmRow, progress: &Progress) {
    let request = CopyRequest {
        name: row.name.clone(),
        subnet: row.subnet,
    };
    progress.step("schedule", format!("copying {source} on node {}", row.node));
    let result = match app.nodes.copy(url, source, &request).await {
        Ok(mut stream) => relay(&mut stream, progress).await,
        Err(e) => Err(Relay::Broken(e)),
    };
    match result {
        Ok(record) => finish(app, row, record, progress).await,
        Err(Relay::Failed(error)) => {
            let message = format!("node {}: {}", row.node, error.message);
            fail(app, &row, progress, ApiError::new(error.code, message)).await
        }
        Err(Relay::Broken(e)) => {
            if let Err(e) = app.nodes.destroy(url, &row.name).await {
                tracing::warn!(vm = %row.name, error = %chain(&e), "cannot clean up a broken copy");
            }
            let error = OrchError::Node {
                node: row.node.clone(),
                source: e,
            };
            fail(app, &row, progress, error.to_api()).await
        }
    }
}

async fn set_node(app: &App, row: &VmRow) -> Result<(), OrchError> {
    let (name, node) = (row.name.to_string(), row.node.clone());
    Ok(app
        .db
        .call(move |conn| registry::set_vm_node(conn, &name, &node).map_err(DbError::from))
        .await?)
}

/// Records the node's result and ends the stream with the VM.
async fn finish(app: &App, mut row: VmRow, record: VmRecord, progress: &Progress) {
    row.state = record.state;
    row.host_key = record.host_key.clone();
    let (name, state, key) = (row.name.to_string(), row.state, row.host_key.clone());
    let saved = app
        .db
        .call(move |conn| {
            registry::set_vm_state(conn, &name, state, Some(&key)).map_err(DbError::from)
        })
        .await;
    if let Err(e) = saved {
        // The VM exists on its node; the next reconciliation records its state.
        tracing::error!(vm = %row.name, error = %chain(&e), "cannot record a created VM");
    }
    if let Err(e) = app.routes.sync(app).await {
        tracing::warn!(vm = %row.name, error = %chain(&e), "cannot route to the new VM yet");
    }
    tracing::info!(vm = %row.name, node = %row.node, elapsed_ms = progress.elapsed_ms(),
        "VM created");
    progress.send(OrchLine::Done {
        vm: Box::new(row.info()),
    });
}

/// Undoes the reservation and ends the stream with `error`.
async fn fail(app: &App, row: &VmRow, progress: &Progress, error: ApiError) {
    let name = row.name.to_string();
    let deleted = app
        .db
        .call(move |conn| registry::delete_vm(conn, &name).map_err(DbError::from))
        .await;
    if let Err(e) = deleted {
        tracing::error!(vm = %row.name, error = %chain(&e), "cannot delete a failed VM's row");
    }
    tracing::error!(vm = %row.name, error = %error.message, "VM not created");
    progress.send(OrchLine::Failed { error });
}

/// The orchestrator's side of a progress stream.
struct Progress {
    started: Instant,
    tx: Option<UnboundedSender<OrchLine>>,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            tx: None,
        }
    }

    fn with_sender(self, tx: UnboundedSender<OrchLine>) -> Self {
        Self {
            tx: Some(tx),
            ..self
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn step(&self, phase: &str, message: impl Into<String>) {
        self.send(OrchLine::Progress {
            phase: phase.into(),
            message: message.into(),
            elapsed_ms: self.elapsed_ms(),
        });
    }

    fn send(&self, line: OrchLine) {
        if let Some(tx) = &self.tx {
            // A client that hung up does not stop the flow.
            let _ = tx.send(line);
        }
    }
}

/// A placeholder subnet for a template row; [`insert`] allocates the real one.
fn first_subnet(app: &App) -> Result<GuestSubnet, OrchError> {
    GuestSubnet::new(app.guest_range.base()).map_err(|e| OrchError::Internal(e.to_string()))
}
