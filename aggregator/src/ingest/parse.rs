//! Parsing and checking of one message: its topic (kind, site, camera or agent), its size, its
//! payload against the contract, and what the contract's types cannot express (the ids the topic
//! routes on, times in order, finite embeddings of the model's length, grid shapes). The error
//! names the topic, and the field when one is at fault.
//! Beyond shape, the values must be plausible ([`crate::plausible`]).

use sightline_contract::{
    AgentStatus, Alert, AlertKind, CameraStatus, ContractError, Crowd, Payload, Sighting, TOPIC_ROOT, validate_id,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::plausible::{self, Plausibility};

/// What a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Sighting,
    Crowd,
    Alert,
    CameraStatus,
    AgentStatus,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sighting => "sighting",
            Kind::Crowd => "crowd",
            Kind::Alert => "alert",
            Kind::CameraStatus => "camera_status",
            Kind::AgentStatus => "agent_status",
        }
    }
}

/// The topic filters the aggregator subscribes to: of every site, or of `site` only.
pub fn subscriptions(site: Option<&str>) -> Vec<String> {
    let site = site.unwrap_or("+");
    ["+/sighting", "+/crowd", "+/alert", "+/status", "agent/+/status"]
        .iter()
        .map(|f| format!("{TOPIC_ROOT}/{site}/{f}"))
        .collect()
}

/// The site a topic of the contract names (`sightline/v1/{site}/…`), unchecked.
pub fn site_of(topic: &str) -> Option<&str> {
    topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?.split('/').next()
}

/// A message that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Sighting(Sighting),
    Crowd(Crowd),
    Alert(Alert),
    CameraStatus(CameraStatus),
    AgentStatus(AgentStatus),
}

/// Why a message was rejected: always names the topic, and the field when one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("topic {topic}: not a topic of the sightline/v1 contract")]
    Topic { topic: String },
    #[error("topic {topic}: payload of {size} bytes exceeds the {max} byte limit")]
    Oversized { topic: String, size: usize, max: usize },
    #[error("topic {topic}: {source}")]
    Payload {
        topic: String,
        #[source]
        source: ContractError,
    },
    #[error("topic {topic}: field `{field}`: {problem}")]
    Field { topic: String, field: &'static str, problem: String },
    /// An alert of a kind only the aggregator raises ([`plausible::AGGREGATOR_ONLY_KINDS`]):
    /// forged, unless its `id` is one the aggregator stored (its own alert, received back).
    #[error("topic {topic}: field `kind`: {kind:?} alerts are raised by the aggregator only, never taken from MQTT")]
    AggregatorOnly { topic: String, kind: AlertKind, id: Uuid },
}

impl Rejected {
    /// What was at fault, for metrics: `topic`, `size`, `payload` (unreadable), or the field.
    pub fn field(&self) -> &'static str {
        match self {
            Rejected::Topic { .. } => "topic",
            Rejected::Oversized { .. } => "size",
            Rejected::Payload { .. } => "payload",
            Rejected::Field { field, .. } => field,
            Rejected::AggregatorOnly { .. } => "kind",
        }
    }
}

/// Parses and checks one message received at `now` (the aggregator's clock).
pub fn parse(
    topic: &str,
    payload: &[u8],
    max_bytes: usize,
    plausible: &Plausibility,
    now: OffsetDateTime,
) -> Result<(Kind, Incoming), Rejected> {
    let (kind, site, source) = classify(topic).ok_or_else(|| Rejected::Topic { topic: topic.into() })?;
    if payload.len() > max_bytes {
        return Err(Rejected::Oversized { topic: topic.into(), size: payload.len(), max: max_bytes });
    }
    let contract = |source| Rejected::Payload { topic: topic.into(), source };
    let field = |field: &'static str, problem: String| Rejected::Field { topic: topic.into(), field, problem };
    // the ids in the payload must be the ones the topic routes on
    let same = |name: &'static str, value: &str, expected: &str| {
        if value == expected { Ok(()) } else { Err(field(name, format!("is {value:?}, the topic says {expected:?}"))) }
    };
    let incoming = match kind {
        Kind::Sighting => {
            let s = Sighting::from_json(payload).map_err(contract)?;
            same("camera", &s.camera, source)?;
            check_sighting(&s).map_err(|(f, p)| field(f, p))?;
            plausible.sighting(&s, now).map_err(|(f, p)| field(f, p))?;
            Incoming::Sighting(s)
        }
        Kind::Crowd => {
            let c = Crowd::from_json(payload).map_err(contract)?;
            same("camera", &c.camera, source)?;
            if !c.total.is_finite() || c.total < 0.0 {
                return Err(field("total", format!("must be a non-negative number, got {}", c.total)));
            }
            if let Some(grid) = &c.grid {
                grid.check().map_err(|(f, p)| field(f, p))?;
            }
            plausible.crowd(&c, now).map_err(|(f, p)| field(f, p))?;
            Incoming::Crowd(c)
        }
        Kind::Alert => {
            let a = Alert::from_json(payload).map_err(contract)?;
            same("camera", &a.camera, source)?;
            if plausible::raised_by_aggregator_only(a.kind) {
                return Err(Rejected::AggregatorOnly { topic: topic.into(), kind: a.kind, id: a.id });
            }
            plausible.alert(&a, now).map_err(|(f, p)| field(f, p))?;
            Incoming::Alert(a)
        }
        Kind::CameraStatus => {
            let s = CameraStatus::from_json(payload).map_err(contract)?;
            same("camera", &s.camera, source)?;
            plausible.camera_status(&s, now).map_err(|(f, p)| field(f, p))?;
            Incoming::CameraStatus(s)
        }
        Kind::AgentStatus => {
            let s = AgentStatus::from_json(payload).map_err(contract)?;
            same("agent", &s.agent, source)?;
            plausible.agent_status(&s, now).map_err(|(f, p)| field(f, p))?;
            Incoming::AgentStatus(s)
        }
    };
    let payload_site = match &incoming {
        Incoming::Sighting(s) => &s.site,
        Incoming::Crowd(c) => &c.site,
        Incoming::Alert(a) => &a.site,
        Incoming::CameraStatus(s) => &s.site,
        Incoming::AgentStatus(s) => &s.site,
    };
    same("site", payload_site, site)?;
    Ok((kind, incoming))
}

/// The topic's kind for metrics (`unknown` off the contract).
pub fn kind_of(topic: &str) -> &'static str {
    classify(topic).map_or("unknown", |(k, _, _)| k.as_str())
}

/// `sightline/v1/{site}/{camera}/{kind}` or `sightline/v1/{site}/agent/{agent}/status` →
/// (kind, site, camera or agent id).
fn classify(topic: &str) -> Option<(Kind, &str, &str)> {
    let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (kind, site, id) = match parts.as_slice() {
        [site, "agent", agent, "status"] => (Kind::AgentStatus, *site, *agent),
        [site, camera, "sighting"] => (Kind::Sighting, *site, *camera),
        [site, camera, "crowd"] => (Kind::Crowd, *site, *camera),
        [site, camera, "alert"] => (Kind::Alert, *site, *camera),
        [site, camera, "status"] => (Kind::CameraStatus, *site, *camera),
        _ => return None,
    };
    (validate_id("site", site).is_ok() && validate_id("camera", id).is_ok()).then_some((kind, site, id))
}

/// What the contract's types cannot express: the numbers must make sense.
fn check_sighting(s: &Sighting) -> Result<(), (&'static str, String)> {
    if s.last_seen < s.first_seen {
        return Err(("last_seen", "is before first_seen".into()));
    }
    if s.embedding.is_empty() || s.embedding.iter().any(|v| !v.is_finite()) {
        return Err(("embedding", "must be a non-empty array of finite numbers".into()));
    }
    let dim = sightline_vision::EMBEDDING_DIM;
    if s.model == sightline_vision::EMBEDDING_MODEL && s.embedding.len() != dim {
        return Err(("embedding", format!("{} has {dim} values, got {}", s.model, s.embedding.len())));
    }
    if s.best.bbox.iter().any(|v| !v.is_finite()) || s.best.bbox[2] <= 0.0 || s.best.bbox[3] <= 0.0 {
        return Err(("best.bbox", format!("must be [x, y, w, h] with w, h > 0, got {:?}", s.best.bbox)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_contract::{BestShot, new_event_id};
    use time::macros::datetime;

    const MAX: usize = 1 << 20;
    /// The aggregator's clock in these tests: four hours after the messages' times.
    const NOW: time::OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn parse(topic: &str, payload: &[u8], max_bytes: usize) -> Result<(Kind, Incoming), Rejected> {
        let checks =
            Plausibility::new(Default::default(), Default::default(), [("riverside".to_owned(), "gate".to_owned())]);
        super::parse(topic, payload, max_bytes, &checks, NOW)
    }

    fn sighting() -> Sighting {
        let t = datetime!(2026-11-23 08:00:00 UTC);
        Sighting {
            id: new_event_id(),
            site: "riverside".into(),
            camera: "gate".into(),
            track: 3,
            first_seen: t,
            last_seen: t + time::Duration::seconds(2),
            best: BestShot {
                ts: t,
                bbox: [1.0, 2.0, 30.0, 40.0],
                landmarks: [[0.0; 2]; 5],
                det_score: 0.9,
                quality: 0.5,
            },
            frame_size: [640, 360],
            ground: None,
            model: "dlib-resnet-v1".into(),
            embedding: vec![0.1; 128],
        }
    }

    fn rejected(topic: &str, payload: &[u8]) -> String {
        parse(topic, payload, MAX).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_sighting_is_accepted() {
        let s = sighting();
        let (kind, got) = parse("sightline/v1/riverside/gate/sighting", &s.to_json(), MAX).unwrap();
        assert_eq!((kind, got), (Kind::Sighting, Incoming::Sighting(s)));
    }

    #[test]
    fn rejections_name_the_topic_and_the_field() {
        let topic = "sightline/v1/riverside/gate/sighting";
        let mut v: serde_json::Value = serde_json::from_slice(&sighting().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("first_seen");
        let e = rejected(topic, &serde_json::to_vec(&v).unwrap());
        assert!(e.contains(topic) && e.contains("first_seen"), "{e}");

        let e = rejected(topic, b"{not json");
        assert!(e.contains(topic) && e.contains("sightline.sighting/1"), "{e}");

        let crowd = br#"{"schema":"sightline.crowd/1"}"#;
        let e = rejected(topic, crowd);
        assert!(e.contains("schema") && e.contains("sightline.crowd/1"), "{e}");

        let e = rejected("sightline/v1/riverside/door/sighting", &sighting().to_json());
        assert!(e.contains("`camera`") && e.contains("door"), "{e}");
        let e = rejected("sightline/v1/elsewhere/gate/sighting", &sighting().to_json());
        assert!(e.contains("`site`"), "{e}");

        let mut s = sighting();
        s.embedding.truncate(12);
        assert!(rejected(topic, &s.to_json()).contains("`embedding`"));
        let mut s = sighting();
        s.last_seen = s.first_seen - time::Duration::seconds(1);
        assert!(rejected(topic, &s.to_json()).contains("`last_seen`"));

        let e = parse(topic, &sighting().to_json(), 100).unwrap_err().to_string();
        assert!(e.contains("exceeds the 100 byte limit"), "{e}");
        for bad in ["sightline/v1/riverside/gate", "sightline/v1/Riverside/gate/sighting", "other/v1/a/b/sighting"] {
            assert!(rejected(bad, &sighting().to_json()).contains("not a topic"), "{bad}");
        }
    }

    #[test]
    fn a_crowd_grid_is_optional_and_its_shape_is_checked() {
        let topic = "sightline/v1/riverside/gate/crowd";
        let crowd = |grid: Option<serde_json::Value>| {
            let mut v = serde_json::json!({
                "schema": "sightline.crowd/1", "id": "01a2083f-bbb1-711a-87ce-b4abe403d9a2", "site": "riverside",
                "camera": "gate", "ts": "2026-11-23T11:51:55.085Z", "method": "density", "total": 3.0, "zones": []
            });
            if let Some(g) = grid {
                v["grid"] = g;
            }
            serde_json::to_vec(&v).unwrap()
        };
        // without a grid (agents before it), and with a consistent one
        assert!(matches!(parse(topic, &crowd(None), MAX), Ok((Kind::Crowd, Incoming::Crowd(c))) if c.grid.is_none()));
        let ok = serde_json::json!({"cols": 2, "rows": 2, "cells": [0.0, 1.5, 0.5, 1.0]});
        let Ok((_, Incoming::Crowd(c))) = parse(topic, &crowd(Some(ok)), MAX) else { panic!("rejected") };
        assert_eq!(c.grid.unwrap().cells, vec![0.0, 1.5, 0.5, 1.0]);
        // inconsistent: rejected naming the field
        let e = rejected(topic, &crowd(Some(serde_json::json!({"cols": 2, "rows": 2, "cells": [1.0]}))));
        assert!(e.contains("`grid.cells`") && e.contains("2 × 2 = 4"), "{e}");
        let e = rejected(topic, &crowd(Some(serde_json::json!({"cols": 65, "rows": 1, "cells": vec![0.0; 65]}))));
        assert!(e.contains("`grid.cols`"), "{e}");
        let e = rejected(topic, &crowd(Some(serde_json::json!({"cols": 1, "rows": 1, "cells": [-2.0]}))));
        assert!(e.contains("`grid.cells`"), "{e}");
        let e = rejected(topic, &crowd(Some(serde_json::json!({"cols": 1, "rows": 1}))));
        assert!(e.contains("cells"), "{e}");
    }

    #[test]
    fn subscriptions_cover_every_kind() {
        let plain = subscriptions(None);
        assert!(plain.contains(&"sightline/v1/+/agent/+/status".to_owned()));
        assert_eq!(plain.len(), 5);
        let one = subscriptions(Some("east"));
        assert!(one.contains(&"sightline/v1/east/+/sighting".to_owned()));
        assert!(one.iter().all(|f| site_of(f) == Some("east")), "{one:?}");
        assert_eq!(site_of("sightline/v1/east/agent/box-1/status"), Some("east"));
        assert_eq!(site_of("other/v1/east/cam/sighting"), None);
    }
}
