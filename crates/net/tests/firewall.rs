//! The guest firewall against real traffic on the real kernel (needs root, like Boxcutter).
//!
//! No VM runs here. A "guest" is a network namespace attached to the node namespace
//! through a veth pair whose node-side end carries the VM's TAP name (`bct…`). The rule set
//! matches interfaces by name and the kernel path from that interface on (prerouting,
//! routing, input/forward, NAT) is the same as for a TAP, so what a guest namespace can
//! reach is what a VM on that TAP can reach. Real TAPs are covered by `tests/vm_link.rs`
//! and real guests end to end by the node agent's tests.
//!
//! ```text
//!  guest A (normal)   ─veth─┐
//!  guest B (normal)   ─veth─┤ node ns: TAP-named veth ends, table inet boxcutter,
//!  guest C (paranoid) ─veth─┘ listeners for DNS, metadata, proxy and "agent API"
//!                              │ up0 192.0.2.1 ── wan0 192.0.2.2
//!                        internet ns: 198.51.100.1 (internet), 198.18.0.1 (blocked)
//! ```

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::net::Ipv4Addr;

use boxcutter_net::{
    address_ensure, firewall_elements, firewall_ensure, firewall_installed, firewall_remove,
    tap_name, veth_ensure, vm_link_ensure, vm_link_remove, FirewallConfig, Ipv4Cidr, Netns, VmLink,
};
use boxcutter_types::{GuestSubnet, NetMode, VmName};
use support::{assert_all, ifname, ip, ping, tcp, udp, Listener, Namespaces};

const INTERNET: &str = "198.51.100.1";
const MANAGEMENT: &str = "198.18.0.1";

fn cidr(address: &str, prefix_len: u8) -> Ipv4Cidr {
    Ipv4Cidr {
        address: address.parse().unwrap(),
        prefix_len,
    }
}

fn config() -> FirewallConfig {
    FirewallConfig {
        guest_ranges: vec![cidr("10.240.0.0", 12)],
        uplink: ifname("up0"),
        proxy_port: 3128,
        blocked: vec![cidr("198.18.0.0", 15)],
    }
}

fn vm_link(vm: &str, base: &str, mode: NetMode) -> VmLink {
    let subnet = GuestSubnet::new(base.parse().unwrap()).unwrap();
    VmLink::new(&VmName::new(vm).unwrap(), subnet, mode)
}

/// The internet namespace behind the node's uplink. It routes the guest range to the node,
/// as an operator's network would; the internet proper would not, hence NAT.
fn uplink(node: &Netns, internet: &Netns) {
    veth_ensure(Some(node), &ifname("up0"), Some(internet), &ifname("wan0")).unwrap();
    address_ensure(Some(node), &ifname("up0"), cidr("192.0.2.1", 24)).unwrap();
    address_ensure(Some(internet), &ifname("wan0"), cidr("192.0.2.2", 24)).unwrap();
    for address in [INTERNET, MANAGEMENT] {
        address_ensure(Some(internet), &ifname("lo"), cidr(address, 32)).unwrap();
    }
    ip(node, &["route", "replace", "default", "via", "192.0.2.2"]);
    ip(
        internet,
        &["route", "replace", "10.240.0.0/12", "via", "192.0.2.1"],
    );
}

/// A guest namespace on `link`: what QEMU and the guest's boot config would set up.
fn guest(node: &Netns, guest: &Netns, link: &VmLink) {
    veth_ensure(Some(node), &link.tap, Some(guest), &ifname("eth0")).unwrap();
    vm_link_ensure(Some(node), link).unwrap();
    let address = cidr(&link.subnet.guest().to_string(), 30);
    address_ensure(Some(guest), &ifname("eth0"), address).unwrap();
    let gateway = link.subnet.gateway().to_string();
    ip(guest, &["route", "replace", "default", "via", &gateway]);
}

/// IPv6 on both sides of A's link and of the uplink, without duplicate address detection
/// (which would keep them unusable for a second or two).
fn ipv6(node: &Netns, internet: &Netns, a: &Netns, tap_a: &str) {
    ip(a, &["addr", "add", "fd00::2/64", "dev", "eth0", "nodad"]);
    ip(node, &["addr", "add", "fd00::1/64", "dev", tap_a, "nodad"]);
    ip(node, &["addr", "add", "fd01::1/64", "dev", "up0", "nodad"]);
    ip(
        internet,
        &["addr", "add", "fd01::2/64", "dev", "wan0", "nodad"],
    );
}

#[test]
fn guests_reach_exactly_what_their_mode_allows() {
    let mut namespaces = Namespaces::new();
    let (node, internet) = (namespaces.add("node"), namespaces.add("inet"));
    let (a, b, c) = (
        namespaces.add("a"),
        namespaces.add("b"),
        namespaces.add("c"),
    );
    uplink(&node, &internet);
    firewall_ensure(Some(&node), &config()).unwrap();
    let link_a = vm_link("alpha", "10.240.0.0", NetMode::Normal);
    let link_b = vm_link("bravo", "10.240.0.4", NetMode::Normal);
    let link_c = vm_link("charlie", "10.240.0.8", NetMode::Paranoid);
    guest(&node, &a, &link_a);
    guest(&node, &b, &link_b);
    guest(&node, &c, &link_c);
    ipv6(&node, &internet, &a, link_a.tap.as_str());
    // Reinstalling (what a restarted node agent does) keeps every guest's elements.
    firewall_ensure(Some(&node), &config()).unwrap();

    let _agent_api = Listener::tcp(&node, "0.0.0.0:8800");
    let _dns_tcp = Listener::tcp(&node, "0.0.0.0:53");
    let dns_udp = Listener::udp(&node, "0.0.0.0:53");
    let _metadata = Listener::tcp(&node, "169.254.169.254:80");
    let _proxy = Listener::tcp(&node, "0.0.0.0:3128");
    let web = Listener::tcp(&internet, "0.0.0.0:80");
    let internet_udp = Listener::udp(&internet, "0.0.0.0:9");
    let _ssh: Vec<Listener> = [&a, &b, &c]
        .into_iter()
        .map(|g| Listener::tcp(g, "0.0.0.0:22"))
        .collect();
    let _other_a = Listener::tcp(&a, "0.0.0.0:8080");

    let (ip_a, ip_c) = (link_a.subnet.guest(), link_c.subnet.guest());
    let stranger: Ipv4Addr = "192.0.2.50".parse().unwrap();
    // Another guest's address and a stranger's as extra addresses in A, so A's sockets can
    // send from them (C's rather than B's, whose address A must still reach as remote).
    for spoofed in [ip_c, stranger] {
        ip(
            &a,
            &["addr", "add", &format!("{spoofed}/32"), "dev", "eth0"],
        );
    }

    assert_all(vec![
        // A normal guest: internet, its DNS, metadata; nothing else.
        tcp(&a, "198.51.100.1:80", true),
        ping(&a, INTERNET, true),
        udp(&a, ip_a, "198.51.100.1:9", &internet_udp.seen, true),
        tcp(&a, "198.18.0.1:80", false),
        tcp(&a, "10.240.0.6:22", false),
        ping(&a, "10.240.0.6", false),
        tcp(&b, "10.240.0.2:22", false),
        ping(&b, "10.240.0.2", false),
        tcp(&a, "10.240.0.1:53", true),
        udp(&a, ip_a, "10.240.0.1:53", &dns_udp.seen, true),
        tcp(&a, "10.240.0.5:53", false),
        tcp(&a, "10.240.0.1:8800", false),
        tcp(&a, "192.0.2.1:8800", false),
        tcp(&a, "10.240.0.1:3128", false),
        tcp(&a, "169.254.169.254:80", true),
        ping(&a, "10.240.0.1", false),
        ping(&a, "fd00::1", false),
        // Spoofing: another guest's address, or any other, never leaves the TAP.
        udp(&a, ip_c, "198.51.100.1:9", &internet_udp.seen, false),
        udp(&a, stranger, "198.51.100.1:9", &internet_udp.seen, false),
        udp(&a, ip_c, "10.240.0.1:53", &dns_udp.seen, false),
        udp(&a, ip_c, "10.240.0.9:53", &dns_udp.seen, false),
        // A paranoid guest: metadata and its proxy port only.
        tcp(&c, "169.254.169.254:80", true),
        tcp(&c, "10.240.0.9:3128", true),
        tcp(&c, "10.240.0.1:3128", false),
        tcp(&c, "198.51.100.1:80", false),
        ping(&c, INTERNET, false),
        tcp(&c, "10.240.0.9:53", false),
        udp(
            &c,
            link_c.subnet.guest(),
            "10.240.0.9:53",
            &dns_udp.seen,
            false,
        ),
        // From outside the guest range: SSH into guests, nothing else.
        tcp(&internet, "10.240.0.2:22", true),
        tcp(&internet, "10.240.0.10:22", true),
        tcp(&internet, "10.240.0.2:8080", false),
        // Controls: the listeners behind the blocked cases exist.
        tcp(&internet, "198.18.0.1:80", true),
        tcp(&internet, "192.0.2.1:8800", true),
        tcp(&internet, "10.240.0.6:22", true),
        tcp(&a, "10.240.0.2:8080", true),
        ping(&internet, "fd01::1", true),
        tcp(&node, "10.240.0.2:22", true),
    ]);

    // NAT: the internet saw the node's uplink address, never a guest's (the other peer is
    // the internet's own control connection to the management address).
    let mut peers: Vec<String> = [&web.seen, &internet_udp.seen]
        .iter()
        .flat_map(|seen| seen.lock().unwrap().clone())
        .map(|(peer, _)| peer.ip().to_string())
        .collect();
    peers.sort();
    peers.dedup();
    assert_eq!(peers, ["192.0.2.1", MANAGEMENT]);

    // Removing A takes its TAP and its elements; the others stay.
    vm_link_remove(Some(&node), &link_a).unwrap();
    vm_link_remove(Some(&node), &link_a).unwrap();
    assert!(!node.links().unwrap().contains(&link_a.tap.to_string()));
    let mut left = firewall_elements(Some(&node)).unwrap();
    left.sort_by(|x, y| x.tap.as_str().cmp(y.tap.as_str()));
    let mut expected = vec![link_b.clone(), link_c.clone()];
    expected.sort_by(|x, y| x.tap.as_str().cmp(y.tap.as_str()));
    assert_eq!(left, expected);
    assert_gateways_exclude(&node, &tap_name(&VmName::new("alpha").unwrap()).to_string());

    for link in [&link_b, &link_c] {
        vm_link_remove(Some(&node), link).unwrap();
    }
    firewall_remove(Some(&node)).unwrap();
    assert!(!firewall_installed(Some(&node)).unwrap());
}

/// `vm_gateways` has no element for `tap` (`firewall_elements` reads only `vm_links`).
fn assert_gateways_exclude(node: &Netns, tap: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", node.name().as_str()])
        .args([
            "nft",
            "-j",
            "list",
            "set",
            "inet",
            "boxcutter",
            "vm_gateways",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("10.240.0.5"), "{listing}");
    assert!(!listing.contains(tap), "{listing}");
}
