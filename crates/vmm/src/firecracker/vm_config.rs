//! What a Firecracker microVM is launched from ([`FirecrackerConfig`], [`FirecrackerPaths`])
//! and how launching or driving one fails ([`FirecrackerError`], [`LaunchStep`]).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::api::{ApiError, MacAddr};
use super::jail::{Jail, JailerConfig};

/// Errors driving a Firecracker microVM.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    /// A file the guest needs is missing.
    #[error("{what} {path} does not exist")]
    MissingFile {
        /// What the file is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A runtime file could not be prepared or cleaned up.
    #[error("cannot {action} {path}")]
    File {
        /// What was being done, e.g. `remove stale socket`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The network namespace to run in cannot be opened.
    #[error("cannot open network namespace {path}")]
    Netns {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Firecracker could not be started.
    #[error("cannot run {binary}")]
    Spawn {
        /// The Firecracker binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API socket did not appear in time; the process was killed.
    #[error("api socket {} never appeared within {after:?}", socket.display())]
    SocketNeverAppeared {
        /// The API socket.
        socket: PathBuf,
        /// How long the launch waited.
        after: Duration,
    },
    /// A file could not be put into the jail.
    #[error("cannot put {} into the jail", path.display())]
    Jail {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The process ended while being configured or booted.
    #[error("firecracker exited during boot (at {step}): {console}")]
    ExitedDuringBoot {
        /// The launch step that was running.
        step: LaunchStep,
        /// The end of its console log (Firecracker's own messages go there too).
        console: String,
    },
    /// A launch step was refused or failed; the process was killed.
    #[error("firecracker launch failed at {step}")]
    Launch {
        /// The step.
        step: LaunchStep,
        /// Why.
        #[source]
        source: ApiError,
    },
    /// The pidfile is missing or does not name this VM's Firecracker.
    #[error("no firecracker process for {pidfile}")]
    NotRunning {
        /// The pidfile.
        pidfile: PathBuf,
    },
    /// A snapshot failed; its partial files were removed.
    #[error("snapshot {} failed; partial files removed", state.display())]
    Snapshot {
        /// The state file asked for.
        state: PathBuf,
        /// Why.
        #[source]
        source: ApiError,
    },
    /// An API call on a running VM failed.
    #[error("firecracker api call failed")]
    Api(#[from] ApiError),
    /// The guest's vsock channel failed.
    #[error("guest channel")]
    Vsock(#[from] super::vsock::VsockError),
    /// The guest agent reported a failed step.
    #[error("guest agent: {step} failed: {error}")]
    GuestFailed {
        /// The step.
        step: String,
        /// Why.
        error: String,
    },
    /// The guest did not report ready in time; Firecracker is left running for the caller.
    #[error("guest not ready within {timeout:?}; console:\n{console}")]
    ReadyTimeout {
        /// How long it waited.
        timeout: Duration,
        /// The end of the console log.
        console: String,
    },
    /// Firecracker ended while the guest was booting.
    #[error("firecracker exited before the guest was ready; console:\n{console}")]
    GuestExited {
        /// The end of the console log.
        console: String,
    },
}

/// The steps of [`FirecrackerVm::launch`] after the process is spawned, for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchStep {
    /// Writing the pidfile.
    Pidfile,
    /// Waiting for the API socket.
    Socket,
    /// `PUT /logger`.
    Logger,
    /// `PUT /metrics`.
    Metrics,
    /// `PUT /machine-config`.
    MachineConfig,
    /// `PUT /boot-source`.
    BootSource,
    /// `PUT /drives/{id}`.
    Drive(String),
    /// `PUT /network-interfaces/{id}`.
    NetworkInterface(String),
    /// `PUT /vsock`.
    Vsock,
    /// `InstanceStart`.
    InstanceStart,
    /// `PUT /snapshot/load`.
    LoadSnapshot,
    /// `PATCH /drives/{id}` on a loaded guest.
    UpdateDrive(String),
    /// `PATCH /vm` Resumed on a loaded guest.
    Resume,
}

impl fmt::Display for LaunchStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchStep::Pidfile => f.write_str("pidfile"),
            LaunchStep::Socket => f.write_str("api socket"),
            LaunchStep::Logger => f.write_str("logger"),
            LaunchStep::Metrics => f.write_str("metrics"),
            LaunchStep::MachineConfig => f.write_str("machine config"),
            LaunchStep::BootSource => f.write_str("boot source"),
            LaunchStep::Drive(id) => write!(f, "drive {id}"),
            LaunchStep::NetworkInterface(id) => write!(f, "network interface {id}"),
            LaunchStep::Vsock => f.write_str("vsock"),
            LaunchStep::InstanceStart => f.write_str("instance start"),
            LaunchStep::LoadSnapshot => f.write_str("snapshot load"),
            LaunchStep::UpdateDrive(id) => write!(f, "drive {id} update"),
            LaunchStep::Resume => f.write_str("resume"),
        }
    }
}

/// Where a VM's Firecracker keeps its runtime files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerPaths {
    /// The API socket.
    pub socket: PathBuf,
    /// The serial console log (the process's stdout and stderr).
    pub console: PathBuf,
    /// The pidfile, written by the launch.
    pub pidfile: PathBuf,
    /// The host side of the guest's vsock device, a Unix socket Firecracker creates.
    pub vsock: PathBuf,
    /// Firecracker's own log (a file, created if missing, or an existing named pipe).
    pub log: Option<PathBuf>,
    /// Firecracker's metrics (a file, created if missing, or an existing named pipe).
    pub metrics: Option<PathBuf>,
    /// The jail, when Firecracker runs under the jailer: then `socket` and `vsock` are in
    /// it, and the process is recognised by its id rather than its socket.
    pub jail: Option<Jail>,
}

impl FirecrackerPaths {
    /// The usual layout in a VM's directory, with a log file and no metrics.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            socket: dir.join("firecracker.sock"),
            console: dir.join("console.log"),
            pidfile: dir.join("firecracker.pid"),
            vsock: dir.join("vsock.sock"),
            log: Some(dir.join("firecracker.log")),
            metrics: None,
            jail: None,
        }
    }

    /// The layout of a jailed Firecracker: sockets in the jail, files in `dir`.
    pub fn jailed(dir: &Path, jail: Jail) -> Self {
        Self {
            socket: jail.host_path("fc.sock"),
            vsock: jail.host_path("v.sock"),
            jail: Some(jail),
            ..Self::in_dir(dir)
        }
    }
}

/// The guest's network interface: a TAP device on the host and the guest's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerNic {
    /// The TAP device (in the VM's network namespace, if any).
    pub tap: String,
    /// The guest's MAC address.
    pub mac: MacAddr,
}

/// Everything one Firecracker microVM is launched with.
#[derive(Debug, Clone)]
pub struct FirecrackerConfig {
    /// The `firecracker` binary.
    pub binary: PathBuf,
    /// The instance id (`--id`): letters, digits, `-` and `_`.
    pub id: String,
    /// Virtual CPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub memory_mib: u32,
    /// The guest kernel, an uncompressed `vmlinux` ELF.
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// The kernel command line, passed as is (it names the root device: drives are
    /// attached root disk first, so the guest sees it as `/dev/vda`).
    pub cmdline: String,
    /// The root disk, a raw image, writable.
    pub root_disk: PathBuf,
    /// The config drive, attached read-only as `/dev/vdb`.
    pub config_drive: Option<PathBuf>,
    /// The network interface, if any.
    pub nic: Option<FirecrackerNic>,
    /// The guest's vsock CID (its host-side socket is `paths.vsock`).
    pub guest_cid: u32,
    /// Dirty-page tracking, needed for diff snapshots.
    pub track_dirty_pages: bool,
    /// Further Firecracker options (e.g. `--boot-timer`).
    pub extra_args: Vec<OsString>,
    /// How long the API socket may take to appear.
    pub socket_wait: Duration,
    /// Runtime files.
    pub paths: FirecrackerPaths,
    /// Run under the jailer (then `paths.jail` is this VM's jail under it).
    pub jailer: Option<JailerConfig>,
}
