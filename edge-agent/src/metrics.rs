//! Operations endpoint: Prometheus `/metrics` (OpenMetrics text) and `/healthz` (JSON) on a
//! local HTTP port (`[metrics] listen`).
//!
//! Per-camera counters live in the cameras' [`Counters`] and the publisher's [`MqttStats`]
//! (atomics the pipeline updates anyway); a collector reads them at scrape time from the live
//! camera set, so cameras started or stopped by a reload appear and disappear with it. Model
//! latencies are histograms observed by the workers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use sightline_contract::CameraState;
use tokio::sync::watch;

use crate::camera::{CameraHandle, CameraSet};
use crate::frames::Counters;
use crate::heartbeat::Heartbeat;
use crate::mqtt::{MqttStats, latency_buckets};

/// The analysis worker counts as stuck (`/healthz` answers 503) when it has not beaten for this long.
pub const STUCK_AFTER: Duration = Duration::from_secs(15);

/// Model names in `sightline_inference_seconds{model=…}`.
pub mod model {
    pub const FACE_DETECTION: &str = "yunet";
    pub const FACE_EMBEDDING: &str = "face_embedding";
    pub const PERSON_DETECTION: &str = "yolox";
    pub const DENSITY: &str = "csrnet";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type Latency = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// The agent's metrics registry.
pub struct Metrics {
    registry: Registry,
    inference: Latency,
    /// Frame arrival (decoder hand-over) to faces analysed and tracked, waiting included.
    frame_latency: Histogram,
    reloads: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    pub fn new(cameras: Arc<CameraSet>, mqtt: Arc<MqttStats>, heartbeat: Arc<Heartbeat>) -> Self {
        let mut registry = Registry::default();
        // 1 ms .. 33 s: YuNet takes milliseconds, CSRNet seconds on a small CPU
        let inference: Latency = Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register(
            "sightline_inference_seconds",
            "Time per model call, pre- and post-processing included",
            inference.clone(),
        );
        let frame_latency = latency_buckets();
        registry.register(
            "sightline_frame_latency_seconds",
            "Frame arrival (the decoder's hand-over) to its faces analysed and tracked, waiting for the worker included",
            frame_latency.clone(),
        );
        registry.register(
            "sightline_publish_latency_seconds",
            "Arrival of the frame (or the 250 ms tick) that produced a message to the broker's PUBACK, by kind (sighting, alert, crowd)",
            mqtt.latency.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "sightline_config_reloads",
            "Configuration reloads (SIGHUP) by outcome: applied or rejected",
            reloads.clone(),
        );
        for outcome in ["applied", "rejected"] {
            let _ = reloads.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register_collector(Box::new(Live { cameras, mqtt, heartbeat }));
        Metrics { registry, inference, frame_latency, reloads }
    }

    /// Records one call of `model` (one of [`model`]).
    pub fn observe(&self, model: &'static str, took: Duration) {
        self.inference.get_or_create(&ModelLabel { model }).observe(took.as_secs_f64());
    }

    /// Records one analysed frame's latency.
    pub fn frame_done(&self, took: Duration) {
        self.frame_latency.observe(took.as_secs_f64());
    }

    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Reads the live counters at scrape time.
struct Live {
    cameras: Arc<CameraSet>,
    mqtt: Arc<MqttStats>,
    heartbeat: Arc<Heartbeat>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

type CameraValue = fn(&CameraHandle) -> u64;

const CAMERA_COUNTERS: &[(&str, &str, CameraValue)] = &[
    ("sightline_camera_frames_received", "Access units received from the camera (or demuxed from the file)", |c| {
        Counters::get(&c.counters().received)
    }),
    ("sightline_camera_frames_decoded", "Frames out of the decoder", |c| Counters::get(&c.counters().decoded)),
    ("sightline_camera_frames_sampled", "Decoded frames handed to analysis at the camera's analysis_fps", |c| {
        Counters::get(&c.counters().sampled)
    }),
    ("sightline_camera_frames_analyzed", "Frames analysed for faces", |c| Counters::get(&c.counters().analyzed)),
    ("sightline_camera_frames_dropped", "Sampled frames replaced before analysis could take them (overload)", |c| {
        Counters::get(&c.counters().dropped)
    }),
    ("sightline_camera_crowd_frames_dropped", "Frames replaced before the crowd worker could measure them", |c| {
        Counters::get(&c.crowd_slot.counters.dropped)
    }),
    ("sightline_camera_faces", "Faces detected and embedded", |c| Counters::get(&c.counters().faces)),
    ("sightline_camera_sightings", "Sightings published (one per closed face track)", |c| {
        Counters::get(&c.counters().sightings)
    }),
    ("sightline_camera_connection_failures", "Stream failures followed by a reconnection", |c| {
        Counters::get(&c.counters().failures)
    }),
];

type MqttValue = fn(&MqttStats) -> u64;

const MQTT_COUNTERS: &[(&str, &str, MqttValue)] = &[
    ("sightline_mqtt_published", "Messages handed to the MQTT client (replays included)", |s| {
        s.published.load(Ordering::Relaxed)
    }),
    ("sightline_mqtt_acknowledged", "Messages acknowledged by the broker (PUBACK)", |s| {
        s.acked.load(Ordering::Relaxed)
    }),
    ("sightline_mqtt_oversized", "Messages refused for exceeding mqtt.max_packet_bytes", |s| {
        s.oversized.load(Ordering::Relaxed)
    }),
    ("sightline_outbox_evictions", "Messages evicted from the outbox by its byte bound", |s| {
        s.evicted.load(Ordering::Relaxed)
    }),
    ("sightline_outbox_store_failures", "Messages that could not be stored in the outbox (lost)", |s| {
        s.lost.load(Ordering::Relaxed)
    }),
];

const MQTT_GAUGES: &[(&str, &str, MqttValue)] = &[
    ("sightline_mqtt_connected", "1 while connected to the broker", |s| s.connected.load(Ordering::Relaxed) as u64),
    ("sightline_outbox_messages", "Messages in the outbox awaiting the broker's acknowledgement", |s| {
        s.outbox_depth.load(Ordering::Relaxed)
    }),
];

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cameras = self.cameras.snapshot();
        for (name, help, value) in CAMERA_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in cameras.iter() {
                ConstCounter::new(value(c)).encode(family.encode_family(&[("camera", c.cfg.id.as_str())])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "sightline_camera_streaming",
            "1 while the camera streams, 0 while connecting or offline",
            None,
            MetricType::Gauge,
        )?;
        for c in cameras.iter() {
            let streaming = c.status.lock().unwrap().state == CameraState::Streaming;
            ConstGauge::new(streaming as i64).encode(family.encode_family(&[("camera", c.cfg.id.as_str())])?)?;
        }
        ConstGauge::new(self.heartbeat.age().as_secs_f64()).encode(encoder.encode_descriptor(
            "sightline_analysis_heartbeat_age_seconds",
            "Time since the analysis worker last beat (it beats at least every 250 ms while it runs)",
            None,
            MetricType::Gauge,
        )?)?;
        for (name, help, value) in MQTT_COUNTERS {
            ConstCounter::new(value(&self.mqtt)).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        for (name, help, value) in MQTT_GAUGES {
            ConstGauge::new(value(&self.mqtt) as i64).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// What `/healthz` reads.
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub cameras: Arc<CameraSet>,
    pub mqtt: Arc<MqttStats>,
    pub heartbeat: Arc<Heartbeat>,
}

/// `/healthz` body.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// `ok`: analysing, connected, every camera streaming; `degraded`: running, but the broker or
    /// a camera is away (events wait in the outbox); `stuck`: the analysis worker stopped
    /// beating (HTTP 503; systemd's watchdog restarts the agent).
    pub status: &'static str,
    pub analysis_heartbeat_age_s: f64,
    pub mqtt_connected: bool,
    pub outbox_messages: u64,
    pub cameras: std::collections::BTreeMap<String, CameraState>,
}

impl Health {
    pub fn report(&self) -> HealthReport {
        let cameras: std::collections::BTreeMap<String, CameraState> =
            self.cameras.snapshot().iter().map(|c| (c.cfg.id.clone(), c.status.lock().unwrap().state)).collect();
        let age = self.heartbeat.age();
        let mqtt_connected = self.mqtt.connected.load(Ordering::Relaxed);
        let status = if age > STUCK_AFTER {
            "stuck"
        } else if mqtt_connected && cameras.values().all(|s| *s == CameraState::Streaming) {
            "ok"
        } else {
            "degraded"
        };
        HealthReport {
            status,
            analysis_heartbeat_age_s: age.as_secs_f64(),
            mqtt_connected,
            outbox_messages: self.mqtt.outbox_depth.load(Ordering::Relaxed),
            cameras,
        }
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` turns true.
pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(|axum::extract::State(h): axum::extract::State<Arc<Health>>| async move {
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    h.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|axum::extract::State(h): axum::extract::State<Arc<Health>>| async move { healthz(&h) }))
        .with_state(health);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
}

fn healthz(h: &Health) -> Response {
    let report = h.report();
    let code = if report.status == "stuck" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, axum::Json(report)).into_response()
}
