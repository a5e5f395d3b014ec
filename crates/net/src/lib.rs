//! Host networking: network namespaces, bridges, veth pairs and TAP devices (and, later,
//! Boxcutter's nftables rule set).
//!
//! Devices are managed through iproute2's `ip` with argument vectors built from validated
//! types ([`IfName`], [`NetnsName`]), never a shell string. Every `*_ensure` function is
//! idempotent.

mod link;
mod names;
mod netns;

pub use link::{
    address_ensure, bridge_ensure, link_delete, link_exists, tap_ensure, veth_ensure, Ipv4Cidr,
};
pub use names::{IfName, NameError, NetnsName};
pub use netns::Netns;

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
