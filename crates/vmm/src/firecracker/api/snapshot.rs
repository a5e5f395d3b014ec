//! `PUT /snapshot/create` and `PUT /snapshot/load`: saving a paused guest's state and memory
//! to files, and resuming it in a fresh Firecracker process.

use std::path::PathBuf;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Request;

/// `SnapshotCreateParams`. Only while the guest is paused; Firecracker creates (or
/// truncates) both files, whose directories must exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Full (all memory) or diff (pages dirtied since the last snapshot); full when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
    /// Where the microVM state (devices, vCPUs) goes.
    pub snapshot_path: PathBuf,
    /// Where the guest memory goes.
    pub mem_file_path: PathBuf,
}

impl SnapshotCreate {
    /// A full snapshot: state to `snapshot_path`, all of memory to `mem_file_path`.
    pub fn full(snapshot_path: impl Into<PathBuf>, mem_file_path: impl Into<PathBuf>) -> Self {
        Self {
            snapshot_type: Some(SnapshotType::Full),
            snapshot_path: snapshot_path.into(),
            mem_file_path: mem_file_path.into(),
        }
    }

    /// A diff snapshot: the memory file is sparse and holds only the pages dirtied since
    /// the previous snapshot. Needs dirty page tracking.
    pub fn diff(snapshot_path: impl Into<PathBuf>, mem_file_path: impl Into<PathBuf>) -> Self {
        Self {
            snapshot_type: Some(SnapshotType::Diff),
            ..Self::full(snapshot_path, mem_file_path)
        }
    }

    /// The files this snapshot writes.
    pub fn files(&self) -> [&PathBuf; 2] {
        [&self.snapshot_path, &self.mem_file_path]
    }
}

impl Request for SnapshotCreate {
    const METHOD: Method = Method::PUT;
    const SLOW: bool = true;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/snapshot/create".into()
    }
}

/// Full or diff snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// All of guest memory.
    Full,
    /// Only the pages dirtied since the last snapshot.
    Diff,
}

/// `SnapshotLoadParams`. Only on a fresh process: nothing but the logger and metrics may
/// have been configured. A failed load makes Firecracker exit. The guest's drives, TAP
/// devices and vsock socket path must be usable as they were when the snapshot was taken
/// (the vsock socket file must not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoad {
    /// The microVM state file.
    pub snapshot_path: PathBuf,
    /// Where guest memory comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// The memory file; deprecated form of a `File` backend, exclusive with `mem_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<PathBuf>,
    /// Track dirty pages after the load (needed for diff snapshots); the name every
    /// Firecracker with snapshots knows, deprecated in favour of `track_dirty_pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Track dirty pages after the load; newer Firecracker releases only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Resume the guest as soon as it is loaded; otherwise it stays paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// TAP devices to use instead of those in the snapshot; newer Firecracker releases only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    /// The vsock Unix socket to bind instead of the snapshot's; Firecracker 1.16 and newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
}

impl SnapshotLoad {
    /// Loads the state at `snapshot_path` with memory from the file `mem_file`, leaving the
    /// guest paused and dirty page tracking off.
    pub fn from_files(snapshot_path: impl Into<PathBuf>, mem_file: impl Into<PathBuf>) -> Self {
        Self {
            snapshot_path: snapshot_path.into(),
            mem_backend: Some(MemoryBackend::file(mem_file)),
            mem_file_path: None,
            enable_diff_snapshots: None,
            track_dirty_pages: None,
            resume_vm: None,
            network_overrides: None,
            vsock_override: None,
        }
    }

    /// The same, with dirty page tracking on so the restored guest can take diff snapshots.
    /// Sent as `enable_diff_snapshots`, which every Firecracker we support accepts.
    pub fn tracking_dirty_pages(mut self) -> Self {
        self.enable_diff_snapshots = Some(true);
        self
    }

    /// The same, resuming the guest right after the load.
    pub fn resuming(mut self) -> Self {
        self.resume_vm = Some(true);
        self
    }
}

impl Request for SnapshotLoad {
    const METHOD: Method = Method::PUT;
    const SLOW: bool = true;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/snapshot/load".into()
    }
}

/// `MemoryBackend`: where a loaded guest's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// A file, or a userfaultfd handler.
    pub backend_type: MemoryBackendType,
    /// The memory file, or the handler's Unix socket.
    pub backend_path: PathBuf,
}

impl MemoryBackend {
    /// Memory mapped from the file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            backend_type: MemoryBackendType::File,
            backend_path: path.into(),
        }
    }
}

/// The kinds of memory backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// A memory file, mapped privately.
    File,
    /// Page faults served by a userfaultfd handler process.
    Uffd,
}

/// `NetworkOverride`: the TAP device a restored interface uses instead of its old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// The interface, as configured before the snapshot.
    pub iface_id: String,
    /// The TAP device to use now.
    pub host_dev_name: String,
}

/// `VsockOverride`: the host-side Unix socket a restored vsock device binds instead of the
/// one saved in the snapshot (whose owner, the source VM, may still hold it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// The Unix socket to bind.
    pub uds_path: PathBuf,
}
