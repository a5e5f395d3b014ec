//! Bridges, TAP devices, veth pairs and addresses, in the host namespace or a named one.

use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;

use boxcutter_sys::run;

use crate::{IfName, NetError, Netns};

/// An IPv4 address with its prefix length, as `ip addr` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub address: Ipv4Addr,
    /// The prefix length, 0-32.
    pub prefix_len: u8,
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// Makes sure bridge `name` exists in `ns`, is up and (if given) has `address`.
pub fn bridge_ensure(
    ns: Option<&Netns>,
    name: &IfName,
    address: Option<Ipv4Cidr>,
) -> Result<(), NetError> {
    if !link_exists(ns, name)? {
        ip(
            ns,
            &["link", "add", name.as_str(), "type", "bridge"],
            "create bridge",
            name,
        )?;
    }
    if let Some(cidr) = address {
        let cidr = cidr.to_string();
        ip(
            ns,
            &["addr", "replace", &cidr, "dev", name.as_str()],
            "address bridge",
            name,
        )?;
    }
    ip(
        ns,
        &["link", "set", name.as_str(), "up"],
        "bring bridge up",
        name,
    )
}

/// Makes sure persistent TAP device `name` exists in `ns`, is up and is enslaved to
/// `bridge` when one is given.
pub fn tap_ensure(
    ns: Option<&Netns>,
    name: &IfName,
    bridge: Option<&IfName>,
) -> Result<(), NetError> {
    if !link_exists(ns, name)? {
        ip(
            ns,
            &["tuntap", "add", "dev", name.as_str(), "mode", "tap"],
            "create tap",
            name,
        )?;
    }
    if let Some(bridge) = bridge {
        let args = ["link", "set", name.as_str(), "master", bridge.as_str()];
        ip(ns, &args, "attach tap to bridge", name)?;
    }
    ip(
        ns,
        &["link", "set", name.as_str(), "up"],
        "bring tap up",
        name,
    )
}

/// Makes sure veth pair `name` (in `ns`) / `peer` (in `peer_ns`, or in `ns` when `None`)
/// exists and both ends are up. An existing `name` is taken as the pair and only brought up.
pub fn veth_ensure(
    ns: Option<&Netns>,
    name: &IfName,
    peer_ns: Option<&Netns>,
    peer: &IfName,
) -> Result<(), NetError> {
    if !link_exists(ns, name)? {
        let mut args = vec!["link", "add", name.as_str(), "type", "veth"];
        args.extend(["peer", "name", peer.as_str()]);
        if let Some(peer_ns) = peer_ns {
            args.extend(["netns", peer_ns.name().as_str()]);
        }
        ip(ns, &args, "create veth pair", name)?;
    }
    ip(
        ns,
        &["link", "set", name.as_str(), "up"],
        "bring veth up",
        name,
    )?;
    let peer_ns = peer_ns.or(ns);
    ip(
        peer_ns,
        &["link", "set", peer.as_str(), "up"],
        "bring veth up",
        peer,
    )
}

/// Makes sure link `name` in `ns` carries `address` (other addresses are left alone).
pub fn address_ensure(
    ns: Option<&Netns>,
    name: &IfName,
    address: Ipv4Cidr,
) -> Result<(), NetError> {
    let cidr = address.to_string();
    ip(
        ns,
        &["addr", "replace", &cidr, "dev", name.as_str()],
        "add address to",
        name,
    )
}

/// Deletes a link; absent is fine.
pub fn link_delete(ns: Option<&Netns>, name: &IfName) -> Result<(), NetError> {
    if link_exists(ns, name)? {
        ip(ns, &["link", "delete", name.as_str()], "delete link", name)?;
    }
    Ok(())
}

/// True when a link of that name exists in `ns`.
pub fn link_exists(ns: Option<&Netns>, name: &IfName) -> Result<bool, NetError> {
    match ns {
        // `/sys/class/net` shows the namespace sysfs was mounted in, which is not ours when
        // we were moved into a namespace with `setns` alone; `/proc/thread-self/net` always
        // shows the calling thread's.
        None => Ok(own_links().iter().any(|l| l == name.as_str())),
        Some(ns) => Ok(ns.links()?.iter().any(|l| l == name.as_str())),
    }
}

/// Interface names of the calling thread's network namespace.
pub(crate) fn own_links() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

fn ip(ns: Option<&Netns>, args: &[&str], action: &str, name: &IfName) -> Result<(), NetError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns.name().as_str()]);
    }
    cmd.args(args);
    run(&mut cmd).map(|_| ()).map_err(|source| NetError::Ip {
        action: format!("{action} {name}"),
        source,
    })
}

/// Runs several `ip` commands in one process (`ip -batch -`), in `ns`. Each line is one
/// command built by our code from validated names and addresses.
pub(crate) fn ip_batch(ns: Option<&Netns>, lines: &[String]) -> Result<(), NetError> {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns.name().as_str()]);
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let failed = |stderr: String| NetError::Ip {
        action: format!("ip -batch ({})", lines.join("; ")),
        source: boxcutter_sys::CommandError::Failed {
            program: "ip".into(),
            status: "failed".into(),
            stderr,
        },
    };
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.join("\n").as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
