//! The MQTT client's loop: (re)subscribes on every connection, hands each message to the ingest
//! thread (waiting when its queue is full, so the broker keeps the backlog), and reconnects with
//! a back-off that names the cause of a refusal.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

use super::worker::Work;
use crate::config::{BrokerSecurity, Config};
use crate::metrics::Metrics;

/// The aggregator's MQTT client options for `client_id` (`[mqtt]`, its credentials and TLS):
/// QoS 1 messages acknowledged by hand once stored, on a persistent session unless `clean`.
pub fn options(cfg: &Config, security: &BrokerSecurity, client_id: &str, clean: bool) -> MqttOptions {
    let (host, port) = cfg.mqtt_address();
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)));
    opts.set_max_packet_size(cfg.broker.max_payload_bytes + 1024, cfg.broker.max_payload_bytes + 1024);
    opts.set_manual_acks(!clean);
    opts.set_clean_session(clean);
    security.apply(&mut opts);
    opts
}

/// Where [`receive`] puts each message.
#[derive(Clone, Copy)]
pub enum Deliver<'a> {
    /// Waiting for room: a message acknowledged once it is stored.
    Wait(&'a mpsc::Sender<Work>),
    /// Dropped and counted when there is no room: a message followed, not stored, so that the
    /// client's own publications never wait.
    OrDrop(&'a mpsc::Sender<Work>, &'a Counter),
}

/// Polls `eventloop` until `shutdown` turns true or the ingest thread is gone; `subscriptions`
/// are (re)subscribed on every connection to `broker` (`host:port`, for the logs); each message
/// goes where `deliver` says.
pub async fn receive(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    subscriptions: &[String],
    broker: &str,
    deliver: Deliver<'_>,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) {
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
                    for filter in subscriptions {
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
                    let message = Work::Message(p, std::time::Instant::now(), client.clone());
                    match deliver {
                        Deliver::Wait(work) => {
                            if work.send(message).await.is_err() {
                                break;
                            }
                        }
                        Deliver::OrDrop(work, dropped) => match work.try_send(message) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                dropped.inc();
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        },
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.mqtt_connected.set(0);
                    failures += 1;
                    // a refusal (credentials) or a TLS failure is logged at once, naming the cause
                    let (why, severe) = sightline_base::mqtt::explain(&e);
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
            // (the guard `wait_for` returns is dropped at once: this loop runs on spawned tasks too)
            _ = async { drop(shutdown.wait_for(|s| *s).await) } => break,
        }
    }
}
