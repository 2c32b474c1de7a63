//! Plausibility at ingest: what a well-formed message must also be to be believed.
//!
//! The contract's reader checks shape (`schema`, required fields, types) and ingest (`ingest/parse.rs`)
//! the topic and the ids; this module checks that the *values* can be true of a real camera at
//! this site now: times near the aggregator's clock, a best shot inside its pass and its frame,
//! an embedding of a known model with the length and norm that model produces, crowd counts
//! below a ceiling, bounded alert texts, and a camera of the site config. It is pure (the caller
//! gives the time), so every rule is unit-tested; `docs/aggregator.md` ("Plausibility") explains
//! the limits and their defaults.
//!
//! A message that fails is rejected by ingest like any other invalid message: logged with the
//! topic and the field, counted, never stored.

use std::collections::HashSet;

use serde::Deserialize;
use sightline_contract::{AgentStatus, Alert, AlertKind, CameraStatus, Crowd, Sighting, ts};
use time::{Duration, OffsetDateTime};

use crate::store::RetentionPolicy;

/// The field at fault and what is wrong with it.
pub type Problem = (&'static str, String);

/// `[ingest]` in the aggregator's config: the limits of [`Plausibility`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// How far ahead of the aggregator's clock a timestamp may be (s). Edge agents' clocks are
    /// NTP-synced and frame times are capture times (`docs/protocol.md`, "Time semantics"), so a
    /// real message is at most a little ahead; the correlation tolerates only
    /// `[site] time_tolerance_s` (1 s) between cameras anyway. Default 60.
    pub max_future_skew_s: u64,
    /// How old a timestamp may be (s): how long an edge agent may replay its outbox after an
    /// outage. Never older than the kind's `[retention]` either (a sighting older than
    /// `sightings_days` would be deleted at once). Default 7 days.
    pub max_age_s: u64,
    /// Ceiling of a crowd measurement's `total`, each zone's `count` and each grid cell. Default
    /// 100000 (a stadium seen by one camera is far below).
    pub max_crowd_total: f64,
    /// Largest alert `details`, serialized (bytes). Default 4096 (edge agents' and the
    /// aggregator's own are a few hundred bytes).
    pub max_details_bytes: usize,
    /// Longest alert `message`, `alert` id and `zone` (characters). Default 500.
    pub max_message_chars: usize,
    /// Take messages of cameras that are not a `[[camera]]` of the site config (or of another
    /// site). Such a camera has no position: the correlator cannot check whether one person can
    /// be there and elsewhere at those times. Default false.
    pub accept_unknown_cameras: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_future_skew_s: 60,
            max_age_s: 7 * 86_400,
            max_crowd_total: 100_000.0,
            max_details_bytes: 4096,
            max_message_chars: 500,
            accept_unknown_cameras: false,
        }
    }
}

impl IngestConfig {
    /// Checks the limits; the error names the key (`ingest.max_age_s`, …).
    pub fn validate(&self) -> Result<(), Problem> {
        if self.max_future_skew_s > 86_400 {
            return Err((
                "ingest.max_future_skew_s",
                format!("must be at most 86400 (a day), got {}", self.max_future_skew_s),
            ));
        }
        if !(1..=3650 * 86_400).contains(&self.max_age_s) {
            return Err(("ingest.max_age_s", format!("must be 1 to 315360000 (ten years), got {}", self.max_age_s)));
        }
        if !(self.max_crowd_total > 0.0 && self.max_crowd_total <= f64::from(f32::MAX)) {
            return Err(("ingest.max_crowd_total", format!("must be a positive number, got {}", self.max_crowd_total)));
        }
        if self.max_details_bytes < 1024 {
            return Err((
                "ingest.max_details_bytes",
                format!(
                    "must be at least 1024 (edge agents' details are a few hundred bytes), got {}",
                    self.max_details_bytes
                ),
            ));
        }
        if self.max_message_chars < 200 {
            return Err((
                "ingest.max_message_chars",
                format!("must be at least 200 (edge agents' alert ids reach ~180), got {}", self.max_message_chars),
            ));
        }
        Ok(())
    }
}

/// An embedding model the aggregator knows: its name on the wire, its length, and the range of
/// L2 norms its embeddings have.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnownModel {
    pub name: &'static str,
    pub dim: usize,
    /// `(min, max)` L2 norm accepted.
    pub norm: (f64, f64),
}

/// Every embedding model ingest accepts.
///
/// `dlib-resnet-v1` norms, measured on the real media through the edge agents' pipeline
/// (YuNet, alignment, dlib): every face found in `obama.jpg`, `obama2.jpg`, `obama3.jpg`,
/// `biden.jpg`, `biden2.jpg`, `two_people.jpg`, `alex-lacamoire.png`, `lin-manuel-miranda.png`,
/// in every frame of `short_hamilton_clip.mp4`, and in the portraits cropped so the border cuts
/// the face: 691 faces, L2 norm 1.254 to 1.544, median 1.386 (2026-12-07,
/// `cargo test -p sightline-tests --test ingest_plausibility real_faces -- --nocapture`). The
/// accepted range, 0.4 to 4, is three times below the smallest and 2.6 times above the largest:
/// it refuses zero, tiny and huge vectors (fabricated, or a broken model), never a real face.
pub const KNOWN_MODELS: &[KnownModel] =
    &[KnownModel { name: sightline_vision::EMBEDDING_MODEL, dim: sightline_vision::EMBEDDING_DIM, norm: (0.4, 4.0) }];

/// Alert kinds only the aggregator raises (it publishes them on the edges' alert topics, see
/// [`crate::alerts::AlertPublisher`]): ingest never takes them from MQTT.
pub const AGGREGATOR_ONLY_KINDS: &[AlertKind] = &[AlertKind::WatchlistMatch, AlertKind::AgentOffline];

/// Whether only the aggregator raises alerts of `kind`.
pub fn raised_by_aggregator_only(kind: AlertKind) -> bool {
    AGGREGATOR_ONLY_KINDS.contains(&kind)
}

/// Largest frame side (pixels) a sighting may report: 16K.
pub const MAX_FRAME_SIDE: u32 = 16_384;

/// The checks, with the limits, the retention policy and the site's cameras.
#[derive(Clone, Debug)]
pub struct Plausibility {
    limits: IngestConfig,
    retention: RetentionPolicy,
    /// The sites with cameras.
    sites: HashSet<String>,
    /// (site, camera).
    cameras: HashSet<(String, String)>,
}

/// The times accepted for one timestamp at `now`.
struct Window {
    now: OffsetDateTime,
    oldest: OffsetDateTime,
    newest: OffsetDateTime,
    /// The key that set `oldest`.
    oldest_key: &'static str,
    skew_s: u64,
}

impl Window {
    fn check(&self, field: &'static str, t: OffsetDateTime) -> Result<(), Problem> {
        if t > self.newest {
            return Err((
                field,
                format!(
                    "{} is {} s ahead of the aggregator's clock ({}); at most {} s accepted ([ingest] max_future_skew_s)",
                    ts::format(t),
                    (t - self.now).whole_seconds(),
                    ts::format(self.now),
                    self.skew_s
                ),
            ));
        }
        if t < self.oldest {
            return Err((
                field,
                format!(
                    "{} is older than {}, the oldest accepted at {} ({})",
                    ts::format(t),
                    ts::format(self.oldest),
                    ts::format(self.now),
                    self.oldest_key
                ),
            ));
        }
        Ok(())
    }
}

impl Plausibility {
    /// `cameras`: (site id, camera id) of every camera of the config.
    pub fn new(
        limits: IngestConfig,
        retention: RetentionPolicy,
        cameras: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let cameras: HashSet<(String, String)> = cameras.into_iter().collect();
        let sites = cameras.iter().map(|(site, _)| site.clone()).collect();
        Plausibility { limits, retention, sites, cameras }
    }

    pub fn limits(&self) -> &IngestConfig {
        &self.limits
    }

    /// The window at `now`; `retention`: the `[retention]` key and days of the kind, for the
    /// timestamp the retention job deletes by.
    fn window(&self, now: OffsetDateTime, retention: Option<(&'static str, f64)>) -> Window {
        let far_past = time::Date::MIN.midnight().assume_utc();
        let far_future = time::Date::MAX.midnight().assume_utc();
        let mut oldest = now.checked_sub(Duration::seconds(self.limits.max_age_s as i64)).unwrap_or(far_past);
        let mut oldest_key = "[ingest] max_age_s";
        if let Some((key, days)) = retention {
            let kept = Duration::checked_seconds_f64(days * 86_400.0).and_then(|d| now.checked_sub(d));
            if let Some(cutoff) = kept.filter(|c| *c >= oldest) {
                oldest = cutoff;
                oldest_key = key;
            }
        }
        let newest = now.checked_add(Duration::seconds(self.limits.max_future_skew_s as i64)).unwrap_or(far_future);
        Window { now, oldest, newest, oldest_key, skew_s: self.limits.max_future_skew_s }
    }

    /// The camera must be a camera of its site in the config (unless `accept_unknown_cameras`).
    fn camera(&self, site: &str, camera: &str) -> Result<(), Problem> {
        if self.limits.accept_unknown_cameras {
            return Ok(());
        }
        if !self.sites.contains(site) {
            return Err((
                "site",
                format!("is {site:?}: no site of the config has it ([ingest] accept_unknown_cameras)"),
            ));
        }
        if !self.cameras.contains(&(site.to_owned(), camera.to_owned())) {
            return Err((
                "camera",
                format!("{camera:?} is not a [[camera]] of the site config ([ingest] accept_unknown_cameras)"),
            ));
        }
        Ok(())
    }

    /// A sighting (already checked by ingest for shape: `first_seen <= last_seen`, a finite
    /// non-empty embedding, a bbox with w, h > 0).
    pub fn sighting(&self, s: &Sighting, now: OffsetDateTime) -> Result<(), Problem> {
        self.camera(&s.site, &s.camera)?;
        // the retention job deletes sightings by `last_seen`
        self.window(now, Some(("[retention] sightings_days", self.retention.sightings_days)))
            .check("last_seen", s.last_seen)?;
        let w = self.window(now, None);
        w.check("first_seen", s.first_seen)?;
        w.check("best.ts", s.best.ts)?;
        if s.best.ts < s.first_seen || s.best.ts > s.last_seen {
            return Err((
                "best.ts",
                format!(
                    "{} is outside the pass [first_seen, last_seen] = [{}, {}]",
                    ts::format(s.best.ts),
                    ts::format(s.first_seen),
                    ts::format(s.last_seen)
                ),
            ));
        }
        let [fw, fh] = s.frame_size;
        if fw == 0 || fh == 0 || fw > MAX_FRAME_SIDE || fh > MAX_FRAME_SIDE {
            return Err((
                "frame_size",
                format!("must be [width, height], each 1 to {MAX_FRAME_SIDE}, got {:?}", s.frame_size),
            ));
        }
        check_bbox(s.best.bbox, s.frame_size)?;
        if s.best.landmarks.iter().flatten().any(|v| !v.is_finite()) {
            return Err(("best.landmarks", "must be finite numbers".into()));
        }
        for (field, v) in [("best.det_score", s.best.det_score), ("best.quality", s.best.quality)] {
            if !(0.0..=1.0).contains(&v) {
                return Err((field, format!("must be in [0, 1], got {v}")));
            }
        }
        check_embedding(&s.model, &s.embedding)
    }

    /// A crowd measurement (its grid's shape already checked by ingest).
    pub fn crowd(&self, c: &Crowd, now: OffsetDateTime) -> Result<(), Problem> {
        self.camera(&c.site, &c.camera)?;
        self.window(now, Some(("[retention] crowd_days", self.retention.crowd_days))).check("ts", c.ts)?;
        let max = self.limits.max_crowd_total;
        let count = |field: &'static str, v: f32| {
            let v = f64::from(v);
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err((field, format!("must be a number of people from 0 to {max} ([ingest] max_crowd_total), got {v}")))
            }
        };
        count("total", c.total)?;
        for z in &c.zones {
            count("zones.count", z.count)?;
            for (field, v) in [("zones.area_m2", z.area_m2), ("zones.density_per_m2", z.density_per_m2)] {
                if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    return Err((field, format!("must be a non-negative number, got {}", v.unwrap_or_default())));
                }
            }
        }
        if let Some(g) = &c.grid {
            for &v in &g.cells {
                count("grid.cells", v)?;
            }
        }
        Ok(())
    }

    /// An alert (ingest refuses [`AGGREGATOR_ONLY_KINDS`] before).
    pub fn alert(&self, a: &Alert, now: OffsetDateTime) -> Result<(), Problem> {
        self.camera(&a.site, &a.camera)?;
        self.window(now, Some(("[retention] alerts_days", self.retention.alerts_days))).check("ts", a.ts)?;
        let max = self.limits.max_message_chars;
        for (field, text) in [("message", Some(&a.message)), ("alert", Some(&a.alert)), ("zone", a.zone.as_ref())] {
            let chars = text.map_or(0, |t| t.chars().count());
            if chars > max {
                return Err((
                    field,
                    format!("has {chars} characters, at most {max} accepted ([ingest] max_message_chars)"),
                ));
            }
        }
        if let Some(details) = &a.details {
            let bytes = serde_json::to_vec(details).map_or(usize::MAX, |b| b.len());
            let max = self.limits.max_details_bytes;
            if bytes > max {
                return Err((
                    "details",
                    format!("is {bytes} bytes, at most {max} accepted ([ingest] max_details_bytes)"),
                ));
            }
        }
        Ok(())
    }

    /// A camera status: a future `ts` would keep every later real status from being stored.
    pub fn camera_status(&self, s: &CameraStatus, now: OffsetDateTime) -> Result<(), Problem> {
        self.camera(&s.site, &s.camera)?;
        self.window(now, None).check("ts", s.ts)
    }

    /// An agent status (agents are not in the site config: only its time is checked, and only
    /// against the future). An agent's Last Will is written at CONNECT, so its `ts` is as old as
    /// the connection (days, weeks): refusing old ones would hide every crash of a long-running
    /// agent. Agent statuses are ordered by receipt, so an old `ts` cannot pin anything.
    pub fn agent_status(&self, s: &AgentStatus, now: OffsetDateTime) -> Result<(), Problem> {
        let mut window = self.window(now, None);
        window.oldest = time::Date::MIN.midnight().assume_utc();
        window.check("ts", s.ts)
    }
}

/// `[x, y, w, h]`: finite, w and h > 0, inside the frame: a box may stick out of the frame by up
/// to half its width or height, and be up to 1.5 times the frame. YuNet's boxes of faces cut by
/// the frame's border do overhang it: on the portraits of the real media cut by the border at
/// 10 % to 60 % of the face, by at most 0.274 of the box; cropped to 0.6 times the face's box,
/// the box is 1.249 times the frame (measured with the test quoted at [`KNOWN_MODELS`]).
fn check_bbox(bbox: [f32; 4], frame: [u32; 2]) -> Result<(), Problem> {
    let [x, y, w, h] = bbox.map(f64::from);
    let [fw, fh] = frame.map(f64::from);
    if !bbox.iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 {
        return Err(("best.bbox", format!("must be [x, y, w, h] with w, h > 0, got {bbox:?}")));
    }
    let inside = x >= -w / 2.0 && y >= -h / 2.0 && x + w <= fw + w / 2.0 && y + h <= fh + h / 2.0;
    if !inside || w > fw * 1.5 || h > fh * 1.5 {
        return Err((
            "best.bbox",
            format!("{bbox:?} is not inside the {}x{} frame (by at most half the box)", frame[0], frame[1]),
        ));
    }
    Ok(())
}

/// A known model, its length, finite values, an L2 norm in the model's range. Ingest checks
/// every sighting's with it, and the search API its probes.
pub fn check_embedding(model: &str, embedding: &[f32]) -> Result<(), Problem> {
    let Some(m) = KNOWN_MODELS.iter().find(|m| m.name == model) else {
        let known: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        return Err(("model", format!("{model:?} is not a known embedding model (known: {})", known.join(", "))));
    };
    if embedding.len() != m.dim {
        return Err(("embedding", format!("{} has {} values, got {}", m.name, m.dim, embedding.len())));
    }
    if embedding.iter().any(|v| !v.is_finite()) {
        return Err(("embedding", "must be finite numbers".into()));
    }
    let norm = embedding.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    let (lo, hi) = m.norm;
    if !(lo..=hi).contains(&norm) {
        return Err((
            "embedding",
            format!("L2 norm {norm:.4} is outside {lo}..{hi}, the range of {} embeddings", m.name),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Incoming, Rejected, parse};
    use serde_json::{Value, json};
    use sightline_contract::{BestShot, Payload, new_event_id};
    use time::macros::datetime;

    /// The aggregator's clock.
    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);
    const MAX: usize = 1 << 20;

    fn checks(limits: IngestConfig) -> Plausibility {
        let retention = RetentionPolicy::default();
        Plausibility::new(
            limits,
            retention,
            [("riverside", "gate"), ("riverside", "door")].map(|(s, c)| (s.into(), c.into())),
        )
    }

    fn sighting() -> Sighting {
        let t = NOW - Duration::seconds(30);
        Sighting {
            id: new_event_id(),
            site: "riverside".into(),
            camera: "gate".into(),
            track: 3,
            first_seen: t,
            last_seen: t + Duration::seconds(2),
            best: BestShot {
                ts: t + Duration::seconds(1),
                bbox: [100.0, 50.0, 60.0, 80.0],
                landmarks: [[120.0, 80.0]; 5],
                det_score: 0.9,
                quality: 0.5,
            },
            frame_size: [640, 360],
            ground: None,
            model: sightline_vision::EMBEDDING_MODEL.into(),
            // L2 norm 1.0
            embedding: vec![1.0 / (128f32).sqrt(); 128],
        }
    }

    fn crowd() -> Value {
        json!({
            "schema": "sightline.crowd/1", "id": new_event_id(), "site": "riverside", "camera": "gate",
            "ts": ts::format(NOW - Duration::seconds(5)), "method": "density", "total": 12.5,
            "zones": [{"zone": "front", "count": 7.0, "area_m2": 40.0, "density_per_m2": 0.175}],
            "grid": {"cols": 2, "rows": 1, "cells": [5.0, 7.5]}
        })
    }

    fn alert(kind: &str) -> Value {
        json!({
            "schema": "sightline.alert/1", "id": new_event_id(), "site": "riverside", "camera": "gate",
            "ts": ts::format(NOW - Duration::seconds(5)), "alert": "gate:zone_intrusion:front:1",
            "state": "raised", "kind": kind, "severity": "warning", "zone": "front",
            "message": "someone in front", "details": {"persons": 1}
        })
    }

    fn camera_status(ts: &str) -> Value {
        json!({
            "schema": "sightline.camera_status/1", "site": "riverside", "camera": "gate", "ts": ts,
            "agent": "edge-1", "state": "streaming"
        })
    }

    fn topic(camera: &str, kind: &str) -> String {
        format!("sightline/v1/riverside/{camera}/{kind}")
    }

    /// Parses at [`NOW`] with the default limits.
    fn ingest(topic: &str, payload: &[u8]) -> Result<Incoming, Rejected> {
        ingest_with(IngestConfig::default(), topic, payload)
    }

    fn ingest_with(limits: IngestConfig, topic: &str, payload: &[u8]) -> Result<Incoming, Rejected> {
        parse(topic, payload, MAX, &checks(limits), NOW).map(|(_, i)| i)
    }

    /// The rejection's field and message (a plain field rejection is expected).
    fn field_of(r: Result<Incoming, Rejected>) -> (&'static str, String) {
        match r {
            Err(e @ Rejected::Field { .. }) => (e.field(), e.to_string()),
            other => panic!("expected a field rejection, got {other:?}"),
        }
    }

    fn sighting_json(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(&sighting().to_json()).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn valid_messages_of_every_kind_pass() {
        assert!(matches!(ingest(&topic("gate", "sighting"), &sighting().to_json()), Ok(Incoming::Sighting(_))));
        let c = serde_json::to_vec(&crowd()).unwrap();
        assert!(matches!(ingest(&topic("gate", "crowd"), &c), Ok(Incoming::Crowd(_))));
        for kind in ["zone_intrusion", "crowd_threshold", "camera_offline", "camera_frozen", "camera_tampered"] {
            let a = serde_json::to_vec(&alert(kind)).unwrap();
            assert!(matches!(ingest(&topic("gate", "alert"), &a), Ok(Incoming::Alert(_))), "{kind}");
        }
        let s = serde_json::to_vec(&camera_status(&ts::format(NOW))).unwrap();
        assert!(matches!(ingest(&topic("gate", "status"), &s), Ok(Incoming::CameraStatus(_))));
        let agent = json!({"schema": "sightline.agent_status/1", "site": "riverside", "agent": "edge-1",
                           "ts": ts::format(NOW - Duration::days(6)), "state": "online"});
        let a = serde_json::to_vec(&agent).unwrap();
        assert!(matches!(ingest("sightline/v1/riverside/agent/edge-1/status", &a), Ok(Incoming::AgentStatus(_))));
    }

    // ---- the attacks of the issue, one by one ----------------------------------------------------

    #[test]
    fn a_sighting_in_year_9999_is_refused() {
        let p = sighting_json(|v| v["last_seen"] = "9999-12-31T23:59:59.000Z".into());
        let (f, e) = field_of(ingest(&topic("gate", "sighting"), &p));
        assert_eq!(f, "last_seen", "{e}");
        assert!(e.contains("ahead of the aggregator's clock") && e.contains("max_future_skew_s"), "{e}");
    }

    #[test]
    fn a_sighting_of_1970_is_refused() {
        // all of it in 1970: too old to keep (the retention would delete it at once)
        let p = sighting_json(|v| {
            for f in ["first_seen", "last_seen"] {
                v[f] = "1970-01-01T00:00:00.000Z".into();
            }
            v["best"]["ts"] = "1970-01-01T00:00:00.000Z".into();
        });
        let (f, e) = field_of(ingest(&topic("gate", "sighting"), &p));
        assert_eq!(f, "last_seen", "{e}");
        assert!(e.contains("older than") && e.contains("sightings_days"), "{e}");
        // only its start in 1970: a pass of 56 years
        let p = sighting_json(|v| v["first_seen"] = "1970-01-01T00:00:00.000Z".into());
        let (f, e) = field_of(ingest(&topic("gate", "sighting"), &p));
        assert_eq!(f, "first_seen", "{e}");
        assert!(e.contains("max_age_s"), "{e}");
    }

    #[test]
    fn a_future_offset_is_refused_and_a_true_one_accepted() {
        // 11:59 at UTC-3 is 14:59 UTC: three hours ahead
        let mut c = crowd();
        c["ts"] = "2026-11-23T11:59:00-03:00".into();
        let (f, e) = field_of(ingest(&topic("gate", "crowd"), &serde_json::to_vec(&c).unwrap()));
        assert_eq!(f, "ts", "{e}");
        assert!(e.contains("2026-11-23T14:59:00.000Z is 10740 s ahead"), "{e}");
        // 12:59 at UTC+1 is 11:59 UTC: a minute ago
        c["ts"] = "2026-11-23T12:59:00+01:00".into();
        ingest(&topic("gate", "crowd"), &serde_json::to_vec(&c).unwrap()).unwrap();
        // a sighting whose times carry a future offset
        let p = sighting_json(|v| v["last_seen"] = "2026-11-23T11:59:40-01:00".into());
        assert_eq!(field_of(ingest(&topic("gate", "sighting"), &p)).0, "last_seen");
    }

    #[test]
    fn a_best_shot_outside_its_pass_is_refused() {
        let s = sighting();
        for t in [s.first_seen - Duration::milliseconds(1), s.last_seen + Duration::milliseconds(1)] {
            let p = sighting_json(|v| v["best"]["ts"] = ts::format(t).into());
            let (f, e) = field_of(ingest(&topic("gate", "sighting"), &p));
            assert_eq!(f, "best.ts", "{e}");
            assert!(e.contains("outside the pass"), "{e}");
        }
        // its edges are inside
        for t in [s.first_seen, s.last_seen] {
            ingest(&topic("gate", "sighting"), &sighting_json(|v| v["best"]["ts"] = ts::format(t).into())).unwrap();
        }
    }

    #[test]
    fn a_frame_of_zero_pixels_is_refused() {
        for size in [[0, 0], [640, 0], [0, 360], [MAX_FRAME_SIDE + 1, 360]] {
            let p = sighting_json(|v| v["frame_size"] = json!(size));
            let (f, e) = field_of(ingest(&topic("gate", "sighting"), &p));
            assert_eq!(f, "frame_size", "{size:?}: {e}");
        }
        let p = sighting_json(|v| v["frame_size"] = json!([MAX_FRAME_SIDE, MAX_FRAME_SIDE]));
        ingest(&topic("gate", "sighting"), &p).unwrap();
    }

    #[test]
    fn an_all_zero_embedding_is_refused() {
        let p = sighting_json(|v| v["embedding"] = json!(vec![0.0; 128]));
        let (f, e) = field_of(ingest(&topic("gate", "sighting"), &p));
        assert_eq!(f, "embedding", "{e}");
        assert!(e.contains("L2 norm 0.0000"), "{e}");
    }

    #[test]
    fn an_unknown_model_is_refused() {
        let p = sighting_json(|v| {
            v["model"] = "my-model".into();
            v["embedding"] = json!([0.5, 0.5, 0.5, 0.5]);
        });
        let (f, e) = field_of(ingest(&topic("gate", "sighting"), &p));
        assert_eq!(f, "model", "{e}");
        assert!(e.contains("\"my-model\" is not a known embedding model (known: dlib-resnet-v1)"), "{e}");
    }

    #[test]
    fn huge_alert_details_and_messages_are_refused() {
        let mut a = alert("zone_intrusion");
        a["details"] = json!({ "blob": "x".repeat(500 * 1024) });
        let (f, e) = field_of(ingest(&topic("gate", "alert"), &serde_json::to_vec(&a).unwrap()));
        assert_eq!(f, "details", "{e}");
        assert!(e.contains("512011 bytes, at most 4096"), "{e}");
        // at the limit: accepted
        let limits = IngestConfig::default();
        let fill = limits.max_details_bytes - r#"{"b":""}"#.len();
        a["details"] = json!({ "b": "x".repeat(fill) });
        ingest(&topic("gate", "alert"), &serde_json::to_vec(&a).unwrap()).unwrap();
        for field in ["message", "alert", "zone"] {
            let mut a = alert("zone_intrusion");
            a[field] = "é".repeat(limits.max_message_chars).into();
            ingest(&topic("gate", "alert"), &serde_json::to_vec(&a).unwrap()).unwrap();
            a[field] = "é".repeat(limits.max_message_chars + 1).into();
            let (f, e) = field_of(ingest(&topic("gate", "alert"), &serde_json::to_vec(&a).unwrap()));
            assert_eq!(f, field, "{e}");
        }
    }

    #[test]
    fn a_crowd_of_1e30_is_refused_as_are_absurd_zones_and_cells() {
        let mut c = crowd();
        c["total"] = json!(1e30);
        let (f, e) = field_of(ingest(&topic("gate", "crowd"), &serde_json::to_vec(&c).unwrap()));
        assert_eq!(f, "total", "{e}");
        assert!(e.contains("max_crowd_total"), "{e}");
        c["total"] = json!(100_000.0);
        ingest(&topic("gate", "crowd"), &serde_json::to_vec(&c).unwrap()).unwrap();
        for (path, value, field) in [
            ("count", json!(1e6), "zones.count"),
            ("count", json!(-1.0), "zones.count"),
            ("area_m2", json!(-3.0), "zones.area_m2"),
            ("density_per_m2", json!(-0.1), "zones.density_per_m2"),
        ] {
            let mut c = crowd();
            c["zones"][0][path] = value;
            assert_eq!(field_of(ingest(&topic("gate", "crowd"), &serde_json::to_vec(&c).unwrap())).0, field);
        }
        let mut c = crowd();
        c["grid"]["cells"] = json!([5.0, 2e5]);
        assert_eq!(field_of(ingest(&topic("gate", "crowd"), &serde_json::to_vec(&c).unwrap())).0, "grid.cells");
    }

    #[test]
    fn a_camera_outside_the_site_config_is_refused_unless_allowed() {
        let mut s = sighting();
        s.camera = "ghost".into();
        let (f, e) = field_of(ingest(&topic("ghost", "sighting"), &s.to_json()));
        assert_eq!(f, "camera", "{e}");
        assert!(e.contains("\"ghost\" is not a [[camera]]"), "{e}");
        let mut c = crowd();
        c["camera"] = "ghost".into();
        assert_eq!(field_of(ingest(&topic("ghost", "crowd"), &serde_json::to_vec(&c).unwrap())).0, "camera");
        let mut a = alert("camera_offline");
        a["camera"] = "ghost".into();
        assert_eq!(field_of(ingest(&topic("ghost", "alert"), &serde_json::to_vec(&a).unwrap())).0, "camera");
        let mut st = camera_status(&ts::format(NOW));
        st["camera"] = "ghost".into();
        assert_eq!(field_of(ingest(&topic("ghost", "status"), &serde_json::to_vec(&st).unwrap())).0, "camera");
        // another site's camera of the same name is not this site's
        let mut other = sighting();
        other.site = "elsewhere".into();
        let (f, _) = field_of(ingest("sightline/v1/elsewhere/gate/sighting", &other.to_json()));
        assert_eq!(f, "site");
        // allowed explicitly
        let open = IngestConfig { accept_unknown_cameras: true, ..IngestConfig::default() };
        assert!(ingest_with(open.clone(), &topic("ghost", "sighting"), &s.to_json()).is_ok());
        assert!(ingest_with(open, "sightline/v1/elsewhere/gate/sighting", &other.to_json()).is_ok());
    }

    #[test]
    fn a_watchlist_match_from_mqtt_is_refused_with_its_id() {
        let a = alert("watchlist_match");
        let id: uuid::Uuid = serde_json::from_value(a["id"].clone()).unwrap();
        match ingest(&topic("gate", "alert"), &serde_json::to_vec(&a).unwrap()) {
            Err(e @ Rejected::AggregatorOnly { .. }) => {
                assert!(
                    matches!(e, Rejected::AggregatorOnly { id: got, kind: AlertKind::WatchlistMatch, .. } if got == id)
                );
                assert_eq!(e.field(), "kind");
                assert!(e.to_string().contains("raised by the aggregator only"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(raised_by_aggregator_only(AlertKind::WatchlistMatch));
        assert!(!raised_by_aggregator_only(AlertKind::CameraOffline));
    }

    #[test]
    fn statuses_of_year_9999_are_refused() {
        let st = camera_status("9999-01-01T00:00:00.000Z");
        let (f, e) = field_of(ingest(&topic("gate", "status"), &serde_json::to_vec(&st).unwrap()));
        assert_eq!(f, "ts", "{e}");
        let agent = json!({"schema": "sightline.agent_status/1", "site": "riverside", "agent": "edge-1",
                           "ts": "9999-01-01T00:00:00.000Z", "state": "online"});
        let (f, _) =
            field_of(ingest("sightline/v1/riverside/agent/edge-1/status", &serde_json::to_vec(&agent).unwrap()));
        assert_eq!(f, "ts");
        // a week and a second old: refused too (older than [ingest] max_age_s)
        let old = ts::format(NOW - Duration::seconds(7 * 86_400 + 1));
        let (f, e) = field_of(ingest(&topic("gate", "status"), &serde_json::to_vec(&camera_status(&old)).unwrap()));
        assert_eq!(f, "ts", "{e}");
    }

    // ---- the limits themselves ---------------------------------------------------------------

    #[test]
    fn the_time_window_is_exact_and_configurable() {
        let p = checks(IngestConfig::default());
        let mut s = sighting();
        // exactly max_future_skew_s ahead: accepted; a millisecond more: refused
        s.last_seen = NOW + Duration::seconds(60);
        p.sighting(&s, NOW).unwrap();
        s.last_seen += Duration::milliseconds(1);
        assert_eq!(p.sighting(&s, NOW).unwrap_err().0, "last_seen");
        // a crowd measurement may be older than the 7-day sighting retention but not max_age_s
        let c: Crowd = serde_json::from_value(crowd()).unwrap();
        let at = |ts| Crowd { ts, ..c.clone() };
        p.crowd(&at(NOW - Duration::days(7)), NOW).unwrap();
        assert!(p.crowd(&at(NOW - Duration::days(7) - Duration::seconds(1)), NOW).is_err());
        // a longer replay limit, with the sightings' retention still capping sightings
        let long = Plausibility::new(
            IngestConfig { max_age_s: 30 * 86_400, max_future_skew_s: 5, ..IngestConfig::default() },
            RetentionPolicy { sightings_days: 2.0, ..RetentionPolicy::default() },
            [("riverside".to_owned(), "gate".to_owned())],
        );
        long.crowd(&at(NOW - Duration::days(20)), NOW).unwrap();
        assert!(long.crowd(&at(NOW + Duration::seconds(6)), NOW).is_err());
        let mut s = sighting();
        s.first_seen = NOW - Duration::days(3);
        s.best.ts = s.first_seen;
        s.last_seen = NOW - Duration::days(2) + Duration::seconds(1);
        long.sighting(&s, NOW).unwrap();
        s.last_seen = NOW - Duration::days(2) - Duration::seconds(1);
        let (f, e) = long.sighting(&s, NOW).unwrap_err();
        assert_eq!(f, "last_seen");
        assert!(e.contains("[retention] sightings_days"), "{e}");
    }

    #[test]
    fn boxes_may_overhang_the_frame_by_half_their_size() {
        let p = checks(IngestConfig::default());
        let with = |bbox: [f32; 4]| {
            let mut s = sighting();
            s.best.bbox = bbox;
            p.sighting(&s, NOW)
        };
        // [640, 360] frame, 60x80 boxes
        for ok in [[-30.0, -40.0, 60.0, 80.0], [610.0, 320.0, 60.0, 80.0], [0.0, 0.0, 640.0, 360.0]] {
            with(ok).unwrap_or_else(|e| panic!("{ok:?}: {e:?}"));
        }
        for bad in [
            [-31.0, 0.0, 60.0, 80.0],
            [0.0, -41.0, 60.0, 80.0],
            [611.0, 0.0, 60.0, 80.0],
            [0.0, 321.0, 60.0, 80.0],
            [5000.0, 5000.0, 60.0, 80.0],
            [0.0, 0.0, 0.0, 80.0],
            [0.0, 0.0, 60.0, -1.0],
            [-400.0, -200.0, 1300.0, 700.0],
        ] {
            assert_eq!(with(bad).unwrap_err().0, "best.bbox", "{bad:?}");
        }
    }

    #[test]
    fn embeddings_must_have_the_models_length_and_norm() {
        let p = checks(IngestConfig::default());
        let with = |embedding: Vec<f32>| {
            let mut s = sighting();
            s.embedding = embedding;
            p.sighting(&s, NOW)
        };
        let unit = |norm: f32| vec![norm / (128f32).sqrt(); 128];
        let (lo, hi) = KNOWN_MODELS[0].norm;
        with(unit(lo as f32 * 1.001)).unwrap();
        with(unit(hi as f32 * 0.999)).unwrap();
        for bad in [unit(lo as f32 * 0.99), unit(hi as f32 * 1.01), unit(0.0), vec![0.1; 127], vec![0.1; 129]] {
            assert_eq!(with(bad).unwrap_err().0, "embedding");
        }
        let mut e = unit(1.0);
        e[3] = f32::INFINITY;
        assert_eq!(with(e).unwrap_err().0, "embedding");
    }

    #[test]
    fn scores_and_landmarks_must_be_plausible() {
        let p = checks(IngestConfig::default());
        let mut s = sighting();
        s.best.det_score = 1.5;
        assert_eq!(p.sighting(&s, NOW).unwrap_err().0, "best.det_score");
        let mut s = sighting();
        s.best.quality = -0.1;
        assert_eq!(p.sighting(&s, NOW).unwrap_err().0, "best.quality");
        let mut s = sighting();
        s.best.landmarks[2][1] = f32::INFINITY;
        assert_eq!(p.sighting(&s, NOW).unwrap_err().0, "best.landmarks");
    }

    #[test]
    fn limits_are_validated_naming_the_key() {
        IngestConfig::default().validate().unwrap();
        let bad = |c: IngestConfig| c.validate().unwrap_err().0;
        let d = IngestConfig::default;
        assert_eq!(bad(IngestConfig { max_future_skew_s: 86_401, ..d() }), "ingest.max_future_skew_s");
        assert_eq!(bad(IngestConfig { max_age_s: 0, ..d() }), "ingest.max_age_s");
        assert_eq!(bad(IngestConfig { max_crowd_total: 0.0, ..d() }), "ingest.max_crowd_total");
        assert_eq!(bad(IngestConfig { max_crowd_total: f64::NAN, ..d() }), "ingest.max_crowd_total");
        assert_eq!(bad(IngestConfig { max_details_bytes: 100, ..d() }), "ingest.max_details_bytes");
        assert_eq!(bad(IngestConfig { max_message_chars: 10, ..d() }), "ingest.max_message_chars");
        let cfg = "[site]\nid = \"s\"\n[ingest]\nmax_age_s = 0\n";
        let e = crate::config::Config::parse(cfg, std::path::Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("ingest.max_age_s"), "{e}");
        let cfg = "[site]\nid = \"s\"\n[ingest]\nmax_agee_s = 10\n";
        let e = crate::config::Config::parse(cfg, std::path::Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("max_agee_s"), "{e}");
        let cfg = "[site]\nid = \"s\"\n[ingest]\nmax_age_s = 60\naccept_unknown_cameras = true\n";
        let c = crate::config::Config::parse(cfg, std::path::Path::new("a.toml")).unwrap();
        assert_eq!(c.ingest, IngestConfig { max_age_s: 60, accept_unknown_cameras: true, ..d() });
    }
}
