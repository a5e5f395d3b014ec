//! `PUT /balloon`: the virtio-balloon device, to take memory back from an idle guest.

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Request;

/// `Balloon` (creating it is pre-boot only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    /// Target balloon size in MiB: memory taken from the guest.
    pub amount_mib: u32,
    /// Let the guest shrink the balloon when it runs out of memory.
    pub deflate_on_oom: bool,
    /// Seconds between statistics updates; 0 or absent disables statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_polling_interval_s: Option<u32>,
}

impl Request for Balloon {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/balloon".into()
    }
}

/// The balloon as Firecracker reports it in `GET /vm/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonInfo {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    /// Whether the guest may deflate it under memory pressure.
    pub deflate_on_oom: bool,
}
