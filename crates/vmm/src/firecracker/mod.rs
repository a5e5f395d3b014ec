//! The Firecracker driver: the typed API client ([`api`]), whether this node can run
//! Firecracker at all ([`capability`]), one running microVM ([`vm`]), and
//! `FakeFirecracker`, the test double that serves the same API where the real binary cannot
//! run (`fake`, test-only). Design, test procedure and targets: `docs/firecracker.md`.

pub mod api;
pub mod boot_args;
pub mod capability;
#[cfg(any(test, feature = "fake-firecracker"))]
pub mod fake;
pub mod jail;
mod placement;
pub mod vm;
pub mod vm_config;
pub mod vsock;
