//! Hypervisor drivers: QEMU (driven over QMP) today, Firecracker later behind the same
//! seams; the KVM usability probe; host facts guests need (the TSC rate).

mod files;
pub mod firecracker;
pub mod kvm;
mod process;
pub mod qemu;
pub mod tsc;
