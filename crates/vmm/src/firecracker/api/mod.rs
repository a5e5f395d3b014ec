//! A typed client for Firecracker's REST API on its Unix socket.
//!
//! Written from Firecracker's published OpenAPI description
//! (`src/firecracker/swagger/firecracker.yaml`). Each endpoint is a [`Request`] type naming
//! its method, path and answer, one file per API resource; [`ApiClient::send`] runs any of
//! them, so a new endpoint is a new type, not a change to the client. Request types reject
//! unknown fields when decoded (as Firecracker's own server does, which is what lets
//! `FakeFirecracker` enforce the contract with the very same types); answer types ignore
//! fields a newer Firecracker adds.
//!
//! Successful `PUT`/`PATCH` calls answer `204 No Content`; errors answer 4xx/5xx with
//! `{"fault_message": "..."}`, which becomes [`ApiError::Fault`] with the status and the
//! request. Every call is bounded by a timeout; every error names the socket.
//!
//! Ownership: an [`ApiClient`] is a path and two timeouts, cheap to clone. Each call opens
//! its own connection (see `transport`), so calls never interfere; Firecracker handles one
//! API request at a time anyway.

mod actions;
mod balloon;
mod boot;
mod drive;
mod error;
mod logging;
mod machine;
mod net;
mod rate_limiter;
mod snapshot;
mod transport;
mod vm;
mod vsock;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use actions::{ActionType, InstanceAction};
pub use balloon::{Balloon, BalloonInfo};
pub use boot::{BootSource, BootSourceInfo};
pub use drive::{CacheType, Drive, DriveInfo, DriveUpdate, IoEngine};
pub use error::ApiError;
pub use logging::{LogLevel, Logger, Metrics};
pub use machine::{GetMachineConfig, HugePages, MachineConfig, MachineConfigInfo};
pub use net::{InvalidMac, MacAddr, NetworkInterface, NetworkInterfaceInfo};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use snapshot::{
    MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotCreate, SnapshotLoad, SnapshotType,
    VsockOverride,
};
pub use vm::{
    DescribeInstance, FullVmConfig, GetVersion, GetVmConfig, InstanceInfo, InstanceState,
    VersionInfo, VmState, VmStateUpdate,
};
pub use vsock::{Vsock, VsockInfo};

use transport::Call;

/// How long a call waits for Firecracker by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long snapshot calls wait by default: they write or map all of guest memory.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// How often [`ApiClient::wait_for_socket`] tries to connect.
const SOCKET_POLL: Duration = Duration::from_millis(5);

/// One API endpoint: its method, its path and what it answers. The type's serde form is
/// the JSON body (none is sent for `GET`).
pub trait Request: Serialize {
    /// The HTTP method.
    const METHOD: Method;
    /// Whether the call may take as long as writing all of guest memory.
    const SLOW: bool = false;
    /// The answer to a successful call; [`NoContent`] for `204`.
    type Response: DeserializeOwned;
    /// The path, e.g. `/drives/rootfs`.
    fn path(&self) -> String;
}

/// The answer of calls that answer `204 No Content`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct NoContent;

/// A client for one Firecracker process's API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
    snapshot_timeout: Duration,
}

impl ApiClient {
    /// A client for the API socket at `socket`, with the default timeouts. Nothing is
    /// connected until the first call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            snapshot_timeout: DEFAULT_SNAPSHOT_TIMEOUT,
        }
    }

    /// Waits until the API socket at `socket` accepts connections (a freshly started
    /// Firecracker creates it within milliseconds), for at most `within`.
    pub async fn wait_for_socket(
        socket: impl Into<PathBuf>,
        within: Duration,
    ) -> Result<Self, ApiError> {
        let client = Self::new(socket);
        let deadline = Instant::now() + within;
        loop {
            if tokio::net::UnixStream::connect(&client.socket)
                .await
                .is_ok()
            {
                return Ok(client);
            }
            if Instant::now() >= deadline {
                return Err(ApiError::SocketNeverAppeared {
                    socket: client.socket,
                    after: within,
                });
            }
            tokio::time::sleep(SOCKET_POLL).await;
        }
    }

    /// The same client with `timeout` for ordinary calls.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client with `timeout` for snapshot calls.
    pub fn with_snapshot_timeout(mut self, timeout: Duration) -> Self {
        self.snapshot_timeout = timeout;
        self
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and decodes Firecracker's answer.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response, ApiError> {
        let call = Call::new(&self.socket, R::METHOD, request.path());
        let body = encode(request, &call)?;
        let timeout = if R::SLOW {
            self.snapshot_timeout
        } else {
            self.timeout
        };
        let (status, bytes) = transport::exchange(&call, body, timeout).await?;
        decode(&call, status, &bytes)
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(&self, config: &MachineConfig) -> Result<(), ApiError> {
        self.send(config).await.map(drop)
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), ApiError> {
        self.send(boot).await.map(drop)
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&self, drive: &Drive) -> Result<(), ApiError> {
        self.send(drive).await.map(drop)
    }

    /// `PATCH /drives/{drive_id}`.
    pub async fn patch_drive(&self, update: &DriveUpdate) -> Result<(), ApiError> {
        self.send(update).await.map(drop)
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(&self, nic: &NetworkInterface) -> Result<(), ApiError> {
        self.send(nic).await.map(drop)
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), ApiError> {
        self.send(vsock).await.map(drop)
    }

    /// `PUT /logger`.
    pub async fn put_logger(&self, logger: &Logger) -> Result<(), ApiError> {
        self.send(logger).await.map(drop)
    }

    /// `PUT /metrics`.
    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<(), ApiError> {
        self.send(metrics).await.map(drop)
    }

    /// `PUT /balloon`.
    pub async fn put_balloon(&self, balloon: &Balloon) -> Result<(), ApiError> {
        self.send(balloon).await.map(drop)
    }

    /// `PUT /actions` `InstanceStart`: boots the guest.
    pub async fn start_instance(&self) -> Result<(), ApiError> {
        self.send(&InstanceAction::START).await.map(drop)
    }

    /// `PUT /actions` `SendCtrlAltDel`: asks the guest to reboot, which ends Firecracker.
    pub async fn send_ctrl_alt_del(&self) -> Result<(), ApiError> {
        self.send(&InstanceAction::CTRL_ALT_DEL).await.map(drop)
    }

    /// `PUT /actions` `FlushMetrics`.
    pub async fn flush_metrics(&self) -> Result<(), ApiError> {
        self.send(&InstanceAction::FLUSH_METRICS).await.map(drop)
    }

    /// `PATCH /vm` `Paused`.
    pub async fn pause(&self) -> Result<(), ApiError> {
        let update = VmStateUpdate {
            state: VmState::Paused,
        };
        self.send(&update).await.map(drop)
    }

    /// `PATCH /vm` `Resumed`.
    pub async fn resume(&self) -> Result<(), ApiError> {
        let update = VmStateUpdate {
            state: VmState::Resumed,
        };
        self.send(&update).await.map(drop)
    }

    /// `PUT /snapshot/create`. When it fails after Firecracker began writing, the error is
    /// [`ApiError::SnapshotIncomplete`] listing the files left behind; removing them is the
    /// caller's undo step.
    pub async fn create_snapshot(&self, snapshot: &SnapshotCreate) -> Result<(), ApiError> {
        let error = match self.send(snapshot).await {
            Ok(NoContent) => return Ok(()),
            Err(error) => error,
        };
        let partial_files: Vec<PathBuf> = snapshot
            .files()
            .into_iter()
            .filter(|path| path.exists())
            .cloned()
            .collect();
        if partial_files.is_empty() {
            return Err(error);
        }
        Err(ApiError::SnapshotIncomplete {
            partial_files,
            source: Box::new(error),
        })
    }

    /// `PUT /snapshot/load`.
    pub async fn load_snapshot(&self, load: &SnapshotLoad) -> Result<(), ApiError> {
        self.send(load).await.map(drop)
    }

    /// `GET /`.
    pub async fn describe_instance(&self) -> Result<InstanceInfo, ApiError> {
        self.send(&DescribeInstance).await
    }

    /// `GET /vm/config`.
    pub async fn vm_config(&self) -> Result<FullVmConfig, ApiError> {
        self.send(&GetVmConfig).await
    }

    /// `GET /machine-config`.
    pub async fn machine_config(&self) -> Result<MachineConfigInfo, ApiError> {
        self.send(&GetMachineConfig).await
    }

    /// `GET /version`: Firecracker's version, e.g. `1.10.1`.
    pub async fn version(&self) -> Result<String, ApiError> {
        Ok(self.send(&GetVersion).await?.firecracker_version)
    }
}

/// The JSON body of `request`, or none for a `GET`.
fn encode<R: Request>(request: &R, call: &Call) -> Result<Option<Vec<u8>>, ApiError> {
    if R::METHOD == Method::GET {
        return Ok(None);
    }
    serde_json::to_vec(request)
        .map(Some)
        .map_err(|source| ApiError::Encode {
            request: call.request(),
            source: Box::new(source),
        })
}

/// Decodes a successful answer (an empty body reads as `null`), or turns an error status
/// into [`ApiError::Fault`].
fn decode<T: DeserializeOwned>(
    call: &Call,
    status: StatusCode,
    body: &[u8],
) -> Result<T, ApiError> {
    if !status.is_success() {
        return Err(ApiError::Fault {
            socket: call.socket.clone(),
            request: call.request(),
            status,
            fault_message: fault_message(body),
        });
    }
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(json).map_err(|source| ApiError::Decode {
        socket: call.socket.clone(),
        request: call.request(),
        status,
        source,
    })
}

/// The `fault_message` of an error body, or the body itself when it is not one.
fn fault_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct FaultBody {
        fault_message: String,
    }
    if let Ok(fault) = serde_json::from_slice::<FaultBody>(body) {
        return fault.fault_message;
    }
    let text = String::from_utf8_lossy(body);
    match text.trim() {
        "" => "(no fault message)".to_owned(),
        text => text.chars().take(500).collect(),
    }
}
