//! The orchestrator: the VM and node registry (SQLite), the guest address allocator, the
//! scheduler, users and SSH keys, heartbeats, and the HTTP API behind the SSH control
//! interface.
//!
//! Layout: [`api`] is the HTTP layer only; [`create`], [`vms`] and [`cluster`] are the
//! operations; [`scheduler`] and [`alloc`] the policies; [`registry`] the typed tables
//! over the connection that [`db`]'s dedicated thread owns; [`heartbeat`] polls nodes and
//! reconciles; [`server`] starts it all.

pub mod alloc;
pub mod api;
pub mod app;
pub mod cluster;
pub mod create;
pub mod db;
pub mod error;
pub mod heartbeat;
pub mod keys;
pub mod names;
pub mod node_client;
pub mod registry;
pub mod routes;
pub mod scheduler;
pub mod schema;
pub mod server;
pub mod vms;

pub use alloc::GuestRange;
pub use app::HeartbeatConfig;
pub use server::{Orchestrator, OrchestratorConfig, DEFAULT_KEYS_URL};
