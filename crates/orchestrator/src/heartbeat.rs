//! Heartbeats and reconciliation. One task polls every registered node's `GET /v1/health`
//! (and, when it answers, `GET /v1/vms`) each interval, all nodes concurrently.
//!
//! Node states: a node is `up` once it answers; after `misses` consecutive unanswered polls
//! it is marked `down` and gets no new VMs; its next answer marks it `up` again.
//!
//! Reconciliation runs on every answered poll, so the registry converges on what the
//! nodes report even after missed events or an orchestrator restart. For each VM the
//! registry places on the node (skipping VMs with an operation in flight, or one that
//! finished after the node's list was fetched):
//! - the node knows it: the registry takes the node's state and host key;
//! - the node does not know it and the row is `creating` or `destroying` (left by an
//!   orchestrator that died mid-operation): the row is deleted, freeing its subnet;
//! - the node does not know it otherwise: the row is marked `failed` (the user sees it
//!   and can `destroy` it; the registry never silently forgets a VM someone had).
//!
//! Limitation: VMs a node has but the registry does not place there are logged once and
//! left alone (never destroyed on a guess), so such an orphan holds node capacity until
//! an operator removes it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxcutter_types::api::NodeHealth;
use boxcutter_types::orch::NodeState;
use boxcutter_types::{VmRecord, VmState};
use rusqlite::Connection;

use crate::app::{App, Busy};
use crate::db::DbError;
use crate::error::chain;
use crate::node_client::NodeCallError;
use crate::registry::{self, NodeRow};

/// The heartbeat task's memory: consecutive misses per node, orphans already reported.
#[derive(Debug, Default)]
struct Beats {
    misses: HashMap<String, u32>,
    orphans: HashSet<(String, String)>,
}

/// Polls the nodes until the task is aborted.
pub async fn run(app: Arc<App>) {
    let mut beats = Beats::default();
    let mut ticker = tokio::time::interval(app.heartbeat.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = beat(&app, &mut beats).await {
            tracing::error!(error = %chain(&e), "heartbeat round failed");
        }
        if let Err(e) = app.routes.sync(&app).await {
            tracing::error!(error = %chain(&e), "route sync failed");
        }
    }
}

/// One round: polls every node and records what each said.
async fn beat(app: &App, beats: &mut Beats) -> Result<(), DbError> {
    let nodes = app
        .db
        .call(|conn| registry::nodes(conn).map_err(DbError::from))
        .await?;
    let polls = nodes.iter().map(|node| poll(app, node));
    let answers = futures_util::future::join_all(polls).await;
    for (node, answer) in nodes.iter().zip(answers) {
        match answer {
            Ok(answer) => answered(app, beats, node, answer).await?,
            Err(error) => missed(app, beats, node, &error).await?,
        }
    }
    Ok(())
}

/// What an answering node said.
struct Answer {
    health: NodeHealth,
    vms: Vec<VmRecord>,
    fetched_at: Instant,
}

async fn poll(app: &App, node: &NodeRow) -> Result<Answer, NodeCallError> {
    let timeout = app
        .heartbeat
        .interval
        .clamp(Duration::from_secs(1), Duration::from_secs(5));
    let fetched_at = Instant::now();
    let health = app.nodes.health(&node.url, timeout).await?;
    if health.node != node.id {
        return Err(NodeCallError::BadAnswer(format!(
            "the node at {} reports id {}",
            node.url, health.node
        )));
    }
    let vms = app.nodes.list(&node.url, timeout).await?;
    Ok(Answer {
        health,
        vms,
        fetched_at,
    })
}

async fn answered(
    app: &App,
    beats: &mut Beats,
    node: &NodeRow,
    answer: Answer,
) -> Result<(), DbError> {
    beats.misses.remove(&node.id);
    if node.state == NodeState::Down {
        tracing::info!(node = %node.id, "node up");
    }
    let (id, busy) = (node.id.clone(), app.busy.clone());
    let orphans = app
        .db
        .call(move |conn| {
            registry::node_answered(conn, &id, &answer.health)?;
            reconcile(conn, &id, &answer.vms, &busy, answer.fetched_at)
        })
        .await?;
    for vm in orphans {
        if beats.orphans.insert((node.id.clone(), vm.clone())) {
            tracing::warn!(node = %node.id, vm, "node runs a VM the registry does not place there");
        }
    }
    Ok(())
}

async fn missed(
    app: &App,
    beats: &mut Beats,
    node: &NodeRow,
    error: &NodeCallError,
) -> Result<(), DbError> {
    let misses = beats.misses.entry(node.id.clone()).or_default();
    *misses += 1;
    tracing::debug!(node = %node.id, misses = *misses, error = %chain(error), "heartbeat missed");
    if *misses >= app.heartbeat.misses && node.state == NodeState::Up {
        tracing::warn!(node = %node.id, misses = *misses, error = %chain(error), "node down");
        let id = node.id.clone();
        app.db
            .call(move |conn| registry::node_down(conn, &id).map_err(DbError::from))
            .await?;
    }
    Ok(())
}

/// Brings the registry's VMs on `node` in line with the node's list (see the module
/// docs); returns the VMs the node has that the registry does not place there.
pub fn reconcile(
    conn: &Connection,
    node: &str,
    records: &[VmRecord],
    busy: &Busy,
    fetched_at: Instant,
) -> Result<Vec<String>, DbError> {
    let rows = registry::vms_on_node(conn, node)?;
    for row in &rows {
        if !busy.quiet_since(row.name.as_str(), fetched_at) {
            continue;
        }
        let name = row.name.as_str();
        match records.iter().find(|r| r.spec.name == row.name) {
            Some(record) => {
                let key = (!record.host_key.is_empty()).then_some(record.host_key.as_str());
                if record.state != row.state || key.is_some_and(|k| k != row.host_key) {
                    tracing::info!(
                        vm = name,
                        node,
                        from = row.state.as_str(),
                        to = record.state.as_str(),
                        "VM state reconciled"
                    );
                    registry::set_vm_state(conn, name, record.state, key)?;
                }
            }
            None if matches!(row.state, VmState::Creating | VmState::Destroying) => {
                tracing::warn!(
                    vm = name,
                    node,
                    state = row.state.as_str(),
                    "unfinished VM unknown to its node: row deleted"
                );
                registry::delete_vm(conn, name)?;
            }
            None if row.state != VmState::Failed => {
                tracing::warn!(vm = name, node, "VM unknown to its node: marked failed");
                registry::set_vm_state(conn, name, VmState::Failed, None)?;
            }
            None => {}
        }
    }
    let placed: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    Ok(records
        .iter()
        .map(|r| r.spec.name.to_string())
        .filter(|name| !placed.contains(name.as_str()))
        .collect())
}
