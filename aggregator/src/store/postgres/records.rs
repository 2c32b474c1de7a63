//! Writes of what the edges send (sightings with their trajectories, alerts, crowd
//! measurements, camera and agent statuses), camera positions and alert acknowledgements. Each is
//! one short transaction; events are idempotent on their id. Concurrent writers (several
//! aggregators on one database) are serialised by the rows they lock.

use sightline_contract::{AgentStatus, Alert, CameraStatus, Crowd, Sighting};
use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::PostgresStore;
use super::rows::*;
use crate::store::codec::time_of_ms;
use crate::store::{Acknowledged, Result, StoreError};

pub(super) fn seen(store: &PostgresStore, id: Uuid) -> Result<bool> {
    store.with(|c| {
        c.query_one(
            "SELECT EXISTS (SELECT 1 FROM sightings WHERE id = $1) OR EXISTS (SELECT 1 FROM alerts WHERE id = $1) \
             OR EXISTS (SELECT 1 FROM crowd WHERE id = $1)",
            &[&id],
        )
        .op("seen")
        .and_then(|r| get(&r, 0))
    })
}

pub(super) fn record_sighting(
    store: &PostgresStore,
    s: &Sighting,
    trajectory: Uuid,
    distance: Option<f32>,
    received_at: OffsetDateTime,
) -> Result<bool> {
    const OP: &str = "record_sighting";
    let track = i64::try_from(s.track).map_err(|_| invalid("sighting", format!("track {} too large", s.track)))?;
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        // creates the row if new, then locks it: writers of one trajectory take turns. A purge
        // may delete the row between the two (its last sightings expired): then create it again.
        let mut site = None;
        for _ in 0..2 {
            tx.execute(
                "INSERT INTO trajectories (id, site, first_seen, last_seen, sightings, cameras) \
                 VALUES ($1, $2, $3, $4, 0, '[]') ON CONFLICT (id) DO NOTHING",
                &[&trajectory, &s.site, &ms(s.first_seen), &ms(s.last_seen)],
            )
            .op(OP)?;
            if let Some(r) =
                tx.query_opt("SELECT site FROM trajectories WHERE id = $1 FOR UPDATE", &[&trajectory]).op(OP)?
            {
                site = Some(get::<String>(&r, 0)?);
                break;
            }
        }
        let Some(site) = site else {
            return Err(invalid("sighting", format!("trajectory {trajectory} was deleted twice while it was written")));
        };
        if site != s.site {
            return Err(invalid(
                "sighting",
                format!(
                    "sighting {} is from site {:?} but trajectory {trajectory} belongs to site {site:?}",
                    s.id, s.site
                ),
            ));
        }
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO sightings ({SIGHTING_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &s.id,
                    &s.site,
                    &s.camera,
                    &track,
                    &ms(s.first_seen),
                    &ms(s.last_seen),
                    &json(&s.best),
                    &i64::from(s.frame_size[0]),
                    &i64::from(s.frame_size[1]),
                    &s.ground.map(|g| g[0]),
                    &s.ground.map(|g| g[1]),
                    &s.model,
                    &f32_bytes(&s.embedding),
                    &trajectory,
                    &distance.map(f64::from),
                    &ms(received_at),
                ],
            )
            .op(OP)?
            == 1;
        if !inserted {
            return Ok(false); // rolled back: a trajectory created above for it is not kept
        }
        refresh_trajectory(&mut tx, trajectory).op(OP)?;
        tx.commit().op(OP)?;
        Ok(true)
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
