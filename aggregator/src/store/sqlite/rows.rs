//! Between SQLite rows and the store's types: times as Unix milliseconds (floored, like the
//! contract), ids as text, enums as their serde names, embeddings as little-endian `f32` blobs;
//! each table's column list and row reader; WHERE clauses built from optional filters; SQLite
//! errors named by the operation.

use rusqlite::types::{Type, Value};
use rusqlite::{Row, Transaction, params};
use serde::de::DeserializeOwned;
use sightline_contract::{Alert, BestShot, Sighting};
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) use crate::store::codec::{check_limit, enum_str, f32_bytes, invalid, json, ms};
use crate::store::{Result, StoreError, StoredAlert, StoredSighting, Token, TrajectorySummary, WatchlistEntry};

// ---- conversions ---------------------------------------------------------------------------------

pub(super) fn conversion(col: usize, ty: Type, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, ty, e.to_string().into())
}

pub(super) fn from_ms(col: usize, v: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000).map_err(|e| conversion(col, Type::Integer, e))
}

pub(super) fn get_ts(r: &Row<'_>, col: usize) -> rusqlite::Result<OffsetDateTime> {
    from_ms(col, r.get(col)?)
}

pub(super) fn get_opt_ts(r: &Row<'_>, col: usize) -> rusqlite::Result<Option<OffsetDateTime>> {
    r.get::<_, Option<i64>>(col)?.map(|v| from_ms(col, v)).transpose()
}

pub(super) fn get_uuid(r: &Row<'_>, col: usize) -> rusqlite::Result<Uuid> {
    let s: String = r.get(col)?;
    Uuid::parse_str(&s).map_err(|e| conversion(col, Type::Text, format!("{s:?} is not a UUID: {e}")))
}

pub(super) fn get_json<T: DeserializeOwned>(r: &Row<'_>, col: usize) -> rusqlite::Result<T> {
    let s: String = r.get(col)?;
    serde_json::from_str(&s).map_err(|e| conversion(col, Type::Text, e))
}

/// A snake_case enum stored as its serde name.
pub(super) fn get_enum<T: DeserializeOwned>(r: &Row<'_>, col: usize) -> rusqlite::Result<T> {
    let s: String = r.get(col)?;
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| conversion(col, Type::Text, e))
}

/// A list of site ids as stored: a JSON array.
pub(super) fn site_list(sites: &[String]) -> String {
    serde_json::to_string(sites).expect("strings serialize")
}

/// A stored list of site ids (`NULL`: every site).
pub(super) fn get_sites(r: &Row<'_>, col: usize) -> rusqlite::Result<Option<Vec<String>>> {
    let s: Option<String> = r.get(col)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| conversion(col, Type::Text, e))).transpose()
}

/// The filter "`column` is one of `sites`" (one parameter: a JSON array).
pub(super) fn in_sites(column: &str, sites: &[String]) -> (String, Value) {
    (format!("{column} IN (SELECT value FROM json_each(?))"), Value::Text(site_list(sites)))
}

pub(super) fn get_f32s(r: &Row<'_>, col: usize) -> rusqlite::Result<Vec<f32>> {
    let b: Vec<u8> = r.get(col)?;
    if !b.len().is_multiple_of(4) {
        return Err(conversion(col, Type::Blob, format!("embedding of {} bytes is not f32s", b.len())));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
}

pub(super) fn get_pair(r: &Row<'_>, col: usize) -> rusqlite::Result<Option<[f64; 2]>> {
    Ok(match (r.get::<_, Option<f64>>(col)?, r.get::<_, Option<f64>>(col + 1)?) {
        (Some(x), Some(y)) => Some([x, y]),
        _ => None,
    })
}

/// Adds the operation's name to SQLite errors.
pub(super) trait Op<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Op<T> for rusqlite::Result<T> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sql { op, source })
    }
}

/// A WHERE clause built from optional filters, with anonymous `?` parameters in order.
#[derive(Default)]
pub(super) struct Filter {
    clauses: Vec<String>,
    pub(super) params: Vec<Value>,
}

impl Filter {
    pub(super) fn add(&mut self, clause: &str, values: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.to_owned());
        self.params.extend(values);
    }

    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }
}

pub(super) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

// ---- rows ----------------------------------------------------------------------------------------

pub(super) const SIGHTING_COLUMNS: &str = "id, site, camera, track, first_seen, last_seen, best, frame_width, frame_height, \
     ground_x, ground_y, model, embedding, trajectory, distance, received_at";

pub(super) fn sighting_row(r: &Row<'_>) -> rusqlite::Result<StoredSighting> {
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

pub(super) const TRAJECTORY_COLUMNS: &str = "id, site, first_seen, last_seen, sightings, cameras";

pub(super) fn trajectory_row(r: &Row<'_>) -> rusqlite::Result<TrajectorySummary> {
    Ok(TrajectorySummary {
        id: get_uuid(r, 0)?,
        site: r.get(1)?,
        first_seen: get_ts(r, 2)?,
        last_seen: get_ts(r, 3)?,
        sighting_count: r.get(4)?,
        cameras: get_json(r, 5)?,
    })
}

pub(super) const ALERT_COLUMNS: &str = "id, site, camera, ts, alert, state, kind, severity, zone, message, details, received_at, \
     acknowledged_by, acknowledged_at";

pub(super) fn alert_row(r: &Row<'_>) -> rusqlite::Result<StoredAlert> {
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

pub(super) const TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at, sites";

pub(super) fn token_row(r: &Row<'_>) -> rusqlite::Result<Token> {
    Ok(Token {
        id: r.get(0)?,
        name: r.get(1)?,
        role: get_enum(r, 2)?,
        created_at: get_ts(r, 3)?,
        revoked_at: get_opt_ts(r, 4)?,
        sites: get_sites(r, 5)?,
    })
}

pub(super) const WATCHLIST_COLUMNS: &str = "id, name, purpose, model, embedding, created_by, created_at, expires_at";

pub(super) fn watchlist_row(r: &Row<'_>) -> rusqlite::Result<WatchlistEntry> {
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
pub(super) fn refresh_trajectory(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_floor() {
        let t = time::macros::datetime!(2026-11-23 08:00:01.2345 UTC);
        assert_eq!(from_ms(0, ms(t)).unwrap(), time::macros::datetime!(2026-11-23 08:00:01.234 UTC));
        let before = time::macros::datetime!(1969-12-31 23:59:59.9995 UTC);
        assert_eq!(ms(before), -1);
    }
}
