//! Publishing to MQTT with `rumqttc`: QoS 1, retained statuses, the agent's Last Will, and a
//! durable store-and-forward [`Outbox`].
//!
//! # Flow
//!
//! Producers hand [`Outgoing`] messages to a bounded channel (when it is full they wait: frames
//! are dropped upstream, events never are). The publisher task writes each message to the
//! outbox first (one SQLite transaction per batch: that is the durability point; each is then
//! logged at debug level as `enqueued` with its `seq`, topic and event `id`), then publishes
//! outbox rows in `seq` order with at most [`WINDOW`] publishes outstanding. A row is deleted
//! when its PUBACK arrives. Rows left by a previous run (crash, broker away at shutdown) are
//! therefore sent first, in order, and a backlog built while the broker was away is replayed in
//! order while new messages keep being stored behind it.
//!
//! # Packet ids → rows
//!
//! One driver task polls rumqttc's event loop and forwards `Outgoing::Publish(pkid)`,
//! `PubAck(pkid)`, `ConnAck` and connection losses to the publisher task in order. rumqttc emits
//! `Outgoing::Publish(pkid)` in the order of the `publish` calls, so a FIFO of the `seq`s handed
//! to the client gives `pkid → seq`; a PUBACK acks the row of its pkid. Only the publisher task
//! calls `publish`, and only while connected. Our window (64) is below rumqttc's in-flight limit
//! (100), so packet ids are never reused while outstanding (no collisions, which would reorder).
//!
//! On a connection loss the driver first forwards the events rumqttc still buffered for the lost
//! connection, then reports the loss and waits until the publisher has forgotten every mapping
//! (and stopped publishing). It then calls `EventLoop::clean`, which moves anything still queued
//! in the request channel into rumqttc's `pending` list. The session is clean
//! (`clean_session = true`), so on the next CONNACK (`session_present = false`) rumqttc drops
//! `pending` instead of retransmitting it with stale packet ids: nothing published on an old
//! connection can produce an event on the new one, and a PUBACK can never ack the wrong row.
//! After the CONNACK the publisher starts again from the oldest unacknowledged row. Messages
//! whose PUBACK was lost are sent twice: delivery is at-least-once and consumers de-duplicate
//! by event `id` (contract v1).
//!
//! The retained agent `online` status announced on every CONNACK and the `offline` status at
//! shutdown stay outside the outbox (they describe the connection itself).
//!
//! # Broker security
//!
//! [`BrokerSecurity`] (`sightline_base::mqtt`, shared with the aggregator) turns `[mqtt]`'s `username`, `password_file` (or `password`) and
//! `[mqtt.tls]` into the client's transport (plain TCP, or TLS with rustls and the *ring*
//! provider, verified against `ca_file` only, with an optional client certificate) and
//! credentials. It is the one place where the transport is configured. `Config::load` loads it
//! once to validate the files; the driver loads it again before every connection attempt, so a
//! renewed certificate or a changed password file is picked up on the next reconnection. A
//! refusal (bad credentials, not authorised) or a TLS failure is logged as an error naming the
//! cause and retried with a growing delay (up to [`MAX_RETRY`]); the outbox keeps every message
//! meanwhile. The password is never logged.
//!
//! # Shutdown
//!
//! When the channel closes, the publisher keeps sending until the outbox is empty, publishes
//! `offline`, waits for its PUBACK and disconnects, for at most `flush_timeout`. Whatever is not
//! acknowledged by then stays in the outbox for the next start (logged).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
// the broker security is shared with the aggregator (the base crate's `mqtt` feature)
pub use sightline_base::mqtt::{BrokerSecurity, SecurityError, explain};
use sightline_contract::{AgentState, AgentStatus, Clock, Payload, topic};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{AgentSection, MqttConfig};
use crate::message::Outgoing;
use crate::outbox::{Outbox, Priority};

/// Publishes outstanding (handed to the client, not yet acknowledged) at most.
pub const WINDOW: usize = 64;
/// rumqttc's in-flight limit (packet ids 1..=INFLIGHT); above [`WINDOW`] so ids never collide.
const INFLIGHT: u16 = 100;
/// Messages stored in one outbox transaction at most.
const BATCH: usize = 256;
/// Longest delay between connection attempts after a refusal or a TLS failure (a network
/// error is retried every second: the broker may just be restarting).
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// A connection failure that persists is logged again this often (changes are logged at once).
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// `kind` label of `sightline_publish_latency_seconds`: the topic's last level.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

impl KindLabel {
    fn of_topic(topic: &str) -> KindLabel {
        let kind = match topic.rsplit('/').next() {
            Some("sighting") => "sighting",
            Some("alert") => "alert",
            Some("crowd") => "crowd",
            Some("heatmap") => "heatmap",
            Some("status") => "status",
            _ => "other",
        };
        KindLabel { kind }
    }
}

/// Latency histogram buckets: 1 ms to ~36 s in steps of 25 % (quantiles read from it are within
/// a quarter of the true value). Also the shape of `sightline_frame_latency_seconds` (metrics).
pub fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 1.25, 48))
}

/// Timed messages remembered until their PUBACK at most; older ones (a long broker outage) are
/// forgotten untimed.
const TIMED: usize = 4096;

/// Publisher statistics.
#[derive(Debug)]
pub struct MqttStats {
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub connected: AtomicBool,
    /// Messages refused because they exceed `max_packet_bytes`.
    pub oversized: AtomicU64,
    /// Messages waiting in the outbox (not yet acknowledged).
    pub outbox_depth: AtomicU64,
    /// Messages evicted from the outbox by its bound.
    pub evicted: AtomicU64,
    /// Messages that could not be stored in the outbox (a database error): lost.
    pub lost: AtomicU64,
    /// Frame arrival to PUBACK of the timed messages ([`Outgoing::origin`]), by kind.
    pub latency: prometheus_client::metrics::family::Family<KindLabel, Histogram, fn() -> Histogram>,
}

impl Default for MqttStats {
    fn default() -> Self {
        MqttStats {
            published: AtomicU64::default(),
            acked: AtomicU64::default(),
            connected: AtomicBool::default(),
            oversized: AtomicU64::default(),
            outbox_depth: AtomicU64::default(),
            evicted: AtomicU64::default(),
            lost: AtomicU64::default(),
            latency: prometheus_client::metrics::family::Family::new_with_constructor(latency_buckets),
        }
    }
}

/// The agent's status; `started`: when this process started publishing (the aggregator tells
/// from it that alerts raised before it belong to a process that is gone).
pub fn agent_status(
    agent: &AgentSection,
    clock: &dyn Clock,
    state: AgentState,
    cameras: Option<Vec<String>>,
    started: time::OffsetDateTime,
) -> AgentStatus {
    AgentStatus {
        site: agent.site.clone(),
        agent: agent.id.clone(),
        ts: clock.now(),
        state,
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        cameras,
        started: Some(started),
    }
}

/// What the driver task reports from rumqttc's event loop, in order.
enum Link {
    ConnAck,
    /// A publish went out with this packet id (in the order of the `publish` calls).
    Published(u16),
    PubAck(u16),
    /// The connection is gone; reply once every mapping is forgotten and publishing stopped.
    Lost(oneshot::Sender<()>),
}

/// Polls the event loop until our DISCONNECT went out, forwarding what the publisher needs.
/// Before each connection attempt it loads the credentials and TLS files of `cfg` again.
async fn drive(mut eventloop: EventLoop, link: mpsc::UnboundedSender<Link>, broker: String, cfg: MqttConfig) {
    let forward = |ev: &Event| match ev {
        Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Some(Link::Published(*pkid)),
        Event::Incoming(Packet::PubAck(ack)) => Some(Link::PubAck(ack.pkid)),
        _ => None,
    };
    let mut failures = Failures::default();
    let mut connecting = true;
    loop {
        if connecting {
            match BrokerSecurity::load(&cfg) {
                Ok(security) => security.apply(&mut eventloop.mqtt_options),
                Err(e) => {
                    // never connect without the configured security: wait for the files to be fixed
                    let delay =
                        failures.failed(&broker, &format!("cannot load the MQTT credentials or TLS files: {e}"), true);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        let polled = eventloop.poll().await;
        connecting = false;
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(%broker, tls = cfg.security.tls.is_some(), "MQTT connected");
                failures = Failures::default();
                if link.send(Link::ConnAck).is_err() {
                    return;
                }
            }
            // our own DISCONNECT went out: the session is over
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(ev) => {
                if let Some(l) = forward(&ev)
                    && link.send(l).is_err()
                {
                    return;
                }
            }
            Err(e) => {
                connecting = true;
                let (why, severe) = explain(&e);
                let delay = failures.failed(&broker, &why, severe);
                // events rumqttc still buffers belong to the lost connection: deliver them now
                for ev in std::mem::take(&mut eventloop.state.events) {
                    if let Some(l) = forward(&ev) {
                        let _ = link.send(l);
                    }
                }
                let (done, wait) = oneshot::channel();
                if link.send(Link::Lost(done)).is_err() {
                    return;
                }
                let _ = wait.await;
                // requests queued before the publisher stopped go to `pending`, which the next
                // (clean-session) CONNACK drops
                eventloop.clean();
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Consecutive connection failures: their log lines and the delay before the next attempt.
#[derive(Default)]
struct Failures {
    attempts: u32,
    /// The last reason logged, and when.
    logged: Option<(String, Instant)>,
}

impl Failures {
    /// Logs a failed attempt (a new reason at once, the same one again every [`REPEAT_LOG`]; each
    /// attempt at debug level) and returns the delay before the next: 1 s, or growing to
    /// [`MAX_RETRY`] while the broker refuses us or TLS fails (`severe`).
    fn failed(&mut self, broker: &str, why: &str, severe: bool) -> Duration {
        self.attempts += 1;
        let attempts = self.attempts;
        let delay = if severe {
            Duration::from_secs(1 << attempts.saturating_sub(1).min(5)).min(MAX_RETRY)
        } else {
            Duration::from_secs(1)
        };
        tracing::debug!(%broker, attempts, error = %why, ?delay, "MQTT connection attempt failed");
        let repeat = match &self.logged {
            Some((last, at)) => last != why || at.elapsed() >= REPEAT_LOG,
            None => true,
        };
        if repeat {
            if severe {
                tracing::error!(%broker, attempts, "{why}; retrying");
            } else {
                tracing::warn!(%broker, attempts, error = %why, "MQTT connection lost; retrying");
            }
            self.logged = Some((why.to_owned(), Instant::now()));
        }
        delay
    }
}

/// The publisher task's state: the outbox and what is outstanding on the current connection.
struct Publisher {
    client: AsyncClient,
    outbox: Outbox,
    stats: Arc<MqttStats>,
    max_packet: usize,
    connected: bool,
    /// Highest `seq` handed to the client on this connection.
    cursor: i64,
    /// Publishes handed to the client whose packet id is not known yet (`None`: agent status).
    fifo: VecDeque<Option<i64>>,
    /// Packet id → row of the publishes waiting for their PUBACK.
    inflight: HashMap<u16, Option<i64>>,
    /// Row → origin and kind of the timed messages not acknowledged yet (at most [`TIMED`]).
    timed: BTreeMap<i64, (Instant, KindLabel)>,
}

impl Publisher {
    fn outstanding(&self) -> usize {
        self.fifo.len() + self.inflight.len()
    }

    fn update_stats(&self) {
        self.stats.outbox_depth.store(self.outbox.depth(), Ordering::Relaxed);
        self.stats.evicted.store(self.outbox.evicted(), Ordering::Relaxed);
    }

    /// Stores messages in the outbox (the durability point).
    fn store(&mut self, msgs: Vec<Outgoing>) {
        let mut keep = Vec::with_capacity(msgs.len());
        for m in msgs {
            // an oversized packet would make the client drop the connection, for every message queued
            if m.payload.len() + m.topic.len() + 16 > self.max_packet {
                tracing::error!(topic = %m.topic, bytes = m.payload.len(), "message larger than mqtt.max_packet_bytes: not sent");
                self.stats.oversized.fetch_add(1, Ordering::Relaxed);
            } else {
                keep.push(m);
            }
        }
        if keep.is_empty() {
            return;
        }
        match self.outbox.push_batch(keep.iter().map(|m| (m, Priority::of_topic(&m.topic)))) {
            Ok(seqs) => {
                for (m, seq) in keep.iter().zip(seqs) {
                    if let Some(origin) = m.origin {
                        self.timed.insert(seq, (origin, KindLabel::of_topic(&m.topic)));
                        if self.timed.len() > TIMED {
                            self.timed.pop_first();
                        }
                    }
                    match event_id(&m.payload) {
                        Some(id) => tracing::debug!(seq, topic = %m.topic, %id, "enqueued"),
                        None => tracing::debug!(seq, topic = %m.topic, "enqueued"),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, messages = keep.len(), "cannot store messages in the outbox: lost");
                self.stats.lost.fetch_add(keep.len() as u64, Ordering::Relaxed);
            }
        }
        self.update_stats();
    }

    /// Hands outbox rows after the cursor to the client while connected and the window allows.
    fn fill(&mut self) {
        while self.connected && self.outstanding() < WINDOW {
            let rows = match self.outbox.next_after(self.cursor, WINDOW - self.outstanding()) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            for row in rows {
                if !self.submit(row.topic, row.payload, row.retain, Some(row.seq)) {
                    return;
                }
                self.cursor = row.seq;
            }
        }
    }

    /// `try_publish` (the request channel holds more than the window: it only fails when closed).
    fn submit(&mut self, topic: String, payload: Vec<u8>, retain: bool, seq: Option<i64>) -> bool {
        match self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => {
                self.fifo.push_back(seq);
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "MQTT client refused a publish");
                false
            }
        }
    }

    fn on_link(&mut self, l: Link) {
        match l {
            Link::ConnAck => {
                self.connected = true;
                self.stats.connected.store(true, Ordering::Relaxed);
                self.cursor = 0;
                self.fifo.clear();
                self.inflight.clear();
                if self.outbox.depth() > 0 {
                    tracing::info!(messages = self.outbox.depth(), "sending the outbox backlog");
                }
            }
            Link::Published(pkid) => match self.fifo.pop_front() {
                Some(seq) => {
                    self.inflight.insert(pkid, seq);
                }
                None => tracing::warn!(pkid, "publish event without a pending publish"),
            },
            Link::PubAck(pkid) => {
                let Some(seq) = self.inflight.remove(&pkid) else {
                    tracing::warn!(pkid, "PUBACK for no outstanding publish");
                    return;
                };
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                let Some(seq) = seq else { return };
                if let Some((origin, kind)) = self.timed.remove(&seq) {
                    let took = origin.elapsed();
                    tracing::debug!(seq, kind = kind.kind, latency_ms = took.as_secs_f64() * 1e3, "acknowledged");
                    self.stats.latency.get_or_create(&kind).observe(took.as_secs_f64());
                }
                if let Err(e) = self.outbox.ack(seq) {
                    tracing::error!(seq, error = %e, "cannot delete an acknowledged message from the outbox");
                }
                self.update_stats();
            }
            Link::Lost(done) => {
                self.connected = false;
                self.stats.connected.store(false, Ordering::Relaxed);
                self.fifo.clear();
                self.inflight.clear();
                let _ = done.send(());
            }
        }
    }
}

/// The `id` of an event payload (JSON with a top-level `id`), for the log.
fn event_id(payload: &[u8]) -> Option<uuid::Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<uuid::Uuid>,
    }
    if payload.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Id>(payload).ok()?.id
}

/// Stores everything received on `rx` in `outbox` and publishes the outbox until `rx` closes;
/// then sends what it can of the outbox, marks the agent offline and waits (up to
/// `flush_timeout` in all) for the broker to acknowledge before disconnecting.
#[allow(clippy::too_many_arguments)]
pub async fn run_publisher(
    cfg: MqttConfig,
    agent: AgentSection,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Outgoing>,
    stats: Arc<MqttStats>,
    flush_timeout: Duration,
    mut cameras: watch::Receiver<Vec<String>>,
    outbox: Outbox,
) {
    let client_id = cfg.client_id.clone().unwrap_or_else(|| format!("sightline-edge-{}", agent.id));
    let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)));
    opts.set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    // redelivery is the outbox's job: rumqttc must not retransmit an old session's packets
    opts.set_clean_session(true);
    opts.set_inflight(INFLIGHT);
    let status_topic = topic::agent_status(&agent.site, &agent.id);
    let started = clock.now();
    let will = agent_status(&agent, clock.as_ref(), AgentState::Offline, None, started);
    opts.set_last_will(LastWill::new(status_topic.clone(), will.to_json(), QoS::AtLeastOnce, true));
    // the request channel never fills: at most WINDOW publishes (+ a DISCONNECT) are outstanding
    if cfg.security.username.is_some() && cfg.security.tls.is_none() {
        tracing::warn!("mqtt.username without [mqtt.tls]: the password crosses the network in clear text");
    }
    let (client, eventloop) = AsyncClient::new(opts, 2 * WINDOW);
    let (link_tx, mut link) = mpsc::unbounded_channel();
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let driver = tokio::spawn(drive(eventloop, link_tx, broker, cfg.clone()));

    if outbox.depth() > 0 {
        tracing::info!(messages = outbox.depth(), bytes = outbox.bytes(), "outbox holds messages of a previous run");
    }
    let mut p = Publisher {
        client: client.clone(),
        outbox,
        stats: stats.clone(),
        max_packet: cfg.max_packet_bytes,
        connected: false,
        cursor: 0,
        fifo: VecDeque::new(),
        inflight: HashMap::new(),
        timed: BTreeMap::new(),
    };
    p.update_stats();

    // Running: store what arrives, publish the outbox.
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let mut batch = vec![msg];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                p.store(batch);
                p.fill();
            }
            l = link.recv() => {
                let Some(l) = l else { break };
                let connack = matches!(l, Link::ConnAck);
                p.on_link(l);
                if connack {
                    // every (re)connection re-announces the agent online: the broker published our
                    // Last Will (retained `offline`) when the previous connection dropped
                    let online = agent_status(&agent, clock.as_ref(), AgentState::Online, Some(cameras.borrow().clone()), started);
                    p.submit(status_topic.clone(), online.to_json(), true, None);
                }
                p.fill();
            }
            // a reload changed the camera list: announce it
            Ok(()) = cameras.changed() => {
                if p.connected {
                    let online = agent_status(&agent, clock.as_ref(), AgentState::Online, Some(cameras.borrow().clone()), started);
                    p.submit(status_topic.clone(), online.to_json(), true, None);
                }
            }
        }
    }

    // Closing: drain the outbox, then `offline`, within flush_timeout.
    let deadline = tokio::time::Instant::now() + flush_timeout;
    let mut offline_sent = false;
    loop {
        if p.connected && !offline_sent && p.outbox.depth() == 0 {
            let offline =
                agent_status(&agent, clock.as_ref(), AgentState::Offline, Some(cameras.borrow().clone()), started);
            offline_sent = p.submit(status_topic.clone(), offline.to_json(), true, None);
        }
        if offline_sent && p.outstanding() == 0 && p.outbox.depth() == 0 {
            break;
        }
        tokio::select! {
            l = link.recv() => {
                let Some(l) = l else { break };
                if matches!(l, Link::Lost(_)) {
                    offline_sent = false;
                }
                p.on_link(l);
                p.fill();
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(unacknowledged = p.outstanding(), "MQTT flush timed out");
                break;
            }
        }
    }
    if p.outbox.depth() > 0 {
        tracing::warn!(
            messages = p.outbox.depth(),
            bytes = p.outbox.bytes(),
            "outbox not empty at shutdown: kept for the next start"
        );
    }
    let _ = client.try_disconnect();
    drop(link);
    // let the DISCONNECT go out before the event loop is dropped
    let mut driver = driver;
    if tokio::time::timeout(Duration::from_millis(500), &mut driver).await.is_err() {
        driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (`explain` itself is tested with the shared code in `sightline_base::mqtt`.)
    #[test]
    fn severe_failures_back_off_and_others_retry_every_second() {
        let mut f = Failures::default();
        let delays: Vec<u64> = (0..8).map(|_| f.failed("b", "MQTT TLS error: x", true).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(f.failed("b", "I/O: connection refused", false), Duration::from_secs(1));
    }
}
