//! One alert's slot: what it is about (kind, severity, zone, scope) and its raised episode. It
//! builds the contract's raise and clear messages, sharing the `alert` id between them (see
//! "Alerts" in the module documentation of [`rules`](super)).

use serde_json::{Value, json};
use sightline_contract::{Alert, AlertKind, AlertState, Severity, new_event_id};
use time::OffsetDateTime;
use uuid::Uuid;

use super::text::secs;

/// The camera an engine's alerts are about.
#[derive(Clone, Debug)]
pub(super) struct Ids {
    pub(super) site: String,
    pub(super) camera: String,
}

/// A raised episode.
#[derive(Clone, Debug)]
pub(super) struct Episode {
    pub(super) alert: String,
    pub(super) raised_at: OffsetDateTime,
    /// Start of the run of observations that raised it.
    started: OffsetDateTime,
    /// Highest value observed during the episode.
    peak: f32,
}

/// What an alert is about, and its current episode.
#[derive(Clone, Debug)]
pub(super) struct Slot {
    kind: AlertKind,
    severity: Severity,
    zone: Option<String>,
    scope: String,
    pub(super) episode: Option<Episode>,
}

impl Slot {
    pub(super) fn new(kind: AlertKind, severity: Severity, zone: Option<String>, scope: String) -> Slot {
        Slot { kind, severity, zone, scope, episode: None }
    }

    pub(super) fn raise(
        &mut self,
        ids: &Ids,
        (now, started): (OffsetDateTime, OffsetDateTime),
        value: f32,
        (message, details): (String, Value),
    ) -> Alert {
        let id = new_event_id();
        let alert = format!("{}:{}:{}:{id}", ids.camera, kind_name(self.kind), self.scope);
        tracing::debug!(%alert, %message, "alert raised");
        self.episode = Some(Episode { alert: alert.clone(), raised_at: now, started, peak: value });
        self.event(ids, id, alert, AlertState::Raised, now, (message, details))
    }

    /// Ends the episode, if one is raised, and builds its clear from `text` (given the episode).
    pub(super) fn clear(&mut self, ids: &Ids, now: OffsetDateTime, text: (String, Value)) -> Option<Alert> {
        let episode = self.episode.take()?;
        let (message, mut details) = text;
        if let Value::Object(map) = &mut details {
            map.insert("duration_s".into(), json!(secs(now - episode.raised_at)));
        }
        tracing::debug!(alert = %episode.alert, %message, "alert cleared");
        Some(self.event(ids, new_event_id(), episode.alert, AlertState::Cleared, now, (message, details)))
    }

    /// The raised episode's peak value and its start (the beginning of the run that raised it).
    pub(super) fn peak(&self) -> Option<(f32, OffsetDateTime)> {
        self.episode.as_ref().map(|e| (e.peak, e.started))
    }

    pub(super) fn note(&mut self, value: f32) {
        if let Some(e) = &mut self.episode {
            e.peak = e.peak.max(value);
        }
    }

    fn event(
        &self,
        ids: &Ids,
        id: Uuid,
        alert: String,
        state: AlertState,
        now: OffsetDateTime,
        (message, details): (String, Value),
    ) -> Alert {
        Alert {
            id,
            site: ids.site.clone(),
            camera: ids.camera.clone(),
            ts: now,
            alert,
            state,
            kind: self.kind,
            severity: self.severity,
            zone: self.zone.clone(),
            message,
            details: Some(details),
        }
    }
}

fn kind_name(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::CrowdThreshold => "crowd_threshold",
        AlertKind::ZoneIntrusion => "zone_intrusion",
        AlertKind::CameraOffline => "camera_offline",
        AlertKind::CameraFrozen => "camera_frozen",
        AlertKind::CameraTampered => "camera_tampered",
        AlertKind::WatchlistMatch => "watchlist_match",
        AlertKind::AgentOffline => "agent_offline",
    }
}
