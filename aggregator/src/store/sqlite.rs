//! [`SqliteStore`]: the [`Store`] on one SQLite file.
//!
//! Two connections: one writes (every insert, update and delete, serialised by a mutex), one only
//! reads (`query_only`), so API queries do not wait for ingestion: in WAL mode a reader sees the
//! last committed state without blocking the writer.
//!
//! Settings of every connection:
//! - `journal_mode = WAL`: readers and the writer do not block each other;
//! - `synchronous = FULL`: a commit is on disk when the call returns, even across a power loss.
//!   The audit log must be written before the audited answer is sent, and an event acknowledged
//!   to the broker must not be lost; NORMAL would lose the last commits on power loss (not on a
//!   process crash). The cost is one fsync per transaction, small at sighting rates;
//! - `foreign_keys = ON`: a sighting always belongs to an existing trajectory;
//! - `secure_delete = ON`: deleted rows (embeddings) are overwritten with zeros, not only unlinked;
//! - a 5 s busy timeout against other processes (the CLI creating a token while the service runs).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{Type, Value};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sightline_contract::{AgentStatus, Alert, BestShot, CameraStatus, Crowd, Sighting};
use time::OffsetDateTime;
use uuid::Uuid;

use super::migrations::{self, MIGRATIONS, MigrationError};
use super::*;

/// Rows deleted per transaction by [`Store::purge`], so ingestion is never held up for long.
const PURGE_CHUNK: i64 = 2000;

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

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // a panic while holding the lock left no transaction open (Transaction rolls back on drop)
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` with both connections idle: copies every page back into
    /// the main file and truncates the WAL to zero bytes, so old page images (deleted embeddings)
    /// do not linger in it. False when another process kept the checkpoint from completing.
    fn checkpoint_truncate(&self) -> Result<bool> {
        let w = self.writer();
        let _r = self.reader();
        let busy: i64 = w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).op("wal checkpoint")?;
        Ok(busy == 0)
    }

    fn delete_chunked(&self, op: &'static str, table: &str, column: &str, before_ms: i64) -> Result<u64> {
        let sql =
            format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)");
        let mut total = 0u64;
        loop {
            let n = self.writer().execute(&sql, params![before_ms, PURGE_CHUNK]).op(op)?;
            total += n as u64;
            if (n as i64) < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }
}

fn configure(db: &Connection) -> rusqlite::Result<()> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "foreign_keys", true)?;
    db.pragma_update(None, "secure_delete", true)?;
    db.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

// ---- conversions ---------------------------------------------------------------------------------

/// Milliseconds since the Unix epoch (floored, like the contract's truncation to milliseconds).
fn ms(t: OffsetDateTime) -> i64 {
    t.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

fn conversion(col: usize, ty: Type, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, ty, e.to_string().into())
}

fn from_ms(col: usize, v: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000).map_err(|e| conversion(col, Type::Integer, e))
}

fn get_ts(r: &Row<'_>, col: usize) -> rusqlite::Result<OffsetDateTime> {
    from_ms(col, r.get(col)?)
}

fn get_opt_ts(r: &Row<'_>, col: usize) -> rusqlite::Result<Option<OffsetDateTime>> {
    r.get::<_, Option<i64>>(col)?.map(|v| from_ms(col, v)).transpose()
}

fn get_uuid(r: &Row<'_>, col: usize) -> rusqlite::Result<Uuid> {
    let s: String = r.get(col)?;
    Uuid::parse_str(&s).map_err(|e| conversion(col, Type::Text, format!("{s:?} is not a UUID: {e}")))
}

fn get_json<T: DeserializeOwned>(r: &Row<'_>, col: usize) -> rusqlite::Result<T> {
    let s: String = r.get(col)?;
    serde_json::from_str(&s).map_err(|e| conversion(col, Type::Text, e))
}

/// A snake_case enum stored as its serde name.
fn get_enum<T: DeserializeOwned>(r: &Row<'_>, col: usize) -> rusqlite::Result<T> {
    let s: String = r.get(col)?;
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| conversion(col, Type::Text, e))
}

fn get_f32s(r: &Row<'_>, col: usize) -> rusqlite::Result<Vec<f32>> {
    let b: Vec<u8> = r.get(col)?;
    if !b.len().is_multiple_of(4) {
        return Err(conversion(col, Type::Blob, format!("embedding of {} bytes is not f32s", b.len())));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
}

fn get_pair(r: &Row<'_>, col: usize) -> rusqlite::Result<Option<[f64; 2]>> {
    Ok(match (r.get::<_, Option<f64>>(col)?, r.get::<_, Option<f64>>(col + 1)?) {
        (Some(x), Some(y)) => Some([x, y]),
        _ => None,
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("a unit enum serialises to a string, got {other:?}"),
    }
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("contract types always serialise")
}

/// Adds the operation's name to SQLite errors.
trait Op<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Op<T> for rusqlite::Result<T> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sql { op, source })
    }
}

fn invalid(what: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Invalid { what, detail: detail.into() }
}

fn check_limit(what: &'static str, limit: u32) -> Result<()> {
    if limit == 0 { Err(invalid(what, "limit must be at least 1")) } else { Ok(()) }
}

/// A WHERE clause built from optional filters, with anonymous `?` parameters in order.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Filter {
    fn add(&mut self, clause: &str, values: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.to_owned());
        self.params.extend(values);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

// ---- rows ----------------------------------------------------------------------------------------

const SIGHTING_COLUMNS: &str = "id, site, camera, track, first_seen, last_seen, best, frame_width, frame_height, \
     ground_x, ground_y, model, embedding, trajectory, distance, received_at";

fn sighting_row(r: &Row<'_>) -> rusqlite::Result<StoredSighting> {
    let track: i64 = r.get(3)?;
    let best: BestShot = get_json(r, 6)?;
    Ok(StoredSighting {
        sighting: Sighting {
            id: get_uuid(r, 0)?,
            site: r.get(1)?,
            camera: r.get(2)?,
            track: u64::try_from(track).map_err(|e| conversion(3, Type::Integer, e))?,
            first_seen: get_ts(r, 4)?,
            last_seen: get_ts(r, 5)?,
            best,
            frame_size: [r.get(7)?, r.get(8)?],
            ground: get_pair(r, 9)?,
            model: r.get(11)?,
            embedding: get_f32s(r, 12)?,
        },
        trajectory: get_uuid(r, 13)?,
        distance: r.get::<_, Option<f64>>(14)?.map(|d| d as f32),
        received_at: get_ts(r, 15)?,
    })
}

const TRAJECTORY_COLUMNS: &str = "id, site, first_seen, last_seen, sightings, cameras";

fn trajectory_row(r: &Row<'_>) -> rusqlite::Result<TrajectorySummary> {
    Ok(TrajectorySummary {
        id: get_uuid(r, 0)?,
        site: r.get(1)?,
        first_seen: get_ts(r, 2)?,
        last_seen: get_ts(r, 3)?,
        sighting_count: r.get(4)?,
        cameras: get_json(r, 5)?,
    })
}

const ALERT_COLUMNS: &str = "id, site, camera, ts, alert, state, kind, severity, zone, message, details, received_at, \
     acknowledged_by, acknowledged_at";

fn alert_row(r: &Row<'_>) -> rusqlite::Result<StoredAlert> {
    Ok(StoredAlert {
        alert: Alert {
            id: get_uuid(r, 0)?,
            site: r.get(1)?,
            camera: r.get(2)?,
            ts: get_ts(r, 3)?,
            alert: r.get(4)?,
            state: get_enum(r, 5)?,
            kind: get_enum(r, 6)?,
            severity: get_enum(r, 7)?,
            zone: r.get(8)?,
            message: r.get(9)?,
            details: r.get::<_, Option<String>>(10)?.map(|_| get_json(r, 10)).transpose()?,
        },
        received_at: get_ts(r, 11)?,
        acknowledged_by: r.get(12)?,
        acknowledged_at: get_opt_ts(r, 13)?,
    })
}

const TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at";

fn token_row(r: &Row<'_>) -> rusqlite::Result<Token> {
    Ok(Token {
        id: r.get(0)?,
        name: r.get(1)?,
        role: get_enum(r, 2)?,
        created_at: get_ts(r, 3)?,
        revoked_at: get_opt_ts(r, 4)?,
    })
}

const WATCHLIST_COLUMNS: &str = "id, name, purpose, model, embedding, created_by, created_at, expires_at";

fn watchlist_row(r: &Row<'_>) -> rusqlite::Result<WatchlistEntry> {
    Ok(WatchlistEntry {
        id: get_uuid(r, 0)?,
        name: r.get(1)?,
        purpose: r.get(2)?,
        model: r.get(3)?,
        embedding: get_f32s(r, 4)?,
        created_by: r.get(5)?,
        created_at: get_ts(r, 6)?,
        expires_at: get_ts(r, 7)?,
    })
}

/// Recomputes a trajectory's row from its sightings; deletes it (returning false) when none is left.
fn refresh_trajectory(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    let (count, first, last): (i64, Option<i64>, Option<i64>) = tx.query_row(
        "SELECT COUNT(*), MIN(first_seen), MAX(last_seen) FROM sightings WHERE trajectory = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (Some(first), Some(last)) = (first, last) else {
        tx.execute("DELETE FROM trajectories WHERE id = ?1", [id])?;
        return Ok(false);
    };
    let cameras: Vec<String> = tx
        .prepare_cached(
            "SELECT camera FROM sightings WHERE trajectory = ?1 GROUP BY camera ORDER BY MIN(first_seen), camera",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tx.execute(
        "UPDATE trajectories SET first_seen = ?2, last_seen = ?3, sightings = ?4, cameras = ?5 WHERE id = ?1",
        params![id, first, last, count, json(&cameras)],
    )?;
    Ok(true)
}

// ---- the trait -----------------------------------------------------------------------------------

impl Store for SqliteStore {
    fn seen(&self, id: Uuid) -> Result<bool> {
        self.reader()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sightings WHERE id = ?1) OR EXISTS (SELECT 1 FROM alerts WHERE id = ?1) \
                 OR EXISTS (SELECT 1 FROM crowd WHERE id = ?1)",
            )
            .and_then(|mut q| q.query_row([id.to_string()], |r| r.get(0)))
            .op("seen")
    }

    fn record_sighting(
        &self,
        s: &Sighting,
        trajectory: Uuid,
        distance: Option<f32>,
        received_at: OffsetDateTime,
    ) -> Result<bool> {
        const OP: &str = "record_sighting";
        let track = i64::try_from(s.track).map_err(|_| invalid("sighting", format!("track {} too large", s.track)))?;
        let traj = trajectory.to_string();
        let mut db = self.writer();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
        let site: Option<String> =
            tx.query_row("SELECT site FROM trajectories WHERE id = ?1", [&traj], |r| r.get(0)).optional().op(OP)?;
        match site {
            Some(site) if site != s.site => {
                return Err(invalid(
                    "sighting",
                    format!(
                        "sighting {} is from site {:?} but trajectory {traj} belongs to site {site:?}",
                        s.id, s.site
                    ),
                ));
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT INTO trajectories (id, site, first_seen, last_seen, sightings, cameras) \
                     VALUES (?1, ?2, ?3, ?4, 0, '[]')",
                    params![traj, s.site, ms(s.first_seen), ms(s.last_seen)],
                )
                .op(OP)?;
            }
        }
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO sightings ({SIGHTING_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                params![
                    s.id.to_string(),
                    s.site,
                    s.camera,
                    track,
                    ms(s.first_seen),
                    ms(s.last_seen),
                    json(&s.best),
                    s.frame_size[0],
                    s.frame_size[1],
                    s.ground.map(|g| g[0]),
                    s.ground.map(|g| g[1]),
                    s.model,
                    f32_bytes(&s.embedding),
                    traj,
                    distance.map(f64::from),
                    ms(received_at),
                ],
            )
            .op(OP)?
            == 1;
        if !inserted {
            return Ok(false); // rolled back: a trajectory created above for it is not kept
        }
        refresh_trajectory(&tx, &traj).op(OP)?;
        tx.commit().op(OP)?;
        Ok(true)
    }

    fn record_alert(&self, a: &Alert, received_at: OffsetDateTime) -> Result<bool> {
        const OP: &str = "record_alert";
        let mut db = self.writer();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
        let id = a.id.to_string();
        let inserted = tx
            .execute(
                "INSERT INTO alerts (id, site, camera, ts, alert, state, kind, severity, zone, message, details, \
                 received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING",
                params![
                    id,
                    a.site,
                    a.camera,
                    ms(a.ts),
                    a.alert,
                    enum_str(&a.state),
                    enum_str(&a.kind),
                    enum_str(&a.severity),
                    a.zone,
                    a.message,
                    a.details.as_ref().map(json),
                    ms(received_at),
                ],
            )
            .op(OP)?
            == 1;
        if inserted {
            tx.execute(
                "UPDATE alerts SET (acknowledged_by, acknowledged_at) = \
                 (SELECT acknowledged_by, acknowledged_at FROM alerts WHERE alert = ?2 AND acknowledged_at IS NOT NULL \
                  ORDER BY acknowledged_at LIMIT 1) \
                 WHERE id = ?1 AND EXISTS (SELECT 1 FROM alerts WHERE alert = ?2 AND acknowledged_at IS NOT NULL)",
                params![id, a.alert],
            )
            .op(OP)?;
            tx.commit().op(OP)?;
        }
        Ok(inserted)
    }

    fn record_crowd(&self, c: &Crowd, received_at: OffsetDateTime) -> Result<bool> {
        let n = self
            .writer()
            .execute(
                "INSERT INTO crowd (id, site, camera, ts, method, total, zones, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                params![
                    c.id.to_string(),
                    c.site,
                    c.camera,
                    ms(c.ts),
                    enum_str(&c.method),
                    f64::from(c.total),
                    json(&c.zones),
                    ms(received_at),
                ],
            )
            .op("record_crowd")?;
        Ok(n == 1)
    }

    fn record_camera_status(&self, s: &CameraStatus, received_at: OffsetDateTime) -> Result<bool> {
        let n = self
            .writer()
            .execute(
                "INSERT INTO cameras (site, id, status, status_ts, status_received_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (site, id) DO UPDATE SET status = excluded.status, status_ts = excluded.status_ts, \
                 status_received_at = excluded.status_received_at \
                 WHERE cameras.status_ts IS NULL OR excluded.status_ts >= cameras.status_ts",
                params![s.site, s.camera, json(s), ms(s.ts), ms(received_at)],
            )
            .op("record_camera_status")?;
        Ok(n == 1)
    }

    fn record_agent_status(&self, s: &AgentStatus, received_at: OffsetDateTime) -> Result<bool> {
        let n = self
            .writer()
            .execute(
                "INSERT INTO agents (site, id, status, status_ts, status_received_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (site, id) DO UPDATE SET status = excluded.status, status_ts = excluded.status_ts, \
                 status_received_at = excluded.status_received_at",
                params![s.site, s.agent, json(s), ms(s.ts), ms(received_at)],
            )
            .op("record_agent_status")?;
        Ok(n == 1)
    }

    fn put_camera(&self, site: &str, camera: &str, position: Option<[f64; 2]>) -> Result<()> {
        self.writer()
            .execute(
                "INSERT INTO cameras (site, id, position_x, position_y) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (site, id) DO UPDATE SET position_x = excluded.position_x, position_y = excluded.position_y",
                params![site, camera, position.map(|p| p[0]), position.map(|p| p[1])],
            )
            .op("put_camera")?;
        Ok(())
    }

    fn acknowledge_alert(&self, alert: &str, by: &str, at: OffsetDateTime) -> Result<Acknowledged> {
        const OP: &str = "acknowledge_alert";
        let mut db = self.writer();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
        let events: i64 = tx.query_row("SELECT COUNT(*) FROM alerts WHERE alert = ?1", [alert], |r| r.get(0)).op(OP)?;
        if events == 0 {
            return Ok(Acknowledged::NotFound);
        }
        let earlier: Option<(String, i64)> = tx
            .query_row(
                "SELECT acknowledged_by, acknowledged_at FROM alerts WHERE alert = ?1 AND acknowledged_at IS NOT NULL \
                 ORDER BY acknowledged_at LIMIT 1",
                [alert],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .op(OP)?;
        let (who, when, outcome) = match earlier {
            Some((who, when)) => {
                let at = from_ms(1, when).op(OP)?;
                (who.clone(), when, Acknowledged::Already { by: who, at })
            }
            None => (by.to_owned(), ms(at), Acknowledged::Now),
        };
        tx.execute(
            "UPDATE alerts SET acknowledged_by = ?2, acknowledged_at = ?3 WHERE alert = ?1 AND acknowledged_at IS NULL",
            params![alert, who, when],
        )
        .op(OP)?;
        tx.commit().op(OP)?;
        Ok(outcome)
    }

    fn cameras(&self) -> Result<Vec<CameraRecord>> {
        let db = self.reader();
        let mut q = db
            .prepare_cached(
                "SELECT site, id, position_x, position_y, status, status_received_at FROM cameras ORDER BY site, id",
            )
            .op("cameras")?;
        q.query_map([], |r| {
            Ok(CameraRecord {
                site: r.get(0)?,
                camera: r.get(1)?,
                position: get_pair(r, 2)?,
                status: r.get::<_, Option<String>>(4)?.map(|_| get_json(r, 4)).transpose()?,
                status_received_at: get_opt_ts(r, 5)?,
            })
        })
        .and_then(|rows| rows.collect())
        .op("cameras")
    }

    fn agents(&self) -> Result<Vec<AgentRecord>> {
        let db = self.reader();
        let mut q =
            db.prepare_cached("SELECT status, status_received_at FROM agents ORDER BY site, id").op("agents")?;
        q.query_map([], |r| Ok(AgentRecord { status: get_json(r, 0)?, received_at: get_ts(r, 1)? }))
            .and_then(|rows| rows.collect())
            .op("agents")
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<StoredAlert>> {
        check_limit("alert query", q.limit)?;
        let mut f = Filter::default();
        if let Some(t) = q.since {
            f.add("ts >= ?", [Value::Integer(ms(t))]);
        }
        if let Some(t) = q.until {
            f.add("ts < ?", [Value::Integer(ms(t))]);
        }
        if let Some(k) = q.kind {
            f.add("kind = ?", [Value::Text(enum_str(&k))]);
        }
        if let Some(s) = q.state {
            f.add("state = ?", [Value::Text(enum_str(&s))]);
        }
        if let Some(s) = &q.site {
            f.add("site = ?", [text(s)]);
        }
        if let Some(c) = &q.camera {
            f.add("camera = ?", [text(c)]);
        }
        f.params.push(Value::Integer(q.limit.into()));
        let db = self.reader();
        let mut stmt = db
            .prepare(&format!("SELECT {ALERT_COLUMNS} FROM alerts {} ORDER BY ts DESC, id DESC LIMIT ?", f.sql()))
            .op("alerts")?;
        stmt.query_map(rusqlite::params_from_iter(f.params), alert_row).and_then(|rows| rows.collect()).op("alerts")
    }

    fn alert_events(&self, alert: &str, limit: u32) -> Result<Vec<StoredAlert>> {
        check_limit("alert events", limit)?;
        let db = self.reader();
        let mut q = db
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE alert = ?1 ORDER BY ts DESC, id DESC LIMIT ?2"
            ))
            .op("alert_events")?;
        q.query_map(params![alert, limit], alert_row).and_then(|rows| rows.collect()).op("alert_events")
    }

    fn cleared_alerts(&self, alerts: &[String]) -> Result<HashSet<String>> {
        if alerts.is_empty() {
            return Ok(HashSet::new());
        }
        let db = self.reader();
        let mut q = db
            .prepare_cached(
                "SELECT DISTINCT alert FROM alerts WHERE state = 'cleared' AND alert IN (SELECT value FROM json_each(?1))",
            )
            .op("cleared_alerts")?;
        q.query_map([json(alerts)], |r| r.get(0)).and_then(|rows| rows.collect()).op("cleared_alerts")
    }

    fn open_alerts(&self, kind: AlertKind, limit: u32) -> Result<Vec<StoredAlert>> {
        check_limit("open alerts", limit)?;
        let db = self.reader();
        let cols = ALERT_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
        let mut q = db
            .prepare_cached(&format!(
                "SELECT {cols} FROM alerts a WHERE a.kind = ?1 AND a.state = 'raised' AND NOT EXISTS \
                 (SELECT 1 FROM alerts c WHERE c.alert = a.alert AND c.state = 'cleared') \
                 ORDER BY a.ts DESC, a.id DESC LIMIT ?2"
            ))
            .op("open_alerts")?;
        q.query_map(params![enum_str(&kind), limit], alert_row).and_then(|rows| rows.collect()).op("open_alerts")
    }

    fn latest_crowd(&self) -> Result<Vec<Crowd>> {
        const OP: &str = "latest_crowd";
        let db = self.reader();
        // one index probe (crowd_camera_ts) per known camera, not a scan of the measurements
        let mut q = db
            .prepare_cached(
                "SELECT c.id, c.site, c.camera, c.ts, c.method, c.total, c.zones FROM cameras k \
                 JOIN crowd c ON c.id = (SELECT id FROM crowd WHERE camera = k.id AND site = k.site \
                 ORDER BY ts DESC, id DESC LIMIT 1) ORDER BY k.site, k.id",
            )
            .op(OP)?;
        q.query_map([], |r| {
            Ok(Crowd {
                id: get_uuid(r, 0)?,
                site: r.get(1)?,
                camera: r.get(2)?,
                ts: get_ts(r, 3)?,
                method: get_enum(r, 4)?,
                total: r.get::<_, f64>(5)? as f32,
                zones: get_json(r, 6)?,
                grid: None,
            })
        })
        .and_then(|rows| rows.collect())
        .op(OP)
    }

    fn crowd_series(&self, q: &CrowdQuery) -> Result<Vec<CrowdBucket>> {
        if q.step_s == 0 {
            return Err(invalid("crowd query", "step must be at least 1 second"));
        }
        if q.until <= q.since {
            return Err(invalid("crowd query", "until must be after since"));
        }
        let step = i64::from(q.step_s) * 1000;
        // bucket start: ts floored to a multiple of the step
        let bucket = "(c.ts - ((c.ts % ?1) + ?1) % ?1)";
        let (value, from, zone_clause) = match &q.zone {
            None => ("c.total", "crowd c", ""),
            Some(_) => (
                "json_extract(j.value, '$.count')",
                "crowd c, json_each(c.zones) j",
                "AND json_extract(j.value, '$.zone') = ?5",
            ),
        };
        let sql = format!(
            "SELECT {bucket} AS b, AVG({value}), MIN({value}), MAX({value}), COUNT(*) FROM {from} \
             WHERE c.camera = ?2 AND c.ts >= ?3 AND c.ts < ?4 {zone_clause} AND (?6 IS NULL OR c.site = ?6) \
             GROUP BY b ORDER BY b"
        );
        let db = self.reader();
        let mut stmt = db.prepare(&sql).op("crowd_series")?;
        stmt.query_map(params![step, q.camera, ms(q.since), ms(q.until), q.zone, q.site], |r| {
            Ok(CrowdBucket {
                start: get_ts(r, 0)?,
                mean: r.get(1)?,
                min: r.get(2)?,
                max: r.get(3)?,
                samples: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
        .op("crowd_series")
    }

    fn trajectories(&self, q: &TrajectoryQuery) -> Result<TrajectoryPage> {
        check_limit("trajectory query", q.limit)?;
        let mut f = Filter::default();
        if let Some(s) = &q.site {
            f.add("t.site = ?", [text(s)]);
        }
        if let Some(t) = q.since {
            f.add("t.last_seen >= ?", [Value::Integer(ms(t))]);
        }
        if let Some(t) = q.until {
            f.add("t.first_seen < ?", [Value::Integer(ms(t))]);
        }
        if let Some(c) = &q.camera {
            f.add("EXISTS (SELECT 1 FROM sightings s WHERE s.trajectory = t.id AND s.camera = ?)", [text(c)]);
        }
        if let Some(c) = q.cursor {
            f.add("(t.last_seen, t.id) < (?, ?)", [Value::Integer(c.last_seen_ms), Value::Text(c.id.to_string())]);
        }
        f.params.push(Value::Integer(i64::from(q.limit) + 1));
        let db = self.reader();
        let cols = TRAJECTORY_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
        let mut stmt = db
            .prepare(&format!(
                "SELECT {cols} FROM trajectories t {} ORDER BY t.last_seen DESC, t.id DESC LIMIT ?",
                f.sql()
            ))
            .op("trajectories")?;
        let mut items: Vec<TrajectorySummary> = stmt
            .query_map(rusqlite::params_from_iter(f.params), trajectory_row)
            .and_then(|rows| rows.collect())
            .op("trajectories")?;
        let next = if items.len() > q.limit as usize {
            items.truncate(q.limit as usize);
            items.last().map(|t| Cursor { last_seen_ms: ms(t.last_seen), id: t.id })
        } else {
            None
        };
        Ok(TrajectoryPage { items, next })
    }

    fn trajectory(&self, id: Uuid) -> Result<Option<TrajectoryDetail>> {
        const OP: &str = "trajectory";
        let mut db = self.reader();
        // one read transaction: the summary and the sightings are of the same moment
        let tx = db.transaction().op(OP)?;
        let id = id.to_string();
        let Some(summary) = tx
            .query_row(&format!("SELECT {TRAJECTORY_COLUMNS} FROM trajectories WHERE id = ?1"), [&id], trajectory_row)
            .optional()
            .op(OP)?
        else {
            return Ok(None);
        };
        let sightings = tx
            .prepare_cached(
                "SELECT id, camera, first_seen, last_seen, ground_x, ground_y, distance FROM sightings \
                 WHERE trajectory = ?1 ORDER BY first_seen, id",
            )
            .and_then(|mut q| {
                q.query_map([&id], |r| {
                    Ok(TrajectoryPoint {
                        id: get_uuid(r, 0)?,
                        camera: r.get(1)?,
                        first_seen: get_ts(r, 2)?,
                        last_seen: get_ts(r, 3)?,
                        ground: get_pair(r, 4)?,
                        distance: r.get::<_, Option<f64>>(6)?.map(|d| d as f32),
                    })
                })?
                .collect()
            })
            .op(OP)?;
        Ok(Some(TrajectoryDetail { summary, sightings }))
    }

    fn sighting(&self, id: Uuid) -> Result<Option<StoredSighting>> {
        self.reader()
            .query_row(
                &format!("SELECT {SIGHTING_COLUMNS} FROM sightings WHERE id = ?1"),
                [id.to_string()],
                sighting_row,
            )
            .optional()
            .op("sighting")
    }

    fn for_each_embedding(
        &self,
        model: &str,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
        f: &mut dyn FnMut(EmbeddingRow),
    ) -> Result<u64> {
        const OP: &str = "embeddings";
        let db = self.reader();
        let mut stmt = db
            .prepare_cached(
                "SELECT id, trajectory, site, camera, last_seen, embedding FROM sightings \
                 WHERE model = ?1 AND (?2 IS NULL OR last_seen >= ?2) AND (?3 IS NULL OR last_seen < ?3) \
                 ORDER BY last_seen",
            )
            .op(OP)?;
        let mut rows = stmt.query(params![model, since.map(ms), until.map(ms)]).op(OP)?;
        let mut n = 0;
        while let Some(r) = rows.next().op(OP)? {
            let row = (|| {
                Ok::<_, rusqlite::Error>(EmbeddingRow {
                    sighting: get_uuid(r, 0)?,
                    trajectory: get_uuid(r, 1)?,
                    site: r.get(2)?,
                    camera: r.get(3)?,
                    last_seen: get_ts(r, 4)?,
                    embedding: get_f32s(r, 5)?,
                })
            })()
            .op(OP)?;
            f(row);
            n += 1;
        }
        Ok(n)
    }

    fn sightings_for_replay(&self, since: OffsetDateTime) -> Result<Vec<StoredSighting>> {
        let db = self.reader();
        let mut stmt = db
            .prepare_cached(&format!(
                "SELECT {SIGHTING_COLUMNS} FROM sightings WHERE last_seen >= ?1 ORDER BY first_seen, id"
            ))
            .op("sightings_for_replay")?;
        stmt.query_map([ms(since)], sighting_row).and_then(|rows| rows.collect()).op("sightings_for_replay")
    }

    fn create_token(&self, name: &str, role: Role, hash: &str, at: OffsetDateTime) -> Result<Token> {
        const OP: &str = "create_token";
        if name.trim().is_empty() {
            return Err(invalid("token", "the name is empty"));
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("token", "the hash must be a SHA-256 in lowercase hex (64 digits)"));
        }
        let mut db = self.writer();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
        let taken: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)", [name], |r| r.get(0)).op(OP)?;
        if taken {
            return Err(StoreError::TokenNameTaken(name.to_owned()));
        }
        let clash: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE hash = ?1)", [hash], |r| r.get(0)).op(OP)?;
        if clash {
            return Err(invalid("token", "another token has the same hash (the same secret)"));
        }
        tx.execute(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), hash, ms(at)],
        )
        .op(OP)?;
        let id = tx.last_insert_rowid();
        let token =
            tx.query_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"), [id], token_row).op(OP)?;
        tx.commit().op(OP)?;
        Ok(token)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        self.reader()
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"))
            .and_then(|mut q| q.query_row([hash], token_row).optional())
            .op("token_by_hash")
    }

    fn revoke_token(&self, name: &str, at: OffsetDateTime) -> Result<bool> {
        const OP: &str = "revoke_token";
        let mut db = self.writer();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
        let revoked: Option<Option<i64>> =
            tx.query_row("SELECT revoked_at FROM tokens WHERE name = ?1", [name], |r| r.get(0)).optional().op(OP)?;
        match revoked {
            None => Err(StoreError::NotFound { what: "token", key: name.to_owned() }),
            Some(Some(_)) => Ok(false),
            Some(None) => {
                tx.execute("UPDATE tokens SET revoked_at = ?2 WHERE name = ?1", params![name, ms(at)]).op(OP)?;
                tx.commit().op(OP)?;
                Ok(true)
            }
        }
    }

    fn list_tokens(&self) -> Result<Vec<Token>> {
        let db = self.reader();
        let mut q = db.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id")).op("list_tokens")?;
        q.query_map([], token_row).and_then(|rows| rows.collect()).op("list_tokens")
    }

    fn audit(&self, e: &AuditEntry) -> Result<i64> {
        let db = self.writer();
        db.execute(
            "INSERT INTO audit (ts, token, role, action, purpose, query, results) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![ms(e.ts), e.token, e.role.as_str(), e.action.as_str(), e.purpose, json(&e.query), e.results],
        )
        .op("audit")?;
        Ok(db.last_insert_rowid())
    }

    fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        check_limit("audit query", q.limit)?;
        let mut f = Filter::default();
        if let Some(t) = q.since {
            f.add("ts >= ?", [Value::Integer(ms(t))]);
        }
        if let Some(t) = q.until {
            f.add("ts < ?", [Value::Integer(ms(t))]);
        }
        if let Some(t) = &q.token {
            f.add("token = ?", [text(t)]);
        }
        if let Some(s) = q.after_seq {
            f.add("seq > ?", [Value::Integer(s)]);
        }
        f.params.push(Value::Integer(q.limit.into()));
        let db = self.reader();
        let mut stmt = db
            .prepare(&format!(
                "SELECT seq, ts, token, role, action, purpose, query, results FROM audit {} ORDER BY seq LIMIT ?",
                f.sql()
            ))
            .op("audit_log")?;
        stmt.query_map(rusqlite::params_from_iter(f.params), |r| {
            let action: String = r.get(4)?;
            Ok(AuditRecord {
                seq: r.get(0)?,
                entry: AuditEntry {
                    ts: get_ts(r, 1)?,
                    token: r.get(2)?,
                    role: get_enum(r, 3)?,
                    action: action.parse().map_err(|e: String| conversion(4, Type::Text, e))?,
                    purpose: r.get(5)?,
                    query: get_json(r, 6)?,
                    results: r.get(7)?,
                },
            })
        })
        .and_then(|rows| rows.collect())
        .op("audit_log")
    }

    fn watchlist_add(&self, e: &WatchlistEntry) -> Result<bool> {
        if e.purpose.trim().is_empty() {
            return Err(invalid("watchlist entry", "the purpose is empty"));
        }
        if e.embedding.is_empty() {
            return Err(invalid("watchlist entry", "the embedding is empty"));
        }
        if e.expires_at <= e.created_at {
            return Err(invalid("watchlist entry", "expires_at must be after created_at"));
        }
        let n = self
            .writer()
            .execute(
                &format!(
                    "INSERT INTO watchlist ({WATCHLIST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                params![
                    e.id.to_string(),
                    e.name,
                    e.purpose,
                    e.model,
                    f32_bytes(&e.embedding),
                    e.created_by,
                    ms(e.created_at),
                    ms(e.expires_at),
                ],
            )
            .op("watchlist_add")?;
        Ok(n == 1)
    }

    fn watchlist_active(&self, at: OffsetDateTime) -> Result<Vec<WatchlistEntry>> {
        let db = self.reader();
        let mut q = db
            .prepare_cached(&format!(
                "SELECT {WATCHLIST_COLUMNS} FROM watchlist WHERE expires_at > ?1 ORDER BY created_at, id"
            ))
            .op("watchlist_active")?;
        q.query_map([ms(at)], watchlist_row).and_then(|rows| rows.collect()).op("watchlist_active")
    }

    fn watchlist_remove(&self, id: Uuid) -> Result<bool> {
        let n =
            self.writer().execute("DELETE FROM watchlist WHERE id = ?1", [id.to_string()]).op("watchlist_remove")?;
        if n == 1 {
            self.checkpoint_truncate()?;
        }
        Ok(n == 1)
    }

    fn purge(&self, now: OffsetDateTime, policy: &RetentionPolicy) -> Result<PurgeReport> {
        const OP: &str = "purge";
        policy.check()?;
        let cutoff = |days| ms(RetentionPolicy::cutoff(now, days));
        let mut report = PurgeReport::default();

        // sightings, chunk by chunk, each chunk with the trajectories it touched
        let sightings_before = cutoff(policy.sightings_days);
        let mut touched = HashSet::new();
        loop {
            let mut db = self.writer();
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
            let trajectories: Vec<String> = tx
                .prepare_cached(
                    "DELETE FROM sightings WHERE rowid IN \
                     (SELECT rowid FROM sightings WHERE last_seen < ?1 LIMIT ?2) RETURNING trajectory",
                )
                .and_then(|mut q| q.query_map(params![sightings_before, PURGE_CHUNK], |r| r.get(0))?.collect())
                .op(OP)?;
            if trajectories.is_empty() {
                break;
            }
            report.sightings += trajectories.len() as u64;
            let chunk: HashSet<String> = trajectories.into_iter().collect();
            for t in &chunk {
                refresh_trajectory(&tx, t).op(OP)?;
            }
            tx.commit().op(OP)?;
            touched.extend(chunk);
        }
        {
            let mut db = self.writer();
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
            for t in &touched {
                let exists: bool = tx
                    .query_row("SELECT EXISTS (SELECT 1 FROM trajectories WHERE id = ?1)", [t], |r| r.get(0))
                    .op(OP)?;
                if exists {
                    report.trajectories_updated += 1;
                } else {
                    report.trajectories_deleted += 1;
                }
            }
            // any trajectory without sightings, whatever left it so
            report.trajectories_deleted += tx
                .execute(
                    "DELETE FROM trajectories WHERE NOT EXISTS (SELECT 1 FROM sightings s WHERE s.trajectory = trajectories.id)",
                    [],
                )
                .op(OP)? as u64;
            tx.commit().op(OP)?;
        }

        report.alerts = self.delete_chunked(OP, "alerts", "ts", cutoff(policy.alerts_days))?;
        report.crowd = self.delete_chunked(OP, "crowd", "ts", cutoff(policy.crowd_days))?;
        report.audit = self.delete_chunked(OP, "audit", "ts", cutoff(policy.audit_days))?;
        report.watchlist = self.delete_chunked(OP, "watchlist", "expires_at", ms(now) + 1)?;

        report.oldest_sighting = {
            let db = self.writer();
            let oldest: Option<i64> = db.query_row("SELECT MIN(last_seen) FROM sightings", [], |r| r.get(0)).op(OP)?;
            oldest.map(|v| from_ms(0, v)).transpose().op(OP)?
        };
        report.wal_truncated = self.checkpoint_truncate()?;
        Ok(report)
    }

    fn compact(&self) -> Result<()> {
        self.writer().execute_batch("VACUUM").op("compact")?;
        if !self.checkpoint_truncate()? {
            return Err(StoreError::Invalid {
                what: "compaction",
                detail: "another connection kept the write-ahead log from being truncated; try again".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn milliseconds_floor() {
        let t = time::macros::datetime!(2026-11-23 08:00:01.2345 UTC);
        assert_eq!(from_ms(0, ms(t)).unwrap(), time::macros::datetime!(2026-11-23 08:00:01.234 UTC));
        let before = time::macros::datetime!(1969-12-31 23:59:59.9995 UTC);
        assert_eq!(ms(before), -1);
    }

    #[test]
    fn cursor_round_trips_and_bad_ones_are_named() {
        let c = Cursor { last_seen_ms: 1_795_000_000_123, id: Uuid::now_v7() };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        let e = "nope".parse::<Cursor>().unwrap_err().to_string();
        assert!(e.contains("invalid cursor") && e.contains("nope"), "{e}");
    }
}
