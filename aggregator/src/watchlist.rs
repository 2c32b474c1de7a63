//! The watchlist: faces an admin registered (a photo or an embedding, with a purpose and an
//! expiry) for which a new sighting raises a `watchlist_match` alert (`docs/aggregator.md`).
//!
//! Matching is done by the ingest thread for every new sighting, against the active entries
//! held here (a few at most: this is a list of missing persons, not a database). One alert per
//! (entry, trajectory): its stable id is `watchlist:{entry}:{trajectory}`, raised by the first
//! matching sighting of the trajectory, and cleared when the entry is removed or expires. Later
//! matching sightings of the same trajectory do not raise it again (the trajectory API shows
//! where the person went next).
//!
//! The raised set is kept in memory: after a restart, a trajectory that matches again raises
//! its alert again (same stable id, a new event).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::json;
use sightline_contract::{Alert, AlertKind, AlertState, Severity, Sighting, new_event_id};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{AlertQuery, Store, StoreError, WatchlistEntry};

/// `[watchlist]` in the aggregator's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchlistConfig {
    /// Largest embedding distance of a match. Stricter than the 0.6 same-person rule of the
    /// dlib model: an alert sends people looking for someone, so false matches cost more than
    /// late ones (see the distance distributions in `docs/correlation.md`).
    pub max_distance: f32,
    pub severity: Severity,
    /// Longest an entry may stay on the watchlist (days); `expires_at` beyond it is refused.
    pub max_days: f64,
}

impl Default for WatchlistConfig {
    fn default() -> Self {
        WatchlistConfig { max_distance: 0.5, severity: Severity::Critical, max_days: 30.0 }
    }
}

#[derive(Debug)]
struct Raised {
    site: String,
    camera: String,
    alert: String,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<WatchlistEntry>,
    /// Alerts raised and not yet cleared, by entry.
    raised: HashMap<Uuid, Vec<Raised>>,
}

/// The active entries and the alerts they raised; shared by the ingest thread and the API.
#[derive(Debug)]
pub struct Watchlist {
    cfg: WatchlistConfig,
    state: Mutex<State>,
}

impl Watchlist {
    /// The entries active at `now`, from the store, with the alerts they raised before: a
    /// trajectory that matched before a restart does not raise again, and removing or expiring
    /// its entry still clears its alert. (An active entry's alerts are all raised: they clear
    /// only when the entry is removed or expires, which ends the entry.)
    pub fn load(store: &dyn Store, cfg: WatchlistConfig, now: OffsetDateTime) -> Result<Self, StoreError> {
        let entries = store.watchlist_active(now)?;
        let mut raised: HashMap<Uuid, Vec<Raised>> = HashMap::new();
        if !entries.is_empty() {
            // no time bound: a late sighting may raise an alert dated before its entry was made
            let q = AlertQuery {
                kind: Some(AlertKind::WatchlistMatch),
                state: Some(AlertState::Raised),
                limit: u32::MAX,
                ..AlertQuery::default()
            };
            for stored in store.alerts(&q)? {
                let a = stored.alert;
                let entry = a.alert.strip_prefix("watchlist:").and_then(|r| r.split(':').next());
                let Some(id) = entry.and_then(|e| Uuid::parse_str(e).ok()) else { continue };
                if entries.iter().any(|e| e.id == id) {
                    let list = raised.entry(id).or_default();
                    if !list.iter().any(|r| r.alert == a.alert) {
                        list.push(Raised { site: a.site, camera: a.camera, alert: a.alert });
                    }
                }
            }
        }
        Ok(Watchlist { cfg, state: Mutex::new(State { entries, raised }) })
    }

    /// Rereads the entries and their alerts from the store, which other nodes of a cluster
    /// change too (their API adds and removes entries).
    pub fn reload(&self, store: &dyn Store, now: OffsetDateTime) -> Result<(), StoreError> {
        let fresh = Watchlist::load(store, self.cfg.clone(), now)?;
        *self.state.lock().unwrap() = fresh.state.into_inner().unwrap();
        Ok(())
    }

    pub fn empty(cfg: WatchlistConfig) -> Self {
        Watchlist { cfg, state: Mutex::new(State::default()) }
    }

    pub fn config(&self) -> &WatchlistConfig {
        &self.cfg
    }

    /// Active entries held.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An entry the store just accepted.
    pub fn add(&self, entry: WatchlistEntry) {
        self.state.lock().unwrap().entries.push(entry);
    }

    /// An entry the store just deleted: the clears of its raised alerts.
    pub fn remove(&self, id: Uuid, now: OffsetDateTime) -> Vec<Alert> {
        let mut st = self.state.lock().unwrap();
        let Some(i) = st.entries.iter().position(|e| e.id == id) else { return Vec::new() };
        let entry = st.entries.remove(i);
        let raised = st.raised.remove(&id).unwrap_or_default();
        drop(st);
        clears(&self.cfg, &entry, raised, now, "removed from the watchlist")
    }

    /// Drops the entries expired at `now`: the clears of their raised alerts.
    pub fn expire(&self, now: OffsetDateTime) -> Vec<Alert> {
        let mut st = self.state.lock().unwrap();
        if st.entries.iter().all(|e| e.expires_at > now) {
            return Vec::new();
        }
        let (expired, active): (Vec<_>, Vec<_>) =
            std::mem::take(&mut st.entries).into_iter().partition(|e| e.expires_at <= now);
        st.entries = active;
        let mut out = Vec::new();
        for entry in expired {
            let raised = st.raised.remove(&entry.id).unwrap_or_default();
            out.extend(clears(&self.cfg, &entry, raised, now, "the watchlist entry expired"));
        }
        out
    }

    /// A new sighting placed on `trajectory`: a raised alert for each active entry it matches
    /// that has not raised one for this trajectory yet.
    pub fn check(&self, s: &Sighting, trajectory: Uuid, now: OffsetDateTime) -> Vec<Alert> {
        let mut st = self.state.lock().unwrap();
        let State { entries, raised } = &mut *st;
        let mut out = Vec::new();
        for e in entries.iter().filter(|e| e.expires_at > now && e.model == s.model) {
            if e.embedding.len() != s.embedding.len() {
                continue;
            }
            let distance = sightline_vision::distance(&e.embedding, &s.embedding);
            if distance > self.cfg.max_distance {
                continue;
            }
            let alert_id = format!("watchlist:{}:{}", e.id, trajectory);
            let list = raised.entry(e.id).or_default();
            if list.iter().any(|r| r.alert == alert_id) {
                continue;
            }
            list.push(Raised { site: s.site.clone(), camera: s.camera.clone(), alert: alert_id.clone() });
            out.push(Alert {
                id: new_event_id(),
                site: s.site.clone(),
                camera: s.camera.clone(),
                ts: s.last_seen,
                alert: alert_id,
                state: AlertState::Raised,
                kind: AlertKind::WatchlistMatch,
                severity: self.cfg.severity,
                zone: None,
                message: format!(
                    "watchlist entry {:?} matched a face on camera {} (distance {distance:.2})",
                    e.name, s.camera
                ),
                details: Some(json!({
                    "watchlist": e.id,
                    "name": e.name,
                    "trajectory": trajectory,
                    "sighting": s.id,
                    "distance": distance,
                    "max_distance": self.cfg.max_distance,
                })),
            });
        }
        out
    }
}

fn clears(
    cfg: &WatchlistConfig,
    entry: &WatchlistEntry,
    raised: Vec<Raised>,
    now: OffsetDateTime,
    why: &str,
) -> Vec<Alert> {
    raised
        .into_iter()
        .map(|r| Alert {
            id: new_event_id(),
            site: r.site,
            camera: r.camera,
            ts: now,
            alert: r.alert,
            state: AlertState::Cleared,
            kind: AlertKind::WatchlistMatch,
            severity: cfg.severity,
            zone: None,
            message: format!("watchlist entry {:?}: {why}", entry.name),
            details: Some(json!({ "watchlist": entry.id, "name": entry.name })),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_contract::{BestShot, ts};

    fn entry(id: u128, embedding: Vec<f32>, expires: &str) -> WatchlistEntry {
        WatchlistEntry {
            id: Uuid::from_u128(id),
            name: format!("case {id}"),
            purpose: "missing person".into(),
            model: sightline_vision::EMBEDDING_MODEL.into(),
            embedding,
            created_by: "admin".into(),
            created_at: ts::parse("2026-11-23T08:00:00.000Z").unwrap(),
            expires_at: ts::parse(expires).unwrap(),
        }
    }

    fn sighting(camera: &str, embedding: Vec<f32>) -> Sighting {
        let t = ts::parse("2026-11-23T09:00:00.000Z").unwrap();
        Sighting {
            id: new_event_id(),
            site: "s".into(),
            camera: camera.into(),
            track: 1,
            first_seen: t,
            last_seen: t,
            best: BestShot {
                ts: t,
                bbox: [0.0, 0.0, 50.0, 50.0],
                landmarks: [[0.0; 2]; 5],
                det_score: 0.9,
                quality: 0.8,
            },
            frame_size: [640, 360],
            ground: None,
            model: sightline_vision::EMBEDDING_MODEL.into(),
            embedding,
        }
    }

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 128];
        v[i] = 1.0;
        v
    }

    fn list(entries: Vec<WatchlistEntry>) -> Watchlist {
        let w = Watchlist::empty(WatchlistConfig::default());
        entries.into_iter().for_each(|e| w.add(e));
        w
    }

    #[test]
    fn raises_once_per_trajectory_and_clears_on_removal() {
        let w =
            list(vec![entry(1, unit(0), "2026-12-01T00:00:00.000Z"), entry(2, unit(1), "2026-12-01T00:00:00.000Z")]);
        let now = ts::parse("2026-11-23T09:00:01.000Z").unwrap();
        let (t1, t2) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let mut near = unit(0);
        near[2] = 0.3; // distance 0.3 to entry 1, ~1.04 to entry 2
        let a = w.check(&sighting("a", near.clone()), t1, now);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].alert, format!("watchlist:{}:{}", Uuid::from_u128(1), t1));
        assert_eq!(
            (a[0].state, a[0].kind, a[0].severity),
            (AlertState::Raised, AlertKind::WatchlistMatch, Severity::Critical)
        );
        assert_eq!(a[0].details.as_ref().unwrap()["trajectory"], json!(t1));
        // the same trajectory again: nothing new; another trajectory: a second alert
        assert!(w.check(&sighting("b", near.clone()), t1, now).is_empty());
        assert_eq!(w.check(&sighting("b", near), t2, now).len(), 1);
        // far from both: nothing
        assert!(w.check(&sighting("a", unit(5)), t1, now).is_empty());
        let cleared = w.remove(Uuid::from_u128(1), now);
        assert_eq!(cleared.len(), 2);
        assert!(cleared.iter().all(|c| c.state == AlertState::Cleared));
        assert_eq!(cleared[1].camera, "b");
        assert_eq!(w.len(), 1);
        assert!(w.remove(Uuid::from_u128(1), now).is_empty());
    }

    #[test]
    fn expired_entries_stop_matching_and_clear() {
        let w = list(vec![entry(1, unit(0), "2026-11-23T10:00:00.000Z")]);
        let before = ts::parse("2026-11-23T09:30:00.000Z").unwrap();
        let after = ts::parse("2026-11-23T10:00:00.000Z").unwrap();
        assert_eq!(w.check(&sighting("a", unit(0)), Uuid::from_u128(10), before).len(), 1);
        assert!(w.check(&sighting("a", unit(0)), Uuid::from_u128(11), after).is_empty());
        assert!(w.expire(before).is_empty());
        let cleared = w.expire(after);
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].state, AlertState::Cleared);
        assert!(w.is_empty());
    }

    #[test]
    fn raised_alerts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("a.sqlite")).unwrap();
        let now = ts::parse("2026-11-23T09:00:01.000Z").unwrap();
        let e = entry(1, unit(0), "2026-12-01T00:00:00.000Z");
        assert!(store.watchlist_add(&e).unwrap());
        let t1 = Uuid::from_u128(10);
        let w = Watchlist::load(&store, WatchlistConfig::default(), now).unwrap();
        let raised = w.check(&sighting("a", unit(0)), t1, now);
        assert_eq!(raised.len(), 1);
        assert!(store.record_alert(&raised[0], now).unwrap());

        // a restart: the same trajectory does not raise again, another one does
        let w = Watchlist::load(&store, WatchlistConfig::default(), now).unwrap();
        assert!(w.check(&sighting("b", unit(0)), t1, now).is_empty());
        assert_eq!(w.check(&sighting("b", unit(0)), Uuid::from_u128(11), now).len(), 1);
        // removing the entry clears the alert raised before the restart too
        let cleared = w.remove(e.id, now);
        assert_eq!(cleared.len(), 2);
        assert!(cleared.iter().any(|c| c.alert == raised[0].alert && c.camera == "a"));
    }

    #[test]
    fn other_models_never_match() {
        let w = list(vec![entry(1, unit(0), "2026-12-01T00:00:00.000Z")]);
        let mut s = sighting("a", unit(0));
        s.model = "another-model".into();
        assert!(w.check(&s, Uuid::from_u128(10), ts::parse("2026-11-23T09:00:00.000Z").unwrap()).is_empty());
    }
}
