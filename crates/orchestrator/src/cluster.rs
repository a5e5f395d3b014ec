//! Cluster-level operations: nodes, the capacity summary, users and their keys.

use std::path::Path;
use std::time::Duration;

use boxcutter_types::api::Resources;
use boxcutter_types::orch::{ClusterStatus, NodeInfo, NodeState, RegisterNode, UserInfo};
use rusqlite::Connection;

use crate::app::{App, Caller};
use crate::db::{open_connection, DbError};
use crate::error::{chain, OrchError};
use crate::keys::{fetch_keys, PublicKey};
use crate::registry::{self, unique_violation, NodeRow};
use crate::schema::migrate;

/// How long registration waits for a new node's first health report.
const REGISTER_PROBE: Duration = Duration::from_secs(3);

/// Every node, by id.
pub async fn nodes(app: &App) -> Result<Vec<NodeInfo>, OrchError> {
    let rows = app
        .db
        .call(|conn| registry::nodes(conn).map_err(DbError::from))
        .await?;
    Ok(rows.iter().map(NodeRow::info).collect())
}

/// Registers (or re-registers) a node. It is up once it answers a health probe: right
/// away if it answers now, else at its first answered heartbeat.
pub async fn register(
    app: &App,
    caller: &Caller,
    node: RegisterNode,
) -> Result<NodeInfo, OrchError> {
    if !caller.is_admin_or_cluster() {
        return Err(OrchError::Unauthorized(
            "registering a node needs an admin".into(),
        ));
    }
    validate_node(&node)?;
    let (id, url) = (node.id.clone(), node.url.clone());
    app.db
        .call(move |conn| registry::upsert_node(conn, &id, &url).map_err(DbError::from))
        .await?;
    match app.nodes.health(&node.url, REGISTER_PROBE).await {
        Ok(health) if health.node == node.id => {
            let id = node.id.clone();
            app.db
                .call(move |conn| {
                    registry::node_answered(conn, &id, &health).map_err(DbError::from)
                })
                .await?;
        }
        Ok(health) => tracing::warn!(node = %node.id, reports = %health.node,
            "registered node reports another id; it stays down"),
        Err(e) => tracing::warn!(node = %node.id, error = %chain(&e),
            "registered node does not answer yet"),
    }
    tracing::info!(node = %node.id, url = %node.url, "node registered");
    let id = node.id.clone();
    let row = app
        .db
        .call(move |conn| registry::node(conn, &id).map_err(DbError::from))
        .await?;
    row.map(|r| r.info())
        .ok_or_else(|| OrchError::Internal(format!("node {} vanished", node.id)))
}

fn validate_node(node: &RegisterNode) -> Result<(), OrchError> {
    let id_ok = boxcutter_types::VmName::new(node.id.clone()).is_ok();
    let url_ok = (node.url.starts_with("http://") || node.url.starts_with("https://"))
        && reqwest::Url::parse(&node.url).is_ok();
    match (id_ok, url_ok) {
        (true, true) => Ok(()),
        (false, _) => Err(OrchError::BadRequest(format!(
            "invalid node id {:?}: use 1-63 characters a-z, 0-9 and '-', starting with a letter",
            node.id
        ))),
        (_, false) => Err(OrchError::BadRequest(format!(
            "invalid node URL {:?}: use http://HOST:PORT",
            node.url
        ))),
    }
}

/// The capacity of the up nodes and the number of VMs the caller sees.
pub async fn status(app: &App, caller: &Caller) -> Result<ClusterStatus, OrchError> {
    let owner = match caller {
        Caller::User(user) if !user.admin => Some(user.name.clone()),
        _ => None,
    };
    let (nodes, vms) = app
        .db
        .call(move |conn| {
            let vms = registry::vms(conn, owner.as_deref())?.len() as u64;
            Ok::<_, DbError>((registry::nodes(conn)?, vms))
        })
        .await?;
    let up: Vec<&NodeRow> = nodes.iter().filter(|n| n.state == NodeState::Up).collect();
    let healths: Vec<_> = up.iter().filter_map(|n| n.health.as_ref()).collect();
    Ok(ClusterStatus {
        nodes_up: up.len() as u64,
        nodes_down: (nodes.len() - up.len()) as u64,
        totals: sum(healths.iter().map(|h| h.totals)),
        allocated: sum(healths.iter().map(|h| h.allocated)),
        free: sum(healths.iter().map(|h| h.free)),
        vms,
    })
}

fn sum(all: impl Iterator<Item = Resources>) -> Resources {
    all.fold(Resources::default(), |a, b| Resources {
        vcpus: a.vcpus + b.vcpus,
        ram_mib: a.ram_mib + b.ram_mib,
        disk_bytes: a.disk_bytes + b.disk_bytes,
    })
}

/// Imports GitHub user `login`'s public keys as a new Boxcutter user (admins only).
pub async fn add_user(app: &App, caller: &Caller, login: &str) -> Result<UserInfo, OrchError> {
    if !caller.user()?.admin {
        return Err(OrchError::Unauthorized(
            "adding users needs an admin".into(),
        ));
    }
    validate_login(login)?;
    let keys = fetch_keys(&app.http, &app.keys_url, login)
        .await
        .map_err(|e| OrchError::BadRequest(format!("cannot import {login}'s keys: {}", chain(&e))))?
        .ok_or_else(|| {
            OrchError::BadRequest(format!("no GitHub user {login} at {}", app.keys_url))
        })?;
    if keys.is_empty() {
        return Err(OrchError::BadRequest(format!(
            "GitHub user {login} has no public SSH keys"
        )));
    }
    let name = login.to_string();
    let info = app
        .db
        .call(move |conn| create_user(conn, &name, &keys))
        .await?;
    tracing::info!(user = %info.name, keys = info.keys, "user added");
    Ok(info)
}

/// GitHub's login rule: 1-39 characters, letters, digits and inner single hyphens.
fn validate_login(login: &str) -> Result<(), OrchError> {
    let ok = !login.is_empty()
        && login.len() <= 39
        && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !login.starts_with('-')
        && !login.ends_with('-')
        && !login.contains("--");
    if ok {
        Ok(())
    } else {
        Err(OrchError::BadRequest(format!(
            "invalid GitHub user name {login:?}"
        )))
    }
}

/// A local user name (`add-admin` names the admin after the invoking account): 1-39
/// ASCII letters, digits, `-`, `_` or `.`, not starting with `-` or `.`.
fn validate_user_name(name: &str) -> Result<(), OrchError> {
    let ok = !name.is_empty()
        && name.len() <= 39
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(OrchError::BadRequest(format!("invalid user name {name:?}")))
    }
}

fn create_user(
    conn: &mut Connection,
    name: &str,
    keys: &[PublicKey],
) -> Result<UserInfo, OrchError> {
    let tx = conn.transaction().map_err(DbError::from)?;
    match registry::insert_user(&tx, name, false) {
        Ok(()) => {}
        Err(e) if unique_violation(&e) == Some("users.name") => {
            return Err(OrchError::Conflict(format!("user {name} already exists")));
        }
        Err(e) => return Err(DbError::from(e).into()),
    }
    give_keys(&tx, name, keys)?;
    let info = registry::user_info(&tx, name).map_err(DbError::from)?;
    tx.commit().map_err(DbError::from)?;
    info.ok_or_else(|| OrchError::Internal(format!("user {name} vanished")))
}

/// Gives `keys` to `user`, refusing a key another user holds.
fn give_keys(conn: &Connection, user: &str, keys: &[PublicKey]) -> Result<(), OrchError> {
    for key in keys {
        match registry::key_owner(conn, key).map_err(DbError::from)? {
            Some(owner) if owner != user => {
                return Err(OrchError::Conflict(format!(
                    "key {} already belongs to user {owner}",
                    key.fingerprint()
                )));
            }
            _ => registry::add_key(conn, user, key).map_err(DbError::from)?,
        }
    }
    Ok(())
}

/// The user holding the key whose base64 blob is `blob` (sshd's `%k`).
pub async fn key_owner(app: &App, blob: &str) -> Result<UserInfo, OrchError> {
    // A `+` in an unencoded query string arrives as a space.
    let blob = blob.trim().replace(' ', "+");
    app.db
        .call(move |conn| registry::user_by_key(conn, &blob).map_err(DbError::from))
        .await?
        .ok_or_else(|| OrchError::NotFound("no user has this key".into()))
}

/// `add-admin`: makes `name` an admin holding the keys in `key_file`, creating the user if
/// needed. Idempotent; runs against the database file directly (the orchestrator may be
/// running: SQLite's locking serialises the two).
pub fn add_admin(db: &Path, name: &str, key_file: &Path) -> anyhow::Result<UserInfo> {
    use anyhow::Context;
    validate_user_name(name)?;
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("read {}", key_file.display()))?;
    let keys = crate::keys::parse_all(&text).with_context(|| format!("{}", key_file.display()))?;
    anyhow::ensure!(
        !keys.is_empty(),
        "{} holds no public key",
        key_file.display()
    );
    let mut conn = open_connection(db)?;
    migrate(&mut conn)?;
    let tx = conn.transaction()?;
    registry::ensure_user(&tx, name, true)?;
    give_keys(&tx, name, &keys)?;
    let info = registry::user_info(&tx, name)?.context("user vanished")?;
    tx.commit()?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_logins_and_local_names_follow_their_rules() {
        for ok in ["bob", "Bob-42", "a"] {
            assert!(validate_login(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-bob", "bob-", "b--b", "b_b", "a;b", &"a".repeat(40)] {
            assert!(validate_login(bad).is_err(), "{bad}");
        }
        for ok in ["root", "john_doe", "j.doe", "ci-runner"] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b", "a;b"] {
            assert!(validate_user_name(bad).is_err(), "{bad}");
        }
    }
}
