//! VM links with real TAP devices in a node namespace (needs root): creation, idempotence,
//! mode changes, conflicts, removal, and a reinstalled table keeping its elements.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use boxcutter_net::{
    firewall_elements, firewall_ensure, firewall_installed, firewall_remove, vm_link_ensure,
    vm_link_remove, vm_taps, FirewallConfig, FirewallError, Ipv4Cidr, Netns, VmLink,
};
use boxcutter_types::{GuestSubnet, NetMode, VmName};
use support::{ifname, nft, Namespaces};

fn config(blocked: &[(&str, u8)]) -> FirewallConfig {
    let cidr = |(address, prefix_len): (&str, u8)| Ipv4Cidr {
        address: address.parse().unwrap(),
        prefix_len,
    };
    FirewallConfig {
        guest_ranges: vec![cidr(("10.240.0.0", 12))],
        uplink: ifname("up0"),
        proxy_port: 3128,
        blocked: blocked.iter().copied().map(cidr).collect(),
    }
}

fn vm_link(vm: &str, base: &str, mode: NetMode) -> VmLink {
    let subnet = GuestSubnet::new(base.parse().unwrap()).unwrap();
    VmLink::new(&VmName::new(vm).unwrap(), subnet, mode)
}

fn sorted_elements(node: &Netns) -> Vec<VmLink> {
    let mut links = firewall_elements(Some(node)).unwrap();
    links.sort_by(|x, y| x.tap.as_str().cmp(y.tap.as_str()));
    links
}

fn sorted(mut links: Vec<VmLink>) -> Vec<VmLink> {
    links.sort_by(|x, y| x.tap.as_str().cmp(y.tap.as_str()));
    links
}

/// `ip -j -d addr show dev <tap>` in `node`, as JSON.
fn tap_details(node: &Netns, tap: &str) -> serde_json::Value {
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            node.name().as_str(),
            "-j",
            "-d",
            "addr",
            "show",
            "dev",
            tap,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

#[test]
fn vm_links_are_persistent_taps_pinned_in_the_table() {
    let mut namespaces = Namespaces::new();
    let node = namespaces.add("links");
    let (alpha, gamma) = (
        vm_link("alpha", "10.240.0.0", NetMode::Normal),
        vm_link("gamma", "10.240.0.8", NetMode::Paranoid),
    );

    let err = vm_link_ensure(Some(&node), &alpha).unwrap_err();
    assert!(matches!(err, FirewallError::NotInstalled), "{err}");
    assert_eq!(vm_taps(Some(&node)).unwrap(), []);

    firewall_ensure(Some(&node), &config(&[])).unwrap();
    for _ in 0..2 {
        vm_link_ensure(Some(&node), &alpha).unwrap();
        vm_link_ensure(Some(&node), &gamma).unwrap();
    }
    // From a thread moved into the namespace, `None` means that namespace.
    let mut taps = support::in_ns(&node, || vm_taps(None)).unwrap();
    taps.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut expected = vec![alpha.tap.clone(), gamma.tap.clone()];
    expected.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(taps, expected);
    let details = tap_details(&node, alpha.tap.as_str());
    assert_eq!(details["linkinfo"]["info_kind"], "tun", "{details}");
    assert_eq!(details["linkinfo"]["info_data"]["type"], "tap", "{details}");
    assert_eq!(details["linkinfo"]["info_data"]["pi"], false, "{details}");
    let addresses = details["addr_info"].as_array().unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a["local"] == "10.240.0.1" && a["prefixlen"] == 30),
        "{details}"
    );
    assert_eq!(
        sorted_elements(&node),
        sorted(vec![alpha.clone(), gamma.clone()])
    );

    // Reinstalling with another configuration keeps every element.
    firewall_ensure(Some(&node), &config(&[("192.168.0.0", 16)])).unwrap();
    assert_eq!(
        sorted_elements(&node),
        sorted(vec![alpha.clone(), gamma.clone()])
    );

    // Mode changes in place.
    let gamma_normal = VmLink {
        mode: NetMode::Normal,
        ..gamma.clone()
    };
    vm_link_ensure(Some(&node), &gamma_normal).unwrap();
    assert_eq!(
        sorted_elements(&node),
        sorted(vec![alpha.clone(), gamma_normal.clone()])
    );

    // Another VM may take neither alpha's address nor its TAP, and leaves nothing behind.
    let delta = vm_link("delta", "10.240.0.0", NetMode::Normal);
    let err = vm_link_ensure(Some(&node), &delta).unwrap_err();
    assert!(matches!(err, FirewallError::Conflict { .. }), "{err}");
    assert!(!vm_taps(Some(&node)).unwrap().contains(&delta.tap));
    let not_a_tap = VmLink {
        tap: ifname("eth5"),
        ..delta
    };
    let err = vm_link_ensure(Some(&node), &not_a_tap).unwrap_err();
    assert!(matches!(err, FirewallError::NotATap { .. }), "{err}");

    for _ in 0..2 {
        vm_link_remove(Some(&node), &alpha).unwrap();
    }
    assert_eq!(vm_taps(Some(&node)).unwrap(), vec![gamma.tap.clone()]);
    assert_eq!(sorted_elements(&node), vec![gamma_normal]);

    // The table stays while a TAP exists: without it the TAP would be unfiltered.
    let err = firewall_remove(Some(&node)).unwrap_err();
    assert!(matches!(err, FirewallError::InUse { .. }), "{err}");
    vm_link_remove(Some(&node), &gamma).unwrap();
    for _ in 0..2 {
        firewall_remove(Some(&node)).unwrap();
    }
    assert!(!firewall_installed(Some(&node)).unwrap());
    assert_eq!(firewall_elements(Some(&node)).unwrap(), []);
    // Removal without a table is fine too.
    vm_link_remove(Some(&node), &gamma).unwrap();
    assert_eq!(vm_taps(Some(&node)).unwrap(), []);
}

/// What an older Boxcutter might have left: `blocked` defined otherwise, a chain that no
/// longer exists, and a VM link.
const OLDER_TABLE: &str = r#"
table inet boxcutter {
	set vm_links { type ifname . ipv4_addr; elements = { "bct8ed3f6ad" . 10.240.0.2 } }
	set blocked { type ipv4_addr; }
	chain retired { }
}
"#;

#[test]
fn a_table_of_another_shape_is_rebuilt_with_its_links() {
    let mut namespaces = Namespaces::new();
    let node = namespaces.add("older");
    nft(&node, OLDER_TABLE);

    firewall_ensure(Some(&node), &config(&[("192.168.0.0", 16)])).unwrap();
    let alpha = vm_link("alpha", "10.240.0.0", NetMode::Normal);
    assert_eq!(firewall_elements(Some(&node)).unwrap(), vec![alpha]);
    let listing = nft(&node, "list table inet boxcutter");
    assert!(!listing.contains("retired"), "{listing}");
    assert!(listing.contains("192.168.0.0/16"), "{listing}");
}
