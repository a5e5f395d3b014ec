//! `PUT /actions`: starting the guest, pressing Ctrl-Alt-Del, flushing metrics.

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Request;

/// `InstanceActionInfo`: one synchronous action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceAction {
    /// What to do.
    pub action_type: ActionType,
}

impl InstanceAction {
    /// Boots the configured guest; needs a boot source. Pre-boot only.
    pub const START: Self = Self::new(ActionType::InstanceStart);
    /// Presses Ctrl-Alt-Del on the guest's i8042 keyboard; a Linux guest reboots, which
    /// makes Firecracker exit. After boot only (x86_64).
    pub const CTRL_ALT_DEL: Self = Self::new(ActionType::SendCtrlAltDel);
    /// Writes the metrics now. After boot only.
    pub const FLUSH_METRICS: Self = Self::new(ActionType::FlushMetrics);

    const fn new(action_type: ActionType) -> Self {
        Self { action_type }
    }
}

impl Request for InstanceAction {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/actions".into()
    }
}

/// The actions of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Write the metrics now.
    FlushMetrics,
    /// Boot the guest.
    InstanceStart,
    /// Press Ctrl-Alt-Del.
    SendCtrlAltDel,
}
