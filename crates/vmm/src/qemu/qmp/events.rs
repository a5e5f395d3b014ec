//! QMP events: [`QmpEvent`] as it arrives, whatever its name, and the [`Event`] types the
//! client can decode it into.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{MigrationStatus, QmpError};

/// A QMP event type: its wire name and the shape of its `data` member.
pub trait Event: DeserializeOwned {
    /// The event's name on the wire, e.g. `SHUTDOWN`.
    const NAME: &'static str;
}

/// An asynchronous event, whatever its name; unknown names are kept, not rejected.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QmpEvent {
    /// The event's name, e.g. `SHUTDOWN`.
    #[serde(rename = "event")]
    pub name: String,
    /// Event-specific data; `Null` when the event has none.
    #[serde(default)]
    pub data: Value,
    /// When QEMU emitted the event.
    pub timestamp: Timestamp,
}

impl QmpEvent {
    /// The event's data as `E` when this is an `E` event, `None` for any other event.
    pub fn decode<E: Event>(&self) -> Result<Option<E>, QmpError> {
        if self.name == E::NAME {
            decode_event_data(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

pub(super) fn decode_event_data<E: Event>(event: &QmpEvent) -> Result<E, QmpError> {
    let data = match &event.data {
        Value::Null => Value::Object(serde_json::Map::new()),
        data => data.clone(),
    };
    serde_json::from_value(data).map_err(|source| QmpError::EventData {
        event: event.name.clone(),
        source,
    })
}

/// When an event happened, relative to the Unix epoch; both are -1 if QEMU had no clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Timestamp {
    /// Whole seconds.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

qapi_enum! {
    /// Why QEMU shut down (`ShutdownCause`).
    ShutdownCause {
        /// No shutdown pending.
        None = "none",
        /// An error prevents further use of the guest.
        HostError = "host-error",
        /// The QMP `quit` command.
        HostQmpQuit = "host-qmp-quit",
        /// The QMP `system_reset` command.
        HostQmpSystemReset = "host-qmp-system-reset",
        /// A signal such as SIGTERM.
        HostSignal = "host-signal",
        /// A user interface action.
        HostUi = "host-ui",
        /// The guest shut itself down.
        GuestShutdown = "guest-shutdown",
        /// The guest reset, turned into a shutdown by `-no-reboot`.
        GuestReset = "guest-reset",
        /// The guest panicked, turned into a shutdown.
        GuestPanic = "guest-panic",
        /// A partial guest reset.
        SubsystemReset = "subsystem-reset",
        /// Loading a snapshot.
        SnapshotLoad = "snapshot-load",
    }
}

/// `SHUTDOWN`: QEMU is shutting down (or, with `-no-shutdown`, stopped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShutdownEvent {
    /// Whether the guest asked for it.
    pub guest: bool,
    /// Why.
    pub reason: ShutdownCause,
}

impl Event for ShutdownEvent {
    const NAME: &'static str = "SHUTDOWN";
}

/// `STOP`: the vCPUs stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct StopEvent {}

impl Event for StopEvent {
    const NAME: &'static str = "STOP";
}

/// `RESUME`: the vCPUs resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ResumeEvent {}

impl Event for ResumeEvent {
    const NAME: &'static str = "RESUME";
}

/// `POWERDOWN`: the virtual power button was pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PowerdownEvent {}

impl Event for PowerdownEvent {
    const NAME: &'static str = "POWERDOWN";
}

/// `MIGRATION`: the migration state changed (needs the `events` capability).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MigrationEvent {
    /// The new state.
    pub status: MigrationStatus,
}

impl Event for MigrationEvent {
    const NAME: &'static str = "MIGRATION";
}

/// `MIGRATION_PASS`: a new pass over dirty memory started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct MigrationPassEvent {
    /// The pass number, from 1.
    pub pass: u64,
}

impl Event for MigrationPassEvent {
    const NAME: &'static str = "MIGRATION_PASS";
}
