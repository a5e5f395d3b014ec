//! Local mode's network: a bridge on the host with the management /24, one network
//! namespace per node joined to it by a veth pair, and NAT from the management network to
//! the host's own uplink so guests (NATed once more by their node) reach the internet.
//!
//! ```text
//!  host: bridge <br> 10.239.0.1/24 ── veth ── ns <prefix>-n1: eth0 10.239.0.11/24 (node 1)
//!                                   └─ veth ── ns <prefix>-n2: eth0 10.239.0.12/24 (node 2)
//!  nft table ip <prefix>_nat: masquerade 10.239.0.0/24 leaving through anything but <br>
//! ```

use std::net::Ipv4Addr;
use std::process::Command;

use boxcutter_net::{bridge_ensure, link_delete, veth_ensure, IfName, Ipv4Cidr, Netns, NetnsName};
use boxcutter_sys::run;

/// Errors setting the local network up or down.
#[derive(Debug, thiserror::Error)]
pub enum LocalNetError {
    /// The prefix or subnet is unusable.
    #[error("invalid local network: {0}")]
    Invalid(String),
    /// A device or namespace step failed.
    #[error("{step}")]
    Net {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn net_err<E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
) -> impl FnOnce(E) -> LocalNetError {
    move |e| LocalNetError::Net {
        step,
        source: Box::new(e),
    }
}

/// The names and addresses of one local-mode network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNet {
    prefix: String,
    subnet: Ipv4Addr,
}

/// Message of the `expect`s below: every name is the validated prefix plus a few
/// characters, within the kernel's limits.
const NAME_FITS: &str = "names built from a validated prefix are valid";

impl LocalNet {
    /// A network whose names start with `prefix` (1-8 characters `a-z0-9`) on the /24 at
    /// `subnet`.
    pub fn new(prefix: &str, subnet: Ipv4Addr) -> Result<Self, LocalNetError> {
        let ok = (1..=8).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok || subnet.octets()[3] != 0 {
            return Err(LocalNetError::Invalid(format!(
                "prefix {prefix:?} / subnet {subnet}"
            )));
        }
        Ok(Self {
            prefix: prefix.into(),
            subnet,
        })
    }

    /// The management /24's base address.
    pub fn subnet(&self) -> Ipv4Addr {
        self.subnet
    }

    fn octets(&self) -> [u8; 4] {
        self.subnet.octets()
    }

    /// The host's address on the bridge (`.1`).
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Node `n`'s address (`.10 + n`, n from 1).
    pub fn node_ip(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.octets();
        Ipv4Addr::new(a, b, c, 10 + n)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> IfName {
        IfName::new(format!("{}br", self.prefix)).expect(NAME_FITS)
    }

    /// Node `n`'s namespace.
    pub fn node_ns(&self, n: u8) -> Netns {
        Netns::from_name(NetnsName::new(format!("{}-n{n}", self.prefix)).expect(NAME_FITS))
    }

    fn host_veth(&self, n: u8) -> IfName {
        IfName::new(format!("{}v{n}", self.prefix)).expect(NAME_FITS)
    }

    fn nat_table(&self) -> String {
        format!("{}_nat", self.prefix)
    }

    /// Creates the bridge, NAT and `nodes` node namespaces (idempotent).
    pub fn ensure(&self, nodes: u8) -> Result<(), LocalNetError> {
        let host = Ipv4Cidr {
            address: self.host_ip(),
            prefix_len: 24,
        };
        bridge_ensure(None, &self.bridge(), Some(host)).map_err(net_err("bridge"))?;
        self.nat_ensure()?;
        for n in 1..=nodes {
            self.node_ensure(n)?;
        }
        Ok(())
    }

    fn node_ensure(&self, n: u8) -> Result<(), LocalNetError> {
        let ns =
            Netns::ensure(self.node_ns(n).name().clone()).map_err(net_err("node namespace"))?;
        let eth0 = IfName::new("eth0").expect(NAME_FITS);
        veth_ensure(None, &self.host_veth(n), Some(&ns), &eth0).map_err(net_err("node veth"))?;
        let (veth, bridge) = (self.host_veth(n), self.bridge());
        let cmds: [&[&str]; 2] = [
            &[
                "link",
                "set",
                veth.as_str(),
                "master",
                bridge.as_str(),
                "up",
            ],
            &["-n", ns.name().as_str(), "link", "set", "eth0", "up"],
        ];
        for args in cmds {
            ip(args, "attach node")?;
        }
        let node = format!("{}/24", self.node_ip(n));
        ip(
            &[
                "-n",
                ns.name().as_str(),
                "addr",
                "replace",
                &node,
                "dev",
                "eth0",
            ],
            "address node",
        )?;
        let gw = self.host_ip().to_string();
        ip(
            &[
                "-n",
                ns.name().as_str(),
                "route",
                "replace",
                "default",
                "via",
                &gw,
            ],
            "route node",
        )
    }

    /// The NAT table: masquerade the management network out of every other interface.
    fn nat_ensure(&self) -> Result<(), LocalNetError> {
        let script = format!(
            "table ip {t} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat;\n    \
             ip saddr {s}/24 oifname != \"{br}\" masquerade\n  }}\n}}\n",
            t = self.nat_table(),
            s = self.subnet,
            br = self.bridge(),
        );
        let _ = self.nat_remove();
        let mut cmd = Command::new("nft");
        cmd.args(["-f", "-"]);
        run_with_stdin(cmd, &script).map_err(net_err("nat table"))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(net_err("enable forwarding"))
    }

    fn nat_remove(&self) -> Result<(), LocalNetError> {
        let table = self.nat_table();
        run(Command::new("nft").args(["delete", "table", "ip", &table]))
            .map(|_| ())
            .map_err(net_err("nat table"))
    }

    /// Removes everything [`LocalNet::ensure`] made, for nodes 1..=`nodes`. Absent is fine.
    pub fn remove(&self, nodes: u8) {
        for n in 1..=nodes {
            let _ = self.node_ns(n).delete();
            let _ = link_delete(None, &self.host_veth(n));
        }
        let _ = link_delete(None, &self.bridge());
        let _ = self.nat_remove();
    }
}

fn ip(args: &[&str], step: &'static str) -> Result<(), LocalNetError> {
    run(Command::new("ip").args(args))
        .map(|_| ())
        .map_err(net_err(step))
}

fn run_with_stdin(mut cmd: Command, input: &str) -> Result<(), std::io::Error> {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
