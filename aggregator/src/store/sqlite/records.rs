//! Writes of what the edges send (sightings with their trajectories, alerts, crowd
//! measurements, camera and agent statuses), camera positions and alert acknowledgements. Each is
//! one short transaction; events are idempotent on their id.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sightline_contract::{AgentStatus, Alert, CameraStatus, Crowd};
use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::SqliteStore;
use super::rows::*;
use crate::store::{Acknowledged, Result, SightingPlacement, TrajectoryMerge};

pub(super) fn seen_among(store: &SqliteStore, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
    let db = store.reader();
    let mut q = db
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM sightings WHERE id = ?1) OR EXISTS (SELECT 1 FROM alerts WHERE id = ?1) \
             OR EXISTS (SELECT 1 FROM crowd WHERE id = ?1)",
        )
        .op("seen")?;
    let mut seen = HashSet::new();
    for id in ids {
        if q.query_row([id.to_string()], |r| r.get(0)).op("seen")? {
            seen.insert(*id);
        }
    }
    Ok(seen)
}

pub(super) fn record_batch(
    store: &SqliteStore,
    batch: &[SightingPlacement<'_>],
    merges: &[TrajectoryMerge],
) -> Result<Vec<bool>> {
    const OP: &str = "record_sightings";
    let mut db = store.writer();
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
    let mut stored = Vec::with_capacity(batch.len());
    // each trajectory's row is brought up to date once, after all its new sightings (and
    // deleted if it was created for a sighting that was not new)
    let mut touched: Vec<String> = Vec::new();
    for p in batch {
        let traj = p.trajectory.to_string();
        stored.push(insert_sighting(&tx, p, &traj)?);
        if !touched.contains(&traj) {
            touched.push(traj);
        }
    }
    for m in merges {
        let (from, into) = (m.from.to_string(), m.into.to_string());
        let sites: Vec<String> = tx
            .prepare_cached("SELECT site FROM trajectories WHERE id IN (?1, ?2)")
            .and_then(|mut q| q.query_map([&from, &into], |r| r.get(0))?.collect())
            .op(OP)?;
        if let Some(other) = sites.iter().find(|s| **s != m.site) {
            return Err(invalid(
                "merge",
                format!(
                    "merge of trajectory {from} into {into} of site {:?}: a trajectory belongs to site {other:?}",
                    m.site
                ),
            ));
        }
        let moved = tx
            .prepare_cached("UPDATE sightings SET trajectory = ?2 WHERE trajectory = ?1")
            .and_then(|mut q| q.execute([&from, &into]))
            .op(OP)?;
        tx.prepare_cached(
            "INSERT INTO trajectory_merges (from_id, into_id, site, ts, distance, sighting, moved) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (from_id) DO NOTHING",
        )
        .and_then(|mut q| {
            q.execute(params![
                from,
                into,
                m.site,
                ms(m.at),
                f64::from(m.distance),
                m.sighting.to_string(),
                moved as i64
            ])
        })
        .op(OP)?;
        for t in [from, into] {
            if !touched.contains(&t) {
                touched.push(t);
            }
        }
    }
    for traj in &touched {
        refresh_trajectory(&tx, traj).op(OP)?;
    }
    tx.commit().op(OP)?;
    Ok(stored)
}

/// Inserts one sighting of a batch, creating its trajectory's row if there is none (the caller
/// refreshes the row); false when the sighting's id is already stored.
fn insert_sighting(tx: &rusqlite::Transaction<'_>, p: &SightingPlacement<'_>, traj: &str) -> Result<bool> {
    const OP: &str = "record_sightings";
    let s = p.sighting;
    let track = i64::try_from(s.track).map_err(|_| invalid("sighting", format!("track {} too large", s.track)))?;
    let site: Option<String> = tx
        .prepare_cached("SELECT site FROM trajectories WHERE id = ?1")
        .and_then(|mut q| q.query_row([traj], |r| r.get(0)).optional())
        .op(OP)?;
    match site {
        Some(site) if site != s.site => {
            return Err(invalid(
                "sighting",
                format!("sighting {} is from site {:?} but trajectory {traj} belongs to site {site:?}", s.id, s.site),
            ));
        }
        Some(_) => {}
        None => {
            tx.prepare_cached(
                "INSERT INTO trajectories (id, site, first_seen, last_seen, sightings, cameras) \
                 VALUES (?1, ?2, ?3, ?4, 0, '[]')",
            )
            .and_then(|mut q| q.execute(params![traj, s.site, ms(s.first_seen), ms(s.last_seen)]))
            .op(OP)?;
        }
    }
    let inserted = tx
        .prepare_cached(&format!(
            "INSERT INTO sightings ({SIGHTING_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .and_then(|mut q| {
            q.execute(params![
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
                p.distance.map(f64::from),
                ms(p.received_at),
            ])
        })
        .op(OP)?;
    Ok(inserted == 1)
}

pub(super) fn record_alert(store: &SqliteStore, a: &Alert, received_at: OffsetDateTime) -> Result<bool> {
    const OP: &str = "record_alert";
    let mut db = store.writer();
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

pub(super) fn record_crowd(store: &SqliteStore, c: &Crowd, received_at: OffsetDateTime) -> Result<bool> {
    let n = store
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

pub(super) fn record_camera_status(store: &SqliteStore, s: &CameraStatus, received_at: OffsetDateTime) -> Result<bool> {
    let n = store
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

pub(super) fn record_agent_status(store: &SqliteStore, s: &AgentStatus, received_at: OffsetDateTime) -> Result<bool> {
    let n = store
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

pub(super) fn put_camera(store: &SqliteStore, site: &str, camera: &str, position: Option<[f64; 2]>) -> Result<()> {
    store
        .writer()
        .execute(
            "INSERT INTO cameras (site, id, position_x, position_y) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (site, id) DO UPDATE SET position_x = excluded.position_x, position_y = excluded.position_y",
            params![site, camera, position.map(|p| p[0]), position.map(|p| p[1])],
        )
        .op("put_camera")?;
    Ok(())
}

pub(super) fn acknowledge_alert(
    store: &SqliteStore,
    alert: &str,
    by: &str,
    at: OffsetDateTime,
) -> Result<Acknowledged> {
    const OP: &str = "acknowledge_alert";
    let mut db = store.writer();
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
