//! The host side of a Firecracker guest's vsock device, for the guest agent's protocol
//! (`boxcutter_types::guest`).
//!
//! Firecracker proxies vsock to Unix sockets: a guest connecting to host port P reaches
//! whoever listens on `<uds_path>_P` ([`AgentListener`], for the agent's events on
//! [`AGENT_VSOCK_PORT`]); the host reaches a guest port by connecting to `uds_path` itself
//! and writing `CONNECT <port>\n`, to which Firecracker answers `OK <host port>\n` once the
//! guest accepted ([`send_command`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxcutter_types::guest::{AgentEvent, HostCommand, AGENT_VSOCK_PORT, CONTROL_VSOCK_PORT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{UnixListener, UnixStream};

/// Errors on the vsock channel.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// A socket could not be bound, connected, read or written.
    #[error("vsock socket {}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The peer said something outside the protocol.
    #[error("vsock {}: {detail}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Nothing arrived in time.
    #[error("vsock {}: no answer within {after:?}", path.display())]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// How long it waited.
        after: Duration,
    },
}

/// The host's listener for the guest agent's events: bound before the guest boots, so
/// the agent's first connection finds it. Removes its socket file when dropped.
#[derive(Debug)]
pub struct AgentListener {
    path: PathBuf,
    listener: UnixListener,
}

impl AgentListener {
    /// Binds `<uds_path>_1024`, replacing a stale socket file (and making its directory).
    pub fn bind(uds_path: &Path) -> Result<Self, VsockError> {
        let path = port_socket(uds_path, AGENT_VSOCK_PORT);
        let io = |source| VsockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let listener = UnixListener::bind(&path).map_err(io)?;
        Ok(Self { path, listener })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets a Firecracker running as `uid`/`gid` (under the jailer) connect: connecting
    /// to a Unix socket takes write permission on its file.
    pub fn hand_over(&self, uid: u32, gid: u32) -> Result<(), VsockError> {
        std::os::unix::fs::chown(&self.path, Some(uid), Some(gid)).map_err(|source| {
            VsockError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Waits for the guest agent's connection and returns its event lines.
    pub async fn accept(&self) -> Result<AgentEvents, VsockError> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|source| VsockError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(AgentEvents {
            path: self.path.clone(),
            lines: BufReader::new(stream).lines(),
        })
    }
}

impl Drop for AgentListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The event lines of one connection of the guest agent.
#[derive(Debug)]
pub struct AgentEvents {
    path: PathBuf,
    lines: Lines<BufReader<UnixStream>>,
}

impl AgentEvents {
    /// The next event; `None` when the guest closed the connection. Lines that are not
    /// events are skipped.
    pub async fn next(&mut self) -> Result<Option<AgentEvent>, VsockError> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|source| VsockError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            let Some(line) = line else { return Ok(None) };
            match serde_json::from_str(&line) {
                Ok(event) => return Ok(Some(event)),
                Err(error) => tracing::debug!(%error, "ignoring unparsable agent line"),
            }
        }
    }
}

/// Sends one command to the guest agent's control port through Firecracker's vsock socket
/// at `uds_path` and returns its answer.
pub async fn send_command(
    uds_path: &Path,
    command: &HostCommand,
    within: Duration,
) -> Result<AgentEvent, VsockError> {
    let exchange = async {
        let io = |source| VsockError::Io {
            path: uds_path.to_owned(),
            source,
        };
        let protocol = |detail: String| VsockError::Protocol {
            path: uds_path.to_owned(),
            detail,
        };
        let stream = UnixStream::connect(uds_path).await.map_err(io)?;
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(format!("CONNECT {CONTROL_VSOCK_PORT}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut ok = String::new();
        stream.read_line(&mut ok).await.map_err(io)?;
        if !ok.starts_with("OK ") {
            return Err(protocol(format!(
                "the guest does not accept connections on port {CONTROL_VSOCK_PORT} \
                 (answer {:?})",
                ok.trim_end()
            )));
        }
        let mut line = serde_json::to_string(command).map_err(|e| protocol(e.to_string()))?;
        line.push('\n');
        stream
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .map_err(io)?;
        let mut answer = String::new();
        stream.read_line(&mut answer).await.map_err(io)?;
        serde_json::from_str(&answer)
            .map_err(|e| protocol(format!("unparsable answer {:?}: {e}", answer.trim_end())))
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| VsockError::Timeout {
            path: uds_path.to_owned(),
            after: within,
        })?
}

/// The host-side socket for guest-initiated connections to `port`: `<uds_path>_<port>`.
pub fn port_socket(uds_path: &Path, port: u32) -> PathBuf {
    let mut path = uds_path.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ports_are_suffixes_of_the_device_socket() {
        assert_eq!(
            port_socket(Path::new("/run/vm/v.sock"), 1024),
            PathBuf::from("/run/vm/v.sock_1024")
        );
    }

    #[tokio::test]
    async fn a_guest_that_refuses_the_port_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        tokio::spawn(async move {
            // Firecracker closes the connection when no guest listener accepts.
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
        });
        let command = HostCommand::Refresh(boxcutter_types::guest::Refresh {
            name: boxcutter_types::VmName::new("copy").unwrap(),
            net: None,
            unix_time_ms: 0,
            entropy: "00".repeat(32),
            ssh_host_key: None,
        });
        let err = send_command(&uds, &command, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("does not accept connections on port 1025"),
            "{err}"
        );
    }
}
