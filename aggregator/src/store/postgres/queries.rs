//! Reads: what the HTTP API serves (cameras, agents, alerts, crowd series, trajectories,
//! sightings), and the embeddings and sightings the search index and the correlator are rebuilt
//! from at start. Text is ordered bytewise (`COLLATE "C"`), as SQLite orders it.

use std::collections::HashSet;

use sightline_contract::{AlertKind, Crowd};
use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::PostgresStore;
use super::rows::*;
use crate::store::{
    AgentRecord, AlertQuery, CameraRecord, CrowdBucket, CrowdQuery, Cursor, EmbeddingRow, MAX_MERGE_CHAIN, MergeQuery,
    MergeRecord, Result, StoredAlert, StoredSighting, TrajectoryDetail, TrajectoryPage, TrajectoryPoint,
    TrajectoryQuery, TrajectorySummary,
};

/// Embeddings read per round trip by `for_each_embedding`.
const EMBEDDING_PAGE: i64 = 10_000;

pub(super) fn cameras(store: &PostgresStore) -> Result<Vec<CameraRecord>> {
    let found = store.with(|c| {
        c.query(
            "SELECT site, id, position_x, position_y, status, status_received_at FROM cameras \
             ORDER BY site COLLATE \"C\", id COLLATE \"C\"",
            &[],
        )
        .op("cameras")
    })?;
    rows(found, |r| {
        Ok(CameraRecord {
            site: get(r, 0)?,
            camera: get(r, 1)?,
            position: get_pair(r, 2)?,
            status: get_opt_json(r, 4)?,
            status_received_at: get_opt_ts(r, 5)?,
        })
    })
}

pub(super) fn agents(store: &PostgresStore) -> Result<Vec<AgentRecord>> {
    let found = store.with(|c| {
        c.query("SELECT status, status_received_at FROM agents ORDER BY site COLLATE \"C\", id COLLATE \"C\"", &[])
            .op("agents")
    })?;
    rows(found, |r| Ok(AgentRecord { status: get_json(r, 0)?, received_at: get_ts(r, 1)? }))
}

pub(super) fn alerts(store: &PostgresStore, q: &AlertQuery) -> Result<Vec<StoredAlert>> {
    check_limit("alert query", q.limit)?;
    let mut f = Filter::default();
    if let Some(t) = q.since {
        f.add("ts >= ?", Box::new(ms(t)));
    }
    if let Some(t) = q.until {
        f.add("ts < ?", Box::new(ms(t)));
    }
    if let Some(k) = q.kind {
        f.add("kind = ?", Box::new(enum_str(&k)));
    }
    if let Some(s) = q.state {
        f.add("state = ?", Box::new(enum_str(&s)));
    }
    if let Some(sites) = &q.sites {
        f.add("site = ANY(?)", Box::new(sites.clone()));
    }
    if let Some(c) = &q.camera {
        f.add("camera = ?", Box::new(c.clone()));
    }
    let limit = f.push(Box::new(i64::from(q.limit)));
    let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts {} ORDER BY ts DESC, id DESC LIMIT {limit}", f.sql());
    let found = store.with(|c| c.query(&sql, &f.refs()).op("alerts"))?;
    rows(found, alert_row)
}

pub(super) fn alert_events(store: &PostgresStore, alert: &str, limit: u32) -> Result<Vec<StoredAlert>> {
    check_limit("alert events", limit)?;
    let found = store.with(|c| {
        c.query(
            &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE alert = $1 ORDER BY ts DESC, id DESC LIMIT $2"),
            &[&alert, &i64::from(limit)],
        )
        .op("alert_events")
    })?;
    rows(found, alert_row)
}

pub(super) fn cleared_alerts(store: &PostgresStore, alerts: &[String]) -> Result<HashSet<String>> {
    if alerts.is_empty() {
        return Ok(HashSet::new());
    }
    let found = store.with(|c| {
        c.query("SELECT DISTINCT alert FROM alerts WHERE state = 'cleared' AND alert = ANY($1)", &[&alerts])
            .op("cleared_alerts")
    })?;
    found.iter().map(|r| get(r, 0)).collect()
}

pub(super) fn open_alerts(store: &PostgresStore, kind: AlertKind, limit: u32) -> Result<Vec<StoredAlert>> {
    check_limit("open alerts", limit)?;
    let cols = ALERT_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
    let found = store.with(|c| {
        c.query(
            &format!(
                "SELECT {cols} FROM alerts a WHERE a.kind = $1 AND a.state = 'raised' AND NOT EXISTS \
                 (SELECT 1 FROM alerts c WHERE c.alert = a.alert AND c.state = 'cleared') \
                 ORDER BY a.ts DESC, a.id DESC LIMIT $2"
            ),
            &[&enum_str(&kind), &i64::from(limit)],
        )
        .op("open_alerts")
    })?;
    rows(found, alert_row)
}

pub(super) fn latest_crowd(store: &PostgresStore) -> Result<Vec<Crowd>> {
    // one index probe (crowd_camera_ts) per known camera, not a scan of the measurements
    let found = store.with(|c| {
        c.query(
            "SELECT m.id, m.site, m.camera, m.ts, m.method, m.total, m.zones::text FROM cameras k \
             CROSS JOIN LATERAL (SELECT * FROM crowd WHERE camera = k.id AND site = k.site \
             ORDER BY ts DESC, id DESC LIMIT 1) m ORDER BY k.site COLLATE \"C\", k.id COLLATE \"C\"",
            &[],
        )
        .op("latest_crowd")
    })?;
    rows(found, |r| {
        Ok(Crowd {
            id: get(r, 0)?,
            site: get(r, 1)?,
            camera: get(r, 2)?,
            ts: get_ts(r, 3)?,
            method: get_enum(r, 4)?,
            total: get::<f64>(r, 5)? as f32,
            zones: get_json(r, 6)?,
            grid: None,
        })
    })
}

pub(super) fn crowd_series(store: &PostgresStore, q: &CrowdQuery) -> Result<Vec<CrowdBucket>> {
    if q.step_s == 0 {
        return Err(invalid("crowd query", "step must be at least 1 second"));
    }
    if q.until <= q.since {
        return Err(invalid("crowd query", "until must be after since"));
    }
    let step = i64::from(q.step_s) * 1000;
    // bucket start: ts floored to a multiple of the step
    let bucket = "(c.ts - ((c.ts % $1) + $1) % $1)";
    let (value, from, zone_clause) = match &q.zone {
        None => ("c.total", "crowd c", "$5::text IS NULL"),
        Some(_) => (
            "(j.value ->> 'count')::double precision",
            "crowd c CROSS JOIN LATERAL jsonb_array_elements(c.zones) j(value)",
            "j.value ->> 'zone' = $5::text",
        ),
    };
    let sql = format!(
        "SELECT {bucket} AS b, avg({value}), min({value}), max({value}), count(*) FROM {from} \
         WHERE c.camera = $2 AND c.ts >= $3 AND c.ts < $4 AND {zone_clause} AND ($6::text[] IS NULL OR c.site = ANY($6)) \
         GROUP BY b ORDER BY b"
    );
    let found = store.with(|c| {
        c.query(&sql, &[&step, &q.camera, &ms(q.since), &ms(q.until), &q.zone, &q.sites]).op("crowd_series")
    })?;
    rows(found, |r| {
        let samples: i64 = get(r, 4)?;
        Ok(CrowdBucket {
            start: get_ts(r, 0)?,
            mean: get(r, 1)?,
            min: get(r, 2)?,
            max: get(r, 3)?,
            samples: u32::try_from(samples).unwrap_or(u32::MAX),
        })
    })
}

pub(super) fn trajectories(store: &PostgresStore, q: &TrajectoryQuery) -> Result<TrajectoryPage> {
    check_limit("trajectory query", q.limit)?;
    let mut f = Filter::default();
    if let Some(sites) = &q.sites {
        f.add("t.site = ANY(?)", Box::new(sites.clone()));
    }
    if let Some(t) = q.since {
        f.add("t.last_seen >= ?", Box::new(ms(t)));
    }
    if let Some(t) = q.until {
        f.add("t.first_seen < ?", Box::new(ms(t)));
    }
    if let Some(c) = &q.camera {
        f.add("EXISTS (SELECT 1 FROM sightings s WHERE s.trajectory = t.id AND s.camera = ?)", Box::new(c.clone()));
    }
    if let Some(c) = q.cursor {
        f.add_many("(t.last_seen, t.id) < (?, ?)", vec![Box::new(c.last_seen_ms), Box::new(c.id)]);
    }
    let limit = f.push(Box::new(i64::from(q.limit) + 1));
    let cols = TRAJECTORY_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
    let sql =
        format!("SELECT {cols} FROM trajectories t {} ORDER BY t.last_seen DESC, t.id DESC LIMIT {limit}", f.sql());
    let found = store.with(|c| c.query(&sql, &f.refs()).op("trajectories"))?;
    let mut items: Vec<TrajectorySummary> = rows(found, trajectory_row)?;
    let next = if items.len() > q.limit as usize {
        items.truncate(q.limit as usize);
        items.last().map(|t| Cursor { last_seen_ms: ms(t.last_seen), id: t.id })
    } else {
        None
    };
    Ok(TrajectoryPage { items, next })
}

pub(super) fn trajectory(store: &PostgresStore, id: Uuid) -> Result<Option<TrajectoryDetail>> {
    const OP: &str = "trajectory";
    let found = store.with(|c| {
        // one read-only snapshot: the summary and the sightings are of the same moment
        let mut tx = c
            .build_transaction()
            .read_only(true)
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()
            .op(OP)?;
        let Some(summary) =
            tx.query_opt(&format!("SELECT {TRAJECTORY_COLUMNS} FROM trajectories WHERE id = $1"), &[&id]).op(OP)?
        else {
            return Ok(None);
        };
        let points = tx
            .query(
                "SELECT id, camera, first_seen, last_seen, ground_x, ground_y, distance FROM sightings \
                 WHERE trajectory = $1 ORDER BY first_seen, id",
                &[&id],
            )
            .op(OP)?;
        tx.commit().op(OP)?;
        Ok(Some((summary, points)))
    })?;
    let Some((summary, points)) = found else { return Ok(None) };
    let sightings = rows(points, |r| {
        Ok(TrajectoryPoint {
            id: get(r, 0)?,
            camera: get(r, 1)?,
            first_seen: get_ts(r, 2)?,
            last_seen: get_ts(r, 3)?,
            ground: get_pair(r, 4)?,
            distance: get::<Option<f64>>(r, 6)?.map(|d| d as f32),
        })
    })?;
    Ok(Some(TrajectoryDetail { summary: trajectory_row(&summary)?, sightings, merged_from: None }))
}

pub(super) fn sightings(store: &PostgresStore, ids: &[Uuid]) -> Result<Vec<StoredSighting>> {
    let rows = store.with(|c| {
        c.query(&format!("SELECT {SIGHTING_COLUMNS} FROM sightings WHERE id = ANY($1)"), &[&ids]).op("sightings")
    })?;
    rows.iter().map(sighting_row).collect()
}

/// Pages of [`EMBEDDING_PAGE`] rows by `(last_seen, id)`: `f` runs between round trips, with no
/// connection held. Each page's bounds are plain ranges on `last_seen` (no `IS NULL OR`), so
/// that it starts where the last one ended in the `(model, last_seen)` index instead of
/// scanning from `since` again: a load is linear in the rows, not quadratic.
pub(super) fn for_each_embedding(
    store: &PostgresStore,
    model: &str,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    f: &mut dyn FnMut(EmbeddingRow),
) -> Result<u64> {
    const OP: &str = "embeddings";
    let (since, until) = (since.map_or(i64::MIN, ms), until.map_or(i64::MAX, ms));
    let mut after: Option<(i64, Uuid)> = None;
    let mut n = 0;
    loop {
        let page = store.with(|c| {
            match after {
                None => c.query(
                    "SELECT id, trajectory, site, camera, last_seen, embedding FROM sightings \
                     WHERE model = $1 AND last_seen >= $2 AND last_seen < $3 \
                     ORDER BY last_seen, id LIMIT $4",
                    &[&model, &since, &until, &EMBEDDING_PAGE],
                ),
                Some((after_ms, after_id)) => c.query(
                    "SELECT id, trajectory, site, camera, last_seen, embedding FROM sightings \
                     WHERE model = $1 AND last_seen >= $2 AND last_seen < $3 AND (last_seen, id) > ($2, $4) \
                     ORDER BY last_seen, id LIMIT $5",
                    &[&model, &after_ms, &until, &after_id, &EMBEDDING_PAGE],
                ),
            }
            .op(OP)
        })?;
        let full = page.len() as i64 == EMBEDDING_PAGE;
        for r in &page {
            let row = EmbeddingRow {
                sighting: get(r, 0)?,
                trajectory: get(r, 1)?,
                site: get(r, 2)?,
                camera: get(r, 3)?,
                last_seen: get_ts(r, 4)?,
                embedding: get_f32s(r, 5)?,
            };
            after = Some((ms(row.last_seen), row.sighting));
            f(row);
            n += 1;
        }
        if !full {
            return Ok(n);
        }
    }
}

pub(super) fn sightings_for_replay(
    store: &PostgresStore,
    since: OffsetDateTime,
    site: Option<&str>,
) -> Result<Vec<StoredSighting>> {
    let found = store.with(|c| {
        c.query(
            &format!(
                "SELECT {SIGHTING_COLUMNS} FROM sightings WHERE trajectory IN \
                 (SELECT id FROM trajectories WHERE last_seen >= $1 AND ($2::text IS NULL OR site = $2)) \
                 ORDER BY first_seen, id"
            ),
            &[&ms(since), &site],
        )
        .op("sightings_for_replay")
    })?;
    rows(found, sighting_row)
}

pub(super) fn merged_into(store: &PostgresStore, id: Uuid) -> Result<Option<Uuid>> {
    const OP: &str = "merged_into";
    store.with(|c| {
        let mut last: Option<Uuid> = None;
        // merges of merges (a merged-away id never gets sightings again, so there is no cycle)
        for _ in 0..MAX_MERGE_CHAIN {
            let at = last.unwrap_or(id);
            match c.query_opt("SELECT into_id FROM trajectory_merges WHERE from_id = $1", &[&at]).op(OP)? {
                Some(r) => last = Some(get(&r, 0)?),
                None => break,
            }
        }
        Ok(last)
    })
}

pub(super) fn merges(store: &PostgresStore, q: &MergeQuery) -> Result<Vec<MergeRecord>> {
    const OP: &str = "merges";
    check_limit("merge query", q.limit)?;
    let rows = store.with(|c| {
        c.query(
            "SELECT seq, site, from_id, into_id, ts, distance, sighting, moved FROM trajectory_merges \
             WHERE seq > $1 AND ($2::text[] IS NULL OR site = ANY($2)) ORDER BY seq LIMIT $3",
            &[&q.after_seq.unwrap_or(0), &q.sites, &i64::from(q.limit)],
        )
        .op(OP)
    })?;
    rows.iter()
        .map(|r| {
            Ok(MergeRecord {
                seq: get(r, 0)?,
                site: get(r, 1)?,
                from: get(r, 2)?,
                into: get(r, 3)?,
                ts: get_ts(r, 4)?,
                distance: get::<f64>(r, 5)? as f32,
                sighting: get(r, 6)?,
                moved: get::<i64>(r, 7)? as u64,
            })
        })
        .collect()
}
