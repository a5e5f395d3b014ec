//! Routes from the orchestrator's host to guests: one `/30 via <node>` route per VM, so
//! `connect` reaches a guest on whichever node it lives. Used where the orchestrator
//! shares a network with the nodes and may change routes (local mode runs it as root on
//! the host); off by default.
//!
//! The wanted table is derived from the registry (every VM, via its node's address) and
//! applied after each heartbeat round and right after a create; routes this process
//! applied and no longer wants are deleted.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

use crate::app::App;
use crate::db::DbError;
use crate::registry;

/// The routes this orchestrator manages.
#[derive(Debug, Default)]
pub struct GuestRoutes {
    enabled: bool,
    applied: Mutex<HashMap<Ipv4Addr, Ipv4Addr>>,
}

impl GuestRoutes {
    /// Route management, on or off.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            applied: Mutex::default(),
        }
    }

    /// Brings the routing table in line with the registry.
    pub async fn sync(&self, app: &App) -> Result<(), DbError> {
        if !self.enabled {
            return Ok(());
        }
        let wanted = app
            .db
            .call(|conn| {
                let nodes = registry::nodes(conn)?;
                let via: HashMap<String, Ipv4Addr> = nodes
                    .iter()
                    .filter_map(|n| Some((n.id.clone(), node_ip(&n.url)?)))
                    .collect();
                let vms = registry::vms(conn, None)?;
                Ok::<_, DbError>(
                    vms.iter()
                        .filter_map(|vm| Some((vm.subnet.base(), *via.get(&vm.node)?)))
                        .collect::<HashMap<_, _>>(),
                )
            })
            .await?;
        let applied = self.lock().clone();
        let changes: Vec<(Ipv4Addr, Option<Ipv4Addr>)> = wanted
            .iter()
            .filter(|(subnet, via)| applied.get(subnet) != Some(via))
            .map(|(subnet, via)| (*subnet, Some(*via)))
            .chain(
                applied
                    .keys()
                    .filter(|s| !wanted.contains_key(s))
                    .map(|s| (*s, None)),
            )
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        let done = tokio::task::spawn_blocking(move || apply(&changes))
            .await
            .unwrap_or_default();
        let mut table = self.lock();
        for (subnet, via) in done {
            match via {
                Some(via) => table.insert(subnet, via),
                None => table.remove(&subnet),
            };
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, Ipv4Addr>> {
        // Every critical section is one map operation: a poisoned map is still whole.
        self.applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Applies route changes with `ip`; returns the ones that took effect.
fn apply(changes: &[(Ipv4Addr, Option<Ipv4Addr>)]) -> Vec<(Ipv4Addr, Option<Ipv4Addr>)> {
    changes
        .iter()
        .filter(|(subnet, via)| {
            let prefix = format!("{subnet}/30");
            let mut cmd = Command::new("ip");
            match via {
                Some(via) => cmd.args(["route", "replace", &prefix, "via", &via.to_string()]),
                None => cmd.args(["route", "del", &prefix]),
            };
            match boxcutter_sys::run(&mut cmd) {
                Ok(_) => true,
                Err(error) => {
                    tracing::warn!(%subnet, %error, "cannot change the route to a guest");
                    false
                }
            }
        })
        .copied()
        .collect()
}

/// The IPv4 address in a node's API URL (`http://10.0.0.2:8800` → 10.0.0.2).
fn node_ip(url: &str) -> Option<Ipv4Addr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let host = rest.split(['/', ':']).next()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_come_from_their_urls() {
        assert_eq!(
            node_ip("http://10.0.0.2:8800"),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(
            node_ip("https://10.0.0.3/x"),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
        assert_eq!(node_ip("http://node-1:8800"), None);
        assert_eq!(node_ip("10.0.0.2"), None);
    }
}
