//! [`ApiError`]: every way a Firecracker API call can fail, each naming the API socket and
//! the request (`PUT /boot-source`) that failed.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use hyper::StatusCode;

/// Why a Firecracker API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API socket did not accept connections in time after the process was started.
    #[error("firecracker api socket {} did not appear within {after:?}", socket.display())]
    SocketNeverAppeared {
        /// The API socket.
        socket: PathBuf,
        /// How long the client waited.
        after: Duration,
    },
    /// The socket could not be connected.
    #[error("cannot connect to firecracker api socket {} for {request}", socket.display())]
    Connect {
        /// The API socket.
        socket: PathBuf,
        /// The request, e.g. `PUT /actions`.
        request: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Firecracker did not answer in time.
    #[error("no answer to {request} on firecracker api socket {} within {after:?}",
        socket.display())]
    Timeout {
        /// The API socket.
        socket: PathBuf,
        /// The request.
        request: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// Firecracker closed the connection without answering: most often, it exited.
    #[error("firecracker closed api socket {} before answering {request}", socket.display())]
    Closed {
        /// The API socket.
        socket: PathBuf,
        /// The request.
        request: String,
    },
    /// The HTTP exchange failed for another reason.
    #[error("http exchange for {request} on firecracker api socket {} failed", socket.display())]
    Http {
        /// The API socket.
        socket: PathBuf,
        /// The request.
        request: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Firecracker answered with an error status and its `fault_message`.
    #[error("firecracker refused {request} on {} with {status}: {fault_message}",
        socket.display())]
    Fault {
        /// The API socket.
        socket: PathBuf,
        /// The request.
        request: String,
        /// The HTTP status (400 for bad input or a call in the wrong state).
        status: StatusCode,
        /// Firecracker's description of the error; not meant to be parsed.
        fault_message: String,
    },
    /// The request could not be encoded.
    #[error("cannot encode {request}")]
    Encode {
        /// The request.
        request: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A successful answer does not have the expected shape.
    #[error("unexpected answer to {request} on {} ({status})", socket.display())]
    Decode {
        /// The API socket.
        socket: PathBuf,
        /// The request.
        request: String,
        /// The HTTP status of the answer.
        status: StatusCode,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// Creating a snapshot failed after Firecracker had started writing its files.
    #[error(
        "snapshot creation failed, leaving partial files {}",
        list(partial_files)
    )]
    SnapshotIncomplete {
        /// The files of the requested snapshot that exist now; none of them is usable.
        partial_files: Vec<PathBuf>,
        /// Why the snapshot failed.
        #[source]
        source: Box<ApiError>,
    },
}

impl ApiError {
    /// Firecracker's `fault_message`, when Firecracker itself refused the request.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            ApiError::Fault { fault_message, .. } => Some(fault_message),
            ApiError::SnapshotIncomplete { source, .. } => source.fault_message(),
            _ => None,
        }
    }

    /// The HTTP status of Firecracker's refusal, if it answered with one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Fault { status, .. } => Some(*status),
            ApiError::SnapshotIncomplete { source, .. } => source.status(),
            _ => None,
        }
    }
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
