//! Real namespaces, bridges and TAP devices (needs root, like Boxcutter itself).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use boxcutter_net::{bridge_ensure, link_delete, tap_ensure, IfName, Ipv4Cidr, Netns, NetnsName};

/// Deletes the namespace even when an assertion fails.
struct Cleanup(Netns);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.delete();
    }
}

#[test]
fn bridge_and_tap_live_and_die_with_their_namespace() {
    let name = NetnsName::new(format!("bc-nettest-{}", std::process::id())).unwrap();
    let ns = Netns::ensure(name).unwrap();
    let guard = Cleanup(ns.clone());
    let (br, tap) = (IfName::new("br0").unwrap(), IfName::new("tap0").unwrap());
    let cidr = Ipv4Cidr {
        address: "10.99.0.1".parse().unwrap(),
        prefix_len: 24,
    };

    // Twice: ensure is idempotent.
    for _ in 0..2 {
        bridge_ensure(Some(&ns), &br, Some(cidr)).unwrap();
        tap_ensure(Some(&ns), &tap, Some(&br)).unwrap();
    }
    let links = ns.links().unwrap();
    assert!(
        links.contains(&"br0".into()) && links.contains(&"tap0".into()),
        "{links:?}"
    );
    assert!(
        !std::path::Path::new("/sys/class/net/tap0").exists(),
        "tap leaked into the host"
    );

    link_delete(Some(&ns), &tap).unwrap();
    assert!(!ns.links().unwrap().contains(&"tap0".into()));
    link_delete(Some(&ns), &tap).unwrap();

    ns.delete().unwrap();
    assert!(!ns.path().exists());
    drop(guard);
}
