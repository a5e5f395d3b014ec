//! `PUT /drives/{drive_id}` and `PATCH /drives/{drive_id}`: virtio-block devices backed by
//! host files.

use std::path::PathBuf;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::{RateLimiter, Request};

/// `Drive` for a virtio-block device (pre-boot only). The path segment is `drive_id`;
/// Firecracker refuses a body whose id differs from the path's and opens `path_on_host`
/// when it receives the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// The drive's id: letters, digits and `_`.
    pub drive_id: String,
    /// The backing file or block device.
    pub path_on_host: PathBuf,
    /// Whether the guest boots from this drive (at most one).
    pub is_root_device: bool,
    /// Whether the guest may only read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// The partition the kernel mounts as root, for a root device with a partition table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Whether guest flushes reach the backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// How Firecracker does the I/O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// I/O limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl Drive {
    /// A drive backed by `path`, writable unless `read_only`, not the root device.
    pub fn new(drive_id: impl Into<String>, path: impl Into<PathBuf>, read_only: bool) -> Self {
        Self {
            drive_id: drive_id.into(),
            path_on_host: path.into(),
            is_root_device: false,
            is_read_only: Some(read_only),
            partuuid: None,
            cache_type: None,
            io_engine: None,
            rate_limiter: None,
        }
    }

    /// The same drive, as the one the guest boots from.
    pub fn as_root(mut self) -> Self {
        self.is_root_device = true;
        self
    }
}

impl Request for Drive {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        format!("/drives/{}", self.drive_id)
    }
}

/// `PartialDrive` (post-boot only, also on a guest loaded from a snapshot): a new backing
/// file for an existing drive. Firecracker opens the new file and tells the guest the
/// device's size may have changed; the guest keeps its block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    /// The drive's id, as configured before boot.
    pub drive_id: String,
    /// The new backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    /// New I/O limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl DriveUpdate {
    /// Points drive `drive_id` at `path`.
    pub fn backing_file(drive_id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            drive_id: drive_id.into(),
            path_on_host: Some(path.into()),
            rate_limiter: None,
        }
    }
}

impl Request for DriveUpdate {
    const METHOD: Method = Method::PATCH;
    type Response = super::NoContent;
    fn path(&self) -> String {
        format!("/drives/{}", self.drive_id)
    }
}

/// Whether guest flushes reach the backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are ignored (Firecracker's default).
    Unsafe,
    /// Flushes are passed on with `fsync`.
    Writeback,
}

/// How Firecracker performs block I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking I/O on the device thread (the default).
    Sync,
    /// `io_uring` (host kernel 5.10.51 or newer).
    Async,
}

/// A drive as Firecracker reports it in `GET /vm/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveInfo {
    /// The drive's id.
    pub drive_id: String,
    /// The backing file.
    #[serde(default)]
    pub path_on_host: Option<PathBuf>,
    /// Whether the guest boots from it.
    pub is_root_device: bool,
    /// Whether it is read-only.
    #[serde(default)]
    pub is_read_only: Option<bool>,
}
