//! `PUT /machine-config` and `GET /machine-config`: vCPUs, memory and dirty page tracking.

use serde::{Deserialize, Serialize};

use super::Request;
use hyper::Method;

/// `MachineConfiguration`, as sent with `PUT /machine-config` (pre-boot only). Fields left
/// out take Firecracker's defaults: no SMT, no dirty page tracking, no huge pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1 to 32 (1 or even with SMT).
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u32,
    /// Simultaneous multithreading (x86 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Track dirty pages, which diff snapshots need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// What backs guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfig {
    /// `vcpu_count` vCPUs and `mem_size_mib` MiB, everything else at Firecracker's default.
    pub fn new(vcpu_count: u8, mem_size_mib: u32) -> Self {
        Self {
            vcpu_count,
            mem_size_mib,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
        }
    }

    /// The same, with dirty page tracking on, so diff snapshots can be taken.
    pub fn tracking_dirty_pages(mut self) -> Self {
        self.track_dirty_pages = Some(true);
        self
    }
}

impl Request for MachineConfig {
    const METHOD: Method = Method::PUT;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/machine-config".into()
    }
}

/// What backs guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    None,
    /// Transparent huge pages (`madvise(MADV_HUGEPAGE)`).
    Transparent,
    /// Explicit 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// `GET /machine-config`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMachineConfig;

impl Request for GetMachineConfig {
    const METHOD: Method = Method::GET;
    type Response = MachineConfigInfo;
    fn path(&self) -> String {
        "/machine-config".into()
    }
}

/// The machine configuration as Firecracker reports it; fields it adds are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfigInfo {
    /// Number of vCPUs.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u32,
    /// Simultaneous multithreading.
    #[serde(default)]
    pub smt: Option<bool>,
    /// Whether dirty pages are tracked.
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
}
