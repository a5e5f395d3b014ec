//! The Firecracker driver: the typed API client ([`api`]) and whether this node can run
//! Firecracker at all ([`capability`]).

pub mod api;
pub mod capability;
