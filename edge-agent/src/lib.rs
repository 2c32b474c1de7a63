//! sightline edge agent: RTSP or file video in, faces tracked per camera, one
//! `sightline.sighting/1` per person-pass out on MQTT. See `docs/design.md`.

pub mod agent;
pub mod analysis;
pub mod baseline;
pub mod camera;
pub mod config;
pub mod crowd;
pub mod decode;
pub mod frames;
pub mod health;
pub mod heartbeat;
pub mod message;
pub mod metrics;
pub mod model_files;
pub mod mqtt;
pub mod outbox;
pub mod persons;
pub mod rtsp;
pub mod rules;
pub mod tracker;

pub use sightline_contract::{Clock, SystemClock};

/// Errors that stop the agent (per-camera errors are retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Vision(#[from] sightline_vision::VisionError),
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    #[error(transparent)]
    Rtsp(#[from] rtsp::RtspError),
    #[error(transparent)]
    Baseline(#[from] baseline::BaselineError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error("metrics endpoint: cannot listen on {addr}: {source} (set [metrics] listen, or enabled = false)")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("camera {camera}: {source}")]
    Rules {
        camera: String,
        #[source]
        source: rules::RulesConfigError,
    },
}
