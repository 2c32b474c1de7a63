//! Where the aggregator's own alerts go (the watchlist's `watchlist_match`, liveness's
//! `agent_offline`, and the clears of stale alerts an admin closes): the store and the live
//! events first, then MQTT on the topic of the alert's kind ([`topic_of`]).

use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use sightline_contract::{Alert, AlertKind, Clock, Payload, topic};

use crate::events::Events;
use crate::store::{Store, StoreError};

/// Stores, streams and publishes the aggregator's alerts; shared by the ingest thread and the API.
pub struct AlertPublisher {
    store: Arc<dyn Store>,
    events: Events,
    mqtt: Option<AsyncClient>,
    clock: Arc<dyn Clock>,
}

impl AlertPublisher {
    /// `mqtt`: `None` stores and streams the alerts only.
    pub fn new(store: Arc<dyn Store>, events: Events, mqtt: Option<AsyncClient>, clock: Arc<dyn Clock>) -> Self {
        AlertPublisher { store, events, mqtt, clock }
    }

    /// Stores each alert, then publishes it; fails (publishing nothing more) when the store does.
    /// An alert on a camera's topic comes back through the aggregator's subscription and is
    /// de-duplicated by its id; one on an agent's topic is not subscribed to.
    pub fn publish(&self, alerts: &[Alert]) -> Result<(), StoreError> {
        for a in alerts {
            if self.store.record_alert(a, self.clock.now())? {
                self.events.alert(a);
            }
            tracing::info!(alert = %a.alert, state = ?a.state, camera = %a.camera, message = %a.message, "aggregator alert");
            let topic = topic_of(a);
            if let Some(Err(e)) = self.mqtt.as_ref().map(|c| c.try_publish(topic, QoS::AtLeastOnce, false, a.to_json()))
            {
                tracing::warn!(alert = %a.alert, error = %e, "alert stored but not published on MQTT");
            }
        }
        Ok(())
    }
}

/// The MQTT topic of an alert: an agent's for `agent_offline` (whose `camera` is the agent id),
/// the camera's for every other kind.
pub fn topic_of(a: &Alert) -> String {
    match a.kind {
        AlertKind::AgentOffline => topic::agent_alert(&a.site, &a.camera),
        _ => topic::alert(&a.site, &a.camera),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_contract::{AlertState, Severity, new_event_id, ts};

    #[test]
    fn agent_alerts_go_to_the_agent_topic() {
        let mut a = Alert {
            id: new_event_id(),
            site: "riverside".into(),
            camera: "edge-1".into(),
            ts: ts::parse("2026-11-23T08:00:00Z").unwrap(),
            alert: "agent_offline:edge-1:1".into(),
            state: AlertState::Raised,
            kind: AlertKind::AgentOffline,
            severity: Severity::Critical,
            zone: None,
            message: "m".into(),
            details: None,
        };
        assert_eq!(topic_of(&a), "sightline/v1/riverside/agent/edge-1/alert");
        a.kind = AlertKind::WatchlistMatch;
        a.camera = "gate".into();
        assert_eq!(topic_of(&a), "sightline/v1/riverside/gate/alert");
    }
}
