//! Versioned schema migrations of the SQLite store.
//!
//! The schema version is SQLite's `PRAGMA user_version` (0 for a new, empty file). [`MIGRATIONS`]
//! is the ordered list of steps; step *n* takes a database from version *n − 1* to *n*. Each step
//! runs in its own `BEGIN IMMEDIATE` transaction together with the `user_version` update, so a
//! failed step leaves the file exactly at the previous version. A file whose version is newer than
//! [`LATEST`] is refused: this code does not know its schema.
//!
//! Policy (`docs/aggregator-storage.md`): steps are append-only. A released step is never edited;
//! a change is a new step. `foreign_keys` is on during migrations, so a step that rebuilds a
//! table must follow SQLite's "12-step" procedure (create new, copy, drop old, rename) in an order
//! that keeps references valid.
//!
//! All timestamps are INTEGER milliseconds since the Unix epoch (UTC); ids are UUID strings
//! (lowercase, hyphenated); tables are `STRICT`.

use rusqlite::{Connection, TransactionBehavior};

/// One schema step: from `version - 1` to `version`.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: u32,
    /// Short description, shown in errors and logs.
    pub name: &'static str,
    pub sql: &'static str,
}

/// `PRAGMA application_id` of an aggregator store (ASCII "SLAG"), so another SQLite file (an
/// edge agent's outbox, say) is not mistaken for one.
pub const APPLICATION_ID: i32 = 0x534C_4147;

/// The schema version this code writes and understands.
pub const LATEST: u32 = 7;

/// Every step, in order (`MIGRATIONS[i].version == i + 1`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events: cameras, agents, trajectories, sightings, alerts, crowd",
        sql: r#"
CREATE TABLE cameras (
    site TEXT NOT NULL,
    id TEXT NOT NULL,
    position_x REAL,              -- metres in the site frame (from the site config)
    position_y REAL,
    status TEXT,                  -- latest sightline.camera_status/1 by ts (JSON)
    status_ts INTEGER,
    status_received_at INTEGER,
    PRIMARY KEY (site, id)
) STRICT;

CREATE TABLE agents (
    site TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,         -- latest sightline.agent_status/1 by ts (JSON)
    status_ts INTEGER NOT NULL,
    status_received_at INTEGER NOT NULL,
    PRIMARY KEY (site, id)
) STRICT;

CREATE TABLE trajectories (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    first_seen INTEGER NOT NULL,  -- min(first_seen) of its sightings
    last_seen INTEGER NOT NULL,   -- max(last_seen) of its sightings
    sightings INTEGER NOT NULL,   -- count of its sightings
    cameras TEXT NOT NULL         -- JSON array of camera ids, by first visit
) STRICT;
CREATE INDEX trajectories_recent ON trajectories (last_seen DESC, id DESC);
CREATE INDEX trajectories_site_recent ON trajectories (site, last_seen DESC, id DESC);

CREATE TABLE sightings (
    id TEXT PRIMARY KEY,          -- the event id
    site TEXT NOT NULL,
    camera TEXT NOT NULL,
    track INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    best TEXT NOT NULL,           -- the best shot's metadata (JSON): ts, bbox, landmarks, scores; no pixels
    frame_width INTEGER NOT NULL,
    frame_height INTEGER NOT NULL,
    ground_x REAL,
    ground_y REAL,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,      -- little-endian f32s
    trajectory TEXT NOT NULL REFERENCES trajectories (id),
    distance REAL,
    received_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sightings_trajectory ON sightings (trajectory, first_seen);
CREATE INDEX sightings_last_seen ON sightings (last_seen);
CREATE INDEX sightings_model ON sightings (model, last_seen);

CREATE TABLE alerts (
    id TEXT PRIMARY KEY,          -- the event id
    alert TEXT NOT NULL,          -- stable id shared by a raise and its clear
    site TEXT NOT NULL,
    camera TEXT NOT NULL,
    ts INTEGER NOT NULL,
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    zone TEXT,
    message TEXT NOT NULL,
    details TEXT,                 -- JSON
    received_at INTEGER NOT NULL
) STRICT;
CREATE INDEX alerts_ts ON alerts (ts DESC, id DESC);
CREATE INDEX alerts_camera_ts ON alerts (camera, ts DESC);
CREATE INDEX alerts_alert ON alerts (alert);

CREATE TABLE crowd (
    id TEXT PRIMARY KEY,          -- the event id
    site TEXT NOT NULL,
    camera TEXT NOT NULL,
    ts INTEGER NOT NULL,
    method TEXT NOT NULL,
    total REAL NOT NULL,
    zones TEXT NOT NULL,          -- JSON array of {zone, count, area_m2?, density_per_m2?}
    received_at INTEGER NOT NULL
) STRICT;
CREATE INDEX crowd_camera_ts ON crowd (camera, ts);
CREATE INDEX crowd_ts ON crowd (ts);
"#,
    },
    Migration {
        version: 2,
        name: "accountability: tokens, audit log, watchlist, alert acknowledgement",
        sql: r#"
ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
ALTER TABLE alerts ADD COLUMN acknowledged_at INTEGER;

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,    -- never reused, so audit rows stay unambiguous
    role TEXT NOT NULL CHECK (role IN ('operator', 'integrator', 'admin')),
    hash TEXT NOT NULL UNIQUE,    -- hex SHA-256 of the bearer token; the token itself is never stored
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after retention
    ts INTEGER NOT NULL,
    token TEXT NOT NULL,          -- token name
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    purpose TEXT,
    query TEXT NOT NULL,          -- JSON
    results INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_ts ON audit (ts);

CREATE TABLE watchlist (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    purpose TEXT NOT NULL,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,      -- little-endian f32s
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX watchlist_expires ON watchlist (expires_at);
"#,
    },
    Migration {
        version: 3,
        name: "audit outcome: answered or refused",
        sql: r#"
ALTER TABLE audit ADD COLUMN outcome TEXT NOT NULL DEFAULT 'answered'
    CHECK (outcome IN ('answered', 'refused'));
-- before this column, a search photo without a usable face was recorded with `outcome` in its query
UPDATE audit SET outcome = 'refused' WHERE json_extract(query, '$.outcome') IS NOT NULL;
"#,
    },
    Migration {
        version: 4,
        name: "sites: tokens scoped to sites, audit rows with their scope",
        sql: r#"
-- a JSON array of site ids (each with the sites below it); NULL: every site
ALTER TABLE tokens ADD COLUMN sites TEXT CHECK (sites IS NULL OR json_type(sites) = 'array');
ALTER TABLE audit ADD COLUMN sites TEXT CHECK (sites IS NULL OR json_type(sites) = 'array');
CREATE INDEX alerts_site_ts ON alerts (site, ts);
"#,
    },
    Migration {
        version: 5,
        name: "the tree of sites the database holds",
        sql: r#"
CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    parent TEXT,
    name TEXT
) STRICT;
"#,
    },
    Migration {
        version: 6,
        name: "trajectory merges: repairs after the fact",
        sql: r#"
CREATE TABLE trajectory_merges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    from_id TEXT NOT NULL UNIQUE, -- the trajectory that no longer exists
    into_id TEXT NOT NULL,        -- the one its sightings moved to
    site TEXT NOT NULL,
    ts INTEGER NOT NULL,
    distance REAL NOT NULL,       -- between the two trajectories' mean embeddings
    sighting TEXT NOT NULL,       -- whose placement made the merge
    moved INTEGER NOT NULL        -- sightings moved
) STRICT;
CREATE INDEX trajectory_merges_ts ON trajectory_merges (ts);
"#,
    },
    Migration {
        version: 7,
        name: "embeddings read in the index's order",
        sql: r#"
-- the search index loads by pages of (last_seen, id): with id in the index a page starts where
-- the last one ended and stops at its limit, instead of sorting what is left of the table
CREATE INDEX sightings_model_keyset ON sightings (model, last_seen, id);
DROP INDEX sightings_model;
"#,
    },
];

/// Why [`apply`] failed (the caller adds the file name).
#[derive(Debug)]
pub enum MigrationError {
    /// The file is at a version newer than the steps given.
    TooNew { found: u32, supported: u32 },
    /// The file has tables but no schema version or a foreign `application_id`: not a store.
    Foreign { detail: String },
    /// A step failed and was rolled back.
    Step { version: u32, name: &'static str, source: rusqlite::Error },
    /// Reading or writing the version itself failed.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrationError {
    fn from(e: rusqlite::Error) -> Self {
        MigrationError::Sql(e)
    }
}

/// The schema version of an open database (`PRAGMA user_version`).
pub fn version(db: &Connection) -> rusqlite::Result<u32> {
    db.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map(|v| v as u32)
}

/// Brings `db` to the last version of `steps` (normally [`MIGRATIONS`]); returns the versions it
/// went from and to. Each step commits separately; a failed step is rolled back and reported.
pub fn apply(db: &mut Connection, steps: &[Migration]) -> Result<(u32, u32), MigrationError> {
    debug_assert!(steps.iter().enumerate().all(|(i, m)| m.version as usize == i + 1));
    let supported = steps.len() as u32;
    let from = version(db)?;
    check_identity(db, from)?;
    if from > supported {
        return Err(MigrationError::TooNew { found: from, supported });
    }
    for step in &steps[from as usize..] {
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // another process may have migrated meanwhile: re-read under the write lock
        let now = version(&tx)?;
        if now >= step.version {
            if now > supported {
                return Err(MigrationError::TooNew { found: now, supported });
            }
            continue;
        }
        let fail = |source| MigrationError::Step { version: step.version, name: step.name, source };
        tx.execute_batch(step.sql).map_err(fail)?;
        if step.version == 1 {
            tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(fail)?;
        }
        tx.pragma_update(None, "user_version", step.version as i64).map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok((from, version(db)?))
}

/// Refuses files that are SQLite databases but not aggregator stores.
fn check_identity(db: &Connection, version: u32) -> Result<(), MigrationError> {
    let app: i32 = db.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if app != 0 && app != APPLICATION_ID {
        return Err(MigrationError::Foreign { detail: format!("application_id is {app:#x}, not {APPLICATION_ID:#x}") });
    }
    if version == 0 {
        let tables: Vec<String> = db
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if !tables.is_empty() {
            return Err(MigrationError::Foreign {
                detail: format!("it has tables ({}) but no schema version", tables.join(", ")),
            });
        }
    }
    Ok(())
}
