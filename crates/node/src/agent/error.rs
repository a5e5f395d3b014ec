//! The node agent's errors and their one mapping to API error codes and HTTP statuses.

use boxcutter_types::api::{ApiError, ErrorCode};
use boxcutter_types::VmName;

use crate::lifecycle::Refused;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No VM of that name on this node.
    #[error("no such VM: {0}")]
    NotFound(VmName),
    /// The name is taken.
    #[error("a VM named {0} already exists")]
    NameTaken(VmName),
    /// The subnet is used by another VM.
    #[error("subnet {subnet} is already used by {holder}")]
    SubnetTaken {
        /// The subnet's base address.
        subnet: std::net::Ipv4Addr,
        /// The VM that holds it.
        holder: VmName,
    },
    /// The VM's state forbids the operation.
    #[error("{vm}: {refused}")]
    WrongState {
        /// The VM.
        vm: VmName,
        /// What was refused.
        refused: Refused,
    },
    /// The node has no room.
    #[error("node has no capacity: {0}")]
    NoCapacity(String),
    /// A field is out of bounds.
    #[error("{0}")]
    BadInput(String),
    /// The VM type cannot run here.
    #[error("{0}")]
    Unsupported(String),
    /// The VM's task is gone (it was destroyed meanwhile).
    #[error("VM {0} went away during the operation")]
    Gone(VmName),
    /// An operation failed inside; the message carries the cause chain.
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// An internal error from any error, with its whole cause chain.
    pub fn internal(context: &str, err: &dyn std::error::Error) -> Self {
        NodeError::Internal(format!("{context}: {}", chain(err)))
    }

    /// The stable API code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::NotFound(_) | NodeError::Gone(_) => ErrorCode::NotFound,
            NodeError::NameTaken(_) | NodeError::SubnetTaken { .. } => ErrorCode::Conflict,
            NodeError::WrongState { .. } => ErrorCode::WrongState,
            NodeError::NoCapacity(_) => ErrorCode::NoCapacity,
            NodeError::BadInput(_) => ErrorCode::BadRequest,
            NodeError::Unsupported(_) => ErrorCode::Unsupported,
            NodeError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The API error body.
    pub fn to_api(&self) -> ApiError {
        ApiError::new(self.code(), self.to_string())
    }
}

pub use boxcutter_sys::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_mean_what_http_says() {
        let name = VmName::new("a").unwrap();
        assert_eq!(NodeError::NotFound(name.clone()).code().http_status(), 404);
        assert_eq!(NodeError::NameTaken(name).code().http_status(), 409);
        assert_eq!(
            NodeError::NoCapacity("ram".into()).code().http_status(),
            507
        );
        assert_eq!(NodeError::BadInput("x".into()).code().http_status(), 400);
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
    }

    #[test]
    fn chains_join_every_cause() {
        let io = std::io::Error::other("disk full");
        let err = NodeError::internal("clone disk", &io);
        assert_eq!(err.to_string(), "clone disk: disk full");
    }
}
