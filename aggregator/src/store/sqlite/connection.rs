//! [`SqliteStore`]: its two connections and their settings, opening a file (migrating it), and
//! the WAL checkpoint that takes deleted pages out of the write-ahead log.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use super::rows::Op;
use crate::store::migrations::{self, MIGRATIONS, MigrationError};
use crate::store::{Result, StoreError};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    write: Mutex<Connection>,
    read: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (and its directory) if needed, and migrates it
    /// to the current schema version. A file at a newer version, or an SQLite file that is not an
    /// aggregator store, is refused without being changed.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, MIGRATIONS)
    }

    /// [`SqliteStore::open`] migrating only up to the last of `steps` (tests of migrations).
    #[doc(hidden)]
    pub fn open_with(path: &Path, steps: &[migrations::Migration]) -> Result<SqliteStore> {
        let shown = path.display().to_string();
        let open_err = |source| StoreError::Open { path: shown.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // a missing directory would surface as SQLite's "unable to open database file"
            let _ = std::fs::create_dir_all(dir);
        }
        let mut write = Connection::open(path).map_err(open_err)?;
        configure(&write).map_err(open_err)?;
        migrations::apply(&mut write, steps).map_err(|e| match e {
            MigrationError::TooNew { found, supported } => StoreError::TooNew { path: shown.clone(), found, supported },
            MigrationError::Foreign { detail } => StoreError::Foreign { path: shown.clone(), detail },
            MigrationError::Step { version, name, source } => {
                StoreError::Migration { path: shown.clone(), version, name, source }
            }
            MigrationError::Sql(source) => open_err(source),
        })?;
        // after the version checks, so a refused file is left as it was
        let mode: String =
            write.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid {
                what: "database file",
                detail: format!(
                    "{shown}: cannot use WAL mode (journal_mode stays {mode:?}); is it on a network file system?"
                ),
            });
        }
        let read = Connection::open(path).map_err(open_err)?;
        configure(&read).map_err(open_err)?;
        read.pragma_update(None, "query_only", true).map_err(open_err)?;
        Ok(SqliteStore { path: path.to_owned(), write: Mutex::new(write), read: Mutex::new(read) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32> {
        migrations::version(&self.reader()).op("schema_version")
    }

    pub(super) fn writer(&self) -> MutexGuard<'_, Connection> {
        // a panic while holding the lock left no transaction open (Transaction rolls back on drop)
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn reader(&self) -> MutexGuard<'_, Connection> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` with both connections idle: copies every page back into
    /// the main file and truncates the WAL to zero bytes, so old page images (deleted embeddings)
    /// do not linger in it. False when another process kept the checkpoint from completing.
    pub(super) fn checkpoint_truncate(&self) -> Result<bool> {
        let w = self.writer();
        let _r = self.reader();
        let busy: i64 = w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).op("wal checkpoint")?;
        Ok(busy == 0)
    }
}

fn configure(db: &Connection) -> rusqlite::Result<()> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "foreign_keys", true)?;
    db.pragma_update(None, "secure_delete", true)?;
    db.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::types::Value;

    use super::*;

    #[test]
    fn connections_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.sqlite")).unwrap();
        for (db, query_only) in [(store.writer(), false), (store.reader(), true)] {
            let get = |p: &str| db.pragma_query_value(None, p, |r| r.get::<_, rusqlite::types::Value>(0)).unwrap();
            assert_eq!(get("journal_mode"), Value::Text("wal".into()));
            assert_eq!(get("synchronous"), Value::Integer(2), "FULL");
            assert_eq!(get("foreign_keys"), Value::Integer(1));
            assert_eq!(get("secure_delete"), Value::Integer(1));
            assert_eq!(get("busy_timeout"), Value::Integer(5000));
            assert_eq!(get("query_only"), Value::Integer(query_only as i64));
            assert_eq!(get("application_id"), Value::Integer(migrations::APPLICATION_ID.into()));
        }
        assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    }
}
