//! Hypervisor drivers behind one interface: QEMU (driven over QMP) today, Firecracker later; process launch, supervision and adoption.

pub mod qemu;
