//! The registry's database handle. One dedicated thread owns the SQLite connection and
//! runs jobs sent to it one at a time, so no async worker ever blocks on SQLite and every
//! job sees a consistent database without further locking. Jobs are short (a few indexed
//! statements); anything slow (HTTP to nodes) happens outside them.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use crate::schema::{migrate, MigrateError};

/// How long a statement waits for another process's write lock (e.g. `add-admin`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Why the registry could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file cannot be opened or configured.
    #[error("open {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The schema cannot be brought up to date.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// A statement failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The registry thread cannot be started.
    #[error("start the registry thread")]
    Thread(#[source] std::io::Error),
    /// The registry thread is gone (a job panicked or the handle was dropped).
    #[error("the registry thread is gone")]
    Closed,
}

/// A handle to the registry thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`, then starts the
    /// thread that owns it.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || serve(conn, queue))
            .map_err(DbError::Thread)?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the registry thread and returns its result.
    pub async fn call<T, E>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(job(conn));
        });
        self.jobs.send(job).map_err(|_| E::from(DbError::Closed))?;
        answer.await.map_err(|_| E::from(DbError::Closed))?
    }
}

fn serve(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    for job in queue {
        // A panicking job drops its reply (the caller sees `Closed`) but not the thread.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!("registry job panicked");
        }
    }
}

/// Opens `path` with the registry's settings: WAL journal, synchronous commits (a
/// committed change survives power loss, not only a crash), foreign keys enforced, and a
/// busy timeout for the rare second process.
pub fn open_connection(path: &Path) -> Result<Connection, DbError> {
    let open_err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    configure(&conn).map_err(open_err)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed {mode}"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::schema::{version, MIGRATIONS};

    #[test]
    fn migrations_apply_to_an_empty_database_and_twice_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let mut conn = open_connection(&path).unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len());
        let tables = |conn: &Connection| -> Vec<String> {
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master ORDER BY type, name")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        let first = tables(&conn);
        for table in ["users", "ssh_keys", "nodes", "vms", "vm_repos"] {
            assert!(
                first.iter().any(|t| t == table),
                "{table} missing: {first:?}"
            );
        }
        conn.execute("INSERT INTO users VALUES ('ann', 1, 0)", [])
            .unwrap();
        drop(conn);

        let mut again = open_connection(&path).unwrap();
        assert_eq!(migrate(&mut again).unwrap(), MIGRATIONS.len());
        assert_eq!(tables(&again), first);
        let users: i64 = again
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(users, 1, "a second migrate touched data");
    }

    #[test]
    fn connections_use_wal_and_enforce_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("r.db")).unwrap();
        migrate(&mut conn).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let orphan = conn.execute(
            "INSERT INTO ssh_keys VALUES ('SHA256:x', 'AAAA', 'ssh-ed25519 AAAA', 'nobody', 0)",
            [],
        );
        assert!(orphan.is_err(), "a key without a user was accepted");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("r.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(MigrateError::TooNew { found: 99, .. })
        ));
    }

    #[tokio::test]
    async fn jobs_run_on_the_registry_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("r.db")).unwrap();
        let name = db
            .call(|_| Ok::<_, DbError>(std::thread::current().name().map(String::from)))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("registry"));
    }
}
