//! Exact script text and listing parsing. The golden text was applied with nft 1.0.6 (twice,
//! to check idempotence); the integration tests apply it against real traffic.

use serde_json::json;

use super::*;

fn cidr(address: &str, prefix_len: u8) -> Ipv4Cidr {
    Ipv4Cidr {
        address: address.parse().expect("address"),
        prefix_len,
    }
}

fn config() -> FirewallConfig {
    FirewallConfig {
        guest_ranges: vec![cidr("10.240.0.0", 12)],
        uplink: IfName::new("up0").expect("name"),
        proxy_port: 3128,
        blocked: vec![cidr("192.168.0.0", 16), cidr("172.16.0.0", 12)],
    }
}

fn link(tap: &str, base: &str, mode: NetMode) -> VmLink {
    VmLink {
        tap: IfName::new(tap).expect("name"),
        subnet: GuestSubnet::new(base.parse().expect("address")).expect("aligned"),
        mode,
    }
}

const GOLDEN_TABLE: &str = r#"table inet boxcutter {
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
add element inet boxcutter guest_ranges { 10.240.0.0/12 }
add element inet boxcutter blocked { 192.168.0.0/16, 172.16.0.0/12 }
table inet boxcutter {
	chain prerouting {
		iifname "bct*" meta nfproto != ipv4 counter drop comment "guests speak IPv4 only"
		iifname "bct*" iifname . ip saddr != @vm_links counter drop comment "anti-spoofing"
	}
	chain input {
		iifname "bct*" jump guest_input
	}
	chain guest_input {
		ct state established,related accept
		ip daddr 169.254.169.254 tcp dport 80 accept comment "metadata service"
		iifname @paranoid iifname . ip daddr @vm_gateways tcp dport 3128 accept comment "proxy"
		iifname @paranoid counter drop
		iifname . ip daddr @vm_gateways meta l4proto { tcp, udp } th dport 53 accept comment "DNS"
		counter drop comment "nothing else on the node"
	}
	chain forward {
		iifname "bct*" jump from_guest
		oifname "bct*" jump to_guest
	}
	chain from_guest {
		ct state established,related accept
		ct state invalid counter drop comment "would leave un-NATed"
		iifname @paranoid counter drop comment "paranoid: proxy only"
		oifname "bct*" counter drop comment "no guest to guest"
		ip daddr @guest_ranges counter drop comment "no guest to guest"
		ip daddr 169.254.0.0/16 counter drop comment "no link-local services"
		ip daddr @blocked counter drop comment "management networks"
		oifname "up0" accept comment "internet"
		counter drop
	}
	chain to_guest {
		ct state established,related accept
		ip saddr @guest_ranges counter drop comment "no guest to guest"
		tcp dport 22 ct state new accept comment "SSH from operators"
		counter drop
	}
	chain postrouting {
		oifname "up0" ip saddr @guest_ranges masquerade
	}
}
"#;

#[test]
fn table_script_is_exactly_the_reviewed_text() {
    assert_eq!(table_script(&config()), GOLDEN_TABLE);
}

#[test]
fn an_empty_blocked_list_adds_no_elements_but_keeps_the_rule() {
    let mut c = config();
    c.blocked.clear();
    let script = table_script(&c);
    assert!(
        !script.contains("add element inet boxcutter blocked"),
        "{script}"
    );
    assert!(
        script.contains("ip daddr @blocked counter drop"),
        "{script}"
    );
    assert!(
        script.contains("flush set inet boxcutter blocked\n"),
        "{script}"
    );
}

#[test]
fn the_per_vm_sets_are_never_flushed() {
    let script = table_script(&config());
    for set in ["vm_links", "vm_gateways", "paranoid"] {
        assert!(
            !script.contains(&format!("flush set inet boxcutter {set}")),
            "{set}"
        );
    }
}

#[test]
fn a_rebuild_replaces_the_table_and_puts_the_links_back_in_one_script() {
    let links = [
        link("bct00000001", "10.240.0.0", NetMode::Normal),
        link("bct00000002", "10.240.0.4", NetMode::Paranoid),
    ];
    let script = rebuild_script(&config(), &links);
    let expected = format!(
        "{REMOVE_TABLE}{GOLDEN_TABLE}{}{}",
        link_add_script(&links[0]),
        link_add_script(&links[1])
    );
    assert_eq!(script, expected);
}

#[test]
fn a_normal_link_is_added_and_taken_out_of_paranoid_in_one_script() {
    let script = link_add_script(&link("bct0000abcd", "10.240.0.4", NetMode::Normal));
    assert_eq!(
        script,
        "add element inet boxcutter vm_links { \"bct0000abcd\" . 10.240.0.6 }\n\
         add element inet boxcutter vm_gateways { \"bct0000abcd\" . 10.240.0.5 }\n\
         add element inet boxcutter paranoid { \"bct0000abcd\" }\n\
         delete element inet boxcutter paranoid { \"bct0000abcd\" }\n"
    );
}

#[test]
fn a_paranoid_link_stays_in_paranoid() {
    let script = link_add_script(&link("bct0000abcd", "10.240.0.4", NetMode::Paranoid));
    assert!(script.ends_with("add element inet boxcutter paranoid { \"bct0000abcd\" }\n"));
    assert!(!script.contains("delete"), "{script}");
}

#[test]
fn removal_adds_then_deletes_each_element_so_absence_is_fine() {
    let script = link_remove_script(&link("bct0000abcd", "10.240.0.4", NetMode::Normal));
    assert_eq!(
        script,
        "add element inet boxcutter vm_links { \"bct0000abcd\" . 10.240.0.6 }\n\
         delete element inet boxcutter vm_links { \"bct0000abcd\" . 10.240.0.6 }\n\
         add element inet boxcutter vm_gateways { \"bct0000abcd\" . 10.240.0.5 }\n\
         delete element inet boxcutter vm_gateways { \"bct0000abcd\" . 10.240.0.5 }\n\
         add element inet boxcutter paranoid { \"bct0000abcd\" }\n\
         delete element inet boxcutter paranoid { \"bct0000abcd\" }\n"
    );
}

/// The shape of `nft -j list table inet boxcutter` from nft 1.0.6, trimmed.
fn listing(links: Value, paranoid: Value) -> Value {
    json!({"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "boxcutter", "handle": 1}},
        {"set": {"family": "inet", "name": "vm_links", "table": "boxcutter",
                 "type": ["ifname", "ipv4_addr"], "handle": 4, "elem": links}},
        {"set": {"family": "inet", "name": "paranoid", "table": "boxcutter",
                 "type": "ifname", "handle": 6, "elem": paranoid}},
        {"chain": {"family": "inet", "table": "boxcutter", "name": "input", "handle": 9}}
    ]})
}

#[test]
fn links_are_read_back_with_their_mode() {
    let links = json!([
        {"concat": ["bct00000001", "10.240.0.2"]},
        {"elem": {"val": {"concat": ["bct00000002", "10.240.0.6"]}}}
    ]);
    let parsed = parse_links(&listing(links, json!(["bct00000002"]))).expect("parsed");
    assert_eq!(
        parsed,
        [
            link("bct00000001", "10.240.0.0", NetMode::Normal),
            link("bct00000002", "10.240.0.4", NetMode::Paranoid),
        ]
    );
}

#[test]
fn sets_without_elements_have_no_elem_key() {
    let mut empty = listing(json!([]), json!([]));
    for object in empty["nftables"].as_array_mut().expect("array") {
        if let Some(set) = object.get_mut("set").and_then(Value::as_object_mut) {
            set.remove("elem");
        }
    }
    assert_eq!(parse_links(&empty).expect("parsed"), []);
}

#[test]
fn elements_that_are_not_ours_are_errors_not_silence() {
    for bad in [
        json!([{"concat": ["bct00000001", "10.240.0.3"]}]),
        json!([{"concat": ["bct00000001"]}]),
        json!([{"concat": ["bad name!", "10.240.0.2"]}]),
        json!(["bct00000001"]),
    ] {
        let err = parse_links(&listing(bad.clone(), json!([]))).expect_err("bad element");
        assert!(matches!(err, FirewallError::Listing { .. }), "{bad}: {err}");
    }
}

#[test]
fn the_table_is_found_only_in_its_family() {
    let tables = |family: &str| {
        json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": family, "name": "boxcutter", "handle": 1}}
        ]})
    };
    assert!(has_table(&tables("inet")).expect("listing"));
    assert!(!has_table(&tables("ip")).expect("listing"));
    assert!(has_table(&json!({"error": 1})).is_err());
}
