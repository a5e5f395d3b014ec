//! One task per VM owns that VM: its record, its QEMU handle and every change to either.
//! Requests arrive on an unbounded channel and run one at a time, so operations on one VM
//! never interleave, while VMs never wait for each other. Readers (list, get, health)
//! never queue behind a long operation: the task publishes its record on a watch channel.
//!
//! The task also watches its guest: if its VMM exits on its own (the guest powered off or
//! crashed), the VM is recorded as stopped.
//!
//! A copy of a VM is made by the new VM's task, which asks the source's task for its
//! state ([`Command::CopyOut`]): the source's disk, cloned while the guest is paused, and
//! for a running Firecracker guest also a snapshot of its memory and devices, so the copy
//! continues from the same moment instead of booting.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boxcutter_types::guest::VmType;
use boxcutter_types::{VmName, VmRecord, VmState};
use boxcutter_vmm::firecracker::api::SnapshotType;
use boxcutter_vmm::firecracker::vm::{FirecrackerVm, SnapshotFiles};
use boxcutter_vmm::qemu::QemuVm;
use tokio::sync::{mpsc, oneshot, watch};

use super::context::NodeContext;
use super::error::NodeError;
use super::progress::Progress;
use super::registry::Registry;
use crate::guest::{boot_guest_reporting, BootTimings};
use crate::hypervisor::RunningVm;
use crate::lifecycle::{allowed, transition, Event, Operation};

/// How often a running VM's task checks that its VMM still exists.
const LIVENESS_PERIOD: Duration = Duration::from_secs(1);

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// A request to a VM's task.
pub enum Command {
    /// Set the new VM up, from the golden image or from another VM's disk.
    Create {
        /// Where progress goes.
        progress: Progress,
        /// For a copy: the source VM.
        copy_of: Option<VmHandle>,
    },
    /// Boot a stopped VM.
    Start(Reply<VmRecord>),
    /// Power a running VM off.
    Stop(Reply<VmRecord>),
    /// Power off and boot again.
    Restart(Reply<VmRecord>),
    /// Remove the VM.
    Destroy(Reply<()>),
    /// Change the description.
    Describe(String, Reply<VmRecord>),
    /// Hand out this VM's state for a copy: its disk cloned to `disk` (the guest paused
    /// meanwhile) and, for a running Firecracker guest, a snapshot to `snapshot`. Answers
    /// whether the snapshot was taken.
    CopyOut {
        /// Where the disk clone goes.
        disk: PathBuf,
        /// Where a snapshot goes.
        snapshot: SnapshotFiles,
        /// The answer.
        reply: Reply<bool>,
    },
}

/// How the rest of the node reaches a VM's task.
#[derive(Debug, Clone)]
pub struct VmHandle {
    tx: mpsc::UnboundedSender<Command>,
    record: watch::Receiver<VmRecord>,
}

impl VmHandle {
    /// The VM's latest record.
    pub fn record(&self) -> VmRecord {
        self.record.borrow().clone()
    }

    /// Sends a request and waits for its reply.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let name = self.record.borrow().spec.name.clone();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| NodeError::Gone(name.clone()))?;
        answer.await.map_err(|_| NodeError::Gone(name))?
    }

    /// Sends a request without waiting.
    pub fn tell(&self, command: Command) {
        let _ = self.tx.send(command);
    }
}

/// Starts the task of a VM and returns its handle.
pub fn spawn(
    ctx: Arc<NodeContext>,
    registry: Arc<Registry>,
    record: VmRecord,
    vm: Option<RunningVm>,
) -> VmHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (publish, watch_rx) = watch::channel(record.clone());
    let actor = VmActor {
        ctx,
        registry,
        record,
        publish,
        vm,
    };
    tokio::spawn(actor.run(rx));
    VmHandle {
        tx,
        record: watch_rx,
    }
}

struct VmActor {
    ctx: Arc<NodeContext>,
    registry: Arc<Registry>,
    record: VmRecord,
    publish: watch::Sender<VmRecord>,
    vm: Option<RunningVm>,
}

/// What the task does after a request.
enum Next {
    Continue,
    Exit,
}

impl VmActor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(LIVENESS_PERIOD);
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else { break };
                    if let Next::Exit = self.handle(command).await {
                        break;
                    }
                }
                _ = tick.tick() => self.check_alive().await,
            }
        }
    }

    fn name(&self) -> VmName {
        self.record.spec.name.clone()
    }

    async fn handle(&mut self, command: Command) -> Next {
        match command {
            Command::Create { progress, copy_of } => return self.create(progress, copy_of).await,
            Command::Start(reply) => {
                let _ = reply.send(self.start().await);
            }
            Command::Stop(reply) => {
                let _ = reply.send(self.stop().await);
            }
            Command::Restart(reply) => {
                let result = match self.stop().await {
                    Ok(_) => self.start().await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Destroy(reply) => {
                let result = self.destroy().await;
                let done = result.is_ok();
                let _ = reply.send(result);
                if done {
                    return Next::Exit;
                }
            }
            Command::Describe(text, reply) => {
                let _ = reply.send(self.describe(text));
            }
            Command::CopyOut {
                disk,
                snapshot,
                reply,
            } => {
                let _ = reply.send(self.copy_out(disk, snapshot).await);
            }
        }
        Next::Continue
    }

    /// Records a state change: in memory, on disk, and for readers.
    fn set_state(&mut self, event: Event) -> Result<(), NodeError> {
        let next = transition(self.record.state, event).ok_or_else(|| {
            NodeError::Internal(format!(
                "{}: {event:?} cannot happen while {}",
                self.record.spec.name,
                self.record.state.as_str()
            ))
        })?;
        self.record.state = next;
        self.record.pid = self
            .vm
            .as_ref()
            .filter(|_| next == VmState::Running)
            .map(RunningVm::pid);
        if next != VmState::Failed {
            self.record.failure = None;
        }
        self.save()
    }

    fn save(&mut self) -> Result<(), NodeError> {
        self.publish.send_replace(self.record.clone());
        self.ctx
            .store
            .save(&self.record)
            .map_err(|e| NodeError::internal("save record", &e))
    }

    fn check(&self, op: Operation) -> Result<(), NodeError> {
        allowed(self.record.state, op).map_err(|refused| NodeError::WrongState {
            vm: self.name(),
            refused,
        })
    }

    async fn create(&mut self, progress: Progress, copy_of: Option<VmHandle>) -> Next {
        match self.create_steps(&progress, copy_of).await {
            Ok(()) => {
                progress.done(&self.record);
                tracing::info!(vm = %self.name(), node = %self.ctx.node_id, "VM created");
                Next::Continue
            }
            Err(error) => {
                tracing::error!(vm = %self.name(), error = %error, "create failed; rolling back");
                progress.step("rollback", "undoing the partial create");
                self.teardown().await;
                self.registry.remove(&self.name());
                progress.failed(&error);
                Next::Exit
            }
        }
    }

    async fn create_steps(
        &mut self,
        progress: &Progress,
        copy_of: Option<VmHandle>,
    ) -> Result<(), NodeError> {
        let spec = self.record.spec.clone();
        self.ctx.create_dirs(&spec.name).await?;
        self.save()?;

        let snapshot = SnapshotFiles::in_dir(&self.ctx.vm_dir(&spec.name));
        let restore = match copy_of {
            Some(source) => {
                let source_name = source.record().spec.name;
                progress.step("disk", format!("copying the disk of {source_name}"));
                let disk = self.ctx.root_disk(&spec.name);
                let snapshot = snapshot.clone();
                source
                    .ask(|reply| Command::CopyOut {
                        disk,
                        snapshot,
                        reply,
                    })
                    .await?
            }
            None => {
                progress.step("disk", format!("cloning the golden image ({})", spec.disk));
                self.ctx.clone_golden(&spec).await?;
                false
            }
        };
        progress.step(
            "network",
            format!("tap and firewall for {}", spec.subnet.guest()),
        );
        self.ctx.link_up(&spec).await?;
        if restore {
            progress.step("vmm", "restoring firecracker from the snapshot");
            let restored = self.restore(&snapshot, progress).await;
            // The memory file is as large as the guest's RAM; the restored guest has it
            // mapped, so its name can go now.
            snapshot.remove();
            restored?;
        } else {
            progress.step("vmm", format!("launching {}", spec.vm_type));
            self.boot(progress).await?;
        }
        self.set_state(Event::Created)
    }

    /// Starts the copy of a running Firecracker guest from its snapshot.
    async fn restore(
        &mut self,
        snapshot: &SnapshotFiles,
        progress: &Progress,
    ) -> Result<(), NodeError> {
        let guest = self.ctx.guest_spec(&self.record.spec);
        let env = self.firecracker_env()?;
        let started = crate::firecracker::restore(&guest, &env, snapshot)
            .await
            .map_err(|e| NodeError::internal("restore", &e))?;
        progress.step(
            "ready",
            format!(
                "guest restored: load {} ms, refresh {} ms",
                started.timings.launch.as_millis(),
                started.timings.ready.as_millis()
            ),
        );
        self.record.host_key = started.host_public_key;
        self.vm = Some(RunningVm::Firecracker(started.vm));
        Ok(())
    }

    fn firecracker_env(&self) -> Result<crate::firecracker::FirecrackerEnv, NodeError> {
        let name = self.name();
        self.ctx.firecracker_env(&name).ok_or_else(|| {
            NodeError::Unsupported(format!(
                "{name} is a firecracker VM, but this node cannot run firecracker VMs: {}",
                self.ctx
                    .unsupported
                    .get(&VmType::Firecracker)
                    .map_or("no firecracker binary configured", String::as_str)
            ))
        })
    }

    /// Boots the guest and waits for the agent's ready report.
    async fn boot(&mut self, progress: &Progress) -> Result<(), NodeError> {
        let guest = self.ctx.guest_spec(&self.record.spec);
        let (vm, host_key, t) = match self.record.spec.vm_type {
            VmType::Qemu => {
                let env = self.ctx.boot_env(&self.record.spec.name);
                let launched =
                    |pid| progress.step("boot", format!("qemu running (pid {pid}); guest booting"));
                let booted = boot_guest_reporting(&guest, &env, &launched)
                    .await
                    .map_err(|e| NodeError::internal("boot", &e))?;
                (
                    RunningVm::Qemu(booted.vm),
                    booted.host_public_key,
                    booted.timings,
                )
            }
            VmType::Firecracker => {
                let env = self.firecracker_env()?;
                let started = crate::firecracker::boot(&guest, &env)
                    .await
                    .map_err(|e| NodeError::internal("boot", &e))?;
                let vm = RunningVm::Firecracker(started.vm);
                (vm, started.host_public_key, started.timings)
            }
        };
        let t: BootTimings = t;
        progress.step(
            "ready",
            format!(
                "guest ready: launch {} ms, boot {} ms",
                t.launch.as_millis(),
                t.ready.as_millis()
            ),
        );
        self.record.host_key = host_key;
        self.vm = Some(vm);
        Ok(())
    }

    async fn start(&mut self) -> Result<VmRecord, NodeError> {
        self.check(Operation::Start)?;
        let (progress, _ignored) = Progress::channel();
        self.ctx.link_up(&self.record.spec).await?;
        match self.boot(&progress).await {
            Ok(()) => {
                self.set_state(Event::Started)?;
                Ok(self.record.clone())
            }
            Err(error) => {
                self.record.failure = Some(error.to_string());
                if self.record.state != VmState::Failed {
                    self.set_state(Event::Failed)?;
                }
                self.save()?;
                Err(error)
            }
        }
    }

    async fn stop(&mut self) -> Result<VmRecord, NodeError> {
        self.check(Operation::Stop)?;
        if let Some(vm) = self.vm.take() {
            vm.stop(self.ctx.runtime.stop_timeout).await;
        }
        self.set_state(Event::Stopped)?;
        Ok(self.record.clone())
    }

    async fn destroy(&mut self) -> Result<(), NodeError> {
        self.check(Operation::Destroy)?;
        self.set_state(Event::DestroyBegun)?;
        self.teardown().await;
        self.registry.remove(&self.name());
        tracing::info!(vm = %self.name(), "VM destroyed");
        Ok(())
    }

    /// Removes everything the VM holds; each step tolerates what is already gone.
    async fn teardown(&mut self) {
        let paths = self.ctx.vm_paths(&self.name(), self.record.spec.vm_type);
        if let Some(vm) = self.vm.take().or_else(|| RunningVm::adopt(&paths)) {
            vm.kill().await;
        }
        if let Err(error) = self.ctx.link_down(&self.record.spec).await {
            tracing::warn!(vm = %self.name(), %error, "cannot remove network");
        }
        if let Err(error) = self.ctx.remove_dirs(&self.name()).await {
            tracing::warn!(vm = %self.name(), %error, "cannot remove directory");
        }
    }

    fn describe(&mut self, text: String) -> Result<VmRecord, NodeError> {
        self.check(Operation::Describe)?;
        self.record.spec.description = text;
        self.save()?;
        Ok(self.record.clone())
    }

    async fn copy_out(
        &mut self,
        disk: PathBuf,
        snapshot: SnapshotFiles,
    ) -> Result<bool, NodeError> {
        self.check(Operation::Copy)?;
        let src = self.ctx.root_disk(&self.name());
        match &self.vm {
            None => self.ctx.clone_file(src, disk).await.map(|()| false),
            Some(RunningVm::Qemu(vm)) => {
                // A paused guest writes nothing: the copy is a consistent point in time.
                let mut qmp = pause(vm).await?;
                let result = self.ctx.clone_file(src, disk).await;
                qmp.cont()
                    .await
                    .map_err(|e| NodeError::internal("resume after copy", &e))?;
                result.map(|()| false)
            }
            Some(RunningVm::Firecracker(vm)) => {
                let vm = vm.clone();
                vm.pause()
                    .await
                    .map_err(|e| NodeError::internal("pause for copy", &e))?;
                let result = self.snapshot_and_clone(&vm, src, disk, &snapshot).await;
                if result.is_err() {
                    snapshot.remove();
                }
                vm.resume()
                    .await
                    .map_err(|e| NodeError::internal("resume after copy", &e))?;
                result.map(|()| true)
            }
        }
    }

    /// Memory, devices and disk of a paused Firecracker guest, all from the same moment.
    async fn snapshot_and_clone(
        &self,
        vm: &FirecrackerVm,
        src: PathBuf,
        disk: PathBuf,
        snapshot: &SnapshotFiles,
    ) -> Result<(), NodeError> {
        vm.snapshot(SnapshotType::Full, &snapshot.state, &snapshot.memory)
            .await
            .map_err(|e| NodeError::internal("snapshot for copy", &e))?;
        self.ctx.clone_file(src, disk).await
    }

    async fn check_alive(&mut self) {
        let Some(vm) = &self.vm else { return };
        if self.record.state != VmState::Running || vm.is_running() {
            return;
        }
        tracing::warn!(vm = %self.name(), "guest exited on its own; recording it as stopped");
        self.vm = None;
        if let Err(error) = self.set_state(Event::Stopped) {
            tracing::error!(vm = %self.name(), %error, "cannot record stop");
        }
    }
}

async fn pause(vm: &QemuVm) -> Result<boxcutter_vmm::qemu::qmp::QmpClient, NodeError> {
    let mut qmp = vm
        .qmp()
        .await
        .map_err(|e| NodeError::internal("connect qmp", &e))?;
    qmp.stop()
        .await
        .map_err(|e| NodeError::internal("pause for copy", &e))?;
    Ok(qmp)
}
