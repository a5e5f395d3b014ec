//! Boot step 3: loopback up, and the static IPv4 set-up from `boxcutter.net` on the first
//! Ethernet interface, with `/etc/resolv.conf` naming its DNS servers. A refresh
//! ([`crate::refresh`]) moves the same interface to a new set-up with [`reconfigure`].
//!
//! Links, addresses and routes go through rtnetlink in-process ([`crate::netlink`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxcutter_types::guest::GuestNet;
use nix::errno::Errno;

use crate::files;
use crate::layout::Layout;
use crate::netlink::{Netlink, NetlinkError};

/// `ARPHRD_ETHER`, the `type` of an Ethernet interface in sysfs.
const ARPHRD_ETHER: u32 = 1;

/// How long to wait for the network device to appear; virtio-net probes before we start,
/// so this only matters if the driver is slow.
const INTERFACE_WAIT: Duration = Duration::from_secs(2);

/// Configuring the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error("configure {interface}")]
    Netlink {
        /// The interface.
        interface: String,
        /// The failed request.
        #[source]
        source: NetlinkError,
    },
    /// No Ethernet interface appeared.
    #[error("no ethernet interface in {dir} after {waited_ms} ms")]
    NoInterface {
        /// The sysfs directory searched.
        dir: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },
    /// `/etc/resolv.conf` could not be written.
    #[error("write {path}")]
    Resolv {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A network interface as sysfs names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name, such as `eth0`.
    pub name: String,
    /// Its kernel index.
    pub index: u32,
}

/// Brings up loopback and, when `net` is given, configures the first Ethernet interface;
/// returns the interface configured.
pub fn configure(layout: &Layout, net: Option<&GuestNet>) -> Result<Option<Interface>, NetError> {
    let lo = Interface {
        name: "lo".into(),
        index: interface_index(&layout.sys, "lo").unwrap_or(1),
    };
    let mut netlink = Netlink::open().map_err(|e| netlink_error(&lo, e))?;
    netlink
        .link_up(lo.index)
        .map_err(|e| netlink_error(&lo, e))?;
    let Some(net) = net else {
        return Ok(None);
    };

    let interface = wait_for_interface(&layout.sys, INTERFACE_WAIT)?;
    readdress(&mut netlink, &interface, None, net)?;
    write_resolv_conf(layout, net)?;
    Ok(Some(interface))
}

/// Moves the first Ethernet interface from the set-up `old` (what boot or the last refresh
/// configured, if anything) to `new`, and rewrites `/etc/resolv.conf`; returns the
/// interface. Connections over the old address break.
pub fn reconfigure(
    layout: &Layout,
    old: Option<&GuestNet>,
    new: &GuestNet,
) -> Result<Interface, NetError> {
    let interface = wait_for_interface(&layout.sys, INTERFACE_WAIT)?;
    let mut netlink = Netlink::open().map_err(|e| netlink_error(&interface, e))?;
    readdress(&mut netlink, &interface, old, new)?;
    write_resolv_conf(layout, new)?;
    Ok(interface)
}

/// Sets `interface` up with `new`'s address and default route, first taking `old`'s
/// address away if it differs. The old address goes first: deleting a primary address
/// also deletes the secondaries of its subnet, which the new one would be if it shared
/// the subnet. The route is replaced, whether or not the old one survived the delete.
fn readdress(
    netlink: &mut Netlink,
    interface: &Interface,
    old: Option<&GuestNet>,
    new: &GuestNet,
) -> Result<(), NetError> {
    let fail = |e| netlink_error(interface, e);
    netlink.link_up(interface.index).map_err(fail)?;
    let stale = old.filter(|o| (o.address, o.prefix_len) != (new.address, new.prefix_len));
    if let Some(old) = stale {
        match netlink.address_delete(interface.index, old.address, old.prefix_len) {
            // Already gone (someone in the guest removed it): nothing to undo.
            Err(NetlinkError::Rejected {
                source: Errno::EADDRNOTAVAIL,
                ..
            }) => {}
            other => other.map_err(fail)?,
        }
    }
    netlink
        .address_replace(interface.index, new.address, new.prefix_len)
        .map_err(fail)?;
    netlink
        .default_route_replace(interface.index, new.gateway)
        .map_err(fail)
}

/// Replaces `/etc/resolv.conf` under `layout` with `net`'s DNS servers.
pub fn write_resolv_conf(layout: &Layout, net: &GuestNet) -> Result<(), NetError> {
    let resolv = layout.file("/etc/resolv.conf");
    files::replace(&resolv, render_resolv_conf(net).as_bytes(), 0o644, None).map_err(|source| {
        NetError::Resolv {
            path: resolv,
            source,
        }
    })
}

/// `/etc/resolv.conf` for `net`'s DNS servers, in order.
pub fn render_resolv_conf(net: &GuestNet) -> String {
    let mut text = String::from("# Written by boxcutter-guest from the VM's network set-up.\n");
    for server in &net.dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

/// The Ethernet interface with the lowest index that sits on a device (not a virtual
/// link), found under `sys/class/net`.
pub fn find_interface(sys: &Path) -> Option<Interface> {
    let dir = sys.join("class/net");
    let mut found: Vec<Interface> = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let link = entry.path();
            let is_ether = read_u32(&link.join("type")) == Some(ARPHRD_ETHER);
            let is_device = link.join("device").exists();
            (name != "lo" && is_ether && is_device).then_some(())?;
            Some(Interface {
                index: read_u32(&link.join("ifindex"))?,
                name,
            })
        })
        .collect();
    found.sort_by_key(|i| i.index);
    found.into_iter().next()
}

fn wait_for_interface(sys: &Path, timeout: Duration) -> Result<Interface, NetError> {
    let started = Instant::now();
    loop {
        if let Some(interface) = find_interface(sys) {
            return Ok(interface);
        }
        if started.elapsed() >= timeout {
            return Err(NetError::NoInterface {
                dir: sys.join("class/net"),
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interface_index(sys: &Path, name: &str) -> Option<u32> {
    read_u32(&sys.join("class/net").join(name).join("ifindex"))
}

fn read_u32(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn netlink_error(interface: &Interface, source: NetlinkError) -> NetError {
    NetError::Netlink {
        interface: interface.name.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_link(sys: &Path, name: &str, index: u32, kind: u32, device: bool) {
        let dir = sys.join("class/net").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
        fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        if device {
            fs::create_dir(dir.join("device")).unwrap();
        }
    }

    #[test]
    fn first_ethernet_device_is_chosen_over_loopback_and_virtual_links() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        fake_link(sys, "lo", 1, 772, false);
        fake_link(sys, "sit0", 2, 776, false);
        fake_link(sys, "dummy0", 3, ARPHRD_ETHER, false);
        fake_link(sys, "eth1", 5, ARPHRD_ETHER, true);
        fake_link(sys, "eth0", 4, ARPHRD_ETHER, true);
        let found = find_interface(sys).unwrap();
        assert_eq!(
            found,
            Interface {
                name: "eth0".into(),
                index: 4
            }
        );
        assert_eq!(interface_index(sys, "lo"), Some(1));
    }

    #[test]
    fn missing_interface_is_reported_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let err = wait_for_interface(dir.path(), Duration::from_millis(30)).unwrap_err();
        assert!(
            err.to_string().starts_with("no ethernet interface in"),
            "{err}"
        );
    }

    /// The IPv4 addresses of link `index` in the calling thread's network namespace.
    fn thread_addresses(name: &str) -> Vec<std::net::Ipv4Addr> {
        nix::ifaddrs::getifaddrs()
            .unwrap()
            .filter(|a| a.interface_name == name)
            .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
            .collect()
    }

    #[test]
    fn readdress_replaces_the_old_address_and_route_in_a_private_namespace() {
        // Documentation-only addresses (RFC 5737) on the namespace's own loopback; the
        // new address shares the old one's subnet, the case where order matters.
        let net = |address: [u8; 4], gateway: [u8; 4]| GuestNet {
            address: address.into(),
            prefix_len: 24,
            gateway: gateway.into(),
            dns: vec![],
        };
        let result = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            let lo = Interface {
                name: "lo".into(),
                index: 1,
            };
            let (old, new) = (
                net([192, 0, 2, 2], [192, 0, 2, 1]),
                net([192, 0, 2, 3], [192, 0, 2, 9]),
            );
            let mut netlink = Netlink::open().unwrap();
            readdress(&mut netlink, &lo, None, &old).unwrap();
            readdress(&mut netlink, &lo, Some(&old), &new).unwrap();
            // The old address is gone already: a second move must not fail on it.
            readdress(&mut netlink, &lo, Some(&old), &new).unwrap();
            let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
            Some((thread_addresses("lo"), routes))
        })
        .join()
        .unwrap();
        let Some((addresses, routes)) = result else {
            eprintln!("skipped: cannot create a network namespace here");
            return;
        };
        assert!(addresses.contains(&[192, 0, 2, 3].into()), "{addresses:?}");
        assert!(!addresses.contains(&[192, 0, 2, 2].into()), "{addresses:?}");
        // /proc/net/route: Iface Destination Gateway, addresses in little-endian hex.
        assert!(routes.contains("lo\t00000000\t090200C0"), "{routes}");
        assert!(!routes.contains("lo\t00000000\t010200C0"), "{routes}");
    }

    #[test]
    fn resolv_conf_lists_servers_in_order() {
        let net = GuestNet {
            address: "10.0.0.2".parse().unwrap(),
            prefix_len: 30,
            gateway: "10.0.0.1".parse().unwrap(),
            dns: vec!["10.0.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()],
        };
        let text = render_resolv_conf(&net);
        assert!(
            text.ends_with("nameserver 10.0.0.1\nnameserver 1.1.1.1\n"),
            "{text}"
        );
    }
}
