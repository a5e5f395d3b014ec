//! VM operations other than create and copy: list, get, start, stop, destroy, describe,
//! logs, SSH target and repository grants. Every one acts for a user and sees only what
//! that user may see (admins: everything).

use boxcutter_types::api::ErrorCode;
use boxcutter_types::orch::{SshTarget, VmInfo};
use boxcutter_types::VmState;

use crate::app::App;
use crate::db::DbError;
use crate::error::OrchError;
use crate::node_client::NodeCallError;
use crate::registry::{self, User, VmRow};

/// Longest description accepted (the node's limit).
const MAX_DESCRIPTION: usize = 1024;
/// Most console lines `logs` returns.
const MAX_LOG_LINES: usize = 10_000;

/// The VMs `user` may see, by name.
pub async fn list(app: &App, user: &User) -> Result<Vec<VmInfo>, OrchError> {
    let owner = (!user.admin).then(|| user.name.clone());
    let rows = app
        .db
        .call(move |conn| registry::vms(conn, owner.as_deref()).map_err(DbError::from))
        .await?;
    Ok(rows.iter().map(VmRow::info).collect())
}

/// One VM.
pub async fn get(app: &App, user: &User, name: &str) -> Result<VmInfo, OrchError> {
    Ok(app.visible_vm(user, name).await?.info())
}

/// Boots a stopped VM (`start`) or powers a running one off (`stop`).
pub async fn power(app: &App, user: &User, name: &str, on: bool) -> Result<VmInfo, OrchError> {
    let row = app.visible_vm(user, name).await?;
    let _guard = app.busy.claim(name)?;
    let url = app.node_url(&row.node).await?;
    let operation = if on { "start" } else { "stop" };
    let record = app
        .nodes
        .operate(&url, &row.name, operation)
        .await
        .map_err(|source| node_error(&row, source))?;
    save_state(app, &row, record.state).await?;
    tracing::info!(vm = %row.name, operation, "VM power changed");
    Ok(VmRow {
        state: record.state,
        ..row
    }
    .info())
}

/// Destroys a VM on its node and deletes its row, freeing its subnet. A VM its node does
/// not know (any more) is simply forgotten.
///
/// Limitation: a VM whose node does not answer cannot be destroyed (there is no forced
/// forget), so its row and subnet stay until the node is back.
pub async fn destroy(app: &App, user: &User, name: &str) -> Result<(), OrchError> {
    let row = app.visible_vm(user, name).await?;
    let _guard = app.busy.claim(name)?;
    let url = app.node_url(&row.node).await?;
    save_state(app, &row, VmState::Destroying).await?;
    match app.nodes.destroy(&url, &row.name).await {
        Ok(()) => {}
        Err(NodeCallError::Refused(e)) if e.code == ErrorCode::NotFound => {
            tracing::warn!(vm = %row.name, node = %row.node, "node did not know the VM");
        }
        Err(source) => {
            save_state(app, &row, row.state).await?;
            return Err(node_error(&row, source));
        }
    }
    let key = row.name.to_string();
    app.db
        .call(move |conn| registry::delete_vm(conn, &key).map_err(DbError::from))
        .await?;
    tracing::info!(vm = %row.name, node = %row.node, "VM destroyed");
    Ok(())
}

/// Sets a VM's description, on its node and in the registry.
pub async fn describe(
    app: &App,
    user: &User,
    name: &str,
    text: String,
) -> Result<VmInfo, OrchError> {
    validate_description(&text)?;
    let row = app.visible_vm(user, name).await?;
    let _guard = app.busy.claim(name)?;
    let url = app.node_url(&row.node).await?;
    app.nodes
        .describe(&url, &row.name, &text)
        .await
        .map_err(|source| node_error(&row, source))?;
    let (key, value) = (row.name.to_string(), text.clone());
    app.db
        .call(move |conn| registry::set_vm_description(conn, &key, &value).map_err(DbError::from))
        .await?;
    Ok(VmRow {
        description: text,
        ..row
    }
    .info())
}

/// The last `lines` lines of a VM's console.
pub async fn logs(app: &App, user: &User, name: &str, lines: usize) -> Result<String, OrchError> {
    let row = app.visible_vm(user, name).await?;
    let url = app.node_url(&row.node).await?;
    app.nodes
        .logs(&url, &row.name, lines.min(MAX_LOG_LINES))
        .await
        .map_err(|source| node_error(&row, source))
}

/// Where to reach a VM's SSH server.
pub async fn ssh_target(app: &App, user: &User, name: &str) -> Result<SshTarget, OrchError> {
    let row = app.visible_vm(user, name).await?;
    Ok(SshTarget {
        ip: row.subnet.guest(),
        port: 22,
        host_key: row.host_key,
    })
}

/// Records that a VM may use `repo`; returns the VM's repositories.
pub async fn add_repo(
    app: &App,
    user: &User,
    name: &str,
    repo: &str,
) -> Result<Vec<String>, OrchError> {
    let repo = normalize_repo(repo)?;
    let row = app.visible_vm(user, name).await?;
    let key = row.name.to_string();
    Ok(app
        .db
        .call(move |conn| {
            registry::add_repo(conn, &key, &repo)?;
            registry::repos(conn, &key).map_err(DbError::from)
        })
        .await?)
}

/// The repositories a VM may use.
pub async fn repos(app: &App, user: &User, name: &str) -> Result<Vec<String>, OrchError> {
    let row = app.visible_vm(user, name).await?;
    let key = row.name.to_string();
    Ok(app
        .db
        .call(move |conn| registry::repos(conn, &key).map_err(DbError::from))
        .await?)
}

/// Checks a description: one line of at most 1024 characters.
pub fn validate_description(text: &str) -> Result<(), OrchError> {
    if text.chars().count() > MAX_DESCRIPTION || text.chars().any(char::is_control) {
        return Err(OrchError::BadRequest(format!(
            "description: at most {MAX_DESCRIPTION} characters, one line"
        )));
    }
    Ok(())
}

/// `owner/repo` from `owner/repo`, `github.com/owner/repo` or
/// `https://github.com/owner/repo(.git)`.
pub fn normalize_repo(text: &str) -> Result<String, OrchError> {
    let bare = text
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("github.com/")
        .trim_end_matches('/');
    let bare = bare.strip_suffix(".git").unwrap_or(bare);
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match bare.split_once('/') {
        Some((owner, repo)) if valid_part(owner) && valid_part(repo) => Ok(bare.to_string()),
        _ => Err(OrchError::BadRequest(format!(
            "invalid repository {text:?}: use owner/repo"
        ))),
    }
}

async fn save_state(app: &App, row: &VmRow, state: VmState) -> Result<(), OrchError> {
    let key = row.name.to_string();
    Ok(app
        .db
        .call(move |conn| registry::set_vm_state(conn, &key, state, None).map_err(DbError::from))
        .await?)
}

fn node_error(row: &VmRow, source: NodeCallError) -> OrchError {
    OrchError::Node {
        node: row.node.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_normalise_to_owner_slash_repo() {
        for (input, want) in [
            ("org/repo", "org/repo"),
            ("github.com/org/repo", "org/repo"),
            ("https://github.com/org/my.repo.git", "org/my.repo"),
        ] {
            assert_eq!(normalize_repo(input).ok().as_deref(), Some(want), "{input}");
        }
        for bad in [
            "",
            "org",
            "org/",
            "/repo",
            "a/b/c",
            "org/re po",
            "org/..",
            "a;b/c",
        ] {
            assert!(normalize_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptions_are_one_short_line() {
        assert!(validate_description("a dev box").is_ok());
        assert!(validate_description("two\nlines").is_err());
        assert!(validate_description(&"x".repeat(1025)).is_err());
    }
}
