//! The PostgreSQL schema and its versioned migrations.
//!
//! The steps mirror SQLite's (`crate::store::migrations`): version *n* holds the same tables,
//! columns and meaning on both backends, so [`LATEST`] is shared. The version is the highest row
//! of `schema_migrations` (no table: version 0); the table's comment ([`MARKER`]) tells a
//! sightline store from another application's `schema_migrations`.
//!
//! The whole migration holds the session advisory lock [`LOCK_KEY`] (`pg_advisory_lock`), and
//! each step runs in its own transaction with its `schema_migrations` row: aggregators starting at
//! once against one database migrate one after the other, and the later ones find the work done.
//! The lock is taken *before* the transactions begin, not inside them (`pg_advisory_xact_lock`):
//! a transaction that waited for the lock could still look tables up in the catalog as they were
//! before the other aggregator's step, and create them a second time; a transaction begun after
//! the lock sees them. A failed step rolls back
//! whole (PostgreSQL's DDL is transactional). A database at a newer version, or whose current
//! schema holds tables but no sightline version table, is refused before anything is written.
//!
//! Policy, as for SQLite: steps are append-only; a change is a new step on both backends.

use postgres::Client;

pub use crate::store::migrations::LATEST;

/// One schema step: from `version - 1` to `version`.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: u32,
    /// Short description (the same as SQLite's step of this version).
    pub name: &'static str,
    pub sql: &'static str,
}

/// The comment on `schema_migrations` that marks a sightline aggregator store.
pub const MARKER: &str = "sightline aggregator store";

/// The advisory lock key migrations hold (ASCII "SLAGMIGR").
pub const LOCK_KEY: i64 = 0x534C_4147_4D49_4752;

/// Every step, in order (`MIGRATIONS[i].version == i + 1`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events: cameras, agents, trajectories, sightings, alerts, crowd",
        sql: r#"
CREATE TABLE schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'sightline aggregator store';

CREATE TABLE cameras (
    site text NOT NULL,
    id text NOT NULL,
    position_x double precision,
    position_y double precision,
    status text,
    status_ts bigint,
    status_received_at bigint,
    PRIMARY KEY (site, id)
);

CREATE TABLE agents (
    site text NOT NULL,
    id text NOT NULL,
    status text NOT NULL,
    status_ts bigint NOT NULL,
    status_received_at bigint NOT NULL,
    PRIMARY KEY (site, id)
);

CREATE TABLE trajectories (
    id uuid PRIMARY KEY,
    site text NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    sightings integer NOT NULL,
    cameras text NOT NULL
);
CREATE INDEX trajectories_recent ON trajectories (last_seen DESC, id DESC);
CREATE INDEX trajectories_site_recent ON trajectories (site, last_seen DESC, id DESC);

CREATE TABLE sightings (
    id uuid PRIMARY KEY,
    site text NOT NULL,
    camera text NOT NULL,
    track bigint NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    best text NOT NULL,
    frame_width bigint NOT NULL,
    frame_height bigint NOT NULL,
    ground_x double precision,
    ground_y double precision,
    model text NOT NULL,
    embedding bytea NOT NULL,
    trajectory uuid NOT NULL REFERENCES trajectories (id),
    distance double precision,
    received_at bigint NOT NULL
);
CREATE INDEX sightings_trajectory ON sightings (trajectory, first_seen);
CREATE INDEX sightings_last_seen ON sightings (last_seen);
CREATE INDEX sightings_model ON sightings (model, last_seen);

CREATE TABLE alerts (
    id uuid PRIMARY KEY,
    alert text NOT NULL,
    site text NOT NULL,
    camera text NOT NULL,
    ts bigint NOT NULL,
    state text NOT NULL,
    kind text NOT NULL,
    severity text NOT NULL,
    zone text,
    message text NOT NULL,
    details text,
    received_at bigint NOT NULL
);
CREATE INDEX alerts_ts ON alerts (ts DESC, id DESC);
CREATE INDEX alerts_camera_ts ON alerts (camera, ts DESC);
CREATE INDEX alerts_alert ON alerts (alert);

CREATE TABLE crowd (
    id uuid PRIMARY KEY,
    site text NOT NULL,
    camera text NOT NULL,
    ts bigint NOT NULL,
    method text NOT NULL,
    total double precision NOT NULL,
    zones jsonb NOT NULL,
    received_at bigint NOT NULL
);
CREATE INDEX crowd_camera_ts ON crowd (camera, ts);
CREATE INDEX crowd_ts ON crowd (ts);
"#,
    },
    Migration {
        version: 2,
        name: "accountability: tokens, audit log, watchlist, alert acknowledgement",
        sql: r#"
ALTER TABLE alerts ADD COLUMN acknowledged_by text;
ALTER TABLE alerts ADD COLUMN acknowledged_at bigint;

CREATE TABLE tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    role text NOT NULL CHECK (role IN ('operator', 'integrator', 'admin')),
    hash text NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    revoked_at bigint
);

CREATE TABLE audit (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused, even after retention
    ts bigint NOT NULL,
    token text NOT NULL,
    role text NOT NULL,
    action text NOT NULL,
    purpose text,
    query text NOT NULL,
    results bigint NOT NULL
);
CREATE INDEX audit_ts ON audit (ts);

CREATE TABLE watchlist (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    purpose text NOT NULL,
    model text NOT NULL,
    embedding bytea NOT NULL,
    created_by text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX watchlist_expires ON watchlist (expires_at);
"#,
    },
    Migration {
        version: 3,
        name: "audit outcome: answered or refused",
        sql: r#"
ALTER TABLE audit ADD COLUMN outcome text NOT NULL DEFAULT 'answered'
    CHECK (outcome IN ('answered', 'refused'));
UPDATE audit SET outcome = 'refused'
    WHERE coalesce(query::jsonb -> 'outcome', 'null'::jsonb) <> 'null'::jsonb;
"#,
    },
    Migration {
        version: 4,
        name: "sites: tokens scoped to sites, audit rows with their scope",
        sql: r#"
-- the site ids a token is scoped to (each with the sites below it); NULL: every site
ALTER TABLE tokens ADD COLUMN sites text[];
ALTER TABLE audit ADD COLUMN sites text[];
CREATE INDEX alerts_site_ts ON alerts (site, ts);
"#,
    },
    Migration {
        version: 5,
        name: "the tree of sites the database holds",
        sql: r#"
CREATE TABLE sites (
    id text PRIMARY KEY,
    parent text,
    name text
);
"#,
    },
    Migration {
        version: 6,
        name: "trajectory merges: repairs after the fact",
        sql: r#"
CREATE TABLE trajectory_merges (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_id uuid NOT NULL UNIQUE,  -- the trajectory that no longer exists
    into_id uuid NOT NULL,         -- the one its sightings moved to
    site text NOT NULL,
    ts bigint NOT NULL,
    distance double precision NOT NULL,  -- between the two trajectories' mean embeddings
    sighting uuid NOT NULL,        -- whose placement made the merge
    moved bigint NOT NULL          -- sightings moved
);
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

/// Why [`apply`] failed (the caller adds the target).
#[derive(Debug)]
pub enum SchemaError {
    TooNew { found: u32, supported: u32 },
    Foreign { detail: String },
    Step { version: u32, name: &'static str, source: postgres::Error },
    Sql(postgres::Error),
}

impl From<postgres::Error> for SchemaError {
    fn from(e: postgres::Error) -> Self {
        SchemaError::Sql(e)
    }
}

/// The comment of `schema_migrations` in the current schema; `None` when there is no such table.
/// (Read from `pg_class` with the statement's snapshot, not through the catalog caches.)
fn version_table(db: &mut impl postgres::GenericClient) -> Result<Option<Option<String>>, postgres::Error> {
    let row = db.query_opt(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = 'schema_migrations' AND n.nspname = current_schema()",
        &[],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// The schema version of the database (0: no `schema_migrations` table).
pub fn version(db: &mut impl postgres::GenericClient) -> Result<u32, postgres::Error> {
    if version_table(db)?.is_none() {
        return Ok(0);
    }
    let v: Option<i32> = db.query_one("SELECT max(version) FROM schema_migrations", &[])?.get(0);
    Ok(v.unwrap_or(0).max(0) as u32)
}

/// Brings the database to the last version of `steps` (normally [`MIGRATIONS`]); returns the
/// versions it went from and to.
pub fn apply(db: &mut Client, steps: &[Migration]) -> Result<(u32, u32), SchemaError> {
    db.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])?;
    let result = apply_locked(db, steps);
    // (a connection that failed has lost the lock with its session)
    let unlocked = db.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
    let versions = result?;
    unlocked?;
    Ok(versions)
}

fn apply_locked(db: &mut Client, steps: &[Migration]) -> Result<(u32, u32), SchemaError> {
    debug_assert!(steps.iter().enumerate().all(|(i, m)| m.version as usize == i + 1));
    let supported = steps.len() as u32;
    let from = {
        // read-only checks; the transaction is rolled back, writing nothing
        let mut tx = db.transaction()?;
        // the identity first: another application's table may not even be readable
        check_identity(&mut tx)?;
        let v = version(&mut tx)?;
        if v > supported {
            return Err(SchemaError::TooNew { found: v, supported });
        }
        v
    };
    for step in &steps[from as usize..] {
        let mut tx = db.transaction()?;
        let fail = |source| SchemaError::Step { version: step.version, name: step.name, source };
        tx.batch_execute(step.sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&(step.version as i32), &step.name],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    let to = version(db)?;
    Ok((from, to))
}

/// Refuses databases whose current schema holds tables that are not a sightline store's.
fn check_identity(db: &mut impl postgres::GenericClient) -> Result<(), SchemaError> {
    if let Some(comment) = version_table(db)? {
        if comment.as_deref() != Some(MARKER) {
            return Err(SchemaError::Foreign {
                detail: format!(
                    "its schema_migrations table is another application's (comment {comment:?}, not {MARKER:?})"
                ),
            });
        }
        return Ok(());
    }
    let tables: Vec<String> = db
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !tables.is_empty() {
        return Err(SchemaError::Foreign {
            detail: format!("it has tables ({}) but no sightline schema version", tables.join(", ")),
        });
    }
    Ok(())
}
