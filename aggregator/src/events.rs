//! Live events for `GET /api/v1/events` (Server-Sent Events): what the ingest thread stores,
//! fanned out to every open stream.
//!
//! One bounded broadcast channel: the ingest thread never waits for a reader. A stream that
//! falls more than [`CAPACITY`] events behind loses the oldest ones and is told how many with a
//! `lagged` event (and `sightline_aggregator_events_dropped` counts them); it can then re-read
//! what it missed from `/alerts` or `/crowd`. Events are the stored payloads as JSON, sightings
//! without their embedding (biometric data never leaves the aggregator).

use std::sync::Arc;

use serde_json::Value;
use sightline_contract::{AgentStatus, Alert, CameraStatus, Crowd, Payload, Sighting, Trajectory};
use tokio::sync::broadcast;

use crate::auth::Role;

/// Events a stream may fall behind before it loses some.
pub const CAPACITY: usize = 4096;

/// What a live event is about; its SSE `event:` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Alert,
    Crowd,
    CameraStatus,
    AgentStatus,
    Sighting,
    Trajectory,
    /// An operator acknowledged an alert (`POST /alerts/{id}/ack`), so other dashboards update.
    AlertAck,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Alert,
        EventKind::AlertAck,
        EventKind::Crowd,
        EventKind::CameraStatus,
        EventKind::AgentStatus,
        EventKind::Sighting,
        EventKind::Trajectory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Alert => "alert",
            EventKind::Crowd => "crowd",
            EventKind::CameraStatus => "camera_status",
            EventKind::AgentStatus => "agent_status",
            EventKind::Sighting => "sighting",
            EventKind::Trajectory => "trajectory",
            EventKind::AlertAck => "alert_ack",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether it is about a person (sightings, trajectories): never in a stream's default kinds,
    /// and streamed only with a `purpose`.
    pub fn personal(self) -> bool {
        matches!(self, EventKind::Sighting | EventKind::Trajectory)
    }

    /// The role needed to receive it: where people go (sightings, trajectories) is for
    /// integrators, as in the rest of the API; operators see alerts, crowds and health.
    pub fn role(self) -> Role {
        match self {
            EventKind::Sighting | EventKind::Trajectory => Role::Integrator,
            _ => Role::Operator,
        }
    }
}

/// One live event: its kind, the event id (SSE `id:`) and the JSON payload.
#[derive(Debug)]
pub struct LiveEvent {
    pub kind: EventKind,
    /// The site it is about: streams send it only to tokens that may see that site.
    pub site: String,
    pub id: String,
    pub json: String,
}

/// The fan-out: cheap to clone, shared by the ingest thread and the API.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(CAPACITY).0 }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    fn send(&self, kind: EventKind, site: &str, id: String, json: impl Into<Vec<u8>>) {
        let json = String::from_utf8(json.into()).expect("serde_json writes UTF-8");
        // no stream open: nothing to do (and not an error)
        let _ = self.tx.send(Arc::new(LiveEvent { kind, site: site.to_owned(), id, json }));
    }

    /// A sighting, without its embedding.
    pub fn sighting(&self, s: &Sighting) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut v: Value = serde_json::from_slice(&s.to_json()).expect("a payload's own JSON");
        if let Some(o) = v.as_object_mut() {
            o.remove("embedding");
        }
        self.send(EventKind::Sighting, &s.site, s.id.to_string(), v.to_string());
    }

    pub fn trajectory(&self, t: &Trajectory) {
        self.send(EventKind::Trajectory, &t.site, t.id.to_string(), t.to_json());
    }

    pub fn alert(&self, a: &Alert) {
        self.send(EventKind::Alert, &a.site, a.id.to_string(), a.to_json());
    }

    /// An acknowledgement: `json` is the answer of `POST /alerts/{id}/ack`, `id` the alert's id.
    pub fn alert_ack(&self, site: &str, id: &str, json: String) {
        self.send(EventKind::AlertAck, site, id.to_owned(), json);
    }

    pub fn crowd(&self, c: &Crowd) {
        self.send(EventKind::Crowd, &c.site, c.id.to_string(), c.to_json());
    }

    pub fn camera_status(&self, s: &CameraStatus) {
        self.send(
            EventKind::CameraStatus,
            &s.site,
            format!("{}/{}", s.camera, sightline_contract::ts::format(s.ts)),
            s.to_json(),
        );
    }

    pub fn agent_status(&self, s: &AgentStatus) {
        self.send(
            EventKind::AgentStatus,
            &s.site,
            format!("{}/{}", s.agent, sightline_contract::ts::format(s.ts)),
            s.to_json(),
        );
    }
}
