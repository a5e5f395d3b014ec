//! Start-up recovery: rebuild the node's view from its VM directories and the running
//! processes, stopping nothing that should run.
//!
//! | found                                  | done                                        |
//! |----------------------------------------|---------------------------------------------|
//! | directory without a readable record    | a create that died early: kill, remove      |
//! | record `creating`                      | a create that died midway: roll back        |
//! | record `destroying`                    | finish the destroy                          |
//! | record `running`/`stopped`/`failed`    | re-adopt its VMM if the process lives (then |
//! |                                        | `running`), else `stopped`; network ensured |
//! | VMM process of this node with no VM    | killed                                      |

use std::path::Path;
use std::sync::Arc;

use boxcutter_types::guest::VmType;
use boxcutter_types::{VmName, VmRecord, VmState};

use super::actor;
use boxcutter_net::{firewall_elements, link_delete, tap_name, vm_link_remove, vm_taps};

use super::context::{blocking, NodeContext};
use super::error::NodeError;
use super::registry::Registry;
use crate::hypervisor::RunningVm;
use crate::store::Found;

/// Rebuilds `registry` from the VM directories of `ctx`.
pub async fn recover(ctx: &Arc<NodeContext>, registry: &Arc<Registry>) -> Result<(), NodeError> {
    let found = ctx
        .store
        .scan()
        .map_err(|e| NodeError::internal("scan VM directories", &e))?;
    for item in found {
        match item {
            Found::Orphan(dir) => remove_orphan_dir(ctx, &dir).await,
            Found::Record(record) => recover_vm(ctx, registry, *record).await,
        }
    }
    kill_stray_vmms(ctx, registry);
    remove_stray_links(ctx, registry).await
}

/// Removes TAPs and firewall elements that no VM of this node claims.
async fn remove_stray_links(ctx: &Arc<NodeContext>, registry: &Registry) -> Result<(), NodeError> {
    let known: Vec<_> = registry
        .records()
        .iter()
        .map(|r| tap_name(&r.spec.name))
        .collect();
    let ns = ctx.netns.clone();
    let work = move || -> Result<(), NodeError> {
        let ns = ns.as_ref();
        let elements = firewall_elements(ns).map_err(|e| NodeError::internal("list links", &e))?;
        for link in elements.iter().filter(|l| !known.contains(&l.tap)) {
            tracing::warn!(tap = %link.tap, "removing network of an unknown VM");
            vm_link_remove(ns, link).map_err(|e| NodeError::internal("remove link", &e))?;
        }
        let taps = vm_taps(ns).map_err(|e| NodeError::internal("list taps", &e))?;
        for tap in taps.iter().filter(|t| !known.contains(t)) {
            tracing::warn!(%tap, "removing tap of an unknown VM");
            link_delete(ns, tap).map_err(|e| NodeError::internal("remove tap", &e))?;
        }
        Ok(())
    };
    blocking(work, "remove stray network links").await
}

async fn recover_vm(ctx: &Arc<NodeContext>, registry: &Arc<Registry>, mut record: VmRecord) {
    let name = record.spec.name.clone();
    let adopted = RunningVm::adopt(&ctx.vm_paths(&name, record.spec.vm_type));
    match record.state {
        VmState::Creating | VmState::Destroying => {
            tracing::warn!(vm = %name, state = record.state.as_str(), "rolling back unfinished work");
            if let Some(vm) = adopted {
                vm.kill().await;
            }
            let _ = ctx.link_down(&record.spec).await;
            let _ = ctx.remove_dirs(&name).await;
            return;
        }
        VmState::Running | VmState::Stopped | VmState::Failed => {}
    }
    if let Err(error) = ctx.link_up(&record.spec).await {
        tracing::error!(vm = %name, %error, "cannot restore network");
    }
    match &adopted {
        Some(vm) => {
            tracing::info!(vm = %name, pid = vm.pid(), "re-adopted running guest");
            record.state = VmState::Running;
            record.pid = Some(vm.pid());
        }
        None if record.state == VmState::Running => {
            tracing::warn!(vm = %name, "guest was not running after node restart; marking it stopped");
            record.state = VmState::Stopped;
            record.pid = None;
        }
        None => record.pid = None,
    }
    if let Err(error) = ctx.store.save(&record) {
        tracing::error!(vm = %name, error = %super::error::chain(&error), "cannot save record");
    }
    registry.insert(actor::spawn(ctx.clone(), registry.clone(), record, adopted));
}

async fn remove_orphan_dir(ctx: &Arc<NodeContext>, dir: &Path) {
    let Some(name) = dir
        .file_name()
        .and_then(|n| VmName::new(n.to_string_lossy()).ok())
    else {
        tracing::warn!(dir = %dir.display(), "leaving unknown directory alone");
        return;
    };
    tracing::warn!(vm = %name, "removing directory of a create that never saved its record");
    for vm_type in [VmType::Qemu, VmType::Firecracker] {
        if let Some(vm) = RunningVm::adopt(&ctx.vm_paths(&name, vm_type)) {
            vm.kill().await;
        }
    }
    let _ = ctx.remove_dirs(&name).await;
}

/// Kills VMM processes of this node that belong to no known VM: QEMUs running a disk of
/// its store, Firecrackers serving an API socket in its socket directory.
fn kill_stray_vmms(ctx: &NodeContext, registry: &Registry) {
    let root = ctx.store.root().to_string_lossy().into_owned();
    let sockets = ctx.runtime.socket_dir.to_string_lossy().into_owned();
    let known: Vec<i32> = registry.records().iter().filter_map(|r| r.pid).collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let qemu = cmdline.contains("qemu-system") && cmdline.contains(&format!("{root}/"));
        let firecracker =
            cmdline.contains("--api-sock") && cmdline.contains(&format!("{sockets}/"));
        if (qemu || firecracker) && !known.contains(&pid) {
            tracing::warn!(pid, "killing the VMM of a VM this node does not know");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
