//! What every request handler and background task shares: the registry, the node client,
//! the configuration, and the set of VMs with an operation in flight.
//!
//! Ownership: the registry thread owns the database; [`Busy`] (a short `std` mutex, never
//! held across an await) owns the in-flight set; everything else is immutable.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use boxcutter_auth::ClusterSecret;

use crate::alloc::GuestRange;
use crate::db::Db;
use crate::error::OrchError;
use crate::node_client::NodeClient;
use crate::registry::{self, User, VmRow};

/// How often nodes are polled, and how many missed polls make a node down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Time between two polls of a node.
    pub interval: Duration,
    /// Consecutive unanswered polls after which a node is marked down.
    pub misses: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            misses: 3,
        }
    }
}

/// The shared state of a running orchestrator.
#[derive(Debug)]
pub struct App {
    /// The registry.
    pub db: Db,
    /// The client for node agents.
    pub nodes: NodeClient,
    /// A plain HTTP client (for fetching users' keys).
    pub http: reqwest::Client,
    /// VMs with an operation in flight.
    pub busy: Arc<Busy>,
    /// Where guest subnets come from.
    pub guest_range: GuestRange,
    /// Base URL of `<login>.keys` files.
    pub keys_url: String,
    /// Heartbeat settings.
    pub heartbeat: HeartbeatConfig,
    /// The cluster secret.
    pub secret: Arc<ClusterSecret>,
    /// Routes to guests, when this orchestrator manages them.
    pub routes: crate::routes::GuestRoutes,
}

/// Who makes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A holder of the cluster secret acting for no user (the host, sshd's key lookup).
    Cluster,
    /// A Boxcutter user.
    User(User),
}

impl Caller {
    /// The user, for user-scoped requests.
    pub fn user(&self) -> Result<&User, OrchError> {
        match self {
            Caller::User(user) => Ok(user),
            Caller::Cluster => Err(OrchError::Unauthorized(format!(
                "this request acts for a user: name one in {}",
                boxcutter_types::orch::USER_HEADER
            ))),
        }
    }

    /// Whether the caller may manage the cluster (register nodes).
    pub fn is_admin_or_cluster(&self) -> bool {
        match self {
            Caller::Cluster => true,
            Caller::User(user) => user.admin,
        }
    }
}

impl App {
    /// The VM `name` if `user` may see it; a foreign VM is as missing as an absent one.
    pub async fn visible_vm(&self, user: &User, name: &str) -> Result<VmRow, OrchError> {
        boxcutter_types::VmName::new(name).map_err(|e| OrchError::BadRequest(e.to_string()))?;
        let key = name.to_string();
        let row = self
            .db
            .call(move |conn| registry::vm(conn, &key).map_err(crate::db::DbError::from))
            .await?;
        match row {
            Some(row) if user.admin || row.owner == user.name => Ok(row),
            _ => Err(OrchError::NoSuchVm(name.into())),
        }
    }

    /// The API URL of node `id`.
    pub async fn node_url(&self, id: &str) -> Result<String, OrchError> {
        let key = id.to_string();
        let node = self
            .db
            .call(move |conn| registry::node(conn, &key).map_err(crate::db::DbError::from))
            .await?;
        node.map(|n| n.url)
            .ok_or_else(|| OrchError::Internal(format!("node {id} is not registered")))
    }
}

/// How long a finished operation keeps its VM out of reconciliation, so a node list
/// fetched before it finished cannot overwrite its result.
const SETTLE: Duration = Duration::from_secs(30);

/// VMs with an operation in flight. Holding a VM's [`BusyGuard`] gives the operation the
/// VM to itself: a second operation is refused, and reconciliation leaves the VM alone.
#[derive(Debug, Default)]
pub struct Busy {
    inner: Mutex<BusyInner>,
}

#[derive(Debug, Default)]
struct BusyInner {
    active: HashSet<String>,
    released: HashMap<String, Instant>,
}

/// A claim on one VM; released on drop.
#[derive(Debug)]
pub struct BusyGuard {
    busy: Arc<Busy>,
    name: String,
}

impl Busy {
    /// Claims `name`, or refuses if another operation holds it.
    pub fn claim(self: &Arc<Self>, name: &str) -> Result<BusyGuard, OrchError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.released.retain(|_, at| at.elapsed() < SETTLE);
        if !inner.active.insert(name.to_string()) {
            return Err(OrchError::WrongState(format!(
                "VM {name} is busy with another operation; try again"
            )));
        }
        Ok(BusyGuard {
            busy: self.clone(),
            name: name.to_string(),
        })
    }

    /// Whether nothing held `name` at or after `since`.
    pub fn quiet_since(&self, name: &str, since: Instant) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        !inner.active.contains(name) && inner.released.get(name).is_none_or(|at| *at < since)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut inner = self
            .busy
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        inner.active.remove(&self.name);
        inner.released.insert(self.name.clone(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_others_until_dropped_and_then_settles() {
        let busy = Arc::new(Busy::default());
        let before = Instant::now();
        let guard = busy.claim("a");
        assert!(guard.is_ok());
        assert!(busy.claim("a").is_err());
        assert!(!busy.quiet_since("a", before));
        assert!(busy.quiet_since("b", before));
        drop(guard);
        assert!(busy.claim("a").is_ok());
        assert!(
            !busy.quiet_since("a", before),
            "released after the list was fetched"
        );
        assert!(busy.quiet_since("a", Instant::now()));
    }
}
