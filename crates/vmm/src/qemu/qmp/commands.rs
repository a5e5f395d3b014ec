//! The [`Command`] trait and the commands that take no arguments (status, pause, resume,
//! power button, quit, querying or cancelling a migration), with what they return. The
//! migration commands that take arguments are in `migration`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::MigrationInfo;

/// A QMP command: its wire name, its arguments (the type's serde form, an object or a unit
/// struct for none) and the type of its successful return value.
pub trait Command: Serialize {
    /// The command's name on the wire, e.g. `query-status`.
    const NAME: &'static str;
    /// What the command returns on success.
    type Response: DeserializeOwned;
}

/// The return value of commands that return nothing (`{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Empty {}

/// Declares a command that takes no arguments.
macro_rules! no_argument_command {
    ($(#[$meta:meta])* $name:ident = $wire:literal -> $response:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct $name;

        impl Command for $name {
            const NAME: &'static str = $wire;
            type Response = $response;
        }
    };
}

/// `qmp_capabilities` with no capability enabled; the client sends it on connect.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct QmpCapabilities;

impl Command for QmpCapabilities {
    const NAME: &'static str = "qmp_capabilities";
    type Response = Empty;
}

no_argument_command! {
    /// `query-status`: the guest's run state.
    QueryStatus = "query-status" -> StatusInfo
}
no_argument_command! {
    /// `stop`: pause the guest's vCPUs.
    Stop = "stop" -> Empty
}
no_argument_command! {
    /// `cont`: start or resume the guest's vCPUs.
    Cont = "cont" -> Empty
}
no_argument_command! {
    /// `system_powerdown`: press the virtual power button.
    SystemPowerdown = "system_powerdown" -> Empty
}
no_argument_command! {
    /// `quit`: make QEMU exit; prefer [`QmpClient::quit`](super::QmpClient::quit), which
    /// tolerates the socket closing first.
    Quit = "quit" -> Empty
}
no_argument_command! {
    /// `query-migrate`: the state of the current or last migration.
    QueryMigrate = "query-migrate" -> MigrationInfo
}
no_argument_command! {
    /// `migrate_cancel`: abort the outgoing migration.
    MigrateCancel = "migrate_cancel" -> Empty
}

/// The answer to `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// Whether the vCPUs are running.
    pub running: bool,
    /// QEMU's run state.
    pub status: RunState,
}

qapi_enum! {
    /// QEMU's run state (`RunState` in `qapi/run-state.json`).
    RunState {
        /// QEMU is stopped by a debugger.
        Debug = "debug",
        /// Waiting for an incoming migration.
        InMigrate = "inmigrate",
        /// An internal error stopped the guest.
        InternalError = "internal-error",
        /// An I/O error stopped the guest.
        IoError = "io-error",
        /// Paused by `stop`.
        Paused = "paused",
        /// Paused after migrating out.
        PostMigrate = "postmigrate",
        /// Started with `-S` and not yet run.
        Prelaunch = "prelaunch",
        /// Paused for the final stage of an outgoing migration.
        FinishMigrate = "finish-migrate",
        /// Paused while loading a snapshot.
        RestoreVm = "restore-vm",
        /// Running.
        Running = "running",
        /// Paused while saving a snapshot.
        SaveVm = "save-vm",
        /// Shut down (with `-no-shutdown`).
        Shutdown = "shutdown",
        /// Suspended by the guest (ACPI S3).
        Suspended = "suspended",
        /// Paused by a watchdog.
        Watchdog = "watchdog",
        /// The guest panicked.
        GuestPanicked = "guest-panicked",
        /// In COLO fault-tolerance mode.
        Colo = "colo",
    }
}
