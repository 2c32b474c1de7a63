//! The sightline wire contract, version 1 (`docs/protocol.md`).
//!
//! Everything an integrator sees on MQTT is defined here once and used by every
//! producer and consumer in the workspace: topic names, identifier rules, the
//! timestamp format and the payload types. Readers ignore unknown fields and
//! reject missing required ones with an error naming the field.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod ts;

/// Root of every topic of this contract version.
pub const TOPIC_ROOT: &str = "sightline/v1";

/// A contract violation found while building or reading a message.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("invalid {what} id {id:?}: must match [a-z0-9][a-z0-9_-]{{0,63}}")]
    InvalidId { what: &'static str, id: String },
    #[error("payload is not valid {expected}: {source}")]
    Json {
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("field `schema` is {found:?}, expected {expected:?}")]
    WrongSchema { expected: &'static str, found: String },
}

/// Checks a site, camera or agent id (`[a-z0-9][a-z0-9_-]{0,63}`): safe in MQTT topics and URLs.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), ContractError> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if ok { Ok(()) } else { Err(ContractError::InvalidId { what, id: id.to_owned() }) }
}

/// A new event id: UUIDv7 (time-ordered), unique per event; consumers de-duplicate on it.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}

/// MQTT topics of the contract.
pub mod topic {
    use super::TOPIC_ROOT;

    pub fn sighting(site: &str, camera: &str) -> String {
        format!("{TOPIC_ROOT}/{site}/{camera}/sighting")
    }
    pub fn crowd(site: &str, camera: &str) -> String {
        format!("{TOPIC_ROOT}/{site}/{camera}/crowd")
    }
    pub fn alert(site: &str, camera: &str) -> String {
        format!("{TOPIC_ROOT}/{site}/{camera}/alert")
    }
    pub fn camera_status(site: &str, camera: &str) -> String {
        format!("{TOPIC_ROOT}/{site}/{camera}/status")
    }
    pub fn agent_status(site: &str, agent: &str) -> String {
        format!("{TOPIC_ROOT}/{site}/agent/{agent}/status")
    }
    /// Alerts about an edge agent itself (`agent_offline`), published by the aggregator.
    pub fn agent_alert(site: &str, agent: &str) -> String {
        format!("{TOPIC_ROOT}/{site}/agent/{agent}/alert")
    }
    pub fn trajectory(site: &str) -> String {
        format!("{TOPIC_ROOT}/{site}/trajectory")
    }
}

/// A payload type of the contract: knows its schema string.
pub trait Payload: Serialize + for<'de> Deserialize<'de> {
    const SCHEMA: &'static str;

    /// Serialises with the `schema` field first.
    fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Tagged<'a, T: Serialize> {
            schema: &'static str,
            #[serde(flatten)]
            body: &'a T,
        }
        serde_json::to_vec(&Tagged { schema: Self::SCHEMA, body: self }).expect("contract payloads always serialise")
    }

    /// Parses and checks `schema`; unknown fields are ignored, missing required ones name the field.
    fn from_json(bytes: &[u8]) -> Result<Self, ContractError> {
        #[derive(Deserialize)]
        struct Schema {
            schema: Option<String>,
        }
        let json = |source| ContractError::Json { expected: Self::SCHEMA, source };
        let head: Schema = serde_json::from_slice(bytes).map_err(json)?;
        match head.schema {
            Some(s) if s == Self::SCHEMA => serde_json::from_slice(bytes).map_err(json),
            Some(found) => Err(ContractError::WrongSchema { expected: Self::SCHEMA, found }),
            None => Err(json(serde::de::Error::missing_field("schema"))),
        }
    }
}

/// The best shot of a face track: what the sighting's embedding was computed from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestShot {
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: OffsetDateTime,
    /// `[x, y, w, h]` in source-frame pixels.
    pub bbox: [f32; 4],
    /// YuNet order: right eye, left eye, nose tip, right mouth corner, left mouth corner (subject's sides).
    pub landmarks: [[f32; 2]; 5],
    pub det_score: f32,
    pub quality: f32,
}

/// `sightline.sighting/1`: one person-pass through a camera's view (a closed face track).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(description = "`sightline.sighting/1` as served: WITHOUT its `embedding` (biometric data is never \
                          served) and without its `schema` field.")
)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub id: Uuid,
    pub site: String,
    pub camera: String,
    pub track: u64,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: OffsetDateTime,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: OffsetDateTime,
    pub best: BestShot,
    /// `[width, height]` of the source frames.
    pub frame_size: [u32; 2],
    /// Metres in the site frame, when the camera is calibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground: Option<[f64; 2]>,
    /// Embedding model name; embeddings of different models are never compared.
    pub model: String,
    /// Left out of the OpenAPI schema: this schema is of the sighting as an HTTP API serves it,
    /// and the embedding (biometric data) is never served.
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub embedding: Vec<f32>,
}

impl Payload for Sighting {
    const SCHEMA: &'static str = "sightline.sighting/1";
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrowdMethod {
    Density,
    Detection,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneCount {
    pub zone: String,
    pub count: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area_m2: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density_per_m2: Option<f32>,
}

/// `sightline.crowd/1`: a periodic crowd measurement.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crowd {
    pub id: Uuid,
    pub site: String,
    pub camera: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: OffsetDateTime,
    pub method: CrowdMethod,
    pub total: f32,
    pub zones: Vec<ZoneCount>,
    /// Where the people are in the frame: a coarse grid of people per cell (optional; absent in
    /// messages of agents that do not compute it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<DensityGrid>,
}

/// Largest number of columns or rows of a [`DensityGrid`].
pub const MAX_GRID_SIDE: u16 = 64;

/// A coarse crowd density grid over the whole frame: `cols` × `rows` cells, people per cell,
/// row-major from the top-left (cell `(c, r)` covers `c/cols..(c+1)/cols` of the width and
/// `r/rows..(r+1)/rows` of the height). Made by the same method as the measurement's `total`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityGrid {
    /// 1 to [`MAX_GRID_SIDE`].
    pub cols: u16,
    /// 1 to [`MAX_GRID_SIDE`].
    pub rows: u16,
    /// `cols * rows` finite values ≥ 0.
    pub cells: Vec<f32>,
}

impl DensityGrid {
    /// Checks the grid's shape and values; the error names the field at fault (`grid.cells`, …).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, n) in [("grid.cols", self.cols), ("grid.rows", self.rows)] {
            if n == 0 || n > MAX_GRID_SIDE {
                return Err((field, format!("must be 1 to {MAX_GRID_SIDE}, got {n}")));
            }
        }
        let expected = usize::from(self.cols) * usize::from(self.rows);
        if self.cells.len() != expected {
            return Err((
                "grid.cells",
                format!(
                    "has {} values, cols × rows = {} × {} = {expected} expected",
                    self.cells.len(),
                    self.cols,
                    self.rows
                ),
            ));
        }
        if let Some((i, v)) = self.cells.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(("grid.cells", format!("value {i} must be a non-negative number, got {v}")));
        }
        Ok(())
    }
}

impl Payload for Crowd {
    const SCHEMA: &'static str = "sightline.crowd/1";
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Cleared,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    CrowdThreshold,
    ZoneIntrusion,
    CameraOffline,
    CameraFrozen,
    CameraTampered,
    WatchlistMatch,
    /// An edge agent went offline (its Last Will or its clean stop); raised and cleared by the
    /// aggregator only, with `camera` holding the agent id.
    AgentOffline,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// `sightline.alert/1`: raised / cleared pairs sharing `alert`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: Uuid,
    pub site: String,
    pub camera: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: OffsetDateTime,
    /// Stable id shared by the raise and its clear.
    pub alert: String,
    pub state: AlertState,
    pub kind: AlertKind,
    pub severity: Severity,
    /// Absent when the alert is not about a zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub message: String,
    /// Kind-specific details; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

impl Payload for Alert {
    const SCHEMA: &'static str = "sightline.alert/1";
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    Connecting,
    Streaming,
    Offline,
    Disabled,
}

impl fmt::Display for CameraState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Offline => "offline",
            CameraState::Disabled => "disabled",
        })
    }
}

/// `sightline.camera_status/1` (retained).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraStatus {
    pub site: String,
    pub camera: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: OffsetDateTime,
    pub agent: String,
    pub state: CameraState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps_in: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps_analyzed: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_dropped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// `[width, height]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<[u32; 2]>,
    /// Human-readable reason for the state (e.g. the last connection error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Payload for CameraStatus {
    const SCHEMA: &'static str = "sightline.camera_status/1";
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Online,
    Offline,
}

/// `sightline.agent_status/1` (retained; also the agent's MQTT Last Will with `state: offline`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub site: String,
    pub agent: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: OffsetDateTime,
    pub state: AgentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cameras: Option<Vec<String>>,
    /// When the agent's process started (optional): a later value than an alert's `ts` means
    /// the process that raised the alert is gone, and with it the alert's episode.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "ts::rfc3339_ms_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub started: Option<OffsetDateTime>,
}

impl Payload for AgentStatus {
    const SCHEMA: &'static str = "sightline.agent_status/1";
}

/// `sightline.trajectory/1`: published by the aggregator each time a sighting joins a
/// trajectory (`new`: the sighting started it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Event id of this update.
    pub id: Uuid,
    pub site: String,
    /// When the sighting was placed.
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: OffsetDateTime,
    /// The trajectory's id (stable across its updates).
    pub trajectory: Uuid,
    /// The sighting that joined it.
    pub sighting: Uuid,
    pub camera: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: OffsetDateTime,
    #[serde(with = "ts::rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: OffsetDateTime,
    /// Metres in the site frame, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground: Option<[f64; 2]>,
    /// Embedding distance to the trajectory it joined (absent when `new`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<f32>,
    pub new: bool,
    /// Trajectories merged into this one when this sighting joined it (repair after the fact):
    /// every sighting of each of them now belongs to `trajectory`, and their ids answer on the
    /// API with this one's. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<Uuid>,
}

impl Payload for Trajectory {
    const SCHEMA: &'static str = "sightline.trajectory/1";
}

/// Wall-clock time, injected so behaviour that depends on time can be tested deterministically.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system's UTC clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sighting() -> Sighting {
        let t = datetime!(2026-11-23 08:00:01.2 UTC);
        Sighting {
            id: new_event_id(),
            site: "riverside".into(),
            camera: "gate-north".into(),
            track: 17,
            first_seen: t,
            last_seen: t + time::Duration::milliseconds(2400),
            best: BestShot {
                ts: t,
                bbox: [412.0, 96.5, 58.0, 71.0],
                landmarks: [[1.0, 2.0]; 5],
                det_score: 0.94,
                quality: 0.81,
            },
            frame_size: [1920, 1080],
            ground: None,
            model: "dlib-resnet-v1".into(),
            embedding: vec![0.5; 128],
        }
    }

    #[test]
    fn crowd_grid_is_optional_and_checked() {
        // a message of an agent without grids stays valid, and is written back without one
        let old = br#"{"schema":"sightline.crowd/1","id":"01a2083f-bbb1-711a-87ce-b4abe403d9a2","site":"riverside","camera":"walkway","ts":"2026-11-23T11:51:55.085Z","method":"detection","total":3.0,"zones":[]}"#;
        let c = Crowd::from_json(old).unwrap();
        assert_eq!(c.grid, None);
        assert!(!String::from_utf8(c.to_json()).unwrap().contains("grid"));
        let mut with = c.clone();
        with.grid = Some(DensityGrid { cols: 2, rows: 1, cells: vec![1.0, 2.0] });
        let back = Crowd::from_json(&with.to_json()).unwrap();
        assert_eq!(back, with);
        back.grid.unwrap().check().unwrap();
        let bad = |cols, rows, cells: Vec<f32>| DensityGrid { cols, rows, cells }.check().unwrap_err();
        assert_eq!(bad(2, 2, vec![0.0; 3]).0, "grid.cells");
        assert_eq!(bad(0, 2, vec![]).0, "grid.cols");
        assert_eq!(bad(2, 65, vec![0.0; 130]).0, "grid.rows");
        assert_eq!(bad(1, 1, vec![f32::NAN]).0, "grid.cells");
        assert_eq!(bad(1, 1, vec![-1.0]).0, "grid.cells");
    }

    #[test]
    fn ids() {
        for ok in ["a", "gate-north", "cam_01", "0", &"a".repeat(64)] {
            validate_id("camera", ok).unwrap();
        }
        for bad in ["", "-a", "_a", "A", "gate north", "a/b", "a+", "#", &"a".repeat(65)] {
            let e = validate_id("camera", bad).unwrap_err().to_string();
            assert!(e.contains("invalid camera id"), "{e}");
        }
    }

    #[test]
    fn sighting_round_trip_and_shape() {
        let s = sighting();
        let bytes = s.to_json();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema"], "sightline.sighting/1");
        assert_eq!(v["first_seen"], "2026-11-23T08:00:01.200Z");
        assert_eq!(v["last_seen"], "2026-11-23T08:00:03.600Z");
        assert!(v.get("ground").is_none());
        assert_eq!(Sighting::from_json(&bytes).unwrap(), s);
    }

    #[test]
    fn unknown_fields_ignored_missing_named_wrong_schema_rejected() {
        let mut v: serde_json::Value = serde_json::from_slice(&sighting().to_json()).unwrap();
        v["future_field"] = serde_json::json!({"x": 1});
        Sighting::from_json(v.to_string().as_bytes()).unwrap();

        v.as_object_mut().unwrap().remove("embedding");
        let e = Sighting::from_json(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(e.contains("missing field `embedding`"), "{e}");

        v["schema"] = "sightline.crowd/1".into();
        let e = Sighting::from_json(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(e.contains("sightline.crowd/1"), "{e}");

        let e = Sighting::from_json(b"{}").unwrap_err().to_string();
        assert!(e.contains("missing field `schema`"), "{e}");
    }

    #[test]
    fn enums_are_snake_case() {
        let a = Alert {
            id: new_event_id(),
            site: "s".into(),
            camera: "c".into(),
            ts: datetime!(2026-11-23 08:00 UTC),
            alert: "c/camera_offline/1".into(),
            state: AlertState::Raised,
            kind: AlertKind::CameraOffline,
            severity: Severity::Critical,
            zone: None,
            message: "no frames for 10 s".into(),
            details: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
        assert_eq!(v["kind"], "camera_offline");
        assert_eq!(v["state"], "raised");
        assert_eq!(v["severity"], "critical");
    }

    #[test]
    fn topics() {
        assert_eq!(topic::sighting("riverside", "gate-north"), "sightline/v1/riverside/gate-north/sighting");
        assert_eq!(topic::agent_status("riverside", "edge-1"), "sightline/v1/riverside/agent/edge-1/status");
        assert_eq!(topic::agent_alert("riverside", "edge-1"), "sightline/v1/riverside/agent/edge-1/alert");
    }

    #[test]
    fn agent_status_started_is_optional() {
        let old = br#"{"schema":"sightline.agent_status/1","site":"s","agent":"edge-1","ts":"2026-11-23T08:00:00.000Z","state":"offline"}"#;
        let s = AgentStatus::from_json(old).unwrap();
        assert_eq!(s.started, None);
        assert!(!String::from_utf8(s.to_json()).unwrap().contains("started"));
        let with = AgentStatus { started: Some(datetime!(2026-11-23 07:59:58.5 UTC)), ..s };
        let v: serde_json::Value = serde_json::from_slice(&with.to_json()).unwrap();
        assert_eq!(v["started"], "2026-11-23T07:59:58.500Z");
        assert_eq!(AgentStatus::from_json(&with.to_json()).unwrap(), with);
        let kind: serde_json::Value = serde_json::to_value(AlertKind::AgentOffline).unwrap();
        assert_eq!(kind, "agent_offline");
    }
}
