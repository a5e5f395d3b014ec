//! The boot protocol between a node and the guest agent inside each VM.
//!
//! Three channels, each documented in `docs/guest-protocol.md`:
//! - **Kernel command line** (`boxcutter.*` parameters, small values): the VM's name, its
//!   type and its network. [`BootParams`] writes and parses them.
//! - **Config drive** (a small raw block device, the VM's second disk): values too large or
//!   too secret for the command line, such as SSH keys. [`GuestConfig`] encodes it.
//! - **Agent channel** (virtio-serial port [`AGENT_PORT_NAME`] for QEMU, vsock for
//!   Firecracker): one JSON object per line; the guest sends [`AgentEvent`]s.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::VmName;

/// Name of the virtio-serial port the guest agent reports on.
pub const AGENT_PORT_NAME: &str = "org.boxcutter.agent";

/// First line of a config drive; anything else on the device is rejected.
pub const CONFIG_MAGIC: &[u8] = b"BOXCUTTER-CONFIG v1\n";

/// Config drives are padded to a whole number of these, so they are valid block devices.
pub const CONFIG_BLOCK: usize = 4096;

/// Which hypervisor runs a VM; the guest writes it to `/etc/boxcutter/vm-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmType {
    /// A Firecracker microVM.
    Firecracker,
    /// A QEMU VM.
    Qemu,
}

impl VmType {
    /// The lowercase name used on the wire, on command lines and in `vm-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmType::Firecracker => "firecracker",
            VmType::Qemu => "qemu",
        }
    }
}

impl fmt::Display for VmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmType {
    type Err = BootParamsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "firecracker" => Ok(VmType::Firecracker),
            "qemu" => Ok(VmType::Qemu),
            other => Err(BootParamsError::Invalid {
                key: "type",
                value: other.to_string(),
            }),
        }
    }
}

/// Errors reading the guest's boot parameters or config drive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootParamsError {
    /// A required `boxcutter.*` parameter is absent.
    #[error("kernel command line lacks boxcutter.{0}")]
    Missing(&'static str),
    /// A parameter is present but unparsable.
    #[error("bad boxcutter.{key} value {value:?}")]
    Invalid {
        /// The parameter, without the `boxcutter.` prefix.
        key: &'static str,
        /// What was found.
        value: String,
    },
    /// The config drive does not start with [`CONFIG_MAGIC`].
    #[error("config drive has no boxcutter header")]
    NoConfigHeader,
    /// The config drive's JSON does not parse.
    #[error("config drive is not valid: {0}")]
    BadConfig(String),
}

/// The guest's IPv4 set-up: its address, the gateway (the node side of its link) and DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNet {
    /// The guest's own address.
    pub address: Ipv4Addr,
    /// Prefix length of the guest's link.
    pub prefix_len: u8,
    /// The default gateway.
    pub gateway: Ipv4Addr,
    /// DNS resolvers, in order.
    pub dns: Vec<Ipv4Addr>,
}

/// The `boxcutter.*` kernel command line parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// The VM's name, which becomes its hostname.
    pub name: VmName,
    /// The hypervisor that runs it.
    pub vm_type: VmType,
    /// Static network configuration; `None` leaves the network down.
    pub net: Option<GuestNet>,
    /// CPUs the guest keeps online, when it booted with more (`boxcutter.vcpus`).
    pub vcpus: Option<u32>,
}

impl BootParams {
    /// Renders the parameters as kernel command line words.
    ///
    /// `boxcutter.net` is `ADDR/PREFIX,GATEWAY[,DNS...]`.
    pub fn to_cmdline(&self) -> String {
        let mut words = vec![
            format!("boxcutter.name={}", self.name),
            format!("boxcutter.type={}", self.vm_type),
        ];
        if let Some(net) = &self.net {
            let mut value = format!("{}/{},{}", net.address, net.prefix_len, net.gateway);
            for dns in &net.dns {
                value.push_str(&format!(",{dns}"));
            }
            words.push(format!("boxcutter.net={value}"));
        }
        if let Some(vcpus) = self.vcpus {
            words.push(format!("boxcutter.vcpus={vcpus}"));
        }
        words.join(" ")
    }

    /// Parses a whole kernel command line, ignoring words that are not `boxcutter.*`.
    pub fn parse(cmdline: &str) -> Result<Self, BootParamsError> {
        let (mut name, mut vm_type, mut net, mut vcpus) = (None, None, None, None);
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word
                .strip_prefix("boxcutter.")
                .and_then(|w| w.split_once('='))
            else {
                continue;
            };
            match key {
                "name" => name = Some(parse_name(value)?),
                "type" => vm_type = Some(value.parse()?),
                "net" => net = Some(parse_net(value)?),
                "vcpus" => {
                    let bad = || BootParamsError::Invalid {
                        key: "vcpus",
                        value: value.into(),
                    };
                    vcpus = Some(value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?);
                }
                _ => {}
            }
        }
        Ok(BootParams {
            name: name.ok_or(BootParamsError::Missing("name"))?,
            vm_type: vm_type.ok_or(BootParamsError::Missing("type"))?,
            net,
            vcpus,
        })
    }
}

fn parse_name(value: &str) -> Result<VmName, BootParamsError> {
    VmName::new(value).map_err(|_| BootParamsError::Invalid {
        key: "name",
        value: value.into(),
    })
}

fn parse_net(value: &str) -> Result<GuestNet, BootParamsError> {
    let bad = || BootParamsError::Invalid {
        key: "net",
        value: value.to_string(),
    };
    let mut parts = value.split(',');
    let (addr, prefix) = parts
        .next()
        .and_then(|p| p.split_once('/'))
        .ok_or_else(bad)?;
    let gateway = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let dns = parts
        .map(|d| d.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let prefix_len: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix_len > 32 {
        return Err(bad());
    }
    Ok(GuestNet {
        address: addr.parse().map_err(|_| bad())?,
        prefix_len,
        gateway,
        dns,
    })
}

/// What the config drive carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// OpenSSH public key lines installed for the `dev` user.
    pub authorized_keys: Vec<String>,
    /// The guest's SSH host key (OpenSSH ed25519 private key). The node generates it, so
    /// it knows the guest's host key before the guest boots and nobody trusts on first use.
    pub ssh_host_key: String,
}

impl GuestConfig {
    /// Encodes the config as a drive image: header, JSON, NUL padding to whole blocks.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = CONFIG_MAGIC.to_vec();
        // Serialising plain strings cannot fail.
        bytes.extend(serde_json::to_vec(self).unwrap_or_default());
        let padded = bytes.len().div_ceil(CONFIG_BLOCK) * CONFIG_BLOCK;
        bytes.resize(padded, 0);
        bytes
    }

    /// Decodes a drive image written by [`GuestConfig::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, BootParamsError> {
        let body = bytes
            .strip_prefix(CONFIG_MAGIC)
            .ok_or(BootParamsError::NoConfigHeader)?;
        let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
        serde_json::from_slice(&body[..end]).map_err(|e| BootParamsError::BadConfig(e.to_string()))
    }
}

/// Guest → host messages on the agent channel, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The guest is set up and sshd accepts connections.
    Ready {
        /// Guest uptime when it became ready, in milliseconds.
        uptime_ms: u64,
    },
    /// A set-up step failed; the guest stays up so its console can be read.
    Failed {
        /// The step that failed.
        step: String,
        /// Why, with its cause chain.
        error: String,
    },
    /// The guest is shutting down (power button, Ctrl-Alt-Del or a signal).
    ShuttingDown,
    /// A [`HostCommand::Refresh`] was carried out: the guest is now the VM it names.
    Refreshed {
        /// Guest uptime when the refresh finished, in milliseconds.
        uptime_ms: u64,
    },
}

/// The vsock CID of the host, as every guest sees it.
pub const HOST_CID: u32 = 2;

/// The vsock port on the host where a Firecracker guest's agent sends its
/// [`AgentEvent`]s. Firecracker turns the guest's connection into a connection to the Unix
/// socket `<vsock uds_path>_1024` on the host, which the node listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The vsock port the guest agent listens on for [`HostCommand`]s. The node reaches it
/// through Firecracker's vsock Unix socket: it connects, writes `CONNECT 1025\n`, reads
/// `OK <port>\n`, then sends one command line and reads one [`AgentEvent`] line back.
pub const CONTROL_VSOCK_PORT: u32 = 1025;

/// Host → guest commands, one JSON object per line: on the vsock control port
/// ([`CONTROL_VSOCK_PORT`]) for Firecracker, on the agent's virtio-serial port for QEMU.
/// The guest answers each with one [`AgentEvent`]: `Refreshed`, or `Failed` with the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostCommand {
    /// The guest was restored from a snapshot (a copy of a running VM, or a migration):
    /// it becomes the VM named here.
    Refresh(Refresh),
}

/// What a restored guest must change to become a VM of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// The VM's name: the hostname and identity files are redone for it.
    pub name: VmName,
    /// The VM's network; `None` keeps the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<GuestNet>,
    /// The host's wall clock, milliseconds since the Unix epoch: a restored guest's clock
    /// stopped when its snapshot was taken.
    pub unix_time_ms: u64,
    /// At least 32 random bytes, hex-encoded, mixed into the guest's RNG and credited,
    /// so that copies of one snapshot do not share their random state.
    pub entropy: String,
    /// A new SSH host key (OpenSSH ed25519 private key) for sshd; `None` keeps the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BootParams {
        BootParams {
            name: VmName::new("bold-fox").unwrap(),
            vm_type: VmType::Qemu,
            net: Some(GuestNet {
                address: "10.0.0.2".parse().unwrap(),
                prefix_len: 30,
                gateway: "10.0.0.1".parse().unwrap(),
                dns: vec!["10.0.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()],
            }),
            vcpus: Some(1),
        }
    }

    #[test]
    fn cmdline_round_trips_among_other_words() {
        let line = format!("console=ttyS0 {} quiet", params().to_cmdline());
        assert_eq!(BootParams::parse(&line).unwrap(), params());
    }

    #[test]
    fn cmdline_errors_name_the_parameter() {
        assert_eq!(
            BootParams::parse("boxcutter.type=qemu"),
            Err(BootParamsError::Missing("name"))
        );
        let bad = BootParams::parse("boxcutter.name=a boxcutter.type=vmware").unwrap_err();
        assert_eq!(bad.to_string(), "bad boxcutter.type value \"vmware\"");
        let bad = BootParams::parse(
            "boxcutter.name=a boxcutter.type=qemu boxcutter.net=1.2.3.4/33,1.1.1.1",
        );
        assert!(matches!(
            bad,
            Err(BootParamsError::Invalid { key: "net", .. })
        ));
        let bad = BootParams::parse("boxcutter.name=A;B boxcutter.type=qemu");
        assert!(matches!(
            bad,
            Err(BootParamsError::Invalid { key: "name", .. })
        ));
    }

    #[test]
    fn config_drive_round_trips_and_is_block_aligned() {
        let config = GuestConfig {
            authorized_keys: vec!["ssh-ed25519 AAAA test".into()],
            ssh_host_key: "-----BEGIN OPENSSH PRIVATE KEY-----\n...".into(),
        };
        let bytes = config.encode();
        assert_eq!(bytes.len() % CONFIG_BLOCK, 0);
        assert_eq!(GuestConfig::decode(&bytes).unwrap(), config);
    }

    #[test]
    fn config_drive_rejects_foreign_bytes() {
        assert_eq!(
            GuestConfig::decode(&[0u8; 4096]),
            Err(BootParamsError::NoConfigHeader)
        );
        let mut bytes = CONFIG_MAGIC.to_vec();
        bytes.extend(b"{\"authorized_keys\":[],\"ssh_host_key\":\"k\",\"extra\":1}");
        assert!(matches!(
            GuestConfig::decode(&bytes),
            Err(BootParamsError::BadConfig(_))
        ));
    }

    #[test]
    fn agent_events_are_tagged_json_lines() {
        let json = serde_json::to_string(&AgentEvent::Ready { uptime_ms: 1234 }).unwrap();
        assert_eq!(json, r#"{"event":"ready","uptime_ms":1234}"#);
    }
}
