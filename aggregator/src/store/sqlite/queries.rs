//! Reads on the read-only connection: what the HTTP API serves (cameras, agents, alerts, crowd
//! series, trajectories, sightings), and the embeddings and sightings the search index and the
//! correlator are rebuilt from at start.

use std::collections::HashSet;

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params};
use sightline_contract::{AlertKind, Crowd};
use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::SqliteStore;
use super::rows::*;
use crate::store::{
    AgentRecord, AlertQuery, CameraRecord, CrowdBucket, CrowdQuery, Cursor, EmbeddingRow, MAX_MERGE_CHAIN, MergeQuery,
    MergeRecord, Result, StoredAlert, StoredSighting, TrajectoryDetail, TrajectoryPage, TrajectoryPoint,
    TrajectoryQuery, TrajectorySummary,
};

pub(super) fn cameras(store: &SqliteStore) -> Result<Vec<CameraRecord>> {
    let db = store.reader();
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

pub(super) fn agents(store: &SqliteStore) -> Result<Vec<AgentRecord>> {
    let db = store.reader();
    let mut q = db.prepare_cached("SELECT status, status_received_at FROM agents ORDER BY site, id").op("agents")?;
    q.query_map([], |r| Ok(AgentRecord { status: get_json(r, 0)?, received_at: get_ts(r, 1)? }))
        .and_then(|rows| rows.collect())
        .op("agents")
}

pub(super) fn alerts(store: &SqliteStore, q: &AlertQuery) -> Result<Vec<StoredAlert>> {
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
    if let Some(sites) = &q.sites {
        let (sql, p) = in_sites("site", sites);
        f.add(&sql, [p]);
    }
    if let Some(c) = &q.camera {
        f.add("camera = ?", [text(c)]);
    }
    f.params.push(Value::Integer(q.limit.into()));
    let db = store.reader();
    let mut stmt = db
        .prepare(&format!("SELECT {ALERT_COLUMNS} FROM alerts {} ORDER BY ts DESC, id DESC LIMIT ?", f.sql()))
        .op("alerts")?;
    stmt.query_map(rusqlite::params_from_iter(f.params), alert_row).and_then(|rows| rows.collect()).op("alerts")
}

pub(super) fn alert_events(store: &SqliteStore, alert: &str, limit: u32) -> Result<Vec<StoredAlert>> {
    check_limit("alert events", limit)?;
    let db = store.reader();
    let mut q = db
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE alert = ?1 ORDER BY ts DESC, id DESC LIMIT ?2"
        ))
        .op("alert_events")?;
    q.query_map(params![alert, limit], alert_row).and_then(|rows| rows.collect()).op("alert_events")
}

pub(super) fn cleared_alerts(store: &SqliteStore, alerts: &[String]) -> Result<HashSet<String>> {
    if alerts.is_empty() {
        return Ok(HashSet::new());
    }
    let db = store.reader();
    let mut q = db
        .prepare_cached(
            "SELECT DISTINCT alert FROM alerts WHERE state = 'cleared' AND alert IN (SELECT value FROM json_each(?1))",
        )
        .op("cleared_alerts")?;
    q.query_map([json(alerts)], |r| r.get(0)).and_then(|rows| rows.collect()).op("cleared_alerts")
}

pub(super) fn open_alerts(store: &SqliteStore, kind: AlertKind, limit: u32) -> Result<Vec<StoredAlert>> {
    check_limit("open alerts", limit)?;
    let db = store.reader();
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

pub(super) fn latest_crowd(store: &SqliteStore) -> Result<Vec<Crowd>> {
    const OP: &str = "latest_crowd";
    let db = store.reader();
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

pub(super) fn crowd_series(store: &SqliteStore, q: &CrowdQuery) -> Result<Vec<CrowdBucket>> {
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
         WHERE c.camera = ?2 AND c.ts >= ?3 AND c.ts < ?4 {zone_clause} AND (?6 IS NULL OR c.site IN (SELECT value FROM json_each(?6))) \
         GROUP BY b ORDER BY b"
    );
    let db = store.reader();
    let mut stmt = db.prepare(&sql).op("crowd_series")?;
    stmt.query_map(params![step, q.camera, ms(q.since), ms(q.until), q.zone, q.sites.as_deref().map(site_list)], |r| {
        Ok(CrowdBucket { start: get_ts(r, 0)?, mean: r.get(1)?, min: r.get(2)?, max: r.get(3)?, samples: r.get(4)? })
    })
    .and_then(|rows| rows.collect())
    .op("crowd_series")
}

pub(super) fn trajectories(store: &SqliteStore, q: &TrajectoryQuery) -> Result<TrajectoryPage> {
    check_limit("trajectory query", q.limit)?;
    let mut f = Filter::default();
    if let Some(sites) = &q.sites {
        let (sql, p) = in_sites("t.site", sites);
        f.add(&sql, [p]);
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
    let db = store.reader();
    let cols = TRAJECTORY_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
    let mut stmt = db
        .prepare(&format!("SELECT {cols} FROM trajectories t {} ORDER BY t.last_seen DESC, t.id DESC LIMIT ?", f.sql()))
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

pub(super) fn trajectory(store: &SqliteStore, id: Uuid) -> Result<Option<TrajectoryDetail>> {
    const OP: &str = "trajectory";
    let mut db = store.reader();
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
    Ok(Some(TrajectoryDetail { summary, sightings, merged_from: None }))
}

pub(super) fn sightings(store: &SqliteStore, ids: &[Uuid]) -> Result<Vec<StoredSighting>> {
    let db = store.reader();
    let mut q =
        db.prepare_cached(&format!("SELECT {SIGHTING_COLUMNS} FROM sightings WHERE id = ?1")).op("sightings")?;
    let mut found = Vec::with_capacity(ids.len());
    let mut asked = HashSet::new();
    for id in ids.iter().filter(|id| asked.insert(**id)) {
        if let Some(s) = q.query_row([id.to_string()], sighting_row).optional().op("sightings")? {
            found.push(s);
        }
    }
    Ok(found)
}

pub(super) fn for_each_embedding(
    store: &SqliteStore,
    model: &str,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    f: &mut dyn FnMut(EmbeddingRow),
) -> Result<u64> {
    const OP: &str = "embeddings";
    let db = store.reader();
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

pub(super) fn sightings_for_replay(
    store: &SqliteStore,
    since: OffsetDateTime,
    site: Option<&str>,
) -> Result<Vec<StoredSighting>> {
    let db = store.reader();
    let mut stmt = db
        .prepare_cached(&format!(
            "SELECT {SIGHTING_COLUMNS} FROM sightings WHERE trajectory IN \
             (SELECT id FROM trajectories WHERE last_seen >= ?1 AND (?2 IS NULL OR site = ?2)) \
             ORDER BY first_seen, id"
        ))
        .op("sightings_for_replay")?;
    stmt.query_map(rusqlite::params![ms(since), site], sighting_row)
        .and_then(|rows| rows.collect())
        .op("sightings_for_replay")
}

pub(super) fn merged_into(store: &SqliteStore, id: Uuid) -> Result<Option<Uuid>> {
    let db = store.reader();
    let mut q = db.prepare_cached("SELECT into_id FROM trajectory_merges WHERE from_id = ?1").op("merged_into")?;
    let mut last = None;
    // merges of merges (a merged-away id never gets sightings again, so there is no cycle)
    for _ in 0..MAX_MERGE_CHAIN {
        let at = last.unwrap_or(id);
        match q.query_row([at.to_string()], |r| get_uuid(r, 0)).optional().op("merged_into")? {
            Some(into) => last = Some(into),
            None => break,
        }
    }
    Ok(last)
}

pub(super) fn merges(store: &SqliteStore, q: &MergeQuery) -> Result<Vec<MergeRecord>> {
    check_limit("merge query", q.limit)?;
    let db = store.reader();
    let mut stmt = db
        .prepare_cached(
            "SELECT seq, site, from_id, into_id, ts, distance, sighting, moved FROM trajectory_merges \
             WHERE seq > ?1 AND (?2 IS NULL OR site IN (SELECT value FROM json_each(?2))) ORDER BY seq LIMIT ?3",
        )
        .op("merges")?;
    let sites = q.sites.as_deref().map(site_list);
    stmt.query_map(params![q.after_seq.unwrap_or(0), sites, q.limit], |r| {
        Ok(MergeRecord {
            seq: r.get(0)?,
            site: r.get(1)?,
            from: get_uuid(r, 2)?,
            into: get_uuid(r, 3)?,
            ts: get_ts(r, 4)?,
            distance: r.get::<_, f64>(5)? as f32,
            sighting: get_uuid(r, 6)?,
            moved: r.get::<_, i64>(7)? as u64,
        })
    })
    .op("merges")?
    .collect::<rusqlite::Result<_>>()
    .op("merges")
}
