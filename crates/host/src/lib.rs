//! The host control plane: launches the orchestrator and node agents (local mode: as
//! processes in network namespaces), recovers them after a crash, scales and drains nodes.

pub mod local;
pub mod procs;
