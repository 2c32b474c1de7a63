//! Between PostgreSQL rows and the store's types (the encoding is `crate::store::codec`'s), each
//! table's column list and row reader, WHERE clauses built from optional filters, and PostgreSQL
//! errors named by the operation.

use std::collections::HashMap;

use postgres::types::{FromSql, ToSql};
use postgres::{GenericClient, Row};
use serde::de::DeserializeOwned;
use sightline_contract::{Alert, Sighting};
use time::OffsetDateTime;
use uuid::Uuid;

pub(super) use crate::store::codec::{check_limit, enum_str, f32_bytes, invalid, json, ms};
use crate::store::codec::{f32s_of_bytes, time_of_ms};
use crate::store::{Result, StoreError, StoredAlert, StoredSighting, Token, TrajectorySummary, WatchlistEntry};

/// Adds the operation's name to PostgreSQL errors.
pub(super) trait Op<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Op<T> for std::result::Result<T, postgres::Error> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Pg { op, source })
    }
}

fn corrupt(what: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what, detail: detail.into() }
}

pub(super) fn get<'a, T: FromSql<'a>>(r: &'a Row, col: usize) -> Result<T> {
    r.try_get(col).op("reading a row")
}

pub(super) fn get_ts(r: &Row, col: usize) -> Result<OffsetDateTime> {
    time_of_ms(get(r, col)?).map_err(|e| corrupt("timestamp", e))
}

pub(super) fn get_opt_ts(r: &Row, col: usize) -> Result<Option<OffsetDateTime>> {
    get::<Option<i64>>(r, col)?.map(|v| time_of_ms(v).map_err(|e| corrupt("timestamp", e))).transpose()
}

pub(super) fn get_json<T: DeserializeOwned>(r: &Row, col: usize) -> Result<T> {
    let s: String = get(r, col)?;
    serde_json::from_str(&s).map_err(|e| corrupt("JSON document", format!("column {col}: {e}")))
}

pub(super) fn get_opt_json<T: DeserializeOwned>(r: &Row, col: usize) -> Result<Option<T>> {
    get::<Option<String>>(r, col)?
        .map(|s| serde_json::from_str(&s).map_err(|e| corrupt("JSON document", format!("column {col}: {e}"))))
        .transpose()
}

/// A snake_case enum stored as its serde name.
pub(super) fn get_enum<T: DeserializeOwned>(r: &Row, col: usize) -> Result<T> {
    let s: String = get(r, col)?;
    serde_json::from_value(serde_json::Value::String(s.clone()))
        .map_err(|e| corrupt("enum value", format!("{s:?}: {e}")))
}

pub(super) fn get_f32s(r: &Row, col: usize) -> Result<Vec<f32>> {
    let b: &[u8] = get(r, col)?;
    f32s_of_bytes(b).map_err(|e| corrupt("embedding", e))
}

pub(super) fn get_pair(r: &Row, col: usize) -> Result<Option<[f64; 2]>> {
    Ok(match (get::<Option<f64>>(r, col)?, get::<Option<f64>>(r, col + 1)?) {
        (Some(x), Some(y)) => Some([x, y]),
        _ => None,
    })
}

fn get_u32(r: &Row, col: usize) -> Result<u32> {
    let v: i64 = get(r, col)?;
    u32::try_from(v).map_err(|_| corrupt("count", format!("{v} out of range")))
}

/// A parameter of a dynamically built query.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// A WHERE clause built from optional filters, numbering `$n` parameters in order.
#[derive(Default)]
pub(super) struct Filter {
    clauses: Vec<String>,
    pub(super) params: Vec<Param>,
}

impl Filter {
    /// Adds `clause`, whose `?` stands for `value`.
    pub(super) fn add(&mut self, clause: &str, value: Param) {
        self.params.push(value);
        self.clauses.push(clause.replace('?', &format!("${}", self.params.len())));
    }

    /// Adds `clause`, whose `?`s stand for `values` in order.
    pub(super) fn add_many(&mut self, clause: &str, values: Vec<Param>) {
        let mut out = String::new();
        let mut values = values.into_iter();
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                let v = values.next().expect("a value for each ?");
                self.params.push(v);
                out.push_str(&format!("${}", self.params.len()));
            }
            out.push_str(part);
        }
        self.clauses.push(out);
    }

    /// The next parameter's placeholder (for LIMIT).
    pub(super) fn push(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }

    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

// ---- rows ----------------------------------------------------------------------------------------

pub(super) const SIGHTING_COLUMNS: &str = "id, site, camera, track, first_seen, last_seen, best, frame_width, frame_height, \
     ground_x, ground_y, model, embedding, trajectory, distance, received_at";

pub(super) fn sighting_row(r: &Row) -> Result<StoredSighting> {
    let track: i64 = get(r, 3)?;
    let dim = |col| -> Result<u32> {
        let v: i64 = get(r, col)?;
        u32::try_from(v).map_err(|_| corrupt("frame size", format!("{v}")))
    };
    Ok(StoredSighting {
        sighting: Sighting {
            id: get(r, 0)?,
            site: get(r, 1)?,
            camera: get(r, 2)?,
            track: u64::try_from(track).map_err(|_| corrupt("track", format!("{track}")))?,
            first_seen: get_ts(r, 4)?,
            last_seen: get_ts(r, 5)?,
            best: get_json(r, 6)?,
            frame_size: [dim(7)?, dim(8)?],
            ground: get_pair(r, 9)?,
            model: get(r, 11)?,
            embedding: get_f32s(r, 12)?,
        },
        trajectory: get(r, 13)?,
        distance: get::<Option<f64>>(r, 14)?.map(|d| d as f32),
        received_at: get_ts(r, 15)?,
    })
}

pub(super) const TRAJECTORY_COLUMNS: &str = "id, site, first_seen, last_seen, sightings::bigint, cameras";

pub(super) fn trajectory_row(r: &Row) -> Result<TrajectorySummary> {
    Ok(TrajectorySummary {
        id: get(r, 0)?,
        site: get(r, 1)?,
        first_seen: get_ts(r, 2)?,
        last_seen: get_ts(r, 3)?,
        sighting_count: get_u32(r, 4)?,
        cameras: get_json(r, 5)?,
    })
}

pub(super) const ALERT_COLUMNS: &str = "id, site, camera, ts, alert, state, kind, severity, zone, message, details, received_at, \
     acknowledged_by, acknowledged_at";

pub(super) fn alert_row(r: &Row) -> Result<StoredAlert> {
    Ok(StoredAlert {
        alert: Alert {
            id: get(r, 0)?,
            site: get(r, 1)?,
            camera: get(r, 2)?,
            ts: get_ts(r, 3)?,
            alert: get(r, 4)?,
            state: get_enum(r, 5)?,
            kind: get_enum(r, 6)?,
            severity: get_enum(r, 7)?,
            zone: get(r, 8)?,
            message: get(r, 9)?,
            details: get_opt_json(r, 10)?,
        },
        received_at: get_ts(r, 11)?,
        acknowledged_by: get(r, 12)?,
        acknowledged_at: get_opt_ts(r, 13)?,
    })
}

pub(super) const TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at, sites";

pub(super) fn token_row(r: &Row) -> Result<Token> {
    Ok(Token {
        id: get(r, 0)?,
        name: get(r, 1)?,
        role: get_enum(r, 2)?,
        created_at: get_ts(r, 3)?,
        revoked_at: get_opt_ts(r, 4)?,
        sites: get(r, 5)?,
    })
}

pub(super) const WATCHLIST_COLUMNS: &str = "id, name, purpose, model, embedding, created_by, created_at, expires_at";

pub(super) fn watchlist_row(r: &Row) -> Result<WatchlistEntry> {
    Ok(WatchlistEntry {
        id: get(r, 0)?,
        name: get(r, 1)?,
        purpose: get(r, 2)?,
        model: get(r, 3)?,
        embedding: get_f32s(r, 4)?,
        created_by: get(r, 5)?,
        created_at: get_ts(r, 6)?,
        expires_at: get_ts(r, 7)?,
    })
}

pub(super) fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

/// Recomputes a trajectory's row from its sightings (the caller holds its row lock); deletes it
/// (returning false) when none is left.
/// Brings the rows of trajectories up to date with their sightings (first/last seen, count,
/// cameras by first visit), in four statements whatever their number; deletes those left without
/// sightings. The caller holds the rows' locks.
pub(super) fn refresh_trajectories(
    tx: &mut impl GenericClient,
    ids: &[Uuid],
) -> std::result::Result<(), postgres::Error> {
    let mut cameras: HashMap<Uuid, Vec<String>> = HashMap::new();
    for r in tx.query(
        "SELECT trajectory, camera FROM sightings WHERE trajectory = ANY($1) GROUP BY trajectory, camera \
         ORDER BY trajectory, min(first_seen), camera COLLATE \"C\"",
        &[&ids],
    )? {
        cameras.entry(r.get(0)).or_default().push(r.get(1));
    }
    let (mut kept, mut firsts, mut lasts, mut counts, mut lists) = (vec![], vec![], vec![], vec![], vec![]);
    for r in tx.query(
        "SELECT trajectory, min(first_seen), max(last_seen), count(*)::integer FROM sightings \
         WHERE trajectory = ANY($1) GROUP BY trajectory",
        &[&ids],
    )? {
        let id: Uuid = r.get(0);
        kept.push(id);
        firsts.push(r.get::<_, i64>(1));
        lasts.push(r.get::<_, i64>(2));
        counts.push(r.get::<_, i32>(3));
        lists.push(json(cameras.get(&id).map_or(&[][..], Vec::as_slice)));
    }
    tx.execute(
        "UPDATE trajectories t SET first_seen = u.f, last_seen = u.l, sightings = u.n, cameras = u.c \
         FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::integer[], $5::text[]) AS u(id, f, l, n, c) \
         WHERE t.id = u.id",
        &[&kept, &firsts, &lasts, &counts, &lists],
    )?;
    tx.execute("DELETE FROM trajectories WHERE id = ANY($1) AND NOT (id = ANY($2))", &[&ids, &kept])?;
    Ok(())
}
