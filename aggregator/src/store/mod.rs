//! The aggregator's storage: cameras, sightings, trajectories, alerts, crowd series, tokens, the
//! audit log and the watchlist (`docs/aggregator-storage.md`).
//!
//! [`Store`] is synchronous: every call is one short transaction (or a few, for [`Store::purge`]),
//! and the async caller runs it on a blocking thread (`tokio::task::spawn_blocking`) with the
//! store shared as `Arc<dyn Store>`. [`SqliteStore`] is the default implementation;
//! [`PostgresStore`] keeps the same data, with the same semantics, in a PostgreSQL database.
//!
//! Time is always passed in (`received_at`, `at`, `now`), never read from the system clock, so
//! behaviour is deterministic under test. Timestamps are kept at millisecond precision, like the
//! wire contract. Time windows are half-open: `since` inclusive, `until` exclusive.
//!
//! Inserts of events (sightings, alerts, crowd measurements) are idempotent on the event id and
//! return whether the event was new: edges deliver at least once.
//!
//! What is stored of a person: the sighting's metadata and its face embedding (128 floats). Never
//! a face image. [`Store::purge`] deletes sightings and their embeddings past the retention limit
//! and leaves no trace of them in the database files.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sightline_contract::{AgentStatus, Alert, AlertKind, AlertState, CameraStatus, Crowd, Sighting, ts};
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::auth::Role;

mod codec;
mod delegate;
pub mod migrations;
pub mod postgres;
mod sqlite;

pub use postgres::{PgTarget, PostgresStore};
pub use sqlite::SqliteStore;

/// A storage failure. Each names the operation or the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: cannot open: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error(
        "store {path}: schema version {found} is newer than this aggregator supports (up to {supported}); \
         run a newer aggregator, or restore a backup made by this version"
    )]
    TooNew { path: String, found: u32, supported: u32 },
    #[error("store {path}: not a sightline aggregator database: {detail}")]
    Foreign { path: String, detail: String },
    #[error("store {path}: migration to schema version {version} ({name}) failed and was rolled back: {source}")]
    Migration { path: String, version: u32, name: &'static str, source: rusqlite::Error },
    #[error("store: {op}: {source}")]
    Sql { op: &'static str, source: rusqlite::Error },
    #[error("store.url {target}: cannot connect: {reason}")]
    PgConnect { target: String, reason: String },
    #[error(
        "store.url {target}: password authentication failed for user {user:?} \
         (check store.password_file, or the user and password in store.url)"
    )]
    PgAuth { target: String, user: String },
    #[error(
        "store.url {target}: database {database:?} does not exist (create it: CREATE DATABASE {database} OWNER <user>)"
    )]
    PgNoDatabase { target: String, database: String },
    #[error("store.url {target}: the server refused the connection: {reason}")]
    PgRefused { target: String, reason: String },
    #[error(
        "store.url {target}: migration to schema version {version} ({name}) failed and was rolled back: {}",
        pg_text(.source)
    )]
    PgMigration { target: String, version: u32, name: &'static str, source: ::postgres::Error },
    #[error("store (PostgreSQL): {op}: {}", pg_text(.source))]
    Pg { op: &'static str, source: ::postgres::Error },
    #[error("store.password_file {path}: {reason}")]
    PgPasswordFile { path: String, reason: String },
    #[error(
        "store: {detail}: this database holds another tree of sites, written by another aggregator's config \
         (aggregators sharing a database need the same [[site]] tree; after changing it on purpose, run \
         `aggregator sites apply --config FILE` once, then restart the others with the same tree)"
    )]
    SiteTree { detail: String },
    #[error("store: {what} {key:?} not found")]
    NotFound { what: &'static str, key: String },
    #[error("store: token name {0:?} is already taken (names are never reused, even after revocation)")]
    TokenNameTaken(String),
    #[error("store: invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("store: corrupt {what} in the database: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl StoreError {
    /// Whether retrying the same call later may succeed: the database is unreachable, restarting,
    /// busy or out of space, as opposed to a call it refuses whatever the time (bad input, a
    /// constraint, a corrupt row, a configuration error).
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode;
        match self {
            StoreError::PgConnect { .. } | StoreError::PgRefused { .. } => true,
            StoreError::Pg { source, .. } => match source.code() {
                // no SQLSTATE: the connection broke (I/O, closed, timed out)
                None => true,
                Some(code) => {
                    let class = &code.code()[..2];
                    // connection exception, insufficient resources, operator intervention (a
                    // restart), serialization failure or deadlock
                    matches!(class, "08" | "53" | "57" | "40")
                }
            },
            StoreError::Sql { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::DiskFull
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::CannotOpen
                        | ErrorCode::OutOfMemory
                )
            ),
            _ => false,
        }
    }
}

/// Where the store is: the backend `[store]` configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// `store.path`: an SQLite file (the default).
    Sqlite(std::path::PathBuf),
    /// `store.url`, with the file holding its password (`store.password_file`), if any.
    Postgres { url: String, password_file: Option<std::path::PathBuf> },
}

impl StoreLocation {
    /// Opens (and migrates) the store; for PostgreSQL, reads the password file first.
    pub fn open(&self) -> Result<std::sync::Arc<dyn Store>> {
        Ok(match self {
            StoreLocation::Sqlite(path) => std::sync::Arc::new(SqliteStore::open(path)?),
            StoreLocation::Postgres { url, password_file } => {
                let password = password_file.as_deref().map(read_password_file).transpose()?;
                std::sync::Arc::new(PostgresStore::open(&PgTarget::new(url, password.as_deref())?)?)
            }
        })
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            // shown without any password of the URL
            StoreLocation::Postgres { url, .. } => match PgTarget::new(url, None) {
                Ok(t) => write!(f, "{t}"),
                Err(_) => f.write_str("store.url (not a PostgreSQL URL)"),
            },
        }
    }
}

/// The password in `store.password_file`: the file's text without its final line break.
pub fn read_password_file(path: &std::path::Path) -> Result<String> {
    let err = |reason: String| StoreError::PgPasswordFile { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if password.is_empty() {
        return Err(err("it is empty (it must hold the password only)".into()));
    }
    if password.contains('\n') {
        return Err(err("it holds more than one line (it must hold the password only)".into()));
    }
    Ok(password.to_owned())
}

/// A PostgreSQL error with what the server said (its `Display` alone is "db error").
fn pg_text(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Storage of everything the aggregator keeps. Implementations are thread-safe; each call is
/// synchronous (run it on a blocking thread).
pub trait Store: Send + Sync {
    // ---- ingestion -------------------------------------------------------------------------

    /// Whether an event (sighting, alert or crowd measurement) with this id is stored.
    fn seen(&self, id: Uuid) -> Result<bool> {
        Ok(self.seen_among(&[id])?.contains(&id))
    }

    /// Those of `ids` that [`Store::seen`] would say are stored, in one call (ingest asks about a
    /// whole batch at once: one round trip to PostgreSQL instead of one per sighting).
    fn seen_among(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>>;

    /// Stores a sighting placed on `trajectory` (at embedding `distance` from it, `None` when the
    /// sighting started it) and, in the same transaction, creates or updates the trajectory's row
    /// (first/last seen, sighting count, cameras). Returns false, changing nothing, when the
    /// sighting's id is already stored. A trajectory belongs to one site.
    fn record_sighting(
        &self,
        sighting: &Sighting,
        trajectory: Uuid,
        distance: Option<f32>,
        received_at: OffsetDateTime,
    ) -> Result<bool> {
        let placed = SightingPlacement { sighting, trajectory, distance, received_at };
        Ok(self.record_sightings(std::slice::from_ref(&placed))?[0])
    }

    /// [`Store::record_sighting`] of several sightings in one transaction (group commit: one
    /// commit, one fsync, for all of them), in order: whether each was new. A sighting whose id is
    /// already stored, or earlier in `batch`, changes nothing and answers false. Any error stores
    /// none of them.
    fn record_sightings(&self, batch: &[SightingPlacement<'_>]) -> Result<Vec<bool>> {
        self.record_batch(batch, &[])
    }

    /// [`Store::record_sightings`], then, in the same transaction, each merge in order: every
    /// sighting of `from` moves to `into`, `from`'s row goes, and the merge is recorded
    /// ([`Store::merged_into`]). A merge already recorded changes nothing.
    fn record_batch(&self, batch: &[SightingPlacement<'_>], merges: &[TrajectoryMerge]) -> Result<Vec<bool>>;

    /// Stores an alert event; false when its id is already stored. An event of an alert that was
    /// already acknowledged (e.g. its clear) inherits the acknowledgement.
    fn record_alert(&self, alert: &Alert, received_at: OffsetDateTime) -> Result<bool>;

    /// Stores a crowd measurement; false when its id is already stored.
    fn record_crowd(&self, crowd: &Crowd, received_at: OffsetDateTime) -> Result<bool>;

    /// Keeps the camera's status if it is at least as recent (by `ts`) as the stored one;
    /// returns whether it was kept. Creates the camera if it is unknown.
    fn record_camera_status(&self, status: &CameraStatus, received_at: OffsetDateTime) -> Result<bool>;

    /// Keeps the agent's status: the latest *received* is the agent's state, whatever its `ts`
    /// (an agent's Last Will carries the time of its first connection, older than its own
    /// `online` statuses; the broker delivers one topic's messages in order). Returns whether it
    /// was kept (always, once stored).
    fn record_agent_status(&self, status: &AgentStatus, received_at: OffsetDateTime) -> Result<bool>;

    /// Creates a camera or sets its position (metres in the site frame, from the site config);
    /// its status is left as it is.
    fn put_camera(&self, site: &str, camera: &str, position: Option<[f64; 2]>) -> Result<()>;

    /// Records the config's tree of sites as the database's, or refuses a different one: a
    /// database shared by several aggregators holds one tree. With `replace`, the stored tree is
    /// replaced whatever it is (one aggregator's own file, or `aggregator sites apply`).
    fn claim_sites(&self, sites: &[SiteRow], replace: bool) -> Result<()>;

    /// Acknowledges every event of an alert (by its stable `alert` id). The first
    /// acknowledgement is kept.
    fn acknowledge_alert(&self, alert: &str, by: &str, at: OffsetDateTime) -> Result<Acknowledged>;

    // ---- queries for the HTTP API ------------------------------------------------------------

    /// Every camera with its position and latest status, by site and id.
    fn cameras(&self) -> Result<Vec<CameraRecord>>;

    /// Every agent's latest status, by site and id.
    fn agents(&self) -> Result<Vec<AgentRecord>>;

    /// Alert events matching `q`, newest first.
    fn alerts(&self, q: &AlertQuery) -> Result<Vec<StoredAlert>>;

    /// The events of one alert (its stable `alert` id), newest first; at most `limit`.
    fn alert_events(&self, alert: &str, limit: u32) -> Result<Vec<StoredAlert>>;

    /// Those of `alerts` (stable ids) that have a `cleared` event stored.
    fn cleared_alerts(&self, alerts: &[String]) -> Result<HashSet<String>>;

    /// The raised events of `kind` whose alert has no `cleared` event, newest first; at most
    /// `limit`.
    fn open_alerts(&self, kind: AlertKind, limit: u32) -> Result<Vec<StoredAlert>>;

    /// The latest crowd measurement (by `ts`) of every known camera that has one, by site and
    /// camera. The store keeps no density grid: `grid` is always `None` (the API adds the latest
    /// grid it holds in memory, `crate::latest::LatestCrowd`).
    fn latest_crowd(&self) -> Result<Vec<Crowd>>;

    /// A camera's crowd counts averaged in buckets of `q.step_s`; only non-empty buckets.
    fn crowd_series(&self, q: &CrowdQuery) -> Result<Vec<CrowdBucket>>;

    /// Trajectory summaries matching `q`, newest (by `last_seen`) first, one page.
    fn trajectories(&self, q: &TrajectoryQuery) -> Result<TrajectoryPage>;

    /// A trajectory and its sightings in event order; `None` when unknown.
    fn trajectory(&self, id: Uuid) -> Result<Option<TrajectoryDetail>>;

    /// The trajectory that `id` was merged into, following merges of merges to the last one;
    /// `None` when `id` was never merged.
    fn merged_into(&self, id: Uuid) -> Result<Option<Uuid>>;

    /// The merges recorded, in the order they were made ([`Store::record_batch`]).
    fn merges(&self, q: &MergeQuery) -> Result<Vec<MergeRecord>>;

    /// One sighting with the trajectory it belongs to; `None` when unknown.
    fn sighting(&self, id: Uuid) -> Result<Option<StoredSighting>> {
        Ok(self.sightings(&[id])?.into_iter().next())
    }

    /// [`Store::sighting`] of several, in one call (one round trip to PostgreSQL): those found,
    /// each once, in no particular order.
    fn sightings(&self, ids: &[Uuid]) -> Result<Vec<StoredSighting>>;

    // ---- search and restart --------------------------------------------------------------------

    /// Calls `f` for each stored embedding of `model` whose sighting's `last_seen` is in
    /// `[since, until)`, in `last_seen` order; returns how many. Used to build the in-memory search
    /// index at startup. `f` must not call the store.
    fn for_each_embedding(
        &self,
        model: &str,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
        f: &mut dyn FnMut(EmbeddingRow),
    ) -> Result<u64>;

    /// [`Store::for_each_embedding`], collected.
    fn embeddings(
        &self,
        model: &str,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> Result<Vec<EmbeddingRow>> {
        let mut rows = Vec::new();
        self.for_each_embedding(model, since, until, &mut |r| rows.push(r))?;
        Ok(rows)
    }

    /// The sightings of every trajectory seen since `since` (its `last_seen >= since`), whole, of
    /// `site` only when given, in event order (`first_seen`, then id), with their trajectories:
    /// what a correlator replays at startup, or when its node takes over a site. Whole
    /// trajectories, so that a long one is rebuilt with its true start and appearance.
    fn sightings_for_replay(&self, since: OffsetDateTime, site: Option<&str>) -> Result<Vec<StoredSighting>>;

    // ---- tokens --------------------------------------------------------------------------------

    /// Stores a new token by the hex SHA-256 of its secret (`auth::token_hash`).
    /// [`StoreError::TokenNameTaken`] when the name was ever used.
    fn create_token(
        &self,
        name: &str,
        role: Role,
        sites: Option<&[String]>,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<Token>;

    /// The **unrevoked** token with this hash.
    fn token_by_hash(&self, hash: &str) -> Result<Option<Token>>;

    /// Revokes a token by name: true if revoked now, false if it already was.
    /// [`StoreError::NotFound`] when no token has this name.
    fn revoke_token(&self, name: &str, at: OffsetDateTime) -> Result<bool>;

    /// Every token, revoked ones included, by creation.
    fn list_tokens(&self) -> Result<Vec<Token>>;

    // ---- audit ---------------------------------------------------------------------------------

    /// Appends to the audit log (durably, before the audited answer is sent); returns its `seq`.
    fn audit(&self, entry: &AuditEntry) -> Result<i64>;

    /// Audit records matching `q`, in the order they were written.
    fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>>;

    // ---- watchlist -----------------------------------------------------------------------------

    /// Adds an entry; false when its id is already there.
    fn watchlist_add(&self, entry: &WatchlistEntry) -> Result<bool>;

    /// Entries not expired at `at` (`expires_at > at`), by creation.
    fn watchlist_active(&self, at: OffsetDateTime) -> Result<Vec<WatchlistEntry>>;

    /// Deletes an entry and its embedding from the database files; false when unknown.
    fn watchlist_remove(&self, id: Uuid) -> Result<bool>;

    // ---- retention -----------------------------------------------------------------------------

    /// Deletes what is past `policy` at `now`: sightings (with their embeddings) by `last_seen`,
    /// trajectories left without sightings (the others are recomputed), alerts and crowd
    /// measurements by `ts`, audit records by `ts`, expired watchlist entries. Then takes the
    /// deleted data out of the database files as far as the backend can without rewriting them:
    /// SQLite has zeroed it already (`secure_delete`) and truncates its WAL; PostgreSQL `VACUUM`s
    /// the tables, and only [`Store::compact`] takes the deleted rows' bytes out of its files.
    fn purge(&self, now: OffsetDateTime, policy: &RetentionPolicy) -> Result<PurgeReport>;

    /// Rewrites the whole database compactly (SQLite `VACUUM`, then a WAL truncation; PostgreSQL
    /// `VACUUM FULL` of the tables `purge` deletes from): no free
    /// space is left holding bytes of deleted rows, whatever the page history. Takes time in
    /// proportion to the store's size and holds up writes meanwhile: for a quiet hour, not for
    /// every purge (see `docs/aggregator-storage.md`).
    fn compact(&self) -> Result<()>;
}

/// One site of the tree, as the store keeps it ([`Store::claim_sites`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SiteRow {
    pub id: String,
    pub parent: Option<String>,
    pub name: Option<String>,
}

/// Outcome of [`Store::acknowledge_alert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acknowledged {
    /// Acknowledged now.
    Now,
    /// It already was, by `by` at `at`; unchanged.
    Already { by: String, at: OffsetDateTime },
    /// No event with this `alert` id is stored.
    NotFound,
}

/// A camera: where it is and what it last reported.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CameraRecord {
    pub site: String,
    pub camera: String,
    /// Metres in the site frame.
    #[schema(required = true)]
    pub position: Option<[f64; 2]>,
    /// The latest status by `ts`, if any was received.
    #[schema(required = true)]
    pub status: Option<CameraStatus>,
    #[serde(with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub status_received_at: Option<OffsetDateTime>,
}

/// An agent's latest status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentRecord {
    pub status: AgentStatus,
    #[serde(with = "ts::rfc3339_ms")]
    pub received_at: OffsetDateTime,
}

/// Filters of [`Store::alerts`].
#[derive(Clone, Debug, Default)]
pub struct AlertQuery {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub kind: Option<AlertKind>,
    pub state: Option<AlertState>,
    /// Only these sites' alerts; `None`: every site (a scope's filter, `sites.rs`).
    pub sites: Option<Vec<String>>,
    pub camera: Option<String>,
    /// At least 1.
    pub limit: u32,
}

/// A stored alert event.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoredAlert {
    pub alert: Alert,
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: OffsetDateTime,
    #[schema(required = true)]
    pub acknowledged_by: Option<String>,
    #[serde(with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub acknowledged_at: Option<OffsetDateTime>,
}

/// Parameters of [`Store::crowd_series`].
#[derive(Clone, Debug)]
pub struct CrowdQuery {
    /// Only these sites' measurements; `None`: every site.
    pub sites: Option<Vec<String>>,
    pub camera: String,
    /// A zone's counts; `None`: the camera's `total`.
    pub zone: Option<String>,
    pub since: OffsetDateTime,
    pub until: OffsetDateTime,
    /// Bucket width in seconds (at least 1). Buckets are aligned to multiples of the step since
    /// the Unix epoch, so the same step gives the same buckets whatever `since` is.
    pub step_s: u32,
}

/// One bucket of a crowd series.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CrowdBucket {
    /// Start of the bucket (inclusive); it ends at `start + step`.
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub start: OffsetDateTime,
    /// Mean count of the measurements in the bucket.
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub samples: u32,
}

/// Filters and page of [`Store::trajectories`].
#[derive(Clone, Debug, Default)]
pub struct TrajectoryQuery {
    /// Only these sites' trajectories; `None`: every site.
    pub sites: Option<Vec<String>>,
    /// Trajectories overlapping `[since, until)`: `last_seen >= since` and `first_seen < until`.
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Trajectories with at least one sighting on this camera.
    pub camera: Option<String>,
    /// Page size, at least 1.
    pub limit: u32,
    /// Where the previous page ended ([`TrajectoryPage::next`]).
    pub cursor: Option<Cursor>,
}

/// A trajectory's summary row.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrajectorySummary {
    pub id: Uuid,
    pub site: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: OffsetDateTime,
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
    /// How many sightings it has.
    pub sighting_count: u32,
    /// Camera ids in order of first visit.
    pub cameras: Vec<String>,
}

/// One page of trajectories.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrajectoryPage {
    pub items: Vec<TrajectorySummary>,
    /// The cursor of the next page; `None` on the last one.
    #[schema(value_type = Option<String>, required = true)]
    pub next: Option<Cursor>,
}

/// An opaque keyset-pagination cursor (the position after a trajectory in newest-first order).
/// As a string it is 48 hex digits; clients pass it back unchanged.
///
/// Paging is stable under inserts: a page never repeats an item of an earlier page, and
/// trajectories created after the first page do not shift later pages. A trajectory that gains a
/// sighting while a client pages moves to the head of the order (its `last_seen` grows), so the
/// client sees it again only by starting over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) last_seen_ms: i64,
    pub(crate) id: Uuid,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.last_seen_ms.to_be_bytes());
        bytes[8..].copy_from_slice(self.id.as_bytes());
        f.write_str(&hex::encode(bytes))
    }
}

impl FromStr for Cursor {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || StoreError::Invalid { what: "cursor", detail: format!("{s:?} is not a cursor of this API") };
        let bytes = hex::decode(s).map_err(|_| bad())?;
        if bytes.len() != 24 {
            return Err(bad());
        }
        let last_seen_ms = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let id = Uuid::from_slice(&bytes[8..]).map_err(|_| bad())?;
        Ok(Cursor { last_seen_ms, id })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A trajectory and its sightings.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrajectoryDetail {
    #[serde(flatten)]
    pub summary: TrajectorySummary,
    /// In event order (`first_seen`, then id).
    pub sightings: Vec<TrajectoryPoint>,
    /// The id asked for, when it names a trajectory merged into this one (repair after the
    /// fact, [`Store::merged_into`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Uuid>,
}

/// A sighting as part of a trajectory.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrajectoryPoint {
    pub id: Uuid,
    pub camera: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: OffsetDateTime,
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ground: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f32>,
}

/// A sighting to store with where the correlator placed it ([`Store::record_sightings`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SightingPlacement<'a> {
    pub sighting: &'a Sighting,
    /// The trajectory it joined or started.
    pub trajectory: Uuid,
    /// Embedding distance to the trajectory's appearance when it joined; `None` when it started it.
    pub distance: Option<f32>,
    pub received_at: OffsetDateTime,
}

/// Merges of merges followed by [`Store::merged_into`] at most.
pub const MAX_MERGE_CHAIN: usize = 64;

/// A trajectory merged into another by the correlator's repair, stored with the batch whose
/// sighting made it ([`Store::record_batch`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TrajectoryMerge {
    pub site: String,
    pub from: Uuid,
    pub into: Uuid,
    /// Distance between the two trajectories' mean embeddings: the evidence.
    pub distance: f32,
    /// The sighting whose placement made the merge.
    pub sighting: Uuid,
    pub at: OffsetDateTime,
}

/// Which merges [`Store::merges`] lists.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeQuery {
    /// Only merges after this `seq` (paging: pass the last `seq` seen).
    pub after_seq: Option<i64>,
    /// Only merges of these sites; `None`: every site.
    pub sites: Option<Vec<String>>,
    /// At least 1.
    pub limit: u32,
}

/// A recorded merge: what, when, on which evidence.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MergeRecord {
    pub seq: i64,
    pub site: String,
    /// The trajectory that no longer exists.
    pub from: Uuid,
    /// The one its sightings moved to.
    pub into: Uuid,
    /// When the merge was made (the receipt time of the sighting that made it).
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub ts: OffsetDateTime,
    /// Distance between the two trajectories' mean embeddings.
    pub distance: f32,
    /// The sighting whose placement made the merge.
    pub sighting: Uuid,
    /// Sightings moved.
    pub moved: u64,
}

/// A stored sighting with where it was placed.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSighting {
    pub sighting: Sighting,
    pub trajectory: Uuid,
    pub distance: Option<f32>,
    pub received_at: OffsetDateTime,
}

/// One embedding for the search index.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingRow {
    pub sighting: Uuid,
    pub trajectory: Uuid,
    pub site: String,
    pub camera: String,
    pub last_seen: OffsetDateTime,
    pub embedding: Vec<f32>,
}

/// An API token (its hash is not returned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub role: Role,
    #[serde(with = "ts::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "opt_ts")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The sites it is scoped to (each with the sites below it); `None`: every site.
    pub sites: Option<Vec<String>>,
}

/// What an audit record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// `POST /search`.
    Search,
    /// `GET /trajectories`.
    TrajectoryList,
    /// `GET /trajectories/{id}` (and its GeoJSON).
    TrajectoryRead,
    /// `GET /sightings/{id}`.
    SightingRead,
    WatchlistAdd,
    WatchlistRemove,
    WatchlistList,
    TokenCreate,
    TokenRevoke,
    /// `GET /audit`.
    AuditRead,
    /// `GET /events` with sightings or trajectory updates.
    EventsStream,
    /// `POST /alerts/{id}/close`: an admin closed a stale alert (the reason is the purpose).
    AlertClose,
    /// A request for a site outside the token's scope (always refused).
    OutOfScope,
}

impl AuditAction {
    pub const ALL: [AuditAction; 13] = [
        AuditAction::Search,
        AuditAction::TrajectoryList,
        AuditAction::TrajectoryRead,
        AuditAction::SightingRead,
        AuditAction::WatchlistAdd,
        AuditAction::WatchlistRemove,
        AuditAction::WatchlistList,
        AuditAction::TokenCreate,
        AuditAction::TokenRevoke,
        AuditAction::AuditRead,
        AuditAction::EventsStream,
        AuditAction::AlertClose,
        AuditAction::OutOfScope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Search => "search",
            AuditAction::TrajectoryList => "trajectory_list",
            AuditAction::TrajectoryRead => "trajectory_read",
            AuditAction::SightingRead => "sighting_read",
            AuditAction::WatchlistAdd => "watchlist_add",
            AuditAction::WatchlistRemove => "watchlist_remove",
            AuditAction::WatchlistList => "watchlist_list",
            AuditAction::TokenCreate => "token_create",
            AuditAction::TokenRevoke => "token_revoke",
            AuditAction::AuditRead => "audit_read",
            AuditAction::EventsStream => "events_stream",
            AuditAction::AlertClose => "alert_close",
            AuditAction::OutOfScope => "out_of_scope",
        }
    }
}

impl FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| format!("unknown audit action {s:?}"))
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an audited access was answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The access was made (a 404 too: the id was looked up).
    #[default]
    Answered,
    /// The access was refused before anything personal was read: no or a bad `purpose`, or a
    /// search photo that was rejected (`query.refused` says why).
    Refused,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Answered => "answered",
            AuditOutcome::Refused => "refused",
        }
    }
}

/// One accountable access. `query` is what was asked (filters, ids); it must not hold images or
/// embeddings (record a digest of a probe instead), since the audit log outlives sightings.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub ts: OffsetDateTime,
    /// Token name.
    pub token: String,
    pub role: Role,
    pub action: AuditAction,
    #[schema(required = true)]
    pub purpose: Option<String>,
    #[schema(value_type = Object)]
    pub query: serde_json::Value,
    /// How many results the answer holds.
    pub results: u64,
    pub outcome: AuditOutcome,
    /// The scope of the token that made the access (its sites); `None`: every site.
    #[schema(required = true)]
    pub sites: Option<Vec<String>>,
}

/// A written audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Increasing, never reused.
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Filters of [`Store::audit_log`].
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// `ts >= since`.
    pub since: Option<OffsetDateTime>,
    /// `ts < until`.
    pub until: Option<OffsetDateTime>,
    /// Only this token name's records.
    pub token: Option<String>,
    /// Only records after this `seq` (paging: pass the last `seq` seen).
    pub after_seq: Option<i64>,
    /// Only records of accesses scoped within these sites (a token of every site made the
    /// others); `None`: every record.
    pub sites: Option<Vec<String>>,
    /// At least 1.
    pub limit: u32,
}

/// A face to raise `watchlist_match` for, registered by an admin with a purpose and an expiry.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchlistEntry {
    pub id: Uuid,
    pub name: String,
    pub purpose: String,
    pub model: String,
    pub embedding: Vec<f32>,
    /// Token name of the admin.
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// How long data is kept, in days (fractions allowed; each must be positive).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// Sightings and their embeddings, by `last_seen`: biometric data, kept briefly. Default 7.
    pub sightings_days: f64,
    /// Alert events, by `ts`. Default 90.
    pub alerts_days: f64,
    /// Crowd measurements, by `ts` (no personal data). Default 90.
    pub crowd_days: f64,
    /// Audit records, by `ts`: long enough to answer for past searches. Default 365.
    pub audit_days: f64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy { sightings_days: 7.0, alerts_days: 90.0, crowd_days: 90.0, audit_days: 365.0 }
    }
}

impl RetentionPolicy {
    /// The oldest time kept for a limit of `days` at `now`; rows strictly older are deleted.
    pub fn cutoff(now: OffsetDateTime, days: f64) -> OffsetDateTime {
        now - time::Duration::seconds_f64(days * 86_400.0)
    }

    fn check(&self) -> Result<()> {
        for (key, days) in [
            ("sightings_days", self.sightings_days),
            ("alerts_days", self.alerts_days),
            ("crowd_days", self.crowd_days),
            ("audit_days", self.audit_days),
        ] {
            // at most ~27,000 years, so the cutoff stays a valid time
            if !(days > 0.0 && days < 1e7) {
                return Err(StoreError::Invalid {
                    what: "retention policy",
                    detail: format!("{key} must be a positive number of days, got {days}"),
                });
            }
        }
        Ok(())
    }
}

/// What [`Store::purge`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub sightings: u64,
    /// Trajectories deleted because none of their sightings is left.
    pub trajectories_deleted: u64,
    /// Trajectories that lost some sightings and were recomputed.
    pub trajectories_updated: u64,
    pub alerts: u64,
    pub crowd: u64,
    pub audit: u64,
    /// Expired watchlist entries.
    pub watchlist: u64,
    /// `last_seen` of the oldest sighting left (the proof: not before the cutoff).
    #[serde(with = "opt_ts")]
    pub oldest_sighting: Option<OffsetDateTime>,
    /// SQLite: whether the write-ahead log was checkpointed and truncated (false: another
    /// connection was reading; the deleted pages are then erased at a later checkpoint).
    /// PostgreSQL: whether the closing `VACUUM` ran (always, when the purge succeeds).
    pub wal_truncated: bool,
}

impl PurgeReport {
    /// Rows deleted, by table (for metrics).
    pub fn counts(&self) -> [(&'static str, u64); 6] {
        [
            ("sightings", self.sightings),
            ("trajectories", self.trajectories_deleted),
            ("alerts", self.alerts),
            ("crowd", self.crowd),
            ("audit", self.audit),
            ("watchlist", self.watchlist),
        ]
    }
}

/// `Option<OffsetDateTime>` as a contract timestamp or null.
mod opt_ts {
    use serde::Serializer;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&sightline_contract::ts::format(*t)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_bad_ones_are_named() {
        let c = Cursor { last_seen_ms: 1_795_000_000_123, id: Uuid::now_v7() };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        let e = "nope".parse::<Cursor>().unwrap_err().to_string();
        assert!(e.contains("invalid cursor") && e.contains("nope"), "{e}");
    }
}
