//! Live migration over QMP: the commands that start, receive and tune a migration, where
//! its stream goes, and what `query-migrate` reports.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Command, Empty};

/// `migrate`: start an outgoing migration. QEMU 10 takes exactly one of `uri` or
/// `channels`; build it with [`Migrate::to_uri`] or [`Migrate::to_address`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Migrate {
    /// Destination URI, e.g. `tcp:HOST:PORT` or `unix:PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Destination as typed channels (QEMU 8.2+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<MigrationChannel>>,
    /// Resume a paused postcopy migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
}

impl Migrate {
    /// Migrate to a URI such as `tcp:HOST:PORT`.
    pub fn to_uri(uri: impl Into<String>) -> Self {
        Self {
            uri: Some(uri.into()),
            ..Self::default()
        }
    }

    /// Migrate over one main channel to `addr`.
    pub fn to_address(addr: MigrationAddress) -> Self {
        Self {
            channels: Some(vec![MigrationChannel::main(addr)]),
            ..Self::default()
        }
    }
}

impl Command for Migrate {
    const NAME: &'static str = "migrate";
    type Response = Empty;
}

/// `migrate-incoming`: listen for an incoming migration (QEMU started with
/// `-incoming defer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateIncoming {
    /// Where to listen, e.g. `tcp:0.0.0.0:PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Where to listen, as typed channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<MigrationChannel>>,
    /// Whether QEMU exits when the migration fails (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_on_error: Option<bool>,
}

impl MigrateIncoming {
    /// Listen on a URI such as `tcp:0.0.0.0:PORT`.
    pub fn from_uri(uri: impl Into<String>) -> Self {
        Self {
            uri: Some(uri.into()),
            ..Self::default()
        }
    }

    /// Listen on one main channel at `addr`.
    pub fn from_address(addr: MigrationAddress) -> Self {
        Self {
            channels: Some(vec![MigrationChannel::main(addr)]),
            ..Self::default()
        }
    }
}

impl Command for MigrateIncoming {
    const NAME: &'static str = "migrate-incoming";
    type Response = Empty;
}

/// One migration channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationChannel {
    /// What the channel carries.
    pub channel_type: MigrationChannelType,
    /// Where it goes.
    pub addr: MigrationAddress,
}

impl MigrationChannel {
    /// The main channel to `addr`.
    pub fn main(addr: MigrationAddress) -> Self {
        Self {
            channel_type: MigrationChannelType::Main,
            addr,
        }
    }
}

qapi_enum! {
    /// What a migration channel carries (`MigrationChannelType`).
    MigrationChannelType {
        /// The migration stream.
        Main = "main",
        /// CPR state, for `cpr-transfer` mode.
        Cpr = "cpr",
    }
}

/// Where a migration channel goes (`MigrationAddress`, tagged by `transport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum MigrationAddress {
    /// A socket.
    Socket(SocketAddress),
    /// A command's stdin/stdout.
    Exec {
        /// The command and its arguments.
        args: Vec<String>,
    },
    /// RDMA to an address.
    Rdma(InetSocketAddress),
    /// A file.
    File {
        /// The file's path.
        filename: PathBuf,
        /// Where in the file the stream starts.
        offset: u64,
    },
}

/// A socket address (`SocketAddress`, tagged by `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SocketAddress {
    /// TCP.
    Inet(InetSocketAddress),
    /// A Unix socket.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
    /// A vsock port.
    Vsock {
        /// The context id.
        cid: String,
        /// The port.
        port: String,
    },
    /// A file descriptor passed earlier with `getfd`, by name or number.
    Fd {
        /// The descriptor's name or number.
        #[serde(rename = "str")]
        name: String,
    },
}

/// A host and port (`InetSocketAddress`; the optional members are not modelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InetSocketAddress {
    /// Host name or address.
    pub host: String,
    /// Port number or service name.
    pub port: String,
}

/// `migrate-set-capabilities`: turn migration capabilities on or off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrateSetCapabilities {
    /// The capabilities to change.
    pub capabilities: Vec<MigrationCapabilityStatus>,
}

impl MigrateSetCapabilities {
    /// Sets each `(capability, enabled)` pair.
    pub fn new(pairs: impl IntoIterator<Item = (MigrationCapability, bool)>) -> Self {
        let capabilities = pairs
            .into_iter()
            .map(|(capability, state)| MigrationCapabilityStatus { capability, state })
            .collect();
        Self { capabilities }
    }
}

impl Command for MigrateSetCapabilities {
    const NAME: &'static str = "migrate-set-capabilities";
    type Response = Empty;
}

/// One capability and whether it is enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCapabilityStatus {
    /// The capability.
    pub capability: MigrationCapability,
    /// Whether it is on.
    pub state: bool,
}

qapi_enum! {
    /// A migration capability (`MigrationCapability`, QEMU 10).
    MigrationCapability {
        /// XBZRLE page compression.
        Xbzrle = "xbzrle",
        /// Pin all guest memory for RDMA.
        RdmaPinAll = "rdma-pin-all",
        /// Throttle the guest when migration does not converge.
        AutoConverge = "auto-converge",
        /// Deprecated; ignored.
        ZeroBlocks = "zero-blocks",
        /// Emit `MIGRATION` and `MIGRATION_PASS` events.
        Events = "events",
        /// Allow switching to postcopy.
        PostcopyRam = "postcopy-ram",
        /// COLO fault tolerance (unstable).
        XColo = "x-colo",
        /// Free source memory as pages are sent during postcopy.
        ReleaseRam = "release-ram",
        /// A return path from destination to source.
        ReturnPath = "return-path",
        /// Pause before the final switchover (`pre-switchover` state).
        PauseBeforeSwitchover = "pause-before-switchover",
        /// Several parallel channels.
        Multifd = "multifd",
        /// Migrate dirty bitmaps.
        DirtyBitmaps = "dirty-bitmaps",
        /// Measure postcopy blocking time.
        PostcopyBlocktime = "postcopy-blocktime",
        /// Delay block activation on the destination.
        LateBlockActivate = "late-block-activate",
        /// Skip shared memory (unstable).
        XIgnoreShared = "x-ignore-shared",
        /// Check that source and destination have the same UUID.
        ValidateUuid = "validate-uuid",
        /// Background snapshot.
        BackgroundSnapshot = "background-snapshot",
        /// Zero-copy sends for multifd.
        ZeroCopySend = "zero-copy-send",
        /// Preempt channel for postcopy.
        PostcopyPreempt = "postcopy-preempt",
        /// Wait for the destination's acknowledgement before switching over.
        SwitchoverAck = "switchover-ack",
        /// Dirty-limit throttling.
        DirtyLimit = "dirty-limit",
        /// Fixed RAM offsets in a file migration.
        MappedRam = "mapped-ram",
    }
}

/// `migrate-set-parameters`: tune migration; `None` members are left as they are.
// Limitation: only the parameters live migration is expected to need are modelled (no TLS,
// compression levels or block bitmap mapping); others need a new field here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateSetParameters {
    /// Bandwidth cap in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Bandwidth to assume for the switchover estimate, bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avail_switchover_bandwidth: Option<u64>,
    /// Longest acceptable pause at switchover, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    /// Number of multifd channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u32>,
    /// Initial auto-converge throttle, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_initial: Option<u8>,
    /// Auto-converge throttle step, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_increment: Option<u8>,
    /// Highest auto-converge throttle, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu_throttle: Option<u8>,
    /// XBZRLE cache size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xbzrle_cache_size: Option<u64>,
    /// Postcopy bandwidth cap in bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_postcopy_bandwidth: Option<u64>,
}

impl Command for MigrateSetParameters {
    const NAME: &'static str = "migrate-set-parameters";
    type Response = Empty;
}

qapi_enum! {
    /// The state of a migration (`MigrationStatus`).
    MigrationStatus {
        /// No migration has started.
        None = "none",
        /// Setting up.
        Setup = "setup",
        /// Being cancelled.
        Cancelling = "cancelling",
        /// Cancelled.
        Cancelled = "cancelled",
        /// Copying memory while the guest runs.
        Active = "active",
        /// In postcopy.
        PostcopyActive = "postcopy-active",
        /// Postcopy paused by a network failure.
        PostcopyPaused = "postcopy-paused",
        /// Setting up postcopy recovery.
        PostcopyRecoverSetup = "postcopy-recover-setup",
        /// Recovering postcopy.
        PostcopyRecover = "postcopy-recover",
        /// Finished successfully.
        Completed = "completed",
        /// Failed; see `error-desc`.
        Failed = "failed",
        /// In COLO mode.
        Colo = "colo",
        /// Paused before switchover (`pause-before-switchover`).
        PreSwitchover = "pre-switchover",
        /// Migrating device state after the guest paused.
        Device = "device",
        /// Waiting for a device unplug.
        WaitUnplug = "wait-unplug",
    }
}

/// The answer to `query-migrate`; most members appear only in some states.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    /// The migration's state; absent before any migration.
    pub status: Option<MigrationStatus>,
    /// Memory transfer statistics.
    pub ram: Option<MigrationRamStats>,
    /// Milliseconds since the migration started.
    pub total_time: Option<u64>,
    /// Expected downtime in milliseconds, while active.
    pub expected_downtime: Option<u64>,
    /// Actual downtime in milliseconds, once completed.
    pub downtime: Option<u64>,
    /// Setup time in milliseconds.
    pub setup_time: Option<u64>,
    /// Current auto-converge throttle, percent.
    pub cpu_throttle_percentage: Option<u64>,
    /// Why the migration failed.
    pub error_desc: Option<String>,
    /// Why migration is currently blocked.
    pub blocked_reasons: Option<Vec<String>>,
    /// Where an incoming migration listens.
    pub socket_address: Option<Vec<SocketAddress>>,
}

/// Memory transfer statistics (`MigrationStats`); missing members read as zero.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct MigrationRamStats {
    /// Bytes transferred.
    pub transferred: u64,
    /// Bytes remaining.
    pub remaining: u64,
    /// Total guest memory in bytes.
    pub total: u64,
    /// Zero pages found.
    pub duplicate: u64,
    /// Pages sent in full.
    pub normal: u64,
    /// Bytes sent as full pages.
    pub normal_bytes: u64,
    /// Pages dirtied per second.
    pub dirty_pages_rate: u64,
    /// Throughput in megabits per second.
    pub mbps: f64,
    /// Dirty bitmap syncs so far (the pass number).
    pub dirty_sync_count: u64,
    /// Page requests from the destination during postcopy.
    pub postcopy_requests: u64,
    /// Target page size in bytes.
    pub page_size: u64,
    /// Bytes sent over multifd channels.
    pub multifd_bytes: u64,
    /// Pages sent per second.
    pub pages_per_second: u64,
    /// Bytes sent while the guest ran.
    pub precopy_bytes: u64,
    /// Bytes sent while the guest was paused.
    pub downtime_bytes: u64,
    /// Bytes sent during postcopy.
    pub postcopy_bytes: u64,
}
