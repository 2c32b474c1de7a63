//! `aggregator run`: the embedded broker (optional), the store, the correlator rebuilt from the
//! store, MQTT ingest, trajectory updates published back on MQTT, and the retention job.
//!
//! # Ingest
//!
//! One MQTT client subscribes (QoS 1, persistent session, manual acknowledgements) to the
//! contract's topics. Messages go through a bounded channel (the client stops reading when it is
//! full: the broker holds the backlog) to the ingest thread, which owns the correlator and does,
//! per message: parse and check ([`crate::ingest::parse`]); de-duplicate on the event id; for a
//! sighting, place it on a trajectory and store both in one transaction, then publish
//! `sightline.trajectory/1`. The message is acknowledged to the broker only once stored, so a
//! crash in between means a redelivery, which the de-duplication absorbs: nothing accepted is
//! lost and nothing is stored twice.
//!
//! What the ingest thread stores also goes to the live events (`GET /events`), a new
//! sighting's embedding into the search index, and the sighting is checked against the
//! watchlist.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use sightline_contract::{Clock, Payload, Trajectory, new_event_id, topic};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::correlate::{Correlator, Observation};
use crate::events::Events;
use crate::ingest::{self, Incoming};
use crate::metrics::{Metrics, Outcome};
use crate::search::SearchIndex;
use crate::store::{SqliteStore, Store};
use crate::watchlist::{AlertPublisher, Watchlist};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("site model: `{}`: {}", .0.key, .0.reason)]
    Site(crate::site::SiteError),
    #[error("HTTP API: cannot listen on {addr}: {source} (set [http] listen)")]
    HttpListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Messages to the ingest thread.
enum Work {
    /// A message and when the client received it.
    Message(Publish, std::time::Instant),
    /// The retention job ran: drop trajectories whose last sighting is older than `forget`
    /// from memory, and expire watchlist entries.
    Tick { forget: time::OffsetDateTime },
}

/// Messages waiting for the ingest thread at most.
const QUEUE: usize = 1024;

/// Runs until `shutdown` turns true.
pub async fn run(cfg: Config, clock: Arc<dyn Clock>, mut shutdown: watch::Receiver<bool>) -> Result<(), ServiceError> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&cfg.store.path)?);
    let site = cfg.site_model().map_err(ServiceError::Site)?;
    for c in &cfg.cameras {
        store.put_camera(&cfg.site.id, &c.id, Some(c.position))?;
    }
    let mut correlator = Correlator::new(cfg.correlation.clone(), site).map_err(ServiceError::Site)?;
    let horizon = time::Duration::seconds_f64(cfg.correlation.horizon_s);
    // as much as the retention job keeps in memory (see `retention_job`)
    let replay = store.sightings_for_replay(clock.now() - horizon * 2)?;
    for s in &replay {
        correlator.restore(Observation::from_sighting(&s.sighting), s.trajectory);
    }
    tracing::info!(
        store = %cfg.store.path.display(),
        sightings = replay.len(),
        trajectories = correlator.live(),
        "correlator restored from the store"
    );
    drop(replay);
    let metrics = Arc::new(Metrics::new());
    metrics.live_trajectories.set(correlator.live() as i64);

    let since = crate::store::RetentionPolicy::cutoff(clock.now(), cfg.retention.sightings_days);
    let index =
        SearchIndex::load(store.as_ref(), sightline_vision::EMBEDDING_MODEL, sightline_vision::EMBEDDING_DIM, since)?;
    tracing::info!(embeddings = index.len(), "search index loaded");
    metrics.search_index_embeddings.set(index.len() as i64);
    let index = Arc::new(RwLock::new(index));
    let watchlist = Arc::new(Watchlist::load(store.as_ref(), cfg.watchlist.clone(), clock.now())?);
    metrics.watchlist_entries.set(watchlist.len() as i64);
    let liveness = crate::liveness::Liveness::load(store.as_ref())?;
    let faces = load_faces(&cfg);
    if let Err(e) = &faces {
        tracing::warn!(error = %e, "photos cannot be embedded: POST /search and the watchlist take embeddings only");
    }
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| ServiceError::HttpListen { addr: cfg.http.listen, source })?;
    let events = Events::default();
    let latest_crowd = crate::latest::LatestCrowd::default();

    if cfg.broker.embedded {
        crate::broker::start(&cfg.broker)?;
    }
    let (host, port) = cfg.mqtt_address();
    let mut opts = MqttOptions::new(cfg.mqtt.client_id.clone(), host.clone(), port);
    opts.set_keep_alive(Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)));
    opts.set_max_packet_size(cfg.broker.max_payload_bytes + 1024, cfg.broker.max_payload_bytes + 1024);
    opts.set_manual_acks(true);
    opts.set_clean_session(false);
    // TLS and credentials (`[mqtt] username`, `password_file`, `[mqtt.tls]`): the edge agent's
    // implementation, shared in the contract crate; the files are read once, at start
    let security = crate::config::BrokerSecurity::load(&cfg.mqtt).map_err(crate::config::ConfigError::from)?;
    security.apply(&mut opts);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if security.username().is_some() && !security.tls() && !loopback {
        tracing::warn!("mqtt.username without [mqtt.tls]: the password crosses the network in clear text");
    }
    tracing::info!(%host, port, tls = security.tls(), user = security.username().unwrap_or("-"), "MQTT client");
    let (client, mut eventloop) = AsyncClient::new(opts, QUEUE);
    let alerts = Arc::new(AlertPublisher::new(store.clone(), events.clone(), Some(client.clone()), clock.clone()));

    let api = crate::api::ApiState {
        metrics: metrics.clone(),
        events: events.clone(),
        index: index.clone(),
        faces: faces.map(|f| Arc::new(Mutex::new(f))).map_err(|e| e.to_string()),
        watchlist: watchlist.clone(),
        alerts: alerts.clone(),
        search: cfg.search.clone(),
        shutdown: Some(shutdown.clone()),
        latest_crowd: latest_crowd.clone(),
        ..crate::api::ApiState::new(store.clone(), clock.clone(), cfg.site_model().map_err(ServiceError::Site)?)
    };
    let url = listener.local_addr().map(|a| format!("http://{a}/api/v1")).unwrap_or_default();
    let http = tokio::spawn(crate::api::serve(listener, Arc::new(api), shutdown.clone()));
    tracing::info!(%url, "HTTP API listening");
    if crate::api::ui::BUILT {
        tracing::info!("operator dashboard served at /");
    } else {
        tracing::warn!(
            "the operator dashboard was not built into this aggregator (run scripts/setup.sh, then rebuild): / serves a placeholder"
        );
    }

    let (work, work_rx) = mpsc::channel(QUEUE);
    let ingest = Ingest {
        site: cfg.site.id.clone(),
        max_bytes: cfg.broker.max_payload_bytes,
        store: store.clone(),
        correlator,
        client: client.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        events,
        latest_crowd,
        index: index.clone(),
        watchlist,
        alerts,
        liveness,
    };
    let ingest = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest.run(work_rx))
        .expect("spawn the ingest thread");

    let retention = tokio::spawn(retention_job(Retention {
        store: store.clone(),
        policy: cfg.retention,
        every: Duration::from_secs(cfg.store.retention_every_s),
        compact_every: Duration::from_secs(cfg.store.compact_every_h * 3600),
        horizon,
        clock: clock.clone(),
        work: work.clone(),
        index,
        metrics: metrics.clone(),
    }));

    let subscriptions = ingest::subscriptions(cfg.mqtt.shared_group.as_deref());
    let broker = format!("{host}:{port}");
    let mut warned = false;
    let mut subscribed = 0;
    let mut ever_connected = false;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(%broker, "MQTT connected; subscribing");
                    warned = false;
                    ever_connected = true;
                    subscribed = 0;
                    for filter in &subscriptions {
                        if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                            tracing::error!(%filter, error = %e, "subscribe failed");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    subscribed += 1;
                    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                        tracing::error!(?ack, "the broker refused a subscription");
                    }
                    if subscribed == subscriptions.len() {
                        tracing::info!(filters = ?subscriptions, "subscribed: ingesting");
                        metrics.mqtt_connected.set(1);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if work.send(Work::Message(p, std::time::Instant::now())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.mqtt_connected.set(0);
                    failures += 1;
                    // a refusal (credentials) or a TLS failure is logged at once, naming the cause
                    let (why, severe) = sightline_contract::mqtt::explain(&e);
                    // (the embedded broker may take a moment to listen at start)
                    if !warned && (ever_connected || severe || failures > 20) {
                        if severe {
                            tracing::error!(%broker, "{why}; retrying");
                        } else {
                            tracing::warn!(%broker, error = %why, "MQTT connection lost; reconnecting");
                        }
                        warned = true;
                    }
                    // quick retries while the embedded broker is starting, then every second;
                    // a broker that refuses us is not hammered
                    let retry = if severe {
                        Duration::from_secs(5)
                    } else if ever_connected {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_millis(100)
                    };
                    tokio::time::sleep(retry).await;
                }
            },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    tracing::info!("shutting down");
    retention.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    drop(work);
    let _ = tokio::task::spawn_blocking(move || ingest.join()).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
    tracing::info!(
        accepted = metrics.total(Outcome::Accepted),
        duplicates = metrics.total(Outcome::Duplicate),
        rejected = metrics.total(Outcome::Rejected),
        failed = metrics.total(Outcome::Failed),
        "stopped"
    );
    Ok(())
}

/// The face pipeline for photos (`[faces]`, `[runtime]`).
fn load_faces(cfg: &Config) -> Result<sightline_vision::FacePipeline, sightline_vision::VisionError> {
    let rt = sightline_vision::Runtime::new(&cfg.runtime)?;
    let mut faces = sightline_vision::FacePipeline::load(&rt, &cfg.faces.model_dir, &cfg.faces.detector)?;
    faces.min_face_px = cfg.faces.min_face_px;
    Ok(faces)
}

/// What the retention job works on.
struct Retention {
    store: Arc<dyn Store>,
    policy: crate::store::RetentionPolicy,
    every: Duration,
    /// Zero: never compact.
    compact_every: Duration,
    horizon: time::Duration,
    clock: Arc<dyn Clock>,
    work: mpsc::Sender<Work>,
    index: Arc<RwLock<SearchIndex>>,
    metrics: Arc<Metrics>,
}

/// Deletes what the retention policy no longer allows (at start, then every `every`), from the
/// store and the search index; compacts the store every `compact_every`; has the correlator
/// forget trajectories past the horizon and the watchlist its expired entries.
async fn retention_job(r: Retention) {
    let mut tick = tokio::time::interval(r.every);
    let mut last_compaction = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = r.clock.now();
        let compact = !r.compact_every.is_zero() && last_compaction.elapsed() >= r.compact_every;
        let (store, policy) = (r.store.clone(), r.policy);
        let run = tokio::task::spawn_blocking(move || {
            let report = store.purge(now, &policy)?;
            if compact {
                let start = std::time::Instant::now();
                store.compact()?;
                tracing::info!(took = ?start.elapsed(), "store compacted");
            }
            Ok::<_, crate::store::StoreError>(report)
        });
        match run.await {
            Ok(Ok(report)) => {
                tracing::info!(?report, "retention: expired data deleted");
                for (what, n) in report.counts() {
                    r.metrics.retention_deleted(what, n);
                }
                r.metrics.retention_last_run.set(now.unix_timestamp() as f64);
                if compact {
                    last_compaction = tokio::time::Instant::now();
                }
            }
            Ok(Err(e)) => {
                r.metrics.retention_failures.inc();
                tracing::error!(error = %e, "retention job failed");
            }
            Err(e) => {
                r.metrics.retention_failures.inc();
                tracing::error!(error = %e, "retention job panicked");
            }
        }
        // the index holds what the store holds: the same cutoff
        let cutoff = crate::store::RetentionPolicy::cutoff(now, r.policy.sightings_days);
        let removed = {
            let mut index = r.index.write().unwrap();
            let removed = index.remove_before(cutoff);
            r.metrics.search_index_embeddings.set(index.len() as i64);
            removed
        };
        if removed > 0 {
            tracing::info!(removed, "retention: embeddings dropped from the search index");
        }
        // a sighting replayed late (an edge outbox after an outage) may still join a trajectory
        // that ended up to one horizon before it: keep twice the horizon in memory
        if r.work.send(Work::Tick { forget: now - r.horizon * 2 }).await.is_err() {
            return;
        }
    }
}

/// The ingest thread's state.
struct Ingest {
    site: String,
    max_bytes: usize,
    store: Arc<dyn Store>,
    correlator: Correlator,
    client: AsyncClient,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    events: Events,
    /// Each camera's latest crowd measurement with its grid (the store keeps no grid).
    latest_crowd: crate::latest::LatestCrowd,
    index: Arc<RwLock<SearchIndex>>,
    watchlist: Arc<Watchlist>,
    alerts: Arc<AlertPublisher>,
    /// Raises and clears `agent_offline` ([`crate::liveness`]).
    liveness: crate::liveness::Liveness,
}

impl Ingest {
    fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        while let Some(w) = rx.blocking_recv() {
            match w {
                Work::Message(p, received) => match self.handle(&p) {
                    Ok(()) => {
                        self.metrics.ingested(ingest::kind_of(&p.topic), received.elapsed());
                        if let Err(e) = self.client.try_ack(&p) {
                            tracing::warn!(error = %e, "MQTT acknowledgement not sent");
                        }
                    }
                    Err(e) => {
                        self.metrics.message(ingest::kind_of(&p.topic), Outcome::Failed);
                        tracing::error!(topic = %p.topic, error = %e, "message not stored; left unacknowledged");
                    }
                },
                Work::Tick { forget } => {
                    self.correlator.forget_before(forget);
                    self.metrics.live_trajectories.set(self.correlator.live() as i64);
                    let cleared = self.watchlist.expire(self.clock.now());
                    self.metrics.watchlist_entries.set(self.watchlist.len() as i64);
                    if let Err(e) = self.alerts.publish(&cleared) {
                        tracing::error!(error = %e, "clears of expired watchlist entries not stored");
                    }
                }
            }
        }
    }

    /// Stores one message (or rejects it); `Err` only when the store failed.
    fn handle(&mut self, p: &Publish) -> Result<(), crate::store::StoreError> {
        let kind = ingest::kind_of(&p.topic);
        let incoming = match ingest::parse(&p.topic, &p.payload, self.max_bytes) {
            Ok((_, i)) => i,
            Err(e) => {
                self.metrics.message(kind, Outcome::Rejected);
                tracing::warn!(error = %e, "message rejected");
                return Ok(());
            }
        };
        let now = self.clock.now();
        let stored = match incoming {
            Incoming::Sighting(s) => {
                if s.site != self.site {
                    self.metrics.message(kind, Outcome::Rejected);
                    tracing::warn!(topic = %p.topic, site = %s.site, "sighting of another site rejected (this aggregator serves {})", self.site);
                    return Ok(());
                }
                !self.store.seen(s.id)? && self.place(&s, now)?
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
        Ok(())
    }

    /// A new sighting: placed on a trajectory and stored, then announced (MQTT, live events),
    /// indexed for search and checked against the watchlist.
    fn place(
        &mut self,
        s: &sightline_contract::Sighting,
        now: time::OffsetDateTime,
    ) -> Result<bool, crate::store::StoreError> {
        let a = self.correlator.assign(Observation::from_sighting(s));
        if !self.store.record_sighting(s, a.trajectory, a.distance, now)? {
            return Ok(false);
        }
        if a.new {
            self.metrics.trajectories_started.inc();
            self.metrics.live_trajectories.set(self.correlator.live() as i64);
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
                if let Err(e) = index.insert(s.id, a.trajectory, &s.camera, s.last_seen, &s.embedding) {
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
        Ok(true)
    }
}
