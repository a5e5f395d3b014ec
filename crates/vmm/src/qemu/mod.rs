//! The QEMU driver: the argument vector, the typed QMP client and the running-guest handle.

pub mod args;
pub mod qmp;
pub mod vm;

pub use args::{Disk, DiskFormat, Nic, QemuConfig, RuntimePaths};
pub use vm::{QemuError, QemuVm, Ready};
