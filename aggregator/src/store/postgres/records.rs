//! Writes of what the edges send (sightings with their trajectories, alerts, crowd
//! measurements, camera and agent statuses), camera positions and alert acknowledgements. Each is
//! one short transaction; events are idempotent on their id. Concurrent writers (several
//! aggregators on one database) are serialised by the rows they lock.

use std::collections::{HashMap, HashSet};

use sightline_contract::{AgentStatus, Alert, CameraStatus, Crowd};
use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::PostgresStore;
use super::rows::*;
use crate::store::codec::time_of_ms;
use crate::store::{Acknowledged, Result, SightingPlacement, StoreError, TrajectoryMerge};

pub(super) fn seen_among(store: &PostgresStore, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
    store.with(|c| {
        c.query(
            "SELECT id FROM sightings WHERE id = ANY($1) UNION SELECT id FROM alerts WHERE id = ANY($1) \
             UNION SELECT id FROM crowd WHERE id = ANY($1)",
            &[&ids],
        )
        .op("seen")?
        .iter()
        .map(|r| get(r, 0))
        .collect()
    })
}

pub(super) fn record_batch(
    store: &PostgresStore,
    batch: &[SightingPlacement<'_>],
    merges: &[TrajectoryMerge],
) -> Result<Vec<bool>> {
    const OP: &str = "record_sightings";
    // the batch as columns, one array per column: each statement below handles all of it in one
    // round trip
    let mut tracks = Vec::with_capacity(batch.len());
    for p in batch {
        let t = p.sighting.track;
        tracks.push(i64::try_from(t).map_err(|_| invalid("sighting", format!("track {t} too large")))?);
    }
    let col = |f: &dyn Fn(&SightingPlacement<'_>) -> String| batch.iter().map(f).collect::<Vec<String>>();
    let ids: Vec<Uuid> = batch.iter().map(|p| p.sighting.id).collect();
    let trajectories: Vec<Uuid> = batch.iter().map(|p| p.trajectory).collect();
    let sites = col(&|p| p.sighting.site.clone());
    let firsts: Vec<i64> = batch.iter().map(|p| ms(p.sighting.first_seen)).collect();
    let lasts: Vec<i64> = batch.iter().map(|p| ms(p.sighting.last_seen)).collect();
    // a fixed lock order against concurrent writers
    let mut locked: Vec<Uuid> = trajectories.clone();
    locked.extend(merges.iter().flat_map(|m| [m.from, m.into]));
    locked.sort();
    locked.dedup();
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        // creates the rows that are new, then locks them all: writers of one trajectory take
        // turns. A purge may delete a row between the two (its last sightings expired): then
        // create it again.
        let mut site_of: HashMap<Uuid, String> = HashMap::new();
        for _ in 0..2 {
            tx.execute(
                "INSERT INTO trajectories (id, site, first_seen, last_seen, sightings, cameras) \
                 SELECT id, site, f, l, 0, '[]' FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[]) \
                 AS b(id, site, f, l) ON CONFLICT (id) DO NOTHING",
                &[&trajectories, &sites, &firsts, &lasts],
            )
            .op(OP)?;
            for r in tx
                .query("SELECT id, site FROM trajectories WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&locked])
                .op(OP)?
            {
                site_of.insert(get(&r, 0)?, get(&r, 1)?);
            }
            if site_of.len() == locked.len() {
                break;
            }
        }
        for p in batch {
            match site_of.get(&p.trajectory) {
                None => {
                    return Err(invalid(
                        "sighting",
                        format!("trajectory {} was deleted twice while it was written", p.trajectory),
                    ));
                }
                Some(site) if *site != p.sighting.site => {
                    return Err(invalid(
                        "sighting",
                        format!(
                            "sighting {} is from site {:?} but trajectory {} belongs to site {site:?}",
                            p.sighting.id, p.sighting.site, p.trajectory
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        // in the batch's order: of two with one id, the first is inserted
        let inserted: HashSet<Uuid> = tx
            .query(
                &format!(
                    "INSERT INTO sightings ({SIGHTING_COLUMNS}) \
                     SELECT {SIGHTING_COLUMNS} FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
                     $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::float8[], $11::float8[], $12::text[], \
                     $13::bytea[], $14::uuid[], $15::float8[], $16::bigint[]) WITH ORDINALITY AS b({SIGHTING_COLUMNS}, n) \
                     ORDER BY n ON CONFLICT (id) DO NOTHING RETURNING id"
                ),
                &[
                    &ids,
                    &sites,
                    &col(&|p| p.sighting.camera.clone()),
                    &tracks,
                    &firsts,
                    &lasts,
                    &col(&|p| json(&p.sighting.best)),
                    &batch.iter().map(|p| i64::from(p.sighting.frame_size[0])).collect::<Vec<_>>(),
                    &batch.iter().map(|p| i64::from(p.sighting.frame_size[1])).collect::<Vec<_>>(),
                    &batch.iter().map(|p| p.sighting.ground.map(|g| g[0])).collect::<Vec<_>>(),
                    &batch.iter().map(|p| p.sighting.ground.map(|g| g[1])).collect::<Vec<_>>(),
                    &col(&|p| p.sighting.model.clone()),
                    &batch.iter().map(|p| f32_bytes(&p.sighting.embedding)).collect::<Vec<_>>(),
                    &trajectories,
                    &batch.iter().map(|p| p.distance.map(f64::from)).collect::<Vec<_>>(),
                    &batch.iter().map(|p| ms(p.received_at)).collect::<Vec<_>>(),
                ],
            )
            .op(OP)?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<_>>()?;
        let mut first_of_id = HashSet::new();
        let stored: Vec<bool> = ids.iter().map(|id| inserted.contains(id) && first_of_id.insert(*id)).collect();
        for m in merges {
            if let Some(other) = [m.from, m.into].iter().filter_map(|t| site_of.get(t)).find(|s| **s != m.site) {
                return Err(invalid(
                    "merge",
                    format!(
                        "merge of trajectory {} into {} of site {:?}: a trajectory belongs to site {other:?}",
                        m.from, m.into, m.site
                    ),
                ));
            }
            let moved =
                tx.execute("UPDATE sightings SET trajectory = $2 WHERE trajectory = $1", &[&m.from, &m.into]).op(OP)?;
            tx.execute(
                "INSERT INTO trajectory_merges (from_id, into_id, site, ts, distance, sighting, moved) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (from_id) DO NOTHING",
                &[&m.from, &m.into, &m.site, &ms(m.at), &f64::from(m.distance), &m.sighting, &(moved as i64)],
            )
            .op(OP)?;
        }
        // every locked row: one created above for a sighting that was not new is deleted
        refresh_trajectories(&mut tx, &locked).op(OP)?;
        tx.commit().op(OP)?;
        Ok(stored)
    })
}

pub(super) fn record_alert(store: &PostgresStore, a: &Alert, received_at: OffsetDateTime) -> Result<bool> {
    const OP: &str = "record_alert";
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        let inserted = tx
            .execute(
                "INSERT INTO alerts (id, site, camera, ts, alert, state, kind, severity, zone, message, details, \
                 received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
                &[
                    &a.id,
                    &a.site,
                    &a.camera,
                    &ms(a.ts),
                    &a.alert,
                    &enum_str(&a.state),
                    &enum_str(&a.kind),
                    &enum_str(&a.severity),
                    &a.zone,
                    &a.message,
                    &a.details.as_ref().map(json),
                    &ms(received_at),
                ],
            )
            .op(OP)?
            == 1;
        if inserted {
            tx.execute(
                "UPDATE alerts SET (acknowledged_by, acknowledged_at) = \
                 (SELECT acknowledged_by, acknowledged_at FROM alerts WHERE alert = $2 AND acknowledged_at IS NOT NULL \
                  ORDER BY acknowledged_at LIMIT 1) \
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM alerts WHERE alert = $2 AND acknowledged_at IS NOT NULL)",
                &[&a.id, &a.alert],
            )
            .op(OP)?;
            tx.commit().op(OP)?;
        }
        Ok(inserted)
    })
}

pub(super) fn record_crowd(store: &PostgresStore, c: &Crowd, received_at: OffsetDateTime) -> Result<bool> {
    store.with(|db| {
        let n = db
            .execute(
                "INSERT INTO crowd (id, site, camera, ts, method, total, zones, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    &c.id,
                    &c.site,
                    &c.camera,
                    &ms(c.ts),
                    &enum_str(&c.method),
                    &f64::from(c.total),
                    &json(&c.zones),
                    &ms(received_at),
                ],
            )
            .op("record_crowd")?;
        Ok(n == 1)
    })
}

pub(super) fn record_camera_status(
    store: &PostgresStore,
    s: &CameraStatus,
    received_at: OffsetDateTime,
) -> Result<bool> {
    store.with(|c| {
        let n = c
            .execute(
                "INSERT INTO cameras (site, id, status, status_ts, status_received_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (site, id) DO UPDATE SET status = excluded.status, status_ts = excluded.status_ts, \
                 status_received_at = excluded.status_received_at \
                 WHERE cameras.status_ts IS NULL OR excluded.status_ts >= cameras.status_ts",
                &[&s.site, &s.camera, &json(s), &ms(s.ts), &ms(received_at)],
            )
            .op("record_camera_status")?;
        Ok(n == 1)
    })
}

pub(super) fn record_agent_status(store: &PostgresStore, s: &AgentStatus, received_at: OffsetDateTime) -> Result<bool> {
    store.with(|c| {
        let n = c
            .execute(
                "INSERT INTO agents (site, id, status, status_ts, status_received_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (site, id) DO UPDATE SET status = excluded.status, status_ts = excluded.status_ts, \
                 status_received_at = excluded.status_received_at",
                &[&s.site, &s.agent, &json(s), &ms(s.ts), &ms(received_at)],
            )
            .op("record_agent_status")?;
        Ok(n == 1)
    })
}

pub(super) fn put_camera(store: &PostgresStore, site: &str, camera: &str, position: Option<[f64; 2]>) -> Result<()> {
    store.with(|c| {
        c.execute(
            "INSERT INTO cameras (site, id, position_x, position_y) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (site, id) DO UPDATE SET position_x = excluded.position_x, position_y = excluded.position_y",
            &[&site, &camera, &position.map(|p| p[0]), &position.map(|p| p[1])],
        )
        .op("put_camera")?;
        Ok(())
    })
}

pub(super) fn acknowledge_alert(
    store: &PostgresStore,
    alert: &str,
    by: &str,
    at: OffsetDateTime,
) -> Result<Acknowledged> {
    const OP: &str = "acknowledge_alert";
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        // locks the alert's events: two acknowledgements at once take turns
        let events = tx.query("SELECT 1 FROM alerts WHERE alert = $1 FOR UPDATE", &[&alert]).op(OP)?.len();
        if events == 0 {
            return Ok(Acknowledged::NotFound);
        }
        let earlier = tx
            .query_opt(
                "SELECT acknowledged_by, acknowledged_at FROM alerts WHERE alert = $1 AND acknowledged_at IS NOT NULL \
                 ORDER BY acknowledged_at LIMIT 1",
                &[&alert],
            )
            .op(OP)?;
        let (who, when, outcome) = match earlier {
            Some(r) => {
                let (who, when): (String, i64) = (get(&r, 0)?, get(&r, 1)?);
                let at = time_of_ms(when).map_err(|e| StoreError::Corrupt { what: "timestamp", detail: e })?;
                (who.clone(), when, Acknowledged::Already { by: who, at })
            }
            None => (by.to_owned(), ms(at), Acknowledged::Now),
        };
        tx.execute(
            "UPDATE alerts SET acknowledged_by = $2, acknowledged_at = $3 WHERE alert = $1 AND acknowledged_at IS NULL",
            &[&alert, &who, &when],
        )
        .op(OP)?;
        tx.commit().op(OP)?;
        Ok(outcome)
    })
}
