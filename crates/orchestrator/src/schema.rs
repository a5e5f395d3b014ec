//! The registry's schema as numbered migrations. `PRAGMA user_version` holds the number
//! of the last migration applied; each migration runs in its own transaction together
//! with the version bump, so a crash leaves the database at one version or the next,
//! never between. Migrations are append-only: a released one is never edited.

use rusqlite::Connection;

/// The migrations, in order; migration `n` (1-based) brings the schema to version `n`.
pub const MIGRATIONS: &[&str] = &[V1_INITIAL];

/// Users, their SSH keys, nodes, VMs and the repositories VMs may use.
///
/// `vms.subnet` is the /30's base address as an integer (`u32` of the IPv4 address), so
/// the allocator can scan a range in order; `UNIQUE` is the final guard against two VMs
/// holding one subnet. Deleting a VM row frees its subnet and its repository grants.
const V1_INITIAL: &str = "
CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    admin      INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE ssh_keys (
    fingerprint TEXT PRIMARY KEY,
    blob        TEXT NOT NULL UNIQUE,
    key_line    TEXT NOT NULL,
    user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    added_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX ssh_keys_user ON ssh_keys(user);

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('up', 'down')),
    last_seen     INTEGER,
    health        TEXT,
    registered_at INTEGER NOT NULL
) STRICT;

CREATE TABLE vms (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL REFERENCES users(name),
    node        TEXT NOT NULL REFERENCES nodes(id),
    subnet      INTEGER NOT NULL UNIQUE CHECK (subnet % 4 = 0),
    type        TEXT NOT NULL CHECK (type IN ('firecracker', 'qemu')),
    vcpus       INTEGER NOT NULL CHECK (vcpus > 0),
    ram_mib     INTEGER NOT NULL CHECK (ram_mib > 0),
    disk_bytes  INTEGER NOT NULL CHECK (disk_bytes > 0),
    mode        TEXT NOT NULL CHECK (mode IN ('normal', 'paranoid')),
    description TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL
        CHECK (state IN ('creating', 'running', 'stopped', 'destroying', 'failed')),
    host_key    TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX vms_owner ON vms(owner);
CREATE INDEX vms_node ON vms(node);

CREATE TABLE vm_repos (
    vm   TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
    repo TEXT NOT NULL,
    PRIMARY KEY (vm, repo)
) STRICT;
";

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database was written by a newer orchestrator.
    #[error("database schema version {found} is newer than this orchestrator's {known}")]
    TooNew {
        /// The database's version.
        found: usize,
        /// The newest this build knows.
        known: usize,
    },
    /// A migration failed; it was rolled back.
    #[error("migration {version} failed")]
    Failed {
        /// The migration's number.
        version: usize,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// Applies every migration the database lacks; returns the resulting version.
pub fn migrate(conn: &mut Connection) -> Result<usize, MigrateError> {
    let current = version(conn).map_err(|source| MigrateError::Failed { version: 0, source })?;
    if current > MIGRATIONS.len() {
        return Err(MigrateError::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        apply(conn, version, sql).map_err(|source| MigrateError::Failed { version, source })?;
        tracing::info!(version, "registry schema migrated");
    }
    Ok(MIGRATIONS.len())
}

/// The schema version recorded in the database.
pub fn version(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

fn apply(conn: &mut Connection, version: usize, sql: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(sql)?;
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()
}
