//! The one interface the node's VM tasks use for a running guest, whichever VMM runs it:
//! QEMU ([`QemuVm`]) or Firecracker ([`FirecrackerVm`]).
//!
//! An enum rather than a trait object: there are exactly two backends, both known here,
//! and their operations are async; matching on the variant keeps every call static and
//! every backend difference visible in one place. What differs beyond these operations
//! (how a guest is booted, how a running guest is copied) is in `firecracker` and
//! `guest`, chosen by the VM's type.

use std::time::Duration;

use boxcutter_types::guest::VmType;
use boxcutter_vmm::firecracker::vm::{FirecrackerPaths, FirecrackerVm};
use boxcutter_vmm::qemu::{QemuVm, RuntimePaths};

use crate::agent::error::chain;

/// A running guest.
#[derive(Debug, Clone)]
pub enum RunningVm {
    /// A QEMU process.
    Qemu(QemuVm),
    /// A Firecracker process.
    Firecracker(FirecrackerVm),
}

/// Where to look for a VM's process after an agent restart.
#[derive(Debug, Clone)]
pub enum VmPaths {
    /// QEMU's runtime files.
    Qemu(RuntimePaths),
    /// Firecracker's runtime files.
    Firecracker(FirecrackerPaths),
}

impl RunningVm {
    /// Finds the VM's running process from its pidfile, checked against its command line.
    pub fn adopt(paths: &VmPaths) -> Option<Self> {
        match paths {
            VmPaths::Qemu(paths) => QemuVm::adopt(paths).ok().map(RunningVm::Qemu),
            VmPaths::Firecracker(paths) => {
                FirecrackerVm::adopt(paths).ok().map(RunningVm::Firecracker)
            }
        }
    }

    /// The VMM's type.
    pub fn vm_type(&self) -> VmType {
        match self {
            RunningVm::Qemu(_) => VmType::Qemu,
            RunningVm::Firecracker(_) => VmType::Firecracker,
        }
    }

    /// The VMM's process id.
    pub fn pid(&self) -> i32 {
        match self {
            RunningVm::Qemu(vm) => vm.pid(),
            RunningVm::Firecracker(vm) => vm.pid(),
        }
    }

    /// True while the VMM process exists (and is not a zombie).
    pub fn is_running(&self) -> bool {
        match self {
            RunningVm::Qemu(vm) => vm.is_running(),
            RunningVm::Firecracker(vm) => vm.is_running(),
        }
    }

    /// Asks the guest to power off (ACPI power button for QEMU, Ctrl-Alt-Del for
    /// Firecracker), waits up to `timeout`, then kills the process. Runtime files are
    /// removed either way.
    pub async fn stop(&self, timeout: Duration) {
        match self {
            RunningVm::Qemu(vm) => {
                if let Err(error) = vm.shutdown(timeout).await {
                    tracing::warn!(pid = vm.pid(), error = %chain(&error), "clean stop failed; killing");
                    vm.kill().await;
                }
            }
            RunningVm::Firecracker(vm) => vm.shutdown(timeout).await,
        }
    }

    /// Kills the process at once and removes its runtime files.
    pub async fn kill(&self) {
        match self {
            RunningVm::Qemu(vm) => vm.kill().await,
            RunningVm::Firecracker(vm) => vm.kill().await,
        }
    }
}
