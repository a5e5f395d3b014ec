//! [`QmpError`]: every way a QMP exchange can fail, each naming the socket and what the
//! client was waiting for.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected.
    #[error("cannot connect to qmp socket {}", socket.display())]
    Connect {
        /// The QMP socket.
        socket: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("qmp i/o on {} failed while waiting for {waiting_for}", socket.display())]
    Io {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing, e.g. "the response to `stop`".
        waiting_for: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// QEMU closed the socket between two messages.
    #[error("qmp socket {} closed while waiting for {waiting_for}", socket.display())]
    Closed {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
    },
    /// QEMU closed the socket in the middle of a message.
    #[error(
        "qmp socket {} closed mid-message ({bytes} bytes of an unterminated line) while \
         waiting for {waiting_for}",
        socket.display()
    )]
    Truncated {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// How much of the unfinished message had arrived.
        bytes: usize,
    },
    /// QEMU did not answer in time.
    #[error("no answer on qmp socket {} within {after:?} while waiting for {waiting_for}",
        socket.display())]
    Timeout {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// QEMU ran the command and reported an error.
    #[error("qmp command {command} failed: {class}: {desc}")]
    Command {
        /// The command's wire name.
        command: String,
        /// QEMU's error class, e.g. `GenericError` or `CommandNotFound`.
        class: String,
        /// QEMU's human-readable description; not meant to be parsed.
        desc: String,
    },
    /// A line from QEMU is not a QMP message.
    #[error("invalid qmp message on {} while waiting for {waiting_for}", socket.display())]
    InvalidMessage {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// Why the line could not be decoded.
        #[source]
        source: serde_json::Error,
    },
    /// A valid QMP message arrived where the protocol does not allow it.
    #[error("unexpected qmp message on {} while waiting for {waiting_for}: {detail}",
        socket.display())]
    Protocol {
        /// The QMP socket.
        socket: PathBuf,
        /// What the client was doing.
        waiting_for: String,
        /// What was wrong.
        detail: String,
    },
    /// QEMU sent a line longer than this client accepts.
    #[error("qmp message on {} exceeds {limit} bytes", socket.display())]
    MessageTooLong {
        /// The QMP socket.
        socket: PathBuf,
        /// The limit in bytes.
        limit: usize,
    },
    /// A command's arguments could not be encoded.
    #[error("cannot encode the arguments of qmp command {command}")]
    Encode {
        /// The command's wire name.
        command: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A command succeeded but its return value does not have the expected shape.
    #[error("unexpected return value from qmp command {command}")]
    Response {
        /// The command's wire name.
        command: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An event's data does not have the expected shape.
    #[error("unexpected data in qmp event {event}")]
    EventData {
        /// The event's name.
        event: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An earlier call was cancelled halfway through writing a command.
    #[error("qmp stream on {} is unusable: an earlier command was cancelled mid-write",
        socket.display())]
    Desynchronized {
        /// The QMP socket.
        socket: PathBuf,
    },
}
