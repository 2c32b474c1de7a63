//! The message producers hand to the publisher: camera tasks (statuses), the analysis and crowd
//! workers (sightings, alerts, crowd measurements, heatmaps) and the status reporter. The outbox
//! stores it and the MQTT publisher sends it; it depends on neither, so both can use it.

use std::time::Instant;

use sightline_contract::Payload;

/// A message to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// When the frame (or the tick) that produced the message reached the agent; the time from
    /// there to the broker's PUBACK is `sightline_publish_latency_seconds`. `None`: not timed.
    pub origin: Option<Instant>,
}

impl Outgoing {
    pub fn event<P: Payload>(topic: String, p: &P) -> Self {
        Outgoing { topic, payload: p.to_json(), retain: false, origin: None }
    }
    pub fn retained<P: Payload>(topic: String, p: &P) -> Self {
        Outgoing { topic, payload: p.to_json(), retain: true, origin: None }
    }
    /// The same message, timed from `origin`.
    pub fn since(self, origin: Instant) -> Self {
        Outgoing { origin: Some(origin), ..self }
    }
}
