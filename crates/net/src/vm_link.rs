//! A VM's link on its node: a persistent TAP device in routed mode (no bridge) carrying
//! the gateway address of the VM's /30, plus the VM's elements in the firewall's sets.
//!
//! The node agent creates the link before the VMM opens the TAP (QEMU: `ifname=`,
//! `script=no`) and removes it after the VMM has exited. Everything here blocks.

use boxcutter_types::{GuestSubnet, NetMode, VmName};
use sha2::{Digest, Sha256};

use crate::firewall::{firewall_installed, installed_links};
use crate::link::ip_batch;
use crate::nft;
use crate::{link_delete, link_exists, FirewallError, IfName, Ipv4Cidr, NetError, Netns};

/// What every VM's TAP name starts with. The firewall treats every interface with this
/// prefix as a guest's, so nothing else on a node may use it.
pub const TAP_PREFIX: &str = "bct";

/// One VM's network attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmLink {
    /// The TAP device, normally [`tap_name`] of the VM.
    pub tap: IfName,
    /// The VM's /30: the TAP gets the gateway, the guest is the only source allowed.
    pub subnet: GuestSubnet,
    /// What the guest may reach.
    pub mode: NetMode,
}

impl VmLink {
    /// The link of VM `vm`, on its [`tap_name`].
    pub fn new(vm: &VmName, subnet: GuestSubnet, mode: NetMode) -> Self {
        Self {
            tap: tap_name(vm),
            subnet,
            mode,
        }
    }
}

/// The TAP device name of `vm`: [`TAP_PREFIX`] and the first 8 hex digits of the SHA-256
/// of its name. Deterministic, so a restarted node agent finds its VMs' TAPs again; a
/// 15-character kernel limit leaves no room for the name itself.
pub fn tap_name(vm: &VmName) -> IfName {
    let digest = Sha256::digest(vm.as_str().as_bytes());
    let name = format!(
        "{TAP_PREFIX}{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3]
    );
    IfName::new(name).expect("the prefix and 8 hex digits make a valid interface name")
}

/// Makes sure `link` is in place in `ns`: its TAP exists (persistent, owned by root),
/// carries the gateway address as a /30 and is up, and its firewall elements (with its
/// mode) are in the table. Idempotent; an existing interface of that name is used as is
/// (tests put a veth end there). Fails, creating nothing, when the firewall is not
/// installed or another link holds the TAP or the address. When a later step fails, a TAP
/// this call created is deleted again.
///
/// Limitation: a mode change keeps the guest's established connections (conntrack entries
/// are not flushed); modes are fixed when a VM is created, so nothing changes them yet.
pub fn vm_link_ensure(ns: Option<&Netns>, link: &VmLink) -> Result<(), FirewallError> {
    if !link.tap.as_str().starts_with(TAP_PREFIX) {
        return Err(FirewallError::NotATap {
            tap: link.tap.clone(),
        });
    }
    let existing = installed_links(ns)?.ok_or(FirewallError::NotInstalled)?;
    check_conflicts(&existing, link)?;

    let created = !link_exists(ns, &link.tap)?;
    let result = configure(ns, link, created);
    if result.is_err() && created {
        if let Err(error) = link_delete(ns, &link.tap) {
            tracing::warn!(tap = %link.tap, error = %error, "cannot undo tap creation");
        }
    }
    result?;
    let (tap, guest) = (&link.tap, link.subnet.guest());
    tracing::debug!(%tap, %guest, mode = link.mode.as_str(), "vm link ready");
    Ok(())
}

/// Removes `link`'s firewall elements, then its TAP. Idempotent: absent elements, an
/// absent TAP or an absent table are fine. The mode does not matter.
pub fn vm_link_remove(ns: Option<&Netns>, link: &VmLink) -> Result<(), FirewallError> {
    let removed = nft::apply(
        ns,
        &nft::link_remove_script(link),
        "remove vm link elements",
    );
    if let Err(error) = removed {
        // No table, no elements: the only failure that is success.
        if firewall_installed(ns)? {
            return Err(error);
        }
    }
    link_delete(ns, &link.tap)?;
    tracing::debug!(tap = %link.tap, "vm link removed");
    Ok(())
}

/// Interfaces in `ns` with the TAP prefix: with [`crate::firewall_elements`], what the
/// node compares with its VM records to find orphans (a TAP whose elements were never
/// added has no elements to find).
pub fn vm_taps(ns: Option<&Netns>) -> Result<Vec<IfName>, NetError> {
    let names = match ns {
        Some(ns) => ns.links()?,
        None => crate::link::own_links(),
    };
    Ok(names
        .into_iter()
        .filter(|n| n.starts_with(TAP_PREFIX))
        .filter_map(|n| IfName::new(n).ok())
        .collect())
}

/// One TAP, one guest address: a link may only replace itself.
fn check_conflicts(existing: &[VmLink], link: &VmLink) -> Result<(), FirewallError> {
    let clash = existing
        .iter()
        .find(|e| (e.tap == link.tap) != (e.subnet == link.subnet));
    match clash {
        None => Ok(()),
        Some(other) => Err(FirewallError::Conflict {
            tap: link.tap.clone(),
            guest: link.subnet.guest(),
            other_tap: other.tap.clone(),
            other_guest: other.subnet.guest(),
        }),
    }
}

fn configure(ns: Option<&Netns>, link: &VmLink, create: bool) -> Result<(), FirewallError> {
    // One `ip -batch` run for the TAP and its address: each program run costs
    // milliseconds, and creates wait for this step.
    let (tap, gateway) = (link.tap.as_str(), gateway_cidr(link.subnet).to_string());
    let mut lines = Vec::new();
    if create {
        lines.push(format!("tuntap add dev {tap} mode tap"));
    }
    lines.push(format!("link set {tap} up"));
    lines.push(format!("addr replace {gateway} dev {tap}"));
    ip_batch(ns, &lines)?;
    nft::apply(ns, &nft::link_add_script(link), "add vm link elements")
}

fn gateway_cidr(subnet: GuestSubnet) -> Ipv4Cidr {
    Ipv4Cidr {
        address: subnet.gateway(),
        prefix_len: 30,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn subnet(base: &str) -> GuestSubnet {
        GuestSubnet::new(base.parse::<Ipv4Addr>().expect("address")).expect("aligned")
    }

    fn link(tap: &str, base: &str) -> VmLink {
        VmLink {
            tap: IfName::new(tap).expect("name"),
            subnet: subnet(base),
            mode: NetMode::Normal,
        }
    }

    #[test]
    fn tap_names_are_stable_short_and_prefixed() {
        let name = |s: &str| tap_name(&VmName::new(s).expect("vm name"));
        // The digest of "alpha"; changing the scheme renames every running VM's TAP.
        assert_eq!(name("alpha").as_str(), "bct8ed3f6ad");
        assert_eq!(name("alpha"), name("alpha"));
        assert_ne!(name("alpha"), name("alphb"));
        let long = name(&"a".repeat(63));
        assert_eq!(long.as_str().len(), 11);
        assert!(long.as_str().starts_with(TAP_PREFIX));
    }

    #[test]
    fn a_link_may_replace_itself_but_not_take_anothers_tap_or_address() {
        let existing = [link("bct00000001", "10.240.0.0")];
        let same = link("bct00000001", "10.240.0.0");
        let paranoid = VmLink {
            mode: NetMode::Paranoid,
            ..same.clone()
        };
        check_conflicts(&existing, &same).expect("itself");
        check_conflicts(&existing, &paranoid).expect("a mode change");
        check_conflicts(&existing, &link("bct00000002", "10.240.0.4")).expect("another");
        for clash in [
            link("bct00000002", "10.240.0.0"),
            link("bct00000001", "10.240.0.4"),
        ] {
            let err = check_conflicts(&existing, &clash).expect_err("conflict");
            assert!(matches!(err, FirewallError::Conflict { .. }), "{err}");
        }
    }
}
