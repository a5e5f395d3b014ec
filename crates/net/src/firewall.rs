//! Boxcutter's guest firewall on a node: one nftables table, `inet boxcutter`, that pins
//! every TAP to its guest's address and decides what a guest may reach (see
//! `docs/decisions/firewall.md` for the rule set and why it looks like this).
//!
//! The table is installed by [`firewall_ensure`] from a [`FirewallConfig`]; per-VM state
//! lives only in its sets, changed by [`crate::vm_link_ensure`] and
//! [`crate::vm_link_remove`] one nft transaction at a time. Reinstalling the table replaces
//! its rules and configuration sets but never touches the per-VM sets, so it is safe while
//! VMs run and while other threads add or remove VM links.
//!
//! Everything here blocks (it runs `nft`, `ip` and `sysctl`): async callers use
//! `spawn_blocking`.

use std::net::Ipv4Addr;
use std::process::Command;

use boxcutter_sys::{run, CommandError};

use crate::nft;
use crate::{address_ensure, vm_taps, IfName, Ipv4Cidr, NetError, Netns, VmLink};

/// The metadata service's address, put on the node namespace's `lo`.
pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The metadata service's TCP port.
pub const METADATA_PORT: u16 = 80;

/// The DNS forwarder's port on every gateway address (TCP and UDP).
pub const DNS_PORT: u16 = 53;

/// The port guests may reach from outside the guest range (new TCP connections only).
pub const SSH_PORT: u16 = 22;

/// What the node's firewall is built from. Every field is typed: nothing a user typed
/// reaches the nft script as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// The cluster-wide guest address space (e.g. `10.240.0.0/12`): guests never reach it
    /// and traffic from it is masqueraded on the uplink. At least one prefix.
    pub guest_ranges: Vec<Ipv4Cidr>,
    /// The interface to the internet: guests' traffic may leave only through it.
    pub uplink: IfName,
    /// The egress proxy's TCP port on the gateway addresses (paranoid guests only).
    pub proxy_port: u16,
    /// Destinations guests never reach although they route through the uplink:
    /// management networks (host, orchestrator, MQTT, other nodes).
    pub blocked: Vec<Ipv4Cidr>,
}

/// Errors installing the firewall or changing a VM's link.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The configuration cannot be turned into a rule set.
    #[error("invalid firewall config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The nft script could not be staged in a temporary file.
    #[error("stage nft script")]
    Script(#[source] std::io::Error),
    /// `nft` failed.
    #[error("{action}")]
    Nft {
        /// What was being done.
        action: String,
        /// The command's failure, with nft's own message.
        #[source]
        source: CommandError,
    },
    /// `nft -j` printed something this module does not understand.
    #[error("unexpected nft listing: {detail}")]
    Listing {
        /// What was unexpected.
        detail: String,
    },
    /// The table is not installed, so a VM link would have no firewall.
    #[error("table inet boxcutter is not installed (call firewall_ensure first)")]
    NotInstalled,
    /// A VM link names an interface the rules would not match.
    #[error("{tap} does not start with the TAP prefix {prefix:?}", prefix = crate::TAP_PREFIX)]
    NotATap {
        /// The interface.
        tap: IfName,
    },
    /// Another VM link already holds this TAP or this guest address.
    #[error("{tap} with {guest} conflicts with existing link {other_tap} with {other_guest}")]
    Conflict {
        /// The requested TAP.
        tap: IfName,
        /// The requested guest address.
        guest: Ipv4Addr,
        /// The TAP already in the table.
        other_tap: IfName,
        /// Its guest address.
        other_guest: Ipv4Addr,
    },
    /// A device or address could not be set up or deleted (the error names the device).
    #[error(transparent)]
    Link(#[from] NetError),
    /// TAP devices still exist, which the table is all that protects.
    #[error("{} TAP devices still present: remove their vm links first", taps.len())]
    InUse {
        /// The TAPs.
        taps: Vec<IfName>,
    },
    /// IPv4 forwarding could not be switched on.
    #[error("enable ipv4 forwarding")]
    Forwarding(#[source] CommandError),
}

/// Installs or updates the firewall in `ns` (the host namespace when `None`), then puts
/// [`METADATA_ADDR`] on `lo` and switches IPv4 forwarding on, in that order, so forwarding
/// never runs without the rules. Idempotent and atomic: the table's rules and
/// configuration sets are replaced in one nft transaction; the per-VM sets keep their
/// elements. A table of another shape (from an older Boxcutter) is rebuilt in one
/// transaction with its VM links carried over.
pub fn firewall_ensure(ns: Option<&Netns>, config: &FirewallConfig) -> Result<(), FirewallError> {
    config.validate()?;
    let updated = nft::apply(
        ns,
        &nft::table_script(config),
        "update table inet boxcutter",
    );
    if let Err(error) = updated {
        rebuild(ns, config, error)?;
    }

    let lo = IfName::new("lo").expect("lo is a valid interface name");
    let metadata = Ipv4Cidr {
        address: METADATA_ADDR,
        prefix_len: 32,
    };
    address_ensure(ns, &lo, metadata)?;

    forwarding_ensure(ns)?;
    tracing::info!(uplink = %config.uplink, "guest firewall installed");
    Ok(())
}

/// Replaces a table whose shape the update script cannot change (a set defined otherwise
/// by an older Boxcutter): deletes and recreates it in one transaction, with the VM links
/// read just before. Fails with `update_error` when there is no table to rebuild.
///
/// Limitation: a VM link added or removed by another thread between the read and the
/// rebuild is lost or comes back; the node agent installs the firewall before its VM
/// actors start, so nothing races with it there.
fn rebuild(
    ns: Option<&Netns>,
    config: &FirewallConfig,
    update_error: FirewallError,
) -> Result<(), FirewallError> {
    let Some(links) = installed_links(ns)? else {
        return Err(update_error);
    };
    let links_kept = links.len();
    tracing::warn!(error = %update_error, links_kept, "rebuilding table inet boxcutter");
    let script = nft::rebuild_script(config, &links);
    nft::apply(ns, &script, "rebuild table inet boxcutter")
}

/// Deletes the table (and with it every rule and VM element). Absent is fine. Refuses
/// while TAP devices exist: without the table their traffic would not be filtered at
/// all. Leaves forwarding and the metadata address alone: other things may rely on them.
pub fn firewall_remove(ns: Option<&Netns>) -> Result<(), FirewallError> {
    let taps = vm_taps(ns)?;
    if !taps.is_empty() {
        return Err(FirewallError::InUse { taps });
    }
    nft::apply(ns, nft::REMOVE_TABLE, "delete table inet boxcutter")
}

/// The VM links currently in the table, from its `vm_links` and `paranoid` sets: what the
/// node compares with its VM records after a restart to find orphans. Empty when the
/// table is not installed.
pub fn firewall_elements(ns: Option<&Netns>) -> Result<Vec<VmLink>, FirewallError> {
    Ok(installed_links(ns)?.unwrap_or_default())
}

/// The VM links in the table, or `None` when the table is not installed.
pub(crate) fn installed_links(ns: Option<&Netns>) -> Result<Option<Vec<VmLink>>, FirewallError> {
    // One `nft` run instead of two: listing a missing table fails with ENOENT's text.
    match nft::list(ns, &["list", "table", "inet", nft::TABLE]) {
        Ok(listing) => nft::parse_links(&listing).map(Some),
        Err(FirewallError::Nft {
            source: boxcutter_sys::CommandError::Failed { stderr, .. },
            ..
        }) if stderr.contains("No such file or directory") => Ok(None),
        Err(error) => Err(error),
    }
}

/// True when the table exists in `ns`.
pub fn firewall_installed(ns: Option<&Netns>) -> Result<bool, FirewallError> {
    let listing = nft::list(ns, &["list", "tables", "inet"])?;
    nft::has_table(&listing)
}

impl FirewallConfig {
    /// Checks what the types cannot: prefixes are well formed, the guest space is not
    /// empty, and the uplink cannot be mistaken for a guest's TAP.
    pub fn validate(&self) -> Result<(), FirewallError> {
        let invalid = |reason: String| Err(FirewallError::Config { reason });
        if self.guest_ranges.is_empty() {
            return invalid("no guest range".into());
        }
        if let Some(bad) = self.prefixes().find(|p| !is_network_prefix(p)) {
            return invalid(format!("{bad} is not a network prefix"));
        }
        if self.uplink.as_str().starts_with(crate::TAP_PREFIX) {
            return invalid(format!("uplink {} has the TAP prefix", self.uplink));
        }
        if self.proxy_port == 0 {
            return invalid("proxy port 0".into());
        }
        Ok(())
    }

    fn prefixes(&self) -> impl Iterator<Item = &Ipv4Cidr> {
        self.guest_ranges.iter().chain(&self.blocked)
    }
}

/// A prefix length of at most 32 and no bits set after it.
fn is_network_prefix(p: &Ipv4Cidr) -> bool {
    if p.prefix_len > 32 {
        return false;
    }
    let host_bits = u32::MAX.checked_shr(u32::from(p.prefix_len)).unwrap_or(0);
    u32::from(p.address) & host_bits == 0
}

fn forwarding_ensure(ns: Option<&Netns>) -> Result<(), FirewallError> {
    // /proc/sys/net belongs to the namespace of whoever opens it, hence `sysctl` run
    // inside the namespace rather than a write from here.
    let mut cmd = in_netns(ns, "sysctl");
    cmd.args(["-w", "net.ipv4.ip_forward=1"]);
    run(&mut cmd).map(|_| ()).map_err(FirewallError::Forwarding)
}

/// `program` run inside `ns` (through `ip netns exec`), or here when `None`.
pub(crate) fn in_netns(ns: Option<&Netns>, program: &str) -> Command {
    match ns {
        None => Command::new(program),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns.name().as_str(), program]);
            cmd
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        let (address, len) = s.split_once('/').expect("a/len");
        Ipv4Cidr {
            address: address.parse().expect("address"),
            prefix_len: len.parse().expect("len"),
        }
    }

    fn config() -> FirewallConfig {
        FirewallConfig {
            guest_ranges: vec![cidr("10.240.0.0/12")],
            uplink: IfName::new("eth0").expect("name"),
            proxy_port: 3128,
            blocked: vec![cidr("192.168.0.0/16")],
        }
    }

    #[test]
    fn validation_accepts_a_sane_config() {
        config().validate().expect("valid");
        let mut c = config();
        c.blocked = vec![cidr("0.0.0.0/0"), cidr("1.2.3.4/32")];
        c.validate().expect("valid");
    }

    #[test]
    fn validation_rejects_what_nft_would_misread() {
        type Breakage = fn(&mut FirewallConfig);
        let cases: [(Breakage, &str); 5] = [
            (|c| c.guest_ranges.clear(), "no guest range"),
            (
                |c| c.guest_ranges[0] = cidr("10.240.0.1/12"),
                "10.240.0.1/12",
            ),
            (|c| c.blocked.push(cidr("10.0.0.0/33")), "10.0.0.0/33"),
            (
                |c| c.uplink = IfName::new("bct0").expect("name"),
                "TAP prefix",
            ),
            (|c| c.proxy_port = 0, "proxy port 0"),
        ];
        for (break_it, expected) in cases {
            let mut c = config();
            break_it(&mut c);
            let err = c.validate().expect_err(expected).to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
