//! The node agent: owns the guest VMs of one machine (lifecycle, disks, networking,
//! metadata service) and builds guest images.

pub mod agent;
pub mod api;
pub mod daemon;
pub mod dns;
pub mod firecracker;
pub mod guest;
pub mod hypervisor;
pub mod lifecycle;
pub mod metadata;
pub mod store;
