//! The node agent: owns every VM on one machine.
//!
//! [`Node`] is the façade the HTTP API calls. Each VM is owned by its own task
//! ([`actor`]); the [`registry`] maps names to those tasks and is where admission happens;
//! [`context`] holds what the tasks share. At start-up, [`recover`] rebuilds the registry
//! from the VM directories, re-adopting running guests and rolling back half-done work.

pub mod actor;
pub mod capacity;
pub mod context;
pub mod error;
pub mod progress;
pub mod recover;
pub mod registry;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use boxcutter_types::api::{CopyRequest, NodeHealth, ProgressLine, VmCounts};
use boxcutter_types::guest::VmType;
use boxcutter_types::{VmName, VmRecord, VmSpec, VmState};
use tokio::sync::mpsc::UnboundedReceiver;

use self::actor::{Command, VmHandle};
use self::capacity::{free, held_by, sum, CapacityConfig};
use self::context::NodeContext;
use self::error::NodeError;
use self::progress::Progress;
use self::registry::Registry;

/// Bounds on what one VM may ask for.
pub const MAX_VCPUS: u32 = 64;
/// RAM bounds in MiB.
pub const RAM_MIB: std::ops::RangeInclusive<u32> = 128..=1 << 20;
/// Smallest disk a VM may have.
pub const MIN_DISK: u64 = 1 << 30;

/// A running node agent.
#[derive(Debug, Clone)]
pub struct Node {
    ctx: Arc<NodeContext>,
    registry: Arc<Registry>,
    capacity: CapacityConfig,
}

impl Node {
    /// Starts the agent over `ctx`, recovering the VMs its directories describe.
    pub async fn start(ctx: NodeContext, capacity: CapacityConfig) -> Result<Self, NodeError> {
        let ctx = Arc::new(ctx);
        let registry = Arc::new(Registry::default());
        recover::recover(&ctx, &registry).await?;
        Ok(Self {
            ctx,
            registry,
            capacity,
        })
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<NodeContext> {
        &self.ctx
    }

    /// Admits and starts creating a VM; progress and the result arrive on the stream.
    pub fn create(&self, spec: VmSpec) -> Result<UnboundedReceiver<ProgressLine>, NodeError> {
        validate(&spec, &self.ctx)?;
        let (progress, stream) = Progress::channel();
        let handle = self.admit(spec)?;
        handle.tell(Command::Create {
            progress,
            copy_of: None,
        });
        Ok(stream)
    }

    /// Admits and starts a copy of VM `source` named and addressed as `request` says.
    pub fn copy(
        &self,
        source: &VmName,
        request: CopyRequest,
    ) -> Result<UnboundedReceiver<ProgressLine>, NodeError> {
        let source = self.registry.get(source)?;
        let record = source.record();
        crate::lifecycle::allowed(record.state, crate::lifecycle::Operation::Copy).map_err(
            |refused| NodeError::WrongState {
                vm: record.spec.name.clone(),
                refused,
            },
        )?;
        let spec = VmSpec {
            name: request.name,
            subnet: request.subnet,
            ..record.spec
        };
        let (progress, stream) = Progress::channel();
        let handle = self.admit(spec)?;
        handle.tell(Command::Create {
            progress,
            copy_of: Some(source),
        });
        Ok(stream)
    }

    fn admit(&self, spec: VmSpec) -> Result<VmHandle, NodeError> {
        let record = VmRecord {
            spec: spec.clone(),
            state: VmState::Creating,
            failure: None,
            pid: None,
            host_key: String::new(),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let (ctx, registry) = (self.ctx.clone(), self.registry.clone());
        self.registry.admit(&spec, self.capacity.totals(), || {
            actor::spawn(ctx, registry, record, None)
        })
    }

    /// Every VM's record, sorted by name.
    pub fn list(&self) -> Vec<VmRecord> {
        self.registry.records()
    }

    /// One VM's record.
    pub fn get(&self, name: &VmName) -> Result<VmRecord, NodeError> {
        Ok(self.registry.get(name)?.record())
    }

    /// Boots a stopped VM.
    pub async fn start_vm(&self, name: &VmName) -> Result<VmRecord, NodeError> {
        self.registry.get(name)?.ask(Command::Start).await
    }

    /// Powers a running VM off.
    pub async fn stop_vm(&self, name: &VmName) -> Result<VmRecord, NodeError> {
        self.registry.get(name)?.ask(Command::Stop).await
    }

    /// Powers a VM off and boots it again.
    pub async fn restart_vm(&self, name: &VmName) -> Result<VmRecord, NodeError> {
        self.registry.get(name)?.ask(Command::Restart).await
    }

    /// Removes a VM and everything it holds.
    pub async fn destroy_vm(&self, name: &VmName) -> Result<(), NodeError> {
        self.registry.get(name)?.ask(Command::Destroy).await
    }

    /// Sets a VM's description.
    pub async fn describe_vm(&self, name: &VmName, text: String) -> Result<VmRecord, NodeError> {
        if text.len() > 1024 || text.chars().any(char::is_control) {
            return Err(NodeError::BadInput(
                "description: at most 1024 characters, one line".into(),
            ));
        }
        self.registry
            .get(name)?
            .ask(|reply| Command::Describe(text, reply))
            .await
    }

    /// The last `lines` lines of a VM's console.
    pub fn logs(&self, name: &VmName, lines: usize) -> Result<String, NodeError> {
        self.registry.get(name)?;
        // Both VMMs write the console to the same file of the VM directory.
        let console = self.ctx.runtime_paths(name).console;
        Ok(boxcutter_vmm::qemu::vm::console_tail(
            &console,
            lines.min(10_000),
        ))
    }

    /// Totals, allocations and what this node supports.
    pub fn health(&self) -> NodeHealth {
        let records = self.registry.records();
        let held: Vec<_> = records.iter().map(|r| held_by(&r.spec, r.state)).collect();
        let totals = self.capacity.totals();
        let allocated = sum(&held);
        let count = |s: VmState| records.iter().filter(|r| r.state == s).count() as u64;
        let vms = VmCounts {
            total: records.len() as u64,
            running: count(VmState::Running),
            stopped: count(VmState::Stopped),
            other: records.len() as u64 - count(VmState::Running) - count(VmState::Stopped),
        };
        NodeHealth {
            node: self.ctx.node_id.clone(),
            totals,
            allocated,
            free: free(totals, allocated),
            disk_used_bytes: self.ctx.pool.usage().map_or(0, |u| u.used_bytes),
            vms,
            supports: [VmType::Firecracker, VmType::Qemu]
                .into_iter()
                .filter(|t| !self.ctx.unsupported.contains_key(t))
                .collect(),
            unsupported: self.ctx.unsupported.clone(),
        }
    }
}

/// Checks the bounds of a spec.
fn validate(spec: &VmSpec, ctx: &NodeContext) -> Result<(), NodeError> {
    let bad = |m: String| Err(NodeError::BadInput(m));
    if let Some(why) = ctx.unsupported.get(&spec.vm_type) {
        return Err(NodeError::Unsupported(format!(
            "this node cannot run {} VMs: {why}",
            spec.vm_type
        )));
    }
    if spec.vcpus == 0 || spec.vcpus > MAX_VCPUS {
        return bad(format!("vcpus must be 1-{MAX_VCPUS}, not {}", spec.vcpus));
    }
    if !RAM_MIB.contains(&spec.ram_mib) {
        return bad(format!(
            "ram must be {}-{} MiB, not {}",
            RAM_MIB.start(),
            RAM_MIB.end(),
            spec.ram_mib
        ));
    }
    if spec.disk.bytes() < MIN_DISK {
        return bad(format!("disk must be at least 1G, not {}", spec.disk));
    }
    if spec
        .authorized_keys
        .iter()
        .any(|k| k.contains(['\n', '\r']) || k.len() > 16 * 1024)
    {
        return bad("authorized_keys: one key per entry, no newlines".into());
    }
    if spec.description.len() > 1024 || spec.description.chars().any(char::is_control) {
        return bad("description: at most 1024 characters, one line".into());
    }
    Ok(())
}
