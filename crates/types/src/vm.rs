//! VM specs, records and states as the node agent's API carries them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::guest::VmType;
use crate::{ByteSize, VmName};

/// How much of the network a guest may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Internet (NAT), DNS and the metadata service.
    #[default]
    Normal,
    /// Only the metadata service and the egress proxy.
    Paranoid,
}

impl NetMode {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Normal => "normal",
            NetMode::Paranoid => "paranoid",
        }
    }
}

/// A VM's link: a /30 whose first host is the node-side gateway and second the guest.
/// The orchestrator allocates these cluster-wide; a VM keeps its subnet for its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Ipv4Addr", into = "Ipv4Addr")]
pub struct GuestSubnet(Ipv4Addr);

/// An address that does not start a /30.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} does not start a /30 block")]
pub struct SubnetError(pub Ipv4Addr);

impl GuestSubnet {
    /// Validates that `base` is /30-aligned.
    pub fn new(base: Ipv4Addr) -> Result<Self, SubnetError> {
        if u32::from(base) % 4 == 0 {
            Ok(Self(base))
        } else {
            Err(SubnetError(base))
        }
    }

    /// The block's first address.
    pub fn base(self) -> Ipv4Addr {
        self.0
    }

    /// The node side of the link (`.1`).
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0) + 1)
    }

    /// The guest's address (`.2`).
    pub fn guest(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0) + 2)
    }
}

impl TryFrom<Ipv4Addr> for GuestSubnet {
    type Error = SubnetError;
    fn try_from(base: Ipv4Addr) -> Result<Self, Self::Error> {
        Self::new(base)
    }
}

impl From<GuestSubnet> for Ipv4Addr {
    fn from(s: GuestSubnet) -> Ipv4Addr {
        s.0
    }
}

/// What a VM is: everything needed to create it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Unique name, also the hostname.
    pub name: VmName,
    /// Hypervisor.
    #[serde(rename = "type")]
    pub vm_type: VmType,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub ram_mib: u32,
    /// Root disk size.
    pub disk: ByteSize,
    /// Network mode.
    #[serde(default)]
    pub mode: NetMode,
    /// The VM's /30, allocated by the caller.
    pub subnet: GuestSubnet,
    /// Public keys that may log in as `dev`.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Where a VM is in its life.
///
/// ```text
/// creating ──► running ◄──► stopped ──► destroying
///     │           │            ▲
///     ▼           ▼            │
///   failed ◄──────┴────────────┘ (start fails)   failed ──► destroying
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Disk, network and VMM are being set up.
    Creating,
    /// The guest runs.
    Running,
    /// The guest is powered off; its disk remains.
    Stopped,
    /// Being torn down.
    Destroying,
    /// Something went wrong; the record says what. Only destroy (or start) helps.
    Failed,
}

impl VmState {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Destroying => "destroying",
            VmState::Failed => "failed",
        }
    }
}

/// A VM as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Its spec.
    pub spec: VmSpec,
    /// Its state.
    pub state: VmState,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The VMM's process id while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The guest's SSH host public key.
    #[serde(default)]
    pub host_key: String,
    /// Unix seconds of creation.
    pub created_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_aligned_thirty_twos() {
        let s = GuestSubnet::new("10.10.0.4".parse().unwrap()).unwrap();
        assert_eq!(s.gateway(), "10.10.0.5".parse::<Ipv4Addr>().unwrap());
        assert_eq!(s.guest(), "10.10.0.6".parse::<Ipv4Addr>().unwrap());
        assert!(GuestSubnet::new("10.10.0.6".parse().unwrap()).is_err());
        assert!(serde_json::from_str::<GuestSubnet>("\"10.10.0.5\"").is_err());
    }

    #[test]
    fn specs_reject_unknown_fields() {
        let json = r#"{"name":"a","type":"qemu","vcpus":1,"ram_mib":512,"disk":"10G",
            "subnet":"10.0.0.0","bogus":1}"#;
        let err = serde_json::from_str::<VmSpec>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn specs_default_mode_and_keys() {
        let json = r#"{"name":"a","type":"qemu","vcpus":1,"ram_mib":512,"disk":"10G",
            "subnet":"10.0.0.0"}"#;
        let spec: VmSpec = serde_json::from_str(json).unwrap();
        assert_eq!(
            (spec.mode, spec.authorized_keys.len()),
            (NetMode::Normal, 0)
        );
        assert_eq!(spec.disk, ByteSize(10 << 30));
    }
}
