//! The orchestrator's API errors and their one mapping to error codes and HTTP statuses.

use boxcutter_types::api::{ApiError, ErrorCode};

use crate::alloc::AllocError;
use crate::db::DbError;
use crate::node_client::NodeCallError;
use crate::scheduler::ScheduleError;

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchError {
    /// Malformed or invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// No or bad credentials, an unknown user, or a user without the right.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// No such VM, or one the caller may not see: the two answer alike.
    #[error("no such VM: {0}")]
    NoSuchVm(String),
    /// Something else that does not exist (a key's owner, an endpoint).
    #[error("{0}")]
    NotFound(String),
    /// A name, user or key is taken.
    #[error("{0}")]
    Conflict(String),
    /// The VM is busy or in a state that does not allow the operation.
    #[error("{0}")]
    WrongState(String),
    /// No node can take the VM.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// No guest subnet is free.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// A node refused or failed the operation.
    #[error("node {node}")]
    Node {
        /// The node.
        node: String,
        /// What it said, or why it could not be asked.
        #[source]
        source: NodeCallError,
    },
    /// The registry failed.
    #[error("registry: {0}")]
    Db(#[from] DbError),
    /// Anything else; the message carries the cause chain.
    #[error("{0}")]
    Internal(String),
}

impl OrchError {
    /// The stable API code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            OrchError::BadRequest(_) => ErrorCode::BadRequest,
            OrchError::Unauthorized(_) => ErrorCode::Unauthorized,
            OrchError::NoSuchVm(_) | OrchError::NotFound(_) => ErrorCode::NotFound,
            OrchError::Conflict(_) => ErrorCode::Conflict,
            OrchError::WrongState(_) => ErrorCode::WrongState,
            OrchError::Schedule(e) => e.code(),
            OrchError::Alloc(_) => ErrorCode::NoCapacity,
            OrchError::Node { source, .. } => source.code(),
            OrchError::Db(_) | OrchError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The API error body, with the whole cause chain in its message.
    pub fn to_api(&self) -> ApiError {
        ApiError::new(self.code(), chain(self))
    }
}

pub use boxcutter_sys::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_mean_what_http_says() {
        assert_eq!(OrchError::NoSuchVm("a".into()).code().http_status(), 404);
        assert_eq!(OrchError::Conflict("a".into()).code().http_status(), 409);
        assert_eq!(
            OrchError::Unauthorized("x".into()).code().http_status(),
            401
        );
        assert_eq!(OrchError::BadRequest("x".into()).code().http_status(), 400);
        assert_eq!(ErrorCode::NoCapacity.http_status(), 507);
    }

    #[test]
    fn missing_and_foreign_vms_read_the_same() {
        let err = OrchError::NoSuchVm("bold-fox".into()).to_api();
        assert_eq!(err.message, "no such VM: bold-fox");
    }
}
