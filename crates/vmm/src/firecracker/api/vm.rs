//! The microVM as a whole: `PATCH /vm` (pause, resume), `GET /` (instance information),
//! `GET /vm/config` (everything configured) and `GET /version`.

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::{
    BalloonInfo, BootSourceInfo, DriveInfo, MachineConfigInfo, NetworkInterfaceInfo, Request,
    VsockInfo,
};

/// `Vm`: the requested run state, sent with `PATCH /vm`. After boot (or load) only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateUpdate {
    /// Paused or resumed.
    pub state: VmState,
}

impl Request for VmStateUpdate {
    const METHOD: Method = Method::PATCH;
    type Response = super::NoContent;
    fn path(&self) -> String {
        "/vm".into()
    }
}

/// The states `PATCH /vm` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Stop the vCPUs; snapshots need this.
    Paused,
    /// Run the vCPUs again.
    Resumed,
}

/// `GET /`: what the instance is and whether it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeInstance;

impl Request for DescribeInstance {
    const METHOD: Method = Method::GET;
    type Response = InstanceInfo;
    fn path(&self) -> String {
        "/".into()
    }
}

/// `InstanceInfo`; fields Firecracker adds later are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance id (`--id`, `anonymous-instance` by default).
    pub id: String,
    /// Whether the guest has started, runs or is paused.
    pub state: InstanceState,
    /// Firecracker's version, e.g. `1.10.1`.
    pub vmm_version: String,
    /// `Firecracker`.
    pub app_name: String,
}

/// The instance states of `InstanceInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Not booted yet, and no snapshot loaded.
    #[serde(rename = "Not started")]
    NotStarted,
    /// The vCPUs run.
    Running,
    /// The vCPUs are paused.
    Paused,
    /// A state this client does not know (a newer Firecracker).
    #[serde(untagged)]
    Other(String),
}

/// `GET /vm/config`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetVmConfig;

impl Request for GetVmConfig {
    const METHOD: Method = Method::GET;
    type Response = FullVmConfig;
    fn path(&self) -> String {
        "/vm/config".into()
    }
}

/// `FullVmConfiguration`, the resources this client configures; the rest is ignored.
/// After a snapshot load Firecracker reports no boot source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullVmConfig {
    /// `machine-config`.
    #[serde(default, rename = "machine-config")]
    pub machine_config: Option<MachineConfigInfo>,
    /// `boot-source`.
    #[serde(default, rename = "boot-source")]
    pub boot_source: Option<BootSourceInfo>,
    /// `drives`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub drives: Vec<DriveInfo>,
    /// `network-interfaces`.
    #[serde(
        default,
        rename = "network-interfaces",
        deserialize_with = "null_as_empty"
    )]
    pub network_interfaces: Vec<NetworkInterfaceInfo>,
    /// `vsock`.
    #[serde(default)]
    pub vsock: Option<VsockInfo>,
    /// `balloon`.
    #[serde(default)]
    pub balloon: Option<BalloonInfo>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// `GET /version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetVersion;

impl Request for GetVersion {
    const METHOD: Method = Method::GET;
    type Response = VersionInfo;
    fn path(&self) -> String {
        "/version".into()
    }
}

/// `FirecrackerVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version, e.g. `1.10.1`.
    pub firecracker_version: String,
}
