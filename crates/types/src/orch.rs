//! Bodies of the orchestrator's HTTP API, which the `boxcutter` command (the SSH control
//! interface) and the host use. Every request carries a bearer token for the
//! `orchestrator` audience; user-scoped requests also name the acting user in the
//! [`USER_HEADER`] header (the `boxcutter` command learns it from the SSH key the user
//! logged in with).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::api::{ApiError, NodeHealth, Resources};
use crate::guest::VmType;
use crate::vm::{NetMode, VmState};
use crate::{ByteSize, VmName};

/// Header naming the Boxcutter user a request acts for.
pub const USER_HEADER: &str = "x-boxcutter-user";

/// Defaults of `new`, as the original README gives them.
pub const DEFAULT_VCPUS: u32 = 2;
/// Default RAM, MiB.
pub const DEFAULT_RAM_MIB: u32 = 2048;
/// Default disk.
pub const DEFAULT_DISK: ByteSize = ByteSize(50 << 30);

/// `POST /v1/vms`: everything optional falls back to the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVmRequest {
    /// The name; a random adjective-animal pair when absent.
    #[serde(default)]
    pub name: Option<VmName>,
    /// The type; `firecracker` where a node supports it, else `qemu` (with a note).
    #[serde(default, rename = "type")]
    pub vm_type: Option<VmType>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Repositories to clone at first boot.
    #[serde(default)]
    pub clone: Vec<String>,
    /// vCPUs (default 2).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// RAM in MiB (default 2048).
    #[serde(default)]
    pub ram_mib: Option<u32>,
    /// Disk (default 50G).
    #[serde(default)]
    pub disk: Option<ByteSize>,
    /// Network mode (default normal).
    #[serde(default)]
    pub mode: Option<NetMode>,
    /// Pin to this node.
    #[serde(default)]
    pub node: Option<String>,
}

/// A VM as the orchestrator shows it to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Name.
    pub name: VmName,
    /// Owning user.
    pub owner: String,
    /// Node it lives on.
    pub node: String,
    /// Hypervisor.
    #[serde(rename = "type")]
    pub vm_type: VmType,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM, MiB.
    pub ram_mib: u32,
    /// Disk.
    pub disk: ByteSize,
    /// Network mode.
    pub mode: NetMode,
    /// State as last known.
    pub state: VmState,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// Description.
    pub description: String,
    /// The guest's SSH host key (for known_hosts).
    pub host_key: String,
    /// Unix seconds of creation.
    pub created_at: u64,
}

/// One line of a `new` or `cp` stream: progress, then exactly one `vm` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OrchLine {
    /// A step (scheduling, node progress relayed, retries on another node).
    Progress {
        /// The step.
        phase: String,
        /// What happened.
        message: String,
        /// Milliseconds since the request began.
        elapsed_ms: u64,
    },
    /// Success: the VM.
    Done {
        /// The VM.
        vm: Box<VmInfo>,
    },
    /// Failure; nothing was left behind.
    Failed {
        /// Why.
        error: ApiError,
    },
}

/// `POST /v1/vms/{name}/copy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyVmRequest {
    /// The copy's name; random when absent.
    #[serde(default)]
    pub name: Option<VmName>,
}

/// Whether a node answers its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Answering.
    Up,
    /// Missed its heartbeats: gets no new VMs.
    Down,
}

/// `POST /v1/nodes`: a node joins (or rejoins) the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// The node's id.
    pub id: String,
    /// Its API's base URL, e.g. `http://10.0.0.2:8800`.
    pub url: String,
}

/// A node as `nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Id.
    pub id: String,
    /// API URL.
    pub url: String,
    /// Up or down.
    pub state: NodeState,
    /// Unix seconds of the last answered heartbeat.
    pub last_seen: Option<u64>,
    /// The last health report.
    pub health: Option<NodeHealth>,
}

/// `GET /v1/status`: the cluster's capacity summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Nodes up.
    pub nodes_up: u64,
    /// Nodes down.
    pub nodes_down: u64,
    /// Sum of the up nodes' totals.
    pub totals: Resources,
    /// Sum of their allocations.
    pub allocated: Resources,
    /// Sum of what is free.
    pub free: Resources,
    /// VMs visible to the caller.
    pub vms: u64,
}

/// `POST /v1/users`: import a GitHub user's public keys as a new Boxcutter user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUserRequest {
    /// The GitHub login (also the Boxcutter user name).
    pub github: String,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Name.
    pub name: String,
    /// Admins see and manage every VM.
    pub admin: bool,
    /// Number of SSH keys.
    pub keys: u64,
}

/// `GET /v1/vms/{name}/ssh`: where `connect` sends the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshTarget {
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// Its SSH port.
    pub port: u16,
    /// Its host key.
    pub host_key: String,
}

/// `POST /v1/vms/{name}/repos`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoRequest {
    /// `owner/repo`.
    pub repo: String,
}
