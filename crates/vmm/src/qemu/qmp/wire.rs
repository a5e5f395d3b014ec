//! The QMP wire format: the greeting, encoding a command as one line, classifying each
//! line QEMU sends, and the client's line-framed reads and writes on the socket.
//!
//! Reads are cancel-safe: bytes read stay in the client's buffer until a whole line is in.

use std::fmt;
use std::io;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Command, QmpClient, QmpError, QmpEvent};

/// Longest line accepted from QEMU (`query-qmp-schema` answers with a few hundred KiB).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

impl QmpClient {
    pub(super) async fn write_line(
        &mut self,
        line: &str,
        waiting_for: &str,
    ) -> Result<(), QmpError> {
        // Set until the write completes: if this future is dropped halfway, QEMU holds a
        // partial command and the stream can no longer be trusted.
        self.write_interrupted = true;
        let written = self.stream.write_all(line.as_bytes()).await;
        self.write_interrupted = false;
        written.map_err(|source| self.io_error(waiting_for, source))
    }

    /// Reads one message. Cancel-safe: bytes read stay in `read_buf` for the next call.
    pub(super) async fn read_message(
        &mut self,
        waiting_for: &str,
    ) -> Result<ServerMessage, QmpError> {
        loop {
            if let Some(line) = self.take_line() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_message(&line).map_err(|source| QmpError::InvalidMessage {
                    socket: self.socket.clone(),
                    waiting_for: waiting_for.into(),
                    source,
                });
            }
            if self.read_buf.len() > MAX_MESSAGE_BYTES {
                let socket = self.socket.clone();
                return Err(QmpError::MessageTooLong {
                    socket,
                    limit: MAX_MESSAGE_BYTES,
                });
            }
            let read = self.stream.read_buf(&mut self.read_buf).await;
            match read.map_err(|source| self.io_error(waiting_for, source))? {
                0 => return Err(self.eof_error(waiting_for)),
                _ => continue,
            }
        }
    }

    /// Removes and returns the first complete line in `read_buf`, newline included.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let offset = self.read_buf[self.scanned..]
            .iter()
            .position(|b| *b == b'\n');
        match offset {
            Some(offset) => {
                let end = self.scanned + offset + 1;
                self.scanned = 0;
                Some(self.read_buf.drain(..end).collect())
            }
            None => {
                self.scanned = self.read_buf.len();
                None
            }
        }
    }

    fn eof_error(&self, waiting_for: &str) -> QmpError {
        let (socket, waiting_for) = (self.socket.clone(), waiting_for.to_owned());
        if self.read_buf.iter().all(u8::is_ascii_whitespace) {
            QmpError::Closed {
                socket,
                waiting_for,
            }
        } else {
            QmpError::Truncated {
                socket,
                waiting_for,
                bytes: self.read_buf.len(),
            }
        }
    }

    fn io_error(&self, waiting_for: &str, source: io::Error) -> QmpError {
        QmpError::Io {
            socket: self.socket.clone(),
            waiting_for: waiting_for.into(),
            source,
        }
    }
}

/// Whether a response's `id` answers the command sent with `sent`. QEMU omits the id only
/// when it failed before reading it (a JSON parse error); with one command in flight such
/// a response can only be ours.
pub(super) fn id_matches(got: Option<&Value>, sent: u64) -> bool {
    got.is_none_or(|got| got.as_u64() == Some(sent))
}

/// Encodes `command` as one QMP line with `id`. Written by hand, not through a
/// `serde_json::Value`, so the member order is fixed whatever serde_json features are on.
pub(super) fn encode_command<C: Command>(command: &C, id: u64) -> Result<String, QmpError> {
    let encode_error = |source| QmpError::Encode {
        command: C::NAME.into(),
        source,
    };
    let arguments = serde_json::to_string(command).map_err(encode_error)?;
    let name = serde_json::to_string(C::NAME).map_err(encode_error)?;

    let mut line = format!("{{\"execute\":{name}");
    match arguments.as_str() {
        "null" | "{}" => {}
        object if object.starts_with('{') => {
            line.push_str(",\"arguments\":");
            line.push_str(object);
        }
        _ => {
            let message = "arguments must serialize to a json object or a unit struct";
            return Err(encode_error(serde::ser::Error::custom(message)));
        }
    }
    line.push_str(&format!(",\"id\":{id}}}\n"));
    Ok(line)
}

/// One message from QEMU, classified by its distinguishing member.
#[derive(Debug)]
pub(super) enum ServerMessage {
    Greeting(Greeting),
    Return { id: Option<Value>, value: Value },
    Error { id: Option<Value>, error: ErrorBody },
    Event(QmpEvent),
    Unknown(Value),
}

impl ServerMessage {
    pub(super) fn kind(&self) -> String {
        match self {
            Self::Greeting(_) => "a greeting".into(),
            Self::Return { .. } => "a success response".into(),
            Self::Error { .. } => "an error response".into(),
            Self::Event(event) => format!("event {}", event.name),
            Self::Unknown(value) => format!("an unknown message {value}"),
        }
    }
}

/// The `error` member of an error response.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    pub(super) class: String,
    pub(super) desc: String,
}

pub(super) fn parse_message(line: &[u8]) -> Result<ServerMessage, serde_json::Error> {
    let mut value: serde_json::Map<String, Value> = serde_json::from_slice(line)?;
    let id = value.remove("id");
    if let Some(greeting) = value.remove("QMP") {
        return serde_json::from_value(greeting).map(ServerMessage::Greeting);
    }
    if let Some(returned) = value.remove("return") {
        return Ok(ServerMessage::Return {
            id,
            value: returned,
        });
    }
    if let Some(error) = value.remove("error") {
        let error = serde_json::from_value(error)?;
        return Ok(ServerMessage::Error { id, error });
    }
    if value.contains_key("event") {
        return serde_json::from_value(Value::Object(value)).map(ServerMessage::Event);
    }
    Ok(ServerMessage::Unknown(Value::Object(value)))
}

/// The greeting QEMU sends on connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Greeting {
    /// QEMU's version, as `query-version` reports it.
    pub version: QemuVersion,
    /// Protocol capabilities QEMU offers, e.g. `oob`; this client enables none.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// QEMU's version (`VersionInfo` in the schema).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    /// The upstream version number.
    pub qemu: VersionTriple,
    /// The distributor's package version, e.g. `Debian 1:10.0.2+ds-2`.
    #[serde(default)]
    pub package: String,
}

/// A `major.minor.micro` version number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct VersionTriple {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Micro version.
    pub micro: u32,
}

impl fmt::Display for VersionTriple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}
