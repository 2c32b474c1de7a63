//! Liveness: what the centre shows of the edge agents, derived from the broker's truth
//! (`docs/aggregator.md`, "Liveness").
//!
//! An agent's state is its latest status *as received* (the store keeps it so): its Last Will
//! carries the time of its first connection, older than its own `online` statuses, so ordering by
//! `ts` would keep a crashed agent online forever. From it:
//!
//! - [`Liveness`] (owned by the ingest thread) raises one `agent_offline` alert per episode when
//!   an agent goes offline (its Last Will, or its clean stop) and clears it when the agent is
//!   online again. Its state is rebuilt from the store at start (the agents' latest statuses and
//!   the raised, not cleared `agent_offline` alerts), so a restart neither repeats nor forgets.
//! - [`Fleet`] (built by the API per request, from the store) derives each camera's `state`: an
//!   offline agent's cameras are `unknown`, whatever they last reported; and marks *stale* the
//!   raised, not cleared alerts of edge kinds whose agent went away (offline, or a new process
//!   since the alert was raised): nobody is left to clear them, so an admin may close them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::json;
use sightline_contract::{
    AgentState, AgentStatus, Alert, AlertKind, AlertState, CameraState, Severity, new_event_id, ts,
};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::alerts::AlertPublisher;
use crate::store::{AgentRecord, AlertQuery, CameraRecord, Store, StoreError, StoredAlert};

/// Most raised, not cleared `agent_offline` alerts read back at start.
pub const MAX_OPEN_LOADED: u32 = 10_000;

/// Whether edge agents raise (and clear) alerts of this kind; the others are the aggregator's.
pub fn raised_by_edge(kind: AlertKind) -> bool {
    !matches!(kind, AlertKind::WatchlistMatch | AlertKind::AgentOffline)
}

// ---- ingest side: agent_offline ------------------------------------------------------------------

/// An `agent_offline` alert raised and not cleared yet.
#[derive(Clone, Debug, PartialEq)]
struct Episode {
    alert: String,
    cameras: Vec<String>,
    since: OffsetDateTime,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Agent {
    offline: bool,
    /// The cameras of its latest status listing them (a Last Will lists none).
    cameras: Vec<String>,
    /// Raised and not cleared (one, unless the store held more).
    open: Vec<Episode>,
}

/// The agents' liveness as the ingest thread sees it: raises and clears `agent_offline`.
#[derive(Debug, Default)]
pub struct Liveness {
    agents: HashMap<(String, String), Agent>,
}

impl Liveness {
    /// The agents' latest statuses and their open `agent_offline` alerts, from the store.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let mut agents: HashMap<(String, String), Agent> = HashMap::new();
        for r in store.agents()? {
            let s = r.status;
            let agent = Agent {
                offline: s.state == AgentState::Offline,
                cameras: s.cameras.unwrap_or_default(),
                open: Vec::new(),
            };
            agents.insert((s.site, s.agent), agent);
        }
        for stored in store.open_alerts(AlertKind::AgentOffline, MAX_OPEN_LOADED)? {
            let a = stored.alert;
            let cameras = a
                .details
                .as_ref()
                .and_then(|d| d.get("cameras"))
                .and_then(|c| serde_json::from_value::<Vec<String>>(c.clone()).ok())
                .unwrap_or_default();
            let agent = agents.entry((a.site, a.camera)).or_default();
            if !agent.open.iter().any(|e| e.alert == a.alert) {
                agent.open.push(Episode { alert: a.alert, cameras, since: a.ts });
            }
        }
        let open = agents.values().filter(|a| !a.open.is_empty()).count();
        tracing::info!(agents = agents.len(), open_agent_offline = open, "agent liveness restored from the store");
        Ok(Liveness { agents })
    }

    /// Agents whose latest status is `offline`.
    pub fn offline(&self) -> usize {
        self.agents.values().filter(|a| a.offline).count()
    }

    /// A status just stored, received at `received_at`: the `agent_offline` raise or clears it
    /// causes (none when nothing changed). `served`: the cameras whose latest status names this
    /// agent, added to the raise's `cameras`.
    pub fn on_status(&mut self, s: &AgentStatus, received_at: OffsetDateTime, served: &[String]) -> Vec<Alert> {
        let agent = self.agents.entry((s.site.clone(), s.agent.clone())).or_default();
        if let Some(cameras) = &s.cameras {
            agent.cameras = cameras.clone();
        }
        match s.state {
            AgentState::Offline => {
                agent.offline = true;
                if !agent.open.is_empty() {
                    return Vec::new(); // raised already (a repeated Will, a redelivery)
                }
                let mut cameras = agent.cameras.clone();
                for c in served {
                    if !cameras.contains(c) {
                        cameras.push(c.clone());
                    }
                }
                cameras.sort();
                let alert = format!("agent_offline:{}:{}", s.agent, received_at.unix_timestamp_nanos() / 1_000_000);
                let how = if s.cameras.is_none() {
                    "its connection to the broker was lost (Last Will)"
                } else {
                    "it stopped"
                };
                let message = format!(
                    "edge agent {} is offline: {how}; its cameras ({}) are not analysed",
                    s.agent,
                    if cameras.is_empty() { "none known".to_owned() } else { cameras.join(", ") }
                );
                agent.open.push(Episode { alert: alert.clone(), cameras: cameras.clone(), since: received_at });
                vec![Alert {
                    id: new_event_id(),
                    site: s.site.clone(),
                    camera: s.agent.clone(),
                    ts: received_at,
                    alert,
                    state: AlertState::Raised,
                    kind: AlertKind::AgentOffline,
                    severity: Severity::Critical,
                    zone: None,
                    message,
                    details: Some(json!({ "agent": s.agent, "cameras": cameras })),
                }]
            }
            AgentState::Online => {
                agent.offline = false;
                std::mem::take(&mut agent.open)
                    .into_iter()
                    .map(|e| Alert {
                        id: new_event_id(),
                        site: s.site.clone(),
                        camera: s.agent.clone(),
                        ts: received_at,
                        alert: e.alert,
                        state: AlertState::Cleared,
                        kind: AlertKind::AgentOffline,
                        severity: Severity::Critical,
                        zone: None,
                        message: format!(
                            "edge agent {} is back online after {:.0} s",
                            s.agent,
                            (received_at - e.since).as_seconds_f64().max(0.0)
                        ),
                        details: Some(json!({ "agent": s.agent, "cameras": e.cameras })),
                    })
                    .collect()
            }
        }
    }

    /// The ingest thread's hook, after `s` was stored: raises or clears the agent's
    /// `agent_offline` through `alerts`. When that fails (the store), nothing changed here: the
    /// message is left unacknowledged and its redelivery tries again.
    pub fn after_status(
        &mut self,
        store: &dyn Store,
        alerts: &AlertPublisher,
        s: &AgentStatus,
        received_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let key = (s.site.clone(), s.agent.clone());
        let before = self.agents.get(&key).cloned();
        let served: Vec<String> = match s.state {
            AgentState::Offline => store
                .cameras()?
                .into_iter()
                .filter(|c| c.site == s.site && c.status.as_ref().is_some_and(|st| st.agent == s.agent))
                .map(|c| c.camera)
                .collect(),
            AgentState::Online => Vec::new(),
        };
        let out = self.on_status(s, received_at, &served);
        if let Err(e) = alerts.publish(&out) {
            match before {
                Some(b) => self.agents.insert(key, b),
                None => self.agents.remove(&key),
            };
            return Err(e);
        }
        Ok(())
    }
}

// ---- API side: derived camera states, stale alerts -------------------------------------------------

/// A camera's state as the centre sees it: its last report, unless its agent is offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveState {
    Streaming,
    Connecting,
    Offline,
    Disabled,
    /// No status received, or its edge agent is offline (what the camera does is unknown).
    Unknown,
}

impl From<CameraState> for LiveState {
    fn from(s: CameraState) -> Self {
        match s {
            CameraState::Streaming => LiveState::Streaming,
            CameraState::Connecting => LiveState::Connecting,
            CameraState::Offline => LiveState::Offline,
            CameraState::Disabled => LiveState::Disabled,
        }
    }
}

/// An edge agent's state by receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentLiveness {
    Online,
    Offline,
}

/// The edge agent serving a camera.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct CameraAgent {
    /// The agent id.
    pub id: String,
    /// Its latest status as received.
    pub state: AgentLiveness,
    /// When the aggregator received that status.
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub since: OffsetDateTime,
}

/// The derived part of a camera in `GET /cameras`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct CameraLive {
    /// What to show: `status.state`, except `unknown` without a status or while the camera's
    /// edge agent is offline.
    pub state: LiveState,
    /// Why (e.g. "edge agent edge-1 offline since …", or the status's `detail`).
    #[schema(required = true)]
    pub state_detail: Option<String>,
    /// The edge agent serving it (its latest status's `agent`, else the agent whose latest status
    /// lists it); `null` when unknown.
    #[schema(required = true)]
    pub agent: Option<CameraAgent>,
}

/// Why an alert is stale.
#[derive(Clone, Debug, PartialEq)]
pub struct Stale {
    pub agent: String,
    /// When its agent went offline (the aggregator's receipt), or when the agent's new process
    /// started (the agent's clock, like the alert's `ts`).
    pub since: OffsetDateTime,
    pub why: &'static str,
}

/// The agents' latest statuses (by receipt) and which agent serves each camera: what the API
/// derives camera states and stale alerts from.
#[derive(Debug, Default)]
pub struct Fleet {
    agents: HashMap<(String, String), AgentRecord>,
    /// (site, camera) → agent id.
    serving: HashMap<(String, String), String>,
}

impl Fleet {
    pub fn new(cameras: &[CameraRecord], agents: Vec<AgentRecord>) -> Self {
        let mut serving = HashMap::new();
        let mut by_receipt: Vec<&AgentRecord> = agents.iter().collect();
        by_receipt.sort_by_key(|r| r.received_at);
        // the latest listing wins; a camera's own status (which names its agent) wins over any
        for r in by_receipt {
            for c in r.status.cameras.iter().flatten() {
                serving.insert((r.status.site.clone(), c.clone()), r.status.agent.clone());
            }
        }
        for c in cameras {
            if let Some(s) = &c.status {
                serving.insert((c.site.clone(), c.camera.clone()), s.agent.clone());
            }
        }
        let agents = agents.into_iter().map(|r| ((r.status.site.clone(), r.status.agent.clone()), r)).collect();
        Fleet { agents, serving }
    }

    /// Reads what it needs from the store.
    pub fn load(store: &dyn Store) -> Result<(Vec<CameraRecord>, Fleet), StoreError> {
        let cameras = store.cameras()?;
        let fleet = Fleet::new(&cameras, store.agents()?);
        Ok((cameras, fleet))
    }

    /// The latest status of the agent serving `camera`, when one is known.
    pub fn agent_of(&self, site: &str, camera: &str) -> Option<&AgentRecord> {
        let agent = self.serving.get(&(site.to_owned(), camera.to_owned()))?;
        self.agents.get(&(site.to_owned(), agent.clone()))
    }

    /// A camera's derived state.
    pub fn camera(&self, c: &CameraRecord) -> CameraLive {
        let agent = self.agent_of(&c.site, &c.camera);
        let out = agent.map(|a| CameraAgent {
            id: a.status.agent.clone(),
            state: match a.status.state {
                AgentState::Online => AgentLiveness::Online,
                AgentState::Offline => AgentLiveness::Offline,
            },
            since: a.received_at,
        });
        let (state, state_detail) = match (agent, &c.status) {
            (Some(a), _) if a.status.state == AgentState::Offline => (
                LiveState::Unknown,
                Some(format!("edge agent {} offline since {}", a.status.agent, ts::format(a.received_at))),
            ),
            (_, None) => (LiveState::Unknown, Some("no status received".to_owned())),
            (_, Some(s)) => (s.state.into(), s.detail.clone()),
        };
        CameraLive { state, state_detail, agent: out }
    }

    /// Whether a raised, not cleared alert is stale: of an edge kind, and its camera's agent is
    /// offline, or is a process started after the alert was raised (the one that raised it is
    /// gone: it will never clear it).
    pub fn stale(&self, a: &Alert) -> Option<Stale> {
        if !raised_by_edge(a.kind) || a.state != AlertState::Raised {
            return None;
        }
        let agent = self.agent_of(&a.site, &a.camera)?;
        let id = agent.status.agent.clone();
        if agent.status.state == AgentState::Offline {
            return Some(Stale { agent: id, since: agent.received_at, why: "its edge agent is offline" });
        }
        match agent.status.started {
            Some(started) if started > a.ts => {
                Some(Stale { agent: id, since: started, why: "its edge agent restarted since it was raised" })
            }
            _ => None,
        }
    }
}

/// An alert event of `GET /alerts`, with whether it is stale.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AlertOut {
    #[serde(flatten)]
    pub stored: StoredAlert,
    /// A raised, not cleared alert of an edge kind whose edge agent went away (offline, or
    /// restarted since): nobody will clear it; an admin may close it (`POST /alerts/{id}/close`).
    pub stale: bool,
    /// When its agent went away; `null` when not stale.
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub stale_since: Option<OffsetDateTime>,
}

fn opt_ts<S: serde::Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&ts::format(*t)),
        None => s.serialize_none(),
    }
}

/// `GET /alerts`: the events matching `q`, raised ones marked stale when they are.
pub fn list_alerts(store: &dyn Store, q: &AlertQuery) -> Result<Vec<AlertOut>, StoreError> {
    let items = store.alerts(q)?;
    let candidates: Vec<String> = items
        .iter()
        .filter(|s| s.alert.state == AlertState::Raised && raised_by_edge(s.alert.kind))
        .map(|s| s.alert.alert.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (cleared, fleet) = if candidates.is_empty() {
        (HashSet::new(), Fleet::default())
    } else {
        (store.cleared_alerts(&candidates)?, Fleet::load(store)?.1)
    };
    Ok(items
        .into_iter()
        .map(|stored| {
            let stale = (!cleared.contains(&stored.alert.alert)).then(|| fleet.stale(&stored.alert)).flatten();
            AlertOut { stale: stale.is_some(), stale_since: stale.map(|s| s.since), stored }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_contract::CameraStatus;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);

    fn secs(s: i64) -> time::Duration {
        time::Duration::seconds(s)
    }

    /// A fake clock: receipt times are passed in, advanced by the test.
    struct Clock(OffsetDateTime);
    impl Clock {
        fn tick(&mut self, s: i64) -> OffsetDateTime {
            self.0 += secs(s);
            self.0
        }
    }

    fn status(state: AgentState, cameras: Option<&[&str]>, ts: OffsetDateTime) -> AgentStatus {
        AgentStatus {
            site: "riverside".into(),
            agent: "edge-1".into(),
            ts,
            state,
            version: Some("0.1.0".into()),
            cameras: cameras.map(|c| c.iter().map(|s| s.to_string()).collect()),
            started: Some(T0),
        }
    }

    #[test]
    fn the_will_raises_once_and_the_return_clears_it() {
        let mut l = Liveness::default();
        let mut clock = Clock(T0);
        assert!(l.on_status(&status(AgentState::Online, Some(&["gate", "plaza"]), T0), clock.0, &[]).is_empty());
        // the Will: the connect time, no cameras; received now
        let at = clock.tick(30);
        let raised = l.on_status(&status(AgentState::Offline, None, T0), at, &["lens".to_owned()]);
        assert_eq!(raised.len(), 1);
        let a = &raised[0];
        assert_eq!((a.kind, a.state, a.severity), (AlertKind::AgentOffline, AlertState::Raised, Severity::Critical));
        assert_eq!(a.camera, "edge-1");
        assert_eq!(a.ts, at, "dated by its receipt, not by the Will's stale ts");
        assert_eq!(a.alert, format!("agent_offline:edge-1:{}", (at.unix_timestamp_nanos() / 1_000_000)));
        assert_eq!(a.details, Some(json!({"agent": "edge-1", "cameras": ["gate", "lens", "plaza"]})));
        assert!(a.message.contains("Last Will"), "{}", a.message);
        assert_eq!(l.offline(), 1);
        // the same Will again (a redelivery), or a clean stop status after it: nothing new
        assert!(l.on_status(&status(AgentState::Offline, None, T0), clock.tick(1), &[]).is_empty());
        assert!(l.on_status(&status(AgentState::Offline, Some(&["gate"]), clock.0), clock.tick(1), &[]).is_empty());
        // back: cleared, same stable id
        let back = clock.tick(8);
        let cleared = l.on_status(&status(AgentState::Online, Some(&["gate"]), back), back, &[]);
        assert_eq!(cleared.len(), 1);
        assert_eq!((cleared[0].alert.as_str(), cleared[0].state), (a.alert.as_str(), AlertState::Cleared));
        assert_eq!(cleared[0].ts, back);
        assert!(cleared[0].message.contains("after 10 s"), "{}", cleared[0].message);
        assert_eq!(l.offline(), 0);
        // online again: nothing; a clean stop later: a new episode with a new id
        assert!(l.on_status(&status(AgentState::Online, Some(&["gate"]), back), clock.tick(1), &[]).is_empty());
        let stop = l.on_status(&status(AgentState::Offline, Some(&["gate"]), clock.0), clock.tick(5), &[]);
        assert_eq!(stop.len(), 1);
        assert_ne!(stop[0].alert, a.alert);
        assert!(stop[0].message.contains("it stopped"), "{}", stop[0].message);
    }

    #[test]
    fn agents_are_independent() {
        let mut l = Liveness::default();
        let mut other = status(AgentState::Offline, None, T0);
        other.agent = "edge-2".into();
        assert_eq!(l.on_status(&status(AgentState::Offline, None, T0), T0, &[]).len(), 1);
        assert_eq!(l.on_status(&other, T0 + secs(1), &[]).len(), 1);
        let back = l.on_status(&status(AgentState::Online, None, T0), T0 + secs(2), &[]);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].camera, "edge-1");
        assert_eq!(l.offline(), 1);
    }

    #[test]
    fn a_restart_neither_repeats_nor_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("a.sqlite")).unwrap();
        let mut l = Liveness::load(&store).unwrap();
        let online = status(AgentState::Online, Some(&["gate"]), T0);
        store.record_agent_status(&online, T0).unwrap();
        l.on_status(&online, T0, &[]);
        let will = status(AgentState::Offline, None, T0);
        store.record_agent_status(&will, T0 + secs(20)).unwrap();
        let raised = l.on_status(&will, T0 + secs(20), &[]);
        store.record_alert(&raised[0], T0 + secs(20)).unwrap();

        // restarted: the broker delivers the retained Will again: no second raise
        let mut l = Liveness::load(&store).unwrap();
        assert_eq!(l.offline(), 1);
        assert!(l.on_status(&will, T0 + secs(40), &[]).is_empty());
        // and the return still clears the alert raised before the restart, with its cameras
        let cleared = l.on_status(&online, T0 + secs(50), &[]);
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].alert, raised[0].alert);
        assert_eq!(cleared[0].details.as_ref().unwrap()["cameras"], json!(["gate"]));
        store.record_alert(&cleared[0], T0 + secs(50)).unwrap();
        let l = Liveness::load(&store).unwrap();
        assert!(l.agents.values().all(|a| a.open.is_empty()));
    }

    #[test]
    fn a_failed_store_leaves_the_state_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(crate::store::SqliteStore::open(&path).unwrap());
        let alerts = AlertPublisher::new(
            store.clone(),
            crate::events::Events::default(),
            None,
            std::sync::Arc::new(sightline_contract::SystemClock),
        );
        let mut l = Liveness::default();
        // the alerts table is gone: recording the raise fails
        rusqlite::Connection::open(&path).unwrap().execute_batch("DROP TABLE alerts").unwrap();
        let will = status(AgentState::Offline, None, T0);
        assert!(l.after_status(store.as_ref(), &alerts, &will, T0).is_err());
        assert!(l.agents.is_empty(), "the redelivery must raise again");
    }

    fn camera(camera: &str, agent: &str, state: CameraState) -> CameraRecord {
        CameraRecord {
            site: "riverside".into(),
            camera: camera.into(),
            position: None,
            status: Some(CameraStatus {
                site: "riverside".into(),
                camera: camera.into(),
                ts: T0,
                agent: agent.into(),
                state,
                fps_in: None,
                fps_analyzed: None,
                frames_dropped: None,
                codec: None,
                resolution: None,
                detail: Some("fine".into()),
            }),
            status_received_at: Some(T0),
        }
    }

    fn alert(camera: &str, kind: AlertKind, ts: OffsetDateTime) -> Alert {
        Alert {
            id: new_event_id(),
            site: "riverside".into(),
            camera: camera.into(),
            ts,
            alert: format!("{camera}:x"),
            state: AlertState::Raised,
            kind,
            severity: Severity::Warning,
            zone: None,
            message: "m".into(),
            details: None,
        }
    }

    #[test]
    fn cameras_of_an_offline_agent_are_unknown_and_their_alerts_stale() {
        let cams =
            vec![camera("gate", "edge-1", CameraState::Streaming), camera("lens", "edge-2", CameraState::Offline), {
                let mut c = camera("spare", "x", CameraState::Streaming);
                c.status = None;
                c
            }];
        let agent = |id: &str, state, cameras: &[&str], received| {
            let mut s = status(state, Some(cameras), T0);
            s.agent = id.into();
            AgentRecord { status: s, received_at: received }
        };
        let fleet = Fleet::new(
            &cams,
            vec![
                agent("edge-1", AgentState::Offline, &[], T0 + secs(60)),
                agent("edge-2", AgentState::Online, &["lens"], T0),
                agent("edge-3", AgentState::Offline, &["spare"], T0 + secs(5)),
            ],
        );
        let gate = fleet.camera(&cams[0]);
        assert_eq!(gate.state, LiveState::Unknown);
        assert_eq!(gate.state_detail.as_deref(), Some("edge agent edge-1 offline since 2026-11-23T08:01:00.000Z"));
        assert_eq!(
            gate.agent,
            Some(CameraAgent { id: "edge-1".into(), state: AgentLiveness::Offline, since: T0 + secs(60) })
        );
        let lens = fleet.camera(&cams[1]);
        assert_eq!((lens.state, lens.state_detail.as_deref()), (LiveState::Offline, Some("fine")));
        // no status of its own: the agent listing it decides
        let spare = fleet.camera(&cams[2]);
        assert_eq!((spare.state, spare.agent.unwrap().id.as_str()), (LiveState::Unknown, "edge-3"));
        assert_eq!(fleet.camera(&CameraRecord { camera: "new".into(), ..cams[2].clone() }).agent, None);

        let stale = fleet.stale(&alert("gate", AlertKind::CameraOffline, T0)).unwrap();
        assert_eq!((stale.agent.as_str(), stale.since), ("edge-1", T0 + secs(60)));
        assert_eq!(fleet.stale(&alert("lens", AlertKind::CameraOffline, T0)), None, "edge-2 is online");
        assert_eq!(fleet.stale(&alert("gate", AlertKind::WatchlistMatch, T0)), None, "the aggregator's");
        let mut cleared = alert("gate", AlertKind::CameraOffline, T0);
        cleared.state = AlertState::Cleared;
        assert_eq!(fleet.stale(&cleared), None);
        assert_eq!(fleet.stale(&alert("elsewhere", AlertKind::CameraOffline, T0)), None, "no agent known");
    }

    #[test]
    fn alerts_of_a_previous_agent_process_are_stale() {
        let cams = vec![camera("gate", "edge-1", CameraState::Streaming)];
        // back online, a process started at T0 + 100 s
        let mut s = status(AgentState::Online, Some(&["gate"]), T0 + secs(100));
        s.started = Some(T0 + secs(100));
        let fleet = Fleet::new(&cams, vec![AgentRecord { status: s.clone(), received_at: T0 + secs(101) }]);
        assert_eq!(fleet.camera(&cams[0]).state, LiveState::Streaming);
        let old = fleet.stale(&alert("gate", AlertKind::CameraOffline, T0 + secs(50))).unwrap();
        assert_eq!(old.since, T0 + secs(100));
        assert_eq!(fleet.stale(&alert("gate", AlertKind::CameraOffline, T0 + secs(150))), None, "its own");
        // an agent that does not say when it started: only offline makes stale
        s.started = None;
        let fleet = Fleet::new(&cams, vec![AgentRecord { status: s, received_at: T0 + secs(101) }]);
        assert_eq!(fleet.stale(&alert("gate", AlertKind::CameraOffline, T0)), None);
    }
}
