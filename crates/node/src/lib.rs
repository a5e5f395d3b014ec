//! The node agent: owns the guest VMs of one machine (lifecycle, disks, networking,
//! metadata service) and builds guest images.

pub mod guest;
pub mod lifecycle;
pub mod store;
