//! Bodies of the node agent's HTTP API: errors, progress streams, copy requests and the
//! health report.

use serde::{Deserialize, Serialize};

use crate::guest::VmType;
use crate::vm::{GuestSubnet, VmRecord};
use crate::VmName;

/// Stable error codes; the HTTP status follows from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or invalid input (400).
    BadRequest,
    /// Missing or bad credentials (401).
    Unauthorized,
    /// No such VM (404).
    NotFound,
    /// The name or subnet is taken (409).
    Conflict,
    /// The VM is in a state that does not allow the operation (409).
    WrongState,
    /// The node has no room (507).
    NoCapacity,
    /// The VM type is not supported on this node (400).
    Unsupported,
    /// Anything else (500).
    Internal,
}

impl ErrorCode {
    /// The HTTP status every Boxcutter API answers this code with: the one place codes
    /// become statuses.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::Unsupported => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::WrongState => 409,
            ErrorCode::NoCapacity => 507,
            ErrorCode::Internal => 500,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message, with the cause.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// One line of a create or copy stream: progress, then exactly one `vm` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProgressLine {
    /// A step began or finished.
    Progress {
        /// The step (`disk`, `network`, `vmm`, `boot`, ...).
        phase: String,
        /// What happened.
        message: String,
        /// Milliseconds since the request began.
        elapsed_ms: u64,
    },
    /// The operation succeeded: the VM's record.
    Done {
        /// The VM.
        vm: Box<VmRecord>,
    },
    /// The operation failed; nothing was left behind.
    Failed {
        /// Why.
        error: ApiError,
    },
}

/// `POST /v1/vms/{name}/copy`: the copy's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The new VM's name.
    pub name: VmName,
    /// The new VM's /30.
    pub subnet: GuestSubnet,
}

/// `PUT /v1/vms/{name}/description`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribeRequest {
    /// The new description.
    pub description: String,
}

/// Quantities of the three budgeted resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Virtual CPUs.
    pub vcpus: u64,
    /// RAM in MiB.
    pub ram_mib: u64,
    /// Disk in bytes.
    pub disk_bytes: u64,
}

/// VMs on the node by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmCounts {
    /// All VMs.
    pub total: u64,
    /// Running.
    pub running: u64,
    /// Stopped.
    pub stopped: u64,
    /// Creating, destroying or failed.
    pub other: u64,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The node's id.
    pub node: String,
    /// What the node may hand out (physical × overcommit).
    pub totals: Resources,
    /// What its VMs hold.
    pub allocated: Resources,
    /// What is left.
    pub free: Resources,
    /// Disk blocks really allocated in the storage pool, in bytes.
    pub disk_used_bytes: u64,
    /// VM counts.
    pub vms: VmCounts,
    /// VM types this node can run.
    pub supports: Vec<VmType>,
    /// Why it cannot run the others (e.g. `firecracker`: "no usable KVM: ..."), so a
    /// refusal can say exactly why.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unsupported: std::collections::BTreeMap<VmType, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_flat_json_objects() {
        let line = ProgressLine::Progress {
            phase: "disk".into(),
            message: "cloned".into(),
            elapsed_ms: 3,
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"phase":"disk","message":"cloned","elapsed_ms":3}"#
        );
        let err = ProgressLine::Failed {
            error: ApiError::new(ErrorCode::NoCapacity, "full"),
        };
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(json, r#"{"error":{"code":"no_capacity","message":"full"}}"#);
        assert_eq!(serde_json::from_str::<ProgressLine>(&json).unwrap(), err);
    }
}
