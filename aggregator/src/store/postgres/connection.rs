//! [`PostgresStore`]: where it connects ([`PgTarget`]), its bounded pool of blocking connections,
//! opening a database (migrating it) and the errors that name what is wrong with `store.url`.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::config::Host;
use postgres::error::SqlState;
use postgres::{Client, NoTls};

use super::schema::{self, MIGRATIONS, Migration, SchemaError};
use crate::store::{Result, StoreError};

/// How long connecting may take, and how long a call waits for a free pooled connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Connections per store: the ingest thread, the API's blocking threads and the retention job.
const POOL_SIZE: usize = 8;

/// A PostgreSQL database to connect to: the parsed `store.url` with its password, shown without
/// the password as `postgres://user@host:port/database`.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    /// Parses `url` (`postgres://user[:password]@host[:port]/database`); `password`, when given,
    /// replaces any password in the URL (`store.password_file`). The error never shows the URL,
    /// which may hold a password.
    pub fn new(url: &str, password: Option<&str>) -> Result<PgTarget> {
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(StoreError::Invalid {
                what: "store.url",
                detail: "must start with postgres:// (postgres://user@host:port/database)".into(),
            });
        }
        let mut config: postgres::Config = url.parse().map_err(|e| StoreError::Invalid {
            what: "store.url",
            detail: format!("not a PostgreSQL URL (postgres://user@host:port/database): {e}"),
        })?;
        if let Some(p) = password {
            config.password(p);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("sightline-aggregator");
        let user = config.get_user().unwrap_or("").to_owned();
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = config.get_ports().get(i).or(config.get_ports().first()).copied().unwrap_or(5432);
                match h {
                    Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(dir) => format!("{}:{port}", dir.display()),
                }
            })
            .collect();
        if hosts.is_empty() {
            return Err(StoreError::Invalid { what: "store.url", detail: "names no host".into() });
        }
        if user.is_empty() {
            return Err(StoreError::Invalid {
                what: "store.url",
                detail: "names no user (postgres://user@host/db)".into(),
            });
        }
        let db = config.get_dbname().unwrap_or(&user).to_owned();
        let shown = format!("postgres://{user}@{}/{db}", hosts.join(","));
        Ok(PgTarget { config, shown })
    }

    /// Whether a password is set (in the URL, or given).
    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// The database's name (the user's name when the URL gives none).
    pub fn database(&self) -> &str {
        self.config.get_dbname().or(self.config.get_user()).unwrap_or("")
    }

    pub(super) fn user(&self) -> &str {
        self.config.get_user().unwrap_or("")
    }

    /// This target with another database (tests make one database per test).
    pub fn with_database(&self, db: &str) -> PgTarget {
        let mut config = self.config.clone();
        config.dbname(db);
        let shown = match self.shown.rsplit_once('/') {
            Some((head, _)) => format!("{head}/{db}"),
            None => self.shown.clone(),
        };
        PgTarget { config, shown }
    }

    /// This target under another `application_name` (how a session shows in `pg_stat_activity`).
    pub fn with_application(&self, name: &str) -> PgTarget {
        let mut config = self.config.clone();
        config.application_name(name);
        PgTarget { config, shown: self.shown.clone() }
    }

    /// One connection, its failure named by `store.url`, host, port and database.
    pub fn connect(&self) -> Result<Client> {
        off_runtime(|| self.config.connect(NoTls)).map_err(|e| self.connect_error(e))
    }

    fn connect_error(&self, e: postgres::Error) -> StoreError {
        let target = self.shown.clone();
        match e.as_db_error() {
            Some(db) if *db.code() == SqlState::INVALID_PASSWORD => {
                StoreError::PgAuth { target, user: self.user().to_owned() }
            }
            Some(db) if *db.code() == SqlState::INVALID_CATALOG_NAME => {
                StoreError::PgNoDatabase { target, database: self.database().to_owned() }
            }
            Some(db) => StoreError::PgRefused { target, reason: format!("{} ({})", db.message(), db.code().code()) },
            None => {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    let text = s.to_string();
                    if !reason.contains(&text) {
                        reason = format!("{reason}: {text}");
                    }
                    source = s.source();
                }
                StoreError::PgConnect { target, reason }
            }
        }
    }
}

/// Runs blocking client code from wherever the store is called: directly on a plain thread or a
/// `spawn_blocking` thread; through `block_in_place` on a multi-threaded runtime's worker; on a
/// scoped thread from a current-thread runtime (the blocking client runs a runtime of its own,
/// which cannot start inside another).
pub(super) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|p| std::panic::resume_unwind(p)),
    }
}

/// The PostgreSQL implementation of [`Store`](crate::store::Store).
pub struct PostgresStore {
    target: PgTarget,
    pool: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Client>,
    /// Connections open, idle or lent.
    open: usize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("target", &self.target).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database of `target` and migrates it to the current schema version. A
    /// database at a newer version, or one holding tables that are not a sightline store, is
    /// refused without being changed.
    pub fn open(target: &PgTarget) -> Result<PostgresStore> {
        PostgresStore::open_with(target, MIGRATIONS)
    }

    /// [`PostgresStore::open`] migrating only up to the last of `steps` (tests of migrations).
    #[doc(hidden)]
    pub fn open_with(target: &PgTarget, steps: &[Migration]) -> Result<PostgresStore> {
        // the whole open off the runtime: a client dropped on an error must not be dropped on it
        off_runtime(|| {
            let mut client = target.connect()?;
            let shown = target.to_string();
            schema::apply(&mut client, steps).map_err(|e| match e {
                SchemaError::TooNew { found, supported } => {
                    StoreError::TooNew { path: format!("{shown} (store.url)"), found, supported }
                }
                SchemaError::Foreign { detail } => StoreError::Foreign { path: format!("{shown} (store.url)"), detail },
                SchemaError::Step { version, name, source } => {
                    StoreError::PgMigration { target: shown.clone(), version, name, source }
                }
                SchemaError::Sql(source) => StoreError::Pg { op: "reading the schema version", source },
            })?;
            Ok(PostgresStore {
                target: target.clone(),
                pool: Mutex::new(PoolState { idle: vec![client], open: 1 }),
                freed: Condvar::new(),
            })
        })
    }

    /// Where the store is.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The database's schema version.
    pub fn schema_version(&self) -> Result<u32> {
        self.with(|c| schema::version(c).map_err(|source| StoreError::Pg { op: "schema_version", source }))
    }

    /// Runs `f` with a pooled connection, off any async runtime.
    pub(super) fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| {
            let mut lent = self.get()?;
            let client = lent.client.as_mut().expect("a lent connection");
            f(client)
        })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self) -> Result<Lent<'_>> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut state = self.state();
        loop {
            while let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Lent { store: self, client: Some(client) });
            }
            if state.open < POOL_SIZE {
                state.open += 1;
                drop(state);
                return match self.target.config.connect(NoTls) {
                    Ok(client) => Ok(Lent { store: self, client: Some(client) }),
                    Err(e) => {
                        self.state().open -= 1;
                        self.freed.notify_one();
                        Err(self.target.connect_error(e))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::PgConnect {
                    target: self.target.to_string(),
                    reason: format!("all {POOL_SIZE} pooled connections stayed busy for {POOL_WAIT:?}"),
                });
            }
            state = self.freed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // closing a blocking client runs its own runtime: not on an async one
        let idle = std::mem::take(&mut self.state().idle);
        off_runtime(move || drop(idle));
    }
}

/// A connection lent by the pool; returned to it on drop (closed ones, and ones lent to a call
/// that panicked, are dropped: a transaction may be half done on them).
struct Lent<'a> {
    store: &'a PostgresStore,
    client: Option<Client>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let mut state = self.store.state();
        if client.is_closed() || std::thread::panicking() {
            state.open -= 1;
            drop(state);
            drop(client);
        } else {
            state.idle.push(client);
        }
        self.store.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_shown_without_their_password() {
        let t = PgTarget::new("postgres://agg:s3cret@db.example:5433/sightline", None).unwrap();
        assert_eq!(t.to_string(), "postgres://agg@db.example:5433/sightline");
        assert_eq!(format!("{t:?}"), "postgres://agg@db.example:5433/sightline");
        assert!(t.has_password());
        assert_eq!(t.database(), "sightline");
        let t = PgTarget::new("postgresql://agg@[::1]/", Some("pw")).unwrap();
        assert_eq!(t.to_string(), "postgres://agg@[::1]:5432/agg", "the database defaults to the user's name");
        assert!(t.has_password());
        assert_eq!(t.with_database("other").to_string(), "postgres://agg@[::1]:5432/other");
        for (url, want) in [
            ("mysql://agg@db/s", "must start with postgres://"),
            ("postgres://db.example/s", "names no user"),
            ("postgres://agg@db:notaport/s", "not a PostgreSQL URL"),
        ] {
            let e = PgTarget::new(url, None).unwrap_err().to_string();
            assert!(e.contains("store.url") && e.contains(want), "{url}: {e}");
        }
    }

    /// What the blocking client does on every call: run a runtime of its own.
    fn nested_runtime() -> u32 {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async { 42 })
    }

    #[test]
    fn blocking_calls_work_from_any_thread() {
        assert_eq!(off_runtime(nested_runtime), 42);
        let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        assert_eq!(multi.block_on(async { off_runtime(nested_runtime) }), 42, "on a worker thread");
        assert_eq!(
            multi.block_on(async { tokio::task::spawn_blocking(|| off_runtime(nested_runtime)).await.unwrap() }),
            42,
            "on a blocking thread"
        );
        let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(current.block_on(async { off_runtime(nested_runtime) }), 42, "on a current-thread runtime");
    }
}
