//! Publishing to MQTT with `rumqttc`: QoS 1, retained statuses, the agent's Last Will.
//!
//! Producers hand [`Outgoing`] messages to a bounded channel; when the broker is slow or away
//! the channel fills and producers wait (frames are dropped upstream, events never are).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use sightline_contract::{AgentState, AgentStatus, Payload, topic};
use tokio::sync::mpsc;

use crate::Clock;
use crate::config::{AgentSection, MqttConfig};

/// A message to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Outgoing {
    pub fn event<P: Payload>(topic: String, p: &P) -> Self {
        Outgoing { topic, payload: p.to_json(), retain: false }
    }
    pub fn retained<P: Payload>(topic: String, p: &P) -> Self {
        Outgoing { topic, payload: p.to_json(), retain: true }
    }
}

/// Publisher statistics.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub connected: AtomicBool,
    /// Messages refused because they exceed `max_packet_bytes`.
    pub oversized: AtomicU64,
    /// Notified on every PUBACK.
    pub ack: tokio::sync::Notify,
}

pub fn agent_status(
    agent: &AgentSection,
    clock: &dyn Clock,
    state: AgentState,
    cameras: Option<Vec<String>>,
) -> AgentStatus {
    AgentStatus {
        site: agent.site.clone(),
        agent: agent.id.clone(),
        ts: clock.now(),
        state,
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        cameras,
    }
}

/// Publishes everything received on `rx` until it closes, then marks the agent offline and waits
/// (up to `flush_timeout`) for the broker to acknowledge everything before disconnecting.
pub async fn run_publisher(
    cfg: MqttConfig,
    agent: AgentSection,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Outgoing>,
    stats: Arc<MqttStats>,
    flush_timeout: Duration,
    cameras: Option<Vec<String>>,
) {
    let client_id = cfg.client_id.clone().unwrap_or_else(|| format!("sightline-edge-{}", agent.id));
    let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)));
    opts.set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    opts.set_clean_session(false);
    let will = agent_status(&agent, clock.as_ref(), AgentState::Offline, None);
    opts.set_last_will(LastWill::new(
        topic::agent_status(&agent.site, &agent.id),
        will.to_json(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);

    let driver_stats = stats.clone();
    // Every (re)connection re-announces the agent online: the broker published our Last Will
    // (retained `offline`) when the previous connection dropped.
    let announcer = client.clone();
    let online_topic = topic::agent_status(&agent.site, &agent.id);
    let (announce_agent, announce_clock, announce_cameras) = (agent.clone(), clock.clone(), cameras.clone());
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let driver = tokio::spawn(async move {
        let mut warned = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    driver_stats.connected.store(true, Ordering::Relaxed);
                    let online = agent_status(
                        &announce_agent,
                        announce_clock.as_ref(),
                        AgentState::Online,
                        announce_cameras.clone(),
                    );
                    if announcer.try_publish(online_topic.as_str(), QoS::AtLeastOnce, true, online.to_json()).is_ok() {
                        driver_stats.published.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(%broker, "MQTT connected");
                    warned = false;
                }
                // our own DISCONNECT went out: the session is over
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    driver_stats.acked.fetch_add(1, Ordering::Relaxed);
                    driver_stats.ack.notify_waiters();
                }
                Ok(_) => {}
                Err(e) => {
                    driver_stats.connected.store(false, Ordering::Relaxed);
                    if !warned {
                        tracing::warn!(%broker, error = %e, "MQTT connection lost; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    while let Some(msg) = rx.recv().await {
        publish(&client, &stats, cfg.max_packet_bytes, msg).await;
    }

    let offline = agent_status(&agent, clock.as_ref(), AgentState::Offline, cameras);
    publish(
        &client,
        &stats,
        cfg.max_packet_bytes,
        Outgoing::retained(topic::agent_status(&agent.site, &agent.id), &offline),
    )
    .await;
    let all_acked = async {
        loop {
            let notified = stats.ack.notified();
            if stats.acked.load(Ordering::Relaxed) >= stats.published.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(flush_timeout, all_acked).await.is_err() {
        let pending = stats.published.load(Ordering::Relaxed).saturating_sub(stats.acked.load(Ordering::Relaxed));
        tracing::warn!(unacknowledged = pending, "MQTT flush timed out");
    }
    let _ = client.disconnect().await;
    // let the DISCONNECT go out before the event loop is dropped
    let _ = tokio::time::timeout(Duration::from_millis(500), driver).await;
}

async fn publish(client: &AsyncClient, stats: &MqttStats, max_packet: usize, msg: Outgoing) {
    // an oversized packet would make the client drop the connection, for every message queued
    if msg.payload.len() + msg.topic.len() + 16 > max_packet {
        tracing::error!(topic = %msg.topic, bytes = msg.payload.len(), "message larger than mqtt.max_packet_bytes: not sent");
        stats.oversized.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match client.publish(msg.topic, QoS::AtLeastOnce, msg.retain, msg.payload).await {
        Ok(()) => {
            stats.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::error!(error = %e, "MQTT client closed; message not published"),
    }
}
