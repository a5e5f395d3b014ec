//! `PUT /vsock`: the virtio-vsock device, proxied to Unix sockets on the host.

use std::path::PathBuf;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Request;

/// `Vsock` (pre-boot only). Firecracker binds and listens on `uds_path` for host-initiated
/// connections (`CONNECT <port>\n`); a guest connecting to port P reaches a listener the
/// host keeps at `<uds_path>_P`. Binding fails if `uds_path` exists, also on snapshot load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// The guest's context id, 3 or more.
    pub guest_cid: u32,
    /// The host-side Unix socket.
    pub uds_path: PathBuf,
}

impl Request for Vsock {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/vsock".into()
    }
}

/// The vsock device as Firecracker reports it in `GET /vm/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockInfo {
    /// The guest's context id.
    pub guest_cid: u32,
    /// The host-side Unix socket.
    pub uds_path: PathBuf,
}
