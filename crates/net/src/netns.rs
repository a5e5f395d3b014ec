//! Named network namespaces (`/run/netns/<name>`), as `ip netns` manages them.

use std::path::PathBuf;
use std::process::Command;

use boxcutter_sys::run;

use crate::{NetError, NetnsName};

/// A named network namespace. Dropping the handle does not delete it; [`Netns::delete`]
/// does, and with it every device inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: NetnsName,
}

impl Netns {
    /// Creates the namespace (if absent) with its loopback up.
    pub fn ensure(name: NetnsName) -> Result<Self, NetError> {
        let ns = Self { name };
        if !ns.path().exists() {
            ns.ip(
                &["netns", "add", ns.name.as_str()],
                "create network namespace",
            )?;
        }
        ns.ip(
            &["-n", ns.name.as_str(), "link", "set", "lo", "up"],
            "bring loopback up",
        )?;
        Ok(ns)
    }

    /// A handle on the namespace called `name`, whether or not it exists.
    pub fn from_name(name: NetnsName) -> Self {
        Self { name }
    }

    /// The namespace's name.
    pub fn name(&self) -> &NetnsName {
        &self.name
    }

    /// The bind mount that keeps it alive: what `setns` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.name.as_str())
    }

    /// Deletes the namespace and every device in it. Absent is fine.
    pub fn delete(&self) -> Result<(), NetError> {
        if !self.path().exists() {
            return Ok(());
        }
        self.ip(
            &["netns", "delete", self.name.as_str()],
            "delete network namespace",
        )
    }

    /// Names of all interfaces in the namespace.
    pub fn links(&self) -> Result<Vec<String>, NetError> {
        let out = run(Command::new("ip").args(["-n", self.name.as_str(), "-j", "link", "show"]))
            .map_err(|source| self.err("list links", source))?;
        let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(links
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect())
    }

    fn ip(&self, args: &[&str], action: &str) -> Result<(), NetError> {
        run(Command::new("ip").args(args))
            .map(|_| ())
            .map_err(|source| self.err(action, source))
    }

    fn err(&self, action: &str, source: boxcutter_sys::CommandError) -> NetError {
        NetError::Ip {
            action: format!("{action} {}", self.name),
            source,
        }
    }
}
