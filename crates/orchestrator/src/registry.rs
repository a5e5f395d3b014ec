//! Typed access to the registry's tables. Every function takes a connection (or a
//! transaction) and runs on the registry thread (see [`crate::db`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use boxcutter_types::api::{NodeHealth, Resources};
use boxcutter_types::guest::VmType;
use boxcutter_types::orch::{NodeInfo, NodeState, UserInfo, VmInfo};
use boxcutter_types::{ByteSize, GuestSubnet, NetMode, VmName, VmState};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::keys::PublicKey;

/// A Boxcutter user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Name (the GitHub login for imported users).
    pub name: String,
    /// Admins see and manage every VM.
    pub admin: bool,
}

/// A VM as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    /// Name.
    pub name: VmName,
    /// Owning user.
    pub owner: String,
    /// Node it lives on (or is being created on).
    pub node: String,
    /// Its /30.
    pub subnet: GuestSubnet,
    /// Hypervisor.
    pub vm_type: VmType,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM, MiB.
    pub ram_mib: u32,
    /// Disk.
    pub disk: ByteSize,
    /// Network mode.
    pub mode: NetMode,
    /// Description.
    pub description: String,
    /// State as last known.
    pub state: VmState,
    /// The guest's SSH host key.
    pub host_key: String,
    /// Unix seconds of creation.
    pub created_at: u64,
}

impl VmRow {
    /// The VM as the API shows it.
    pub fn info(&self) -> VmInfo {
        VmInfo {
            name: self.name.clone(),
            owner: self.owner.clone(),
            node: self.node.clone(),
            vm_type: self.vm_type,
            vcpus: self.vcpus,
            ram_mib: self.ram_mib,
            disk: self.disk,
            mode: self.mode,
            state: self.state,
            ip: self.subnet.guest(),
            description: self.description.clone(),
            host_key: self.host_key.clone(),
            created_at: self.created_at,
        }
    }

    /// What the VM holds on its node: CPU and RAM while it may run, its disk always
    /// (the node agent's admission rule).
    pub fn held(&self) -> Resources {
        let runs = match self.state {
            VmState::Creating | VmState::Running => true,
            VmState::Stopped | VmState::Failed | VmState::Destroying => false,
        };
        Resources {
            vcpus: if runs { self.vcpus.into() } else { 0 },
            ram_mib: if runs { self.ram_mib.into() } else { 0 },
            disk_bytes: self.disk.bytes(),
        }
    }
}

/// A node as the registry holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Id.
    pub id: String,
    /// API base URL.
    pub url: String,
    /// Up or down.
    pub state: NodeState,
    /// Unix seconds of the last answered heartbeat.
    pub last_seen: Option<u64>,
    /// The last health report.
    pub health: Option<NodeHealth>,
}

impl NodeRow {
    /// The node as the API shows it.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id.clone(),
            url: self.url.clone(),
            state: self.state,
            last_seen: self.last_seen,
            health: self.health.clone(),
        }
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `table.column` a UNIQUE or PRIMARY KEY constraint failed on, if that is the error.
pub fn unique_violation(err: &rusqlite::Error) -> Option<&str> {
    match err {
        rusqlite::Error::SqliteFailure(e, Some(message))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            message.strip_prefix("UNIQUE constraint failed: ")
        }
        _ => None,
    }
}

// ---- users and keys ----

/// The user called `name`.
pub fn user(conn: &Connection, name: &str) -> rusqlite::Result<Option<User>> {
    conn.query_row(
        "SELECT name, admin FROM users WHERE name = ?1",
        [name],
        |row| {
            Ok(User {
                name: row.get(0)?,
                admin: row.get(1)?,
            })
        },
    )
    .optional()
}

/// The user called `name` with their key count.
pub fn user_info(conn: &Connection, name: &str) -> rusqlite::Result<Option<UserInfo>> {
    conn.query_row(
        "SELECT u.name, u.admin, (SELECT count(*) FROM ssh_keys k WHERE k.user = u.name)
         FROM users u WHERE u.name = ?1",
        [name],
        |row| {
            Ok(UserInfo {
                name: row.get(0)?,
                admin: row.get(1)?,
                keys: row.get(2)?,
            })
        },
    )
    .optional()
}

/// The owner of the key whose base64 blob is `blob`.
pub fn user_by_key(conn: &Connection, blob: &str) -> rusqlite::Result<Option<UserInfo>> {
    let owner: Option<String> = conn
        .query_row("SELECT user FROM ssh_keys WHERE blob = ?1", [blob], |row| {
            row.get(0)
        })
        .optional()?;
    match owner {
        Some(name) => user_info(conn, &name),
        None => Ok(None),
    }
}

/// Creates user `name` unless it exists; makes it an admin if `admin`.
pub fn ensure_user(conn: &Connection, name: &str, admin: bool) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO users (name, admin, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET admin = max(admin, excluded.admin)",
        params![name, admin, now()],
    )?;
    Ok(())
}

/// Creates user `name`; fails with a UNIQUE violation on `users.name` if it exists.
pub fn insert_user(conn: &Connection, name: &str, admin: bool) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO users (name, admin, created_at) VALUES (?1, ?2, ?3)",
        params![name, admin, now()],
    )?;
    Ok(())
}

/// Who holds `key`, if anyone.
pub fn key_owner(conn: &Connection, key: &PublicKey) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT user FROM ssh_keys WHERE blob = ?1",
        [key.blob()],
        |row| row.get(0),
    )
    .optional()
}

/// Gives `key` to `user` (a no-op if they hold it already).
pub fn add_key(conn: &Connection, user: &str, key: &PublicKey) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ssh_keys (fingerprint, blob, key_line, user, added_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (fingerprint) DO NOTHING",
        params![key.fingerprint(), key.blob(), key.line(), user, now()],
    )?;
    Ok(())
}

/// The authorized_keys lines of `user`, oldest first.
pub fn user_keys(conn: &Connection, user: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT key_line FROM ssh_keys WHERE user = ?1 ORDER BY rowid")?;
    let rows = stmt.query_map([user], |row| row.get(0))?;
    rows.collect()
}

// ---- nodes ----

const NODE_COLUMNS: &str = "id, url, state, last_seen, health";

fn node_from_row(row: &Row) -> rusqlite::Result<NodeRow> {
    let state: String = row.get(2)?;
    let health: Option<String> = row.get(4)?;
    Ok(NodeRow {
        id: row.get(0)?,
        url: row.get(1)?,
        state: if state == "up" {
            NodeState::Up
        } else {
            NodeState::Down
        },
        last_seen: row.get(3)?,
        health: health.and_then(|json| serde_json::from_str(&json).ok()),
    })
}

/// Every node, by id.
pub fn nodes(conn: &Connection) -> rusqlite::Result<Vec<NodeRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))?;
    let rows = stmt.query_map([], node_from_row)?;
    rows.collect()
}

/// The node `id`.
pub fn node(conn: &Connection, id: &str) -> rusqlite::Result<Option<NodeRow>> {
    conn.query_row(
        &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
        [id],
        node_from_row,
    )
    .optional()
}

/// Registers node `id` at `url`, or moves a known one to `url`. A new node starts down
/// until it answers a heartbeat.
pub fn upsert_node(conn: &Connection, id: &str, url: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO nodes (id, url, state, registered_at) VALUES (?1, ?2, 'down', ?3)
         ON CONFLICT (id) DO UPDATE SET url = excluded.url",
        params![id, url, now()],
    )?;
    Ok(())
}

/// Records an answered heartbeat: the node is up, seen now, and reports `health`.
pub fn node_answered(conn: &Connection, id: &str, health: &NodeHealth) -> rusqlite::Result<()> {
    let json = serde_json::to_string(health).unwrap_or_default();
    conn.execute(
        "UPDATE nodes SET state = 'up', last_seen = ?2, health = ?3 WHERE id = ?1",
        params![id, now(), json],
    )?;
    Ok(())
}

/// Marks node `id` down.
pub fn node_down(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    conn.execute("UPDATE nodes SET state = 'down' WHERE id = ?1", [id])?;
    Ok(())
}

// ---- VMs ----

const VM_COLUMNS: &str = "name, owner, node, subnet, type, vcpus, ram_mib, disk_bytes, mode, \
                          description, state, host_key, created_at";

fn parse_column<T>(index: usize, text: &str, parsed: Option<T>) -> rusqlite::Result<T> {
    parsed.ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unexpected value {text:?}").into(),
        )
    })
}

fn vm_from_row(row: &Row) -> rusqlite::Result<VmRow> {
    let name: String = row.get(0)?;
    let subnet: u32 = row.get(3)?;
    let vm_type: String = row.get(4)?;
    let disk: u64 = row.get(7)?;
    let mode: String = row.get(8)?;
    let state: String = row.get(10)?;
    Ok(VmRow {
        name: parse_column(0, &name, VmName::new(name.clone()).ok())?,
        owner: row.get(1)?,
        node: row.get(2)?,
        subnet: parse_column(3, "subnet", GuestSubnet::new(Ipv4Addr::from(subnet)).ok())?,
        vm_type: parse_column(4, &vm_type, VmType::from_str(&vm_type).ok())?,
        vcpus: row.get(5)?,
        ram_mib: row.get(6)?,
        disk: ByteSize(disk),
        mode: parse_column(8, &mode, parse_mode(&mode))?,
        description: row.get(9)?,
        state: parse_column(10, &state, parse_state(&state))?,
        host_key: row.get(11)?,
        created_at: row.get(12)?,
    })
}

fn parse_mode(text: &str) -> Option<NetMode> {
    [NetMode::Normal, NetMode::Paranoid]
        .into_iter()
        .find(|m| m.as_str() == text)
}

fn parse_state(text: &str) -> Option<VmState> {
    use VmState::*;
    [Creating, Running, Stopped, Destroying, Failed]
        .into_iter()
        .find(|s| s.as_str() == text)
}

/// The VM `name`.
pub fn vm(conn: &Connection, name: &str) -> rusqlite::Result<Option<VmRow>> {
    conn.query_row(
        &format!("SELECT {VM_COLUMNS} FROM vms WHERE name = ?1"),
        [name],
        vm_from_row,
    )
    .optional()
}

/// Every VM of `owner` (every VM when `None`), by name.
pub fn vms(conn: &Connection, owner: Option<&str>) -> rusqlite::Result<Vec<VmRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VM_COLUMNS} FROM vms WHERE ?1 IS NULL OR owner = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([owner], vm_from_row)?;
    rows.collect()
}

/// Every VM the registry places on `node`.
pub fn vms_on_node(conn: &Connection, node: &str) -> rusqlite::Result<Vec<VmRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VM_COLUMNS} FROM vms WHERE node = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([node], vm_from_row)?;
    rows.collect()
}

/// What the registry's VMs hold, per node.
pub fn held_by_node(conn: &Connection) -> rusqlite::Result<HashMap<String, Resources>> {
    let mut held: HashMap<String, Resources> = HashMap::new();
    for vm in vms(conn, None)? {
        let sum = held.entry(vm.node.clone()).or_default();
        let add = vm.held();
        sum.vcpus += add.vcpus;
        sum.ram_mib += add.ram_mib;
        sum.disk_bytes += add.disk_bytes;
    }
    Ok(held)
}

/// Inserts a VM row.
pub fn insert_vm(conn: &Connection, vm: &VmRow) -> rusqlite::Result<()> {
    conn.execute(
        &format!("INSERT INTO vms ({VM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
        params![
            vm.name.as_str(),
            vm.owner,
            vm.node,
            u32::from(vm.subnet.base()),
            vm.vm_type.as_str(),
            vm.vcpus,
            vm.ram_mib,
            vm.disk.bytes(),
            vm.mode.as_str(),
            vm.description,
            vm.state.as_str(),
            vm.host_key,
            vm.created_at,
        ],
    )?;
    Ok(())
}

/// Sets a VM's state, and its host key when one is given.
pub fn set_vm_state(
    conn: &Connection,
    name: &str,
    state: VmState,
    host_key: Option<&str>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE vms SET state = ?2, host_key = coalesce(?3, host_key) WHERE name = ?1",
        params![name, state.as_str(), host_key],
    )?;
    Ok(())
}

/// Moves a VM's row to `node` (while a create tries candidates).
pub fn set_vm_node(conn: &Connection, name: &str, node: &str) -> rusqlite::Result<()> {
    conn.execute("UPDATE vms SET node = ?2 WHERE name = ?1", [name, node])?;
    Ok(())
}

/// Sets a VM's description.
pub fn set_vm_description(conn: &Connection, name: &str, text: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE vms SET description = ?2 WHERE name = ?1",
        [name, text],
    )?;
    Ok(())
}

/// Deletes a VM's row, freeing its subnet and repository grants.
pub fn delete_vm(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM vms WHERE name = ?1", [name])?;
    Ok(())
}

// ---- repositories ----

/// Grants VM `vm` access to `repo` (idempotent).
pub fn add_repo(conn: &Connection, vm: &str, repo: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO vm_repos (vm, repo) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        [vm, repo],
    )?;
    Ok(())
}

/// The repositories VM `vm` may use, sorted.
pub fn repos(conn: &Connection, vm: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT repo FROM vm_repos WHERE vm = ?1 ORDER BY repo")?;
    let rows = stmt.query_map([vm], |row| row.get(0))?;
    rows.collect()
}
