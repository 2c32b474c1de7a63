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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use sightline_contract::{Clock, Payload, Trajectory, new_event_id, topic};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::correlate::{Correlator, Observation};
use crate::ingest::{self, Incoming};
use crate::store::{SqliteStore, Store};

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

/// Ingest counters.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Messages stored (or status kept).
    pub accepted: AtomicU64,
    /// Events already stored (edges deliver at least once).
    pub duplicates: AtomicU64,
    /// Messages that failed a check (logged with the topic and the field).
    pub rejected: AtomicU64,
    /// Messages that could not be stored (not acknowledged: the broker delivers them again).
    pub failed: AtomicU64,
    pub trajectories_started: AtomicU64,
    pub trajectories_joined: AtomicU64,
}

/// Messages to the ingest thread.
enum Work {
    Message(Publish),
    /// Drop trajectories whose last sighting is older than this from memory.
    Forget(time::OffsetDateTime),
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

    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| ServiceError::HttpListen { addr: cfg.http.listen, source })?;
    let api = crate::api::ApiState::new(store.clone(), clock.clone(), cfg.site_model().map_err(ServiceError::Site)?);
    let url = listener.local_addr().map(|a| format!("http://{a}/api/v1")).unwrap_or_default();
    let http = tokio::spawn(crate::api::serve(listener, Arc::new(api), shutdown.clone()));
    tracing::info!(%url, "HTTP API listening");

    if cfg.broker.embedded {
        crate::broker::start(&cfg.broker)?;
    }
    let (host, port) = cfg.mqtt_address();
    let mut opts = MqttOptions::new(cfg.mqtt.client_id.clone(), host.clone(), port);
    opts.set_keep_alive(Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)));
    opts.set_max_packet_size(cfg.broker.max_payload_bytes + 1024, cfg.broker.max_payload_bytes + 1024);
    opts.set_manual_acks(true);
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, QUEUE);
    let stats = Arc::new(IngestStats::default());

    let (work, work_rx) = mpsc::channel(QUEUE);
    let ingest = Ingest {
        site: cfg.site.id.clone(),
        max_bytes: cfg.broker.max_payload_bytes,
        store: store.clone(),
        correlator,
        client: client.clone(),
        clock: clock.clone(),
        stats: stats.clone(),
    };
    let ingest = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest.run(work_rx))
        .expect("spawn the ingest thread");

    let retention = tokio::spawn(retention_job(
        store.clone(),
        cfg.retention,
        Duration::from_secs(cfg.store.retention_every_s),
        horizon,
        clock.clone(),
        work.clone(),
    ));

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
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if work.send(Work::Message(p)).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    // (the embedded broker may take a moment to listen at start)
                    if !warned && (ever_connected || failures > 20) {
                        tracing::warn!(%broker, error = %e, "MQTT connection lost; reconnecting");
                        warned = true;
                    }
                    // quick retries while the embedded broker is starting, then every second
                    let retry = if ever_connected { Duration::from_secs(1) } else { Duration::from_millis(100) };
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
        accepted = stats.accepted.load(Ordering::Relaxed),
        duplicates = stats.duplicates.load(Ordering::Relaxed),
        rejected = stats.rejected.load(Ordering::Relaxed),
        failed = stats.failed.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}

/// Deletes what the retention policy no longer allows (at start, then every `every`), and has
/// the correlator forget trajectories past the horizon.
async fn retention_job(
    store: Arc<dyn Store>,
    policy: crate::store::RetentionPolicy,
    every: Duration,
    horizon: time::Duration,
    clock: Arc<dyn Clock>,
    work: mpsc::Sender<Work>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = clock.now();
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.purge(now, &policy)).await {
            Ok(Ok(report)) => tracing::info!(?report, "retention: expired data deleted"),
            Ok(Err(e)) => tracing::error!(error = %e, "retention job failed"),
            Err(e) => tracing::error!(error = %e, "retention job panicked"),
        }
        // a sighting replayed late (an edge outbox after an outage) may still join a trajectory
        // that ended up to one horizon before it: keep twice the horizon in memory
        if work.send(Work::Forget(now - horizon * 2)).await.is_err() {
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
    stats: Arc<IngestStats>,
}

impl Ingest {
    fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        while let Some(w) = rx.blocking_recv() {
            match w {
                Work::Message(p) => match self.handle(&p) {
                    Ok(()) => {
                        if let Err(e) = self.client.try_ack(&p) {
                            tracing::warn!(error = %e, "MQTT acknowledgement not sent");
                        }
                    }
                    Err(e) => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(topic = %p.topic, error = %e, "message not stored; left unacknowledged");
                    }
                },
                Work::Forget(before) => self.correlator.forget_before(before),
            }
        }
    }

    /// Stores one message (or rejects it); `Err` only when the store failed.
    fn handle(&mut self, p: &Publish) -> Result<(), crate::store::StoreError> {
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let incoming = match ingest::parse(&p.topic, &p.payload, self.max_bytes) {
            Ok((_, i)) => i,
            Err(e) => {
                count(&self.stats.rejected);
                tracing::warn!(error = %e, "message rejected");
                return Ok(());
            }
        };
        let now = self.clock.now();
        let stored = match incoming {
            Incoming::Sighting(s) => {
                if s.site != self.site {
                    count(&self.stats.rejected);
                    tracing::warn!(topic = %p.topic, site = %s.site, "sighting of another site rejected (this aggregator serves {})", self.site);
                    return Ok(());
                }
                if self.store.seen(s.id)? {
                    false
                } else {
                    let a = self.correlator.assign(Observation::from_sighting(&s));
                    let stored = self.store.record_sighting(&s, a.trajectory, a.distance, now)?;
                    count(if a.new { &self.stats.trajectories_started } else { &self.stats.trajectories_joined });
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
                    if let Err(e) =
                        self.client.try_publish(topic::trajectory(&s.site), QoS::AtLeastOnce, false, update.to_json())
                    {
                        tracing::warn!(error = %e, "trajectory update not published");
                    }
                    stored
                }
            }
            Incoming::Crowd(c) => self.store.record_crowd(&c, now)?,
            Incoming::Alert(a) => self.store.record_alert(&a, now)?,
            // an older status than the stored one is not a duplicate: it is simply not kept
            Incoming::CameraStatus(s) => {
                self.store.record_camera_status(&s, now)?;
                true
            }
            Incoming::AgentStatus(s) => {
                self.store.record_agent_status(&s, now)?;
                true
            }
        };
        count(if stored { &self.stats.accepted } else { &self.stats.duplicates });
        Ok(())
    }
}
