//! The nft side of the firewall: script text generated from typed values, scripts applied
//! as one transaction each (`nft -f -`), and `nft -j` listings read back.
//!
//! Every value interpolated into a script is an [`IfName`] (only `[A-Za-z0-9_.-]`, always
//! inside double quotes), an [`Ipv4Addr`], an [`Ipv4Cidr`], a `u16` or a keyword fixed in
//! this file, so no caller-provided text can change a script's meaning.

use std::io::{Seek, Write};
use std::net::Ipv4Addr;

use boxcutter_sys::run;
use boxcutter_types::{GuestSubnet, NetMode};
use serde_json::Value;

use crate::firewall::{in_netns, DNS_PORT, METADATA_ADDR, METADATA_PORT, SSH_PORT};
use crate::{FirewallConfig, FirewallError, IfName, Ipv4Cidr, Netns, VmLink, TAP_PREFIX};

/// The table's name, in family `inet`.
pub(crate) const TABLE: &str = "boxcutter";

/// Creates whatever is missing (a `table { }` block only adds), then empties what the
/// configuration owns. The per-VM sets are declared but never flushed.
///
/// Limitation: chains are only ever added here, so a chain a later version stops using
/// survives updates until the table is rebuilt; a retired base chain must stay flushed.
const DECLARE: &str = "\
table inet boxcutter {
	set vm_links { type ifname . ipv4_addr; }
	set vm_gateways { type ifname . ipv4_addr; }
	set paranoid { type ifname; }
	set guest_ranges { type ipv4_addr; flags interval; auto-merge; }
	set blocked { type ipv4_addr; flags interval; auto-merge; }
	chain prerouting { type filter hook prerouting priority raw; policy accept; }
	chain input { type filter hook input priority filter; policy accept; }
	chain forward { type filter hook forward priority filter; policy accept; }
	chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
	chain guest_input { }
	chain from_guest { }
	chain to_guest { }
}
flush set inet boxcutter guest_ranges
flush set inet boxcutter blocked
flush chain inet boxcutter prerouting
flush chain inet boxcutter input
flush chain inet boxcutter forward
flush chain inet boxcutter postrouting
flush chain inet boxcutter guest_input
flush chain inet boxcutter from_guest
flush chain inet boxcutter to_guest
";

/// Deletes the table whether or not it exists (creating an empty one first).
pub(crate) const REMOVE_TABLE: &str = "table inet boxcutter { }\ndelete table inet boxcutter\n";

/// The whole table for `c`: one transaction.
pub(crate) fn table_script(c: &FirewallConfig) -> String {
    let mut script = String::from(DECLARE);
    script += &elements_line("guest_ranges", &c.guest_ranges);
    script += &elements_line("blocked", &c.blocked);
    script += &rules(c);
    script
}

/// Deletes and recreates the table with `links` in it: one transaction.
pub(crate) fn rebuild_script(c: &FirewallConfig, links: &[VmLink]) -> String {
    let mut script = String::from(REMOVE_TABLE);
    script += &table_script(c);
    for link in links {
        script += &link_add_script(link);
    }
    script
}

fn elements_line(set: &str, prefixes: &[Ipv4Cidr]) -> String {
    if prefixes.is_empty() {
        return String::new();
    }
    let list: Vec<String> = prefixes.iter().map(Ipv4Cidr::to_string).collect();
    format!(
        "add element inet boxcutter {set} {{ {} }}\n",
        list.join(", ")
    )
}

/// The rules; `docs/decisions/firewall.md` explains each.
///
/// Limitation: IPv4 only. Guests' IPv6 is dropped at the TAP, so they have no IPv6 at all.
fn rules(c: &FirewallConfig) -> String {
    let (tap, up, proxy) = (format!("\"{TAP_PREFIX}*\""), &c.uplink, c.proxy_port);
    let (md, md_port, dns, ssh) = (METADATA_ADDR, METADATA_PORT, DNS_PORT, SSH_PORT);
    format!(
        "\
table inet boxcutter {{
	chain prerouting {{
		iifname {tap} meta nfproto != ipv4 counter drop comment \"guests speak IPv4 only\"
		iifname {tap} iifname . ip saddr != @vm_links counter drop comment \"anti-spoofing\"
	}}
	chain input {{
		iifname {tap} jump guest_input
	}}
	chain guest_input {{
		ct state established,related accept
		ip daddr {md} tcp dport {md_port} accept comment \"metadata service\"
		iifname @paranoid iifname . ip daddr @vm_gateways tcp dport {proxy} accept comment \"proxy\"
		iifname @paranoid counter drop
		iifname . ip daddr @vm_gateways meta l4proto {{ tcp, udp }} th dport {dns} accept comment \"DNS\"
		counter drop comment \"nothing else on the node\"
	}}
	chain forward {{
		iifname {tap} jump from_guest
		oifname {tap} jump to_guest
	}}
	chain from_guest {{
		ct state established,related accept
		ct state invalid counter drop comment \"would leave un-NATed\"
		iifname @paranoid counter drop comment \"paranoid: proxy only\"
		oifname {tap} counter drop comment \"no guest to guest\"
		ip daddr @guest_ranges counter drop comment \"no guest to guest\"
		ip daddr 169.254.0.0/16 counter drop comment \"no link-local services\"
		ip daddr @blocked counter drop comment \"management networks\"
		oifname \"{up}\" accept comment \"internet\"
		counter drop
	}}
	chain to_guest {{
		ct state established,related accept
		ip saddr @guest_ranges counter drop comment \"no guest to guest\"
		tcp dport {ssh} ct state new accept comment \"SSH from operators\"
		counter drop
	}}
	chain postrouting {{
		oifname \"{up}\" ip saddr @guest_ranges masquerade
	}}
}}
"
    )
}

/// Adds `link`'s elements and sets its paranoid membership: one transaction, so a guest
/// is never in `vm_links` with the wrong mode.
pub(crate) fn link_add_script(link: &VmLink) -> String {
    let [links, gateways, paranoid] = link_elements(link);
    let mut script = String::new();
    for element in [&links, &gateways, &paranoid] {
        script += &format!("add element inet boxcutter {element}\n");
    }
    if link.mode == NetMode::Normal {
        script += &format!("delete element inet boxcutter {paranoid}\n");
    }
    script
}

/// Removes `link`'s elements, present or not: each is added (a no-op when present) and
/// then deleted in the same transaction, since nft 1.0.6 has no `destroy`.
pub(crate) fn link_remove_script(link: &VmLink) -> String {
    let mut script = String::new();
    for element in link_elements(link) {
        script += &format!("add element inet boxcutter {element}\n");
        script += &format!("delete element inet boxcutter {element}\n");
    }
    script
}

/// The link's `vm_links`, `vm_gateways` and `paranoid` elements.
fn link_elements(link: &VmLink) -> [String; 3] {
    let (tap, guest, gateway) = (&link.tap, link.subnet.guest(), link.subnet.gateway());
    [
        format!("vm_links {{ \"{tap}\" . {guest} }}"),
        format!("vm_gateways {{ \"{tap}\" . {gateway} }}"),
        format!("paranoid {{ \"{tap}\" }}"),
    ]
}

/// Runs `script` as one nft transaction in `ns`.
pub(crate) fn apply(ns: Option<&Netns>, script: &str, action: &str) -> Result<(), FirewallError> {
    // Staged in an unnamed temporary file because `run` captures output but feeds no input.
    let mut file = tempfile::tempfile().map_err(FirewallError::Script)?;
    file.write_all(script.as_bytes())
        .and_then(|()| file.rewind())
        .map_err(FirewallError::Script)?;
    let mut cmd = in_netns(ns, "nft");
    cmd.args(["-f", "-"]).stdin(file);
    run(&mut cmd).map_err(|source| FirewallError::Nft {
        action: action.to_string(),
        source,
    })?;
    Ok(())
}

/// `nft -j <args>` in `ns`: its JSON output.
pub(crate) fn list(ns: Option<&Netns>, args: &[&str]) -> Result<Value, FirewallError> {
    let mut cmd = in_netns(ns, "nft");
    cmd.arg("-j").args(args);
    let out = run(&mut cmd).map_err(|source| FirewallError::Nft {
        action: format!("nft -j {}", args.join(" ")),
        source,
    })?;
    serde_json::from_slice(&out.stdout).map_err(|e| FirewallError::Listing {
        detail: e.to_string(),
    })
}

/// True when a `list tables` listing contains `inet boxcutter`.
pub(crate) fn has_table(listing: &Value) -> Result<bool, FirewallError> {
    Ok(objects(listing)?.iter().any(|o| {
        let table = &o["table"];
        table["family"] == "inet" && table["name"] == TABLE
    }))
}

/// The VM links in a `list table inet boxcutter` listing.
pub(crate) fn parse_links(listing: &Value) -> Result<Vec<VmLink>, FirewallError> {
    let objects = objects(listing)?;
    let paranoid: Vec<IfName> = set_elements(objects, "paranoid")
        .iter()
        .map(|e| ifname(e))
        .collect::<Result<_, _>>()?;
    set_elements(objects, "vm_links")
        .iter()
        .map(|e| {
            let link = link_element(e)?;
            let mode = match paranoid.contains(&link.0) {
                true => NetMode::Paranoid,
                false => NetMode::Normal,
            };
            Ok(VmLink {
                tap: link.0,
                subnet: link.1,
                mode,
            })
        })
        .collect()
}

fn objects(listing: &Value) -> Result<&Vec<Value>, FirewallError> {
    listing["nftables"]
        .as_array()
        .ok_or_else(|| unexpected("no nftables array", listing))
}

/// A set's elements, each unwrapped from the `{"elem": {"val": …}}` form nft uses when an
/// element carries extra data.
fn set_elements<'a>(objects: &'a [Value], name: &str) -> Vec<&'a Value> {
    let set = objects
        .iter()
        .map(|o| &o["set"])
        .find(|s| s["table"] == TABLE && s["name"] == name);
    let elements = set.and_then(|s| s["elem"].as_array());
    elements
        .map(|all| {
            all.iter()
                .map(|e| e.pointer("/elem/val").unwrap_or(e))
                .collect()
        })
        .unwrap_or_default()
}

/// One `vm_links` element: `{"concat": [ifname, address]}`.
fn link_element(element: &Value) -> Result<(IfName, GuestSubnet), FirewallError> {
    let Some([tap, guest]) = element["concat"].as_array().map(Vec::as_slice) else {
        return Err(unexpected("vm_links element", element));
    };
    let guest: Ipv4Addr = guest
        .as_str()
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| unexpected("guest address", element))?;
    let subnet = u32::from(guest)
        .checked_sub(2)
        .and_then(|base| GuestSubnet::new(Ipv4Addr::from(base)).ok())
        .ok_or_else(|| unexpected("guest address not .2 of a /30", element))?;
    Ok((ifname(tap)?, subnet))
}

fn ifname(value: &Value) -> Result<IfName, FirewallError> {
    value
        .as_str()
        .and_then(|s| IfName::new(s).ok())
        .ok_or_else(|| unexpected("interface name", value))
}

fn unexpected(what: &str, value: &Value) -> FirewallError {
    FirewallError::Listing {
        detail: format!("{what}: {value}"),
    }
}

#[cfg(test)]
mod tests;
