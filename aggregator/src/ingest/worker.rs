//! The ingest thread: one blocking thread owning the correlators, fed by the MQTT clients through
//! a bounded channel ([`Work`]), and told by the retention job when to forget what is past the
//! correlation horizon. On a node of a cluster, sites are taken and handed over through the same
//! channel, so a hand-over comes after every message of the site already queued.
//!
//! Sightings are stored by group commit ([`Batch`]): a run of sighting messages already queued is
//! placed one by one, stored in one transaction, and only then acknowledged and announced, in
//! order. Any other message first flushes the run before it, then is stored on its own.
//!
//! A message or batch the store cannot take for a while (unreachable, restarting, busy, full:
//! `StoreError::is_transient`) is retried with backoff (0.1 s doubling to 5 s) until it is
//! stored: ingest pauses, the bounded channel fills, the MQTT client stops reading and the broker
//! keeps the rest; nothing is acknowledged before it is stored. Any other store failure leaves
//! the message unacknowledged and goes on.

use std::sync::{Arc, RwLock};

use rumqttc::{AsyncClient, Publish, QoS};
use sightline_contract::{Clock, Payload, Sighting, Trajectory, new_event_id, topic};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::batch::{Batch, Pending};
use super::parse::{self, Incoming, Kind};
use crate::alerts::AlertPublisher;
use crate::correlate::{Assignment, Observation, SiteCorrelators};
use crate::events::Events;
use crate::latest::LatestCrowd;
use crate::metrics::{Metrics, Outcome};
use crate::search::SearchIndex;
use crate::store::{Store, StoreError};
use crate::watchlist::Watchlist;

/// Messages to the ingest thread.
pub enum Work {
    /// A message, when it was received, and the client (MQTT session) to acknowledge it on.
    Message(Publish, std::time::Instant, AsyncClient),
    /// Serve `site`: its correlator rebuilt from the store; answers with the sightings replayed.
    Take { site: String, done: oneshot::Sender<Result<usize, StoreError>> },
    /// Stop serving `site` (every message of it queued before is handled first).
    HandOver { site: String, done: oneshot::Sender<()> },
    /// The retention job ran: drop trajectories whose last sighting is older than `forget`
    /// from memory, and, when `expire` (one node of a cluster does), expire watchlist entries.
    Tick { forget: time::OffsetDateTime, expire: bool },
}

/// Messages waiting for the ingest thread at most (and the MQTT client's request queue).
pub const QUEUE: usize = 1024;
/// The first wait before retrying a message the store could not take, doubled up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// The ingest thread's state.
pub struct Ingest {
    /// Largest payload accepted (bytes).
    pub max_bytes: usize,
    /// `[ingest]`: what a message must be to be believed.
    pub plausible: crate::plausible::Plausibility,
    pub store: Arc<dyn Store>,
    /// One per site with cameras (on a node of a cluster, per site it owns); sightings of sites
    /// without cameras in the config are rejected.
    pub correlators: SiteCorrelators,
    /// Trajectory updates go out through it.
    pub client: AsyncClient,
    /// Sites come and go ([`Work::Take`], [`Work::HandOver`]) as this node of a cluster owns them:
    /// a message of a site not served is left unacknowledged for its owner, not rejected.
    pub owned_sites_only: bool,
    /// How far back a taken site's trajectories are replayed into its correlator.
    pub replay: time::Duration,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    /// Each camera's latest crowd measurement with its grid (the store keeps no grid).
    pub latest_crowd: LatestCrowd,
    pub index: Arc<RwLock<SearchIndex>>,
    pub watchlist: Arc<Watchlist>,
    pub alerts: Arc<AlertPublisher>,
    /// Raises and clears `agent_offline` ([`crate::liveness`]).
    pub liveness: crate::liveness::Liveness,
    /// The run of messages handled but not yet acknowledged: sightings placed but not yet stored.
    pub batch: Batch,
}

impl Ingest {
    /// Starts the ingest thread; it ends when every sender of `rx` is dropped.
    pub fn spawn(self, rx: mpsc::Receiver<Work>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new().name("ingest".into()).spawn(move || self.run(rx)).expect("spawn the ingest thread")
    }

    fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        while let Some(first) = rx.blocking_recv() {
            // what is already queued joins the batch, up to its bound
            let mut next = Some(first);
            while let Some(w) = next.take() {
                self.work(w, &rx);
                if !self.batch.is_full() {
                    next = rx.try_recv().ok();
                }
            }
            self.flush(&rx);
        }
    }

    fn work(&mut self, w: Work, rx: &mpsc::Receiver<Work>) {
        match w {
            Work::Message(p, received, session) => self.ingest(p, received, session, rx),
            Work::Take { site, done } => {
                self.flush(rx);
                let _ = done.send(self.take(&site));
            }
            Work::HandOver { site, done } => {
                // what is queued of the site is stored before the next owner rebuilds from the store
                self.flush(rx);
                self.correlators.hand_over(&site);
                self.metrics.live_trajectories.set(self.correlators.live() as i64);
                tracing::info!(%site, "site handed over");
                let _ = done.send(());
            }
            Work::Tick { forget, expire } => {
                self.flush(rx);
                self.correlators.forget_before(forget);
                self.metrics.live_trajectories.set(self.correlators.live() as i64);
                if !expire {
                    return;
                }
                let cleared = self.watchlist.expire(self.clock.now());
                self.metrics.watchlist_entries.set(self.watchlist.len() as i64);
                if let Err(e) = self.alerts.publish(&cleared) {
                    tracing::error!(error = %e, "clears of expired watchlist entries not stored");
                }
            }
        }
    }

    /// Starts serving `site`: its correlator replays the site's recent trajectories from the store,
    /// and the agents' liveness is reread (the previous owner may have changed it).
    fn take(&mut self, site: &str) -> Result<usize, StoreError> {
        let replay = self.store.sightings_for_replay(self.clock.now() - self.replay, Some(site))?;
        self.liveness = crate::liveness::Liveness::load(self.store.as_ref())?;
        self.correlators.take(site);
        for s in &replay {
            self.correlators.restore(site, Observation::from_sighting(&s.sighting), s.trajectory);
        }
        self.metrics.live_trajectories.set(self.correlators.live() as i64);
        tracing::info!(%site, sightings = replay.len(), "site taken: correlator restored from the store");
        Ok(replay.len())
    }

    /// Handles one message, retrying while the store is transiently unavailable, and adds it to
    /// the batch to be acknowledged in order, on `session`. A sighting waits there to be stored;
    /// any other message is stored on its own, after the batch before it.
    fn ingest(&mut self, p: Publish, received: std::time::Instant, session: AsyncClient, rx: &mpsc::Receiver<Work>) {
        if self.owned_sites_only && !parse::site_of(&p.topic).is_some_and(|site| self.correlators.serves(site)) {
            tracing::debug!(topic = %p.topic, "message of a site handed over: left for its next owner");
            return;
        }
        let sighting = parse::kind_of(&p.topic) == Kind::Sighting.as_str();
        if !sighting {
            self.flush(rx);
        }
        match self.retrying(&p.topic, rx, |ingest| ingest.handle(&p)) {
            Ok(placed) => self.batch.push(p, received, session, placed),
            Err(e) => {
                self.metrics.message(parse::kind_of(&p.topic), Outcome::Failed);
                tracing::error!(topic = %p.topic, error = %e, "message not stored; left unacknowledged");
            }
        }
        if !sighting {
            self.flush(rx);
        }
    }

    /// Runs `f` until the store takes it: retried with backoff while the store is transiently
    /// unavailable (and the service is not stopping).
    pub(super) fn retrying<T>(
        &mut self,
        what: &str,
        rx: &mpsc::Receiver<Work>,
        mut f: impl FnMut(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut wait = RETRY_FIRST;
        let mut paused = false;
        let outcome = loop {
            match f(self) {
                Err(e) if e.is_transient() && !rx.is_closed() => {
                    if !paused {
                        tracing::error!(what, error = %e, "store unavailable: ingest paused, retrying");
                        self.metrics.ingest_paused.set(1);
                        paused = true;
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(RETRY_MAX);
                }
                other => break other,
            }
        };
        if paused {
            self.metrics.ingest_paused.set(0);
            tracing::info!(what, "store available again: ingest resumed");
        }
        outcome
    }

    /// Stores one message (or rejects it); a sighting is only checked, and returned to be
    /// de-duplicated, placed and stored with its batch. `Err` only when the store failed.
    fn handle(&mut self, p: &Publish) -> Result<Option<Pending>, StoreError> {
        let kind = parse::kind_of(&p.topic);
        let now = self.clock.now();
        let incoming = match parse::parse(&p.topic, &p.payload, self.max_bytes, &self.plausible, now) {
            Ok((_, i)) => i,
            // the aggregator's own alerts come back over MQTT: stored before they were published
            Err(parse::Rejected::AggregatorOnly { id, .. }) if self.store.seen(id)? => {
                self.metrics.message(kind, Outcome::Duplicate);
                return Ok(None);
            }
            Err(e) => {
                self.metrics.message(kind, Outcome::Rejected);
                self.metrics.rejected(kind, e.field());
                tracing::warn!(error = %e, "message rejected");
                return Ok(None);
            }
        };
        let stored = match incoming {
            Incoming::Sighting(s) => {
                if !self.correlators.serves(&s.site) {
                    // (ingest's checks refuse unknown sites unless `accept_unknown_cameras`)
                    self.metrics.message(kind, Outcome::Rejected);
                    self.metrics.rejected(kind, "site");
                    tracing::warn!(topic = %p.topic, site = %s.site, "sighting of a site without cameras in the config rejected");
                    return Ok(None);
                }
                return Ok(Some(Pending { sighting: s, received_at: now }));
            }
            Incoming::Crowd(c) => {
                let new = self.store.record_crowd(&c, now)?;
                if new {
                    self.latest_crowd.update(&c);
                    self.events.crowd(&c);
                }
                new
            }
            Incoming::Alert(a) => {
                let new = self.store.record_alert(&a, now)?;
                if new {
                    self.events.alert(&a);
                }
                new
            }
            // an older status than the stored one is not a duplicate: it is simply not kept
            Incoming::CameraStatus(s) => {
                if self.store.record_camera_status(&s, now)? {
                    self.events.camera_status(&s);
                }
                true
            }
            Incoming::AgentStatus(s) => {
                if self.store.record_agent_status(&s, now)? {
                    self.events.agent_status(&s);
                    self.liveness.after_status(self.store.as_ref(), &self.alerts, &s, now)?;
                }
                true
            }
        };
        self.metrics.message(kind, if stored { Outcome::Accepted } else { Outcome::Duplicate });
        Ok(None)
    }

    /// A new sighting, stored where `a` placed it: announced (MQTT, live events), indexed for
    /// search and checked against the watchlist.
    pub(super) fn announce(
        &mut self,
        s: &Sighting,
        a: &Assignment,
        merged_from: Vec<uuid::Uuid>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if a.new {
            self.metrics.trajectories_started.inc();
            self.metrics.live_trajectories.set(self.correlators.live() as i64);
        } else {
            self.metrics.trajectories_joined.inc();
        }
        let update = Trajectory {
            id: new_event_id(),
            site: s.site.clone(),
            ts: now,
            trajectory: a.trajectory,
            sighting: s.id,
            camera: s.camera.clone(),
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            ground: s.ground,
            distance: a.distance,
            new: a.new,
            merged_from,
        };
        tracing::debug!(sighting = %s.id, camera = %s.camera, trajectory = %a.trajectory, new = a.new, distance = ?a.distance, "sighting placed");
        if let Err(e) = self.client.try_publish(topic::trajectory(&s.site), QoS::AtLeastOnce, false, update.to_json()) {
            tracing::warn!(error = %e, "trajectory update not published");
        }
        self.events.sighting(s);
        self.events.trajectory(&update);
        {
            let mut index = self.index.write().unwrap();
            if index.model() == s.model {
                // the sighting passed ingest's checks (finite, the model's dimension)
                if let Err(e) = index.insert(s.id, &s.site, &s.camera, s.last_seen, &s.embedding) {
                    tracing::warn!(sighting = %s.id, error = %e, "sighting not indexed for search");
                }
                self.metrics.search_index_embeddings.set(index.len() as i64);
            }
        }
        let matches = self.watchlist.check(s, a.trajectory, now);
        if !matches.is_empty() {
            self.metrics.watchlist_matches.inc_by(matches.len() as u64);
            self.alerts.publish(&matches)?;
        }
        Ok(())
    }
}
