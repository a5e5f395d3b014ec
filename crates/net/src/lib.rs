//! Host networking: network namespaces, bridges, veth pairs, TAP devices, and Boxcutter's
//! guest firewall (one nftables table) with each VM's routed TAP link.
//!
//! Devices are managed through iproute2's `ip`, the firewall through `nft`, with argument
//! vectors and scripts built from validated types ([`IfName`], [`NetnsName`],
//! [`std::net::Ipv4Addr`]), never a shell string. Every `*_ensure` function is
//! idempotent. Everything blocks: async callers use `spawn_blocking`.

mod firewall;
mod link;
mod names;
mod netns;
mod nft;
mod vm_link;

pub use firewall::{
    firewall_elements, firewall_ensure, firewall_installed, firewall_remove, FirewallConfig,
    FirewallError, DNS_PORT, METADATA_ADDR, METADATA_PORT, SSH_PORT,
};
pub use link::{
    address_ensure, bridge_ensure, link_delete, link_exists, tap_ensure, veth_ensure, Ipv4Cidr,
};
pub use names::{IfName, NameError, NetnsName};
pub use netns::Netns;
pub use vm_link::{tap_name, vm_link_ensure, vm_link_remove, vm_taps, VmLink, TAP_PREFIX};

/// Errors managing network devices.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `ip` invocation failed.
    #[error("{action}")]
    Ip {
        /// What was being done.
        action: String,
        /// The command's failure.
        #[source]
        source: boxcutter_sys::CommandError,
    },
}
