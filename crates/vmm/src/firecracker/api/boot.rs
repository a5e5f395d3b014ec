//! `PUT /boot-source`: the kernel, its command line and the initramfs.

use std::path::PathBuf;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Request;

/// `BootSource` (pre-boot only). Firecracker opens both files when it receives the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// The uncompressed kernel (`vmlinux`, ELF on x86_64).
    pub kernel_image_path: PathBuf,
    /// The kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// The initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

impl Request for BootSource {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/boot-source".into()
    }
}

/// The boot source as Firecracker reports it in `GET /vm/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSourceInfo {
    /// The kernel.
    pub kernel_image_path: PathBuf,
    /// The kernel command line.
    #[serde(default)]
    pub boot_args: Option<String>,
    /// The initramfs.
    #[serde(default)]
    pub initrd_path: Option<PathBuf>,
}
