//! The orchestrator's API against a real registry file and stand-in nodes (see
//! `support::stand_in`). One test binary, a module per concern: creating VMs, users and
//! credentials, placement across nodes, node heartbeats, operations on a VM, and scale.

#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod create;
mod nodes;
mod operations;
mod placement;
mod scale;
mod users;

use boxcutter_types::guest::VmType;

const QEMU: &[VmType] = &[VmType::Qemu];
