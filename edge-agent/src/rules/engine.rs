//! The alert engine of one camera, [`CameraRules`]: crowd rules, fences and camera health, each
//! debounced by a [`Hysteresis`] and gated by its zone's [`Schedule`], turned into raise/clear
//! pairs (the semantics are in the module documentation of [`rules`](super)).

use std::collections::VecDeque;

use serde_json::json;
use sightline_contract::{Alert, AlertKind, Severity};
use time::{Duration, OffsetDateTime};

use super::config::{Compiled, HealthConfig, RuleConfig, RulesConfigError, ZoneConfig};
use super::hysteresis::{Hysteresis, Transition};
use super::schedule::Schedule;
use super::slot::{Ids, Slot};
use super::text::{count, duration, people, round3, secs};

/// One analysed frame's image statistics (computed by the caller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameHealth {
    /// Mean luma, 0..255.
    pub mean_luma: f32,
    /// Standard deviation of luma, 0..255.
    pub luma_std: f32,
    /// Variance of the Laplacian of luma (any consistent scale: it is compared with the camera's own median).
    pub sharpness: f32,
    /// The frame differs from the previous one.
    pub changed: bool,
}

#[derive(Clone, Debug)]
struct CrowdRule {
    index: usize,
    zone: Option<String>,
    /// `Some(area)` when the thresholds are per m².
    per_m2_area: Option<f32>,
    schedule: Option<Schedule>,
    raise_above: f32,
    clear_below: f32,
    h: Hysteresis,
    slot: Slot,
}

impl CrowdRule {
    fn place(&self) -> &str {
        self.zone.as_deref().unwrap_or("view")
    }

    fn amount(&self, v: f32) -> String {
        match self.per_m2_area {
            Some(_) => format!("{v:.2} people/m²"),
            None => format!("{} people", count(v)),
        }
    }

    fn threshold(&self, v: f32) -> String {
        match self.per_m2_area {
            Some(_) => format!("{v:.2}/m²"),
            None => count(v),
        }
    }

    fn unit(&self) -> &'static str {
        if self.per_m2_area.is_some() { "people_per_m2" } else { "people" }
    }
}

#[derive(Clone, Debug)]
struct Fence {
    zone: String,
    schedule: Option<Schedule>,
    h: Hysteresis,
    slot: Slot,
}

/// Running median of a camera's sharpness over its recent healthy frames.
#[derive(Clone, Debug)]
struct SharpnessReference {
    recent: VecDeque<f32>,
    capacity: usize,
    warmup: usize,
    scratch: Vec<f32>,
}

impl SharpnessReference {
    fn median(&mut self) -> Option<f32> {
        if self.recent.len() < self.warmup {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend(self.recent.iter().copied());
        let mid = self.scratch.len() / 2;
        Some(*self.scratch.select_nth_unstable_by(mid, f32::total_cmp).1)
    }

    fn push(&mut self, v: f32) {
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(v);
    }
}

/// The alert engine of one camera: feed it observations, publish what it returns.
///
/// Built from the camera's zones, crowd rules and health settings; see the module
/// documentation for the semantics and defaults.
#[derive(Clone, Debug)]
pub struct CameraRules {
    ids: Ids,
    offline_after: Duration,
    black_luma: f32,
    uniform_luma_std: f32,
    defocus_ratio: f32,
    /// The first `now` this engine saw: silence before any frame counts from here.
    first_call: Option<OffsetDateTime>,
    /// The latest frame time known.
    last_frame: Option<OffsetDateTime>,
    /// The latest frame time known when `offline` was raised.
    offline_last_frame: Option<OffsetDateTime>,
    offline: Slot,
    frozen_h: Hysteresis,
    frozen: Slot,
    tampered_h: Hysteresis,
    tampered: Slot,
    sharpness: SharpnessReference,
    fences: Vec<Fence>,
    rules: Vec<CrowdRule>,
    /// Set by [`CameraRules::clear_all`]: the camera stopped; nothing raises any more (the
    /// analysis may still call in before it notices).
    closed: bool,
}

impl CameraRules {
    /// Validates the configuration (see [`validate`](super::config::validate)) and builds an idle engine. `site` and
    /// `camera` are the contract ids the alerts carry (validated by the agent's config loader).
    pub fn new(
        site: &str,
        camera: &str,
        zones: &[ZoneConfig],
        rules: &[RuleConfig],
        health: &HealthConfig,
    ) -> Result<CameraRules, RulesConfigError> {
        let c = Compiled::new(zones, rules, health)?;
        let fences = zones
            .iter()
            .zip(&c.zones)
            .filter(|(z, _)| z.fence)
            .map(|(z, cz)| Fence {
                zone: z.name.clone(),
                schedule: cz.schedule.clone(),
                h: Hysteresis::new(0.5, 0.5, cz.fence_dwell, cz.fence_clear),
                slot: Slot::new(AlertKind::ZoneIntrusion, Severity::Critical, Some(z.name.clone()), z.name.clone()),
            })
            .collect();
        let rules = rules
            .iter()
            .zip(&c.rules)
            .enumerate()
            .map(|(index, (r, cr))| {
                let zone = cr.zone.map(|zi| &zones[zi]);
                CrowdRule {
                    index,
                    zone: zone.map(|z| z.name.clone()),
                    per_m2_area: if r.per_m2 { zone.and_then(|z| z.area_m2) } else { None },
                    schedule: cr.zone.and_then(|zi| c.zones[zi].schedule.clone()),
                    raise_above: r.raise_above,
                    clear_below: r.clear_below,
                    h: Hysteresis::new(r.raise_above, r.clear_below, cr.dwell, cr.clear_dwell),
                    slot: Slot::new(
                        AlertKind::CrowdThreshold,
                        r.severity,
                        zone.map(|z| z.name.clone()),
                        format!("{}/rule{index}", zone.map_or("-", |z| z.name.as_str())),
                    ),
                }
            })
            .collect();
        let health_slot = |kind, severity| Slot::new(kind, severity, None, "-".into());
        Ok(CameraRules {
            ids: Ids { site: site.to_owned(), camera: camera.to_owned() },
            offline_after: c.offline_after,
            black_luma: health.black_luma,
            uniform_luma_std: health.uniform_luma_std,
            defocus_ratio: health.defocus_ratio,
            first_call: None,
            last_frame: None,
            offline_last_frame: None,
            offline: health_slot(AlertKind::CameraOffline, Severity::Critical),
            frozen_h: Hysteresis::new(0.5, 0.5, c.frozen_after, c.health_clear),
            frozen: health_slot(AlertKind::CameraFrozen, Severity::Warning),
            tampered_h: Hysteresis::new(0.5, 0.5, c.tampered_after, c.health_clear),
            tampered: health_slot(AlertKind::CameraTampered, Severity::Warning),
            sharpness: SharpnessReference {
                recent: VecDeque::with_capacity(health.sharpness_window_frames),
                capacity: health.sharpness_window_frames,
                warmup: health.defocus_warmup_frames,
                scratch: Vec::with_capacity(health.sharpness_window_frames),
            },
            fences,
            rules,
            closed: false,
        })
    }

    /// The site id the alerts carry.
    pub fn site(&self) -> &str {
        &self.ids.site
    }

    /// The camera id the alerts carry.
    pub fn camera(&self) -> &str {
        &self.ids.camera
    }

    /// A crowd measurement: `total` people in the frame and the count per zone. Drives every
    /// crowd rule whose schedule (if any) is open; a rule whose zone is missing from `zones`
    /// is not updated (no measurement). Density rules divide the count by the zone's `area_m2`.
    pub fn on_crowd(&mut self, now: OffsetDateTime, total: f32, zones: &[(String, f32)]) -> Vec<Alert> {
        if self.closed {
            return Vec::new();
        }
        self.see(now);
        let mut out = Vec::new();
        self.close_schedules(now, &mut out);
        for r in &mut self.rules {
            if r.schedule.as_ref().is_some_and(|s| !s.is_active(now)) {
                continue;
            }
            let people = match &r.zone {
                None => total,
                Some(z) => match zones.iter().find(|(name, _)| name == z) {
                    Some(&(_, c)) => c,
                    None => continue,
                },
            };
            let value = r.per_m2_area.map_or(people, |area| people / area);
            let transition = r.h.update(now, value);
            r.slot.note(value);
            match transition {
                Some(Transition::Raised { since }) => {
                    let message = format!(
                        "crowd in {}: {}{} for {} (threshold {})",
                        r.place(),
                        r.amount(value),
                        if r.per_m2_area.is_some() { format!(" ({} people)", count(people)) } else { String::new() },
                        duration(now - since),
                        r.threshold(r.raise_above),
                    );
                    let mut details = json!({
                        "rule": r.index,
                        "value": round3(value),
                        "threshold": round3(r.raise_above),
                        "clear_below": round3(r.clear_below),
                        "unit": r.unit(),
                        "count": round3(people),
                        "since": sightline_contract::ts::format(since),
                    });
                    if let Some(area) = r.per_m2_area {
                        details["area_m2"] = json!(round3(area));
                    }
                    if let Some(s) = &r.schedule {
                        details["schedule"] = json!(s.to_string());
                    }
                    out.push(r.slot.raise(&self.ids, (now, since), value, (message, details)));
                }
                Some(Transition::Cleared { since }) => {
                    let (peak, _) = r.slot.peak().unwrap_or((value, since));
                    let message = format!(
                        "crowd in {} back below {} for {} (now {}, peak {})",
                        r.place(),
                        r.amount(r.clear_below),
                        duration(now - since),
                        r.threshold(value),
                        r.threshold(peak),
                    );
                    let details = json!({
                        "rule": r.index,
                        "reason": "below_threshold",
                        "value": round3(value),
                        "threshold": round3(r.clear_below),
                        "unit": r.unit(),
                        "count": round3(people),
                        "peak": round3(peak),
                    });
                    out.extend(r.slot.clear(&self.ids, now, (message, details)));
                }
                None => {}
            }
        }
        out
    }

    /// People inside each zone in one analysed frame (zones not listed: nobody inside; the
    /// first entry of a zone counts). Drives the fence zones that are armed now.
    pub fn on_persons(&mut self, now: OffsetDateTime, persons_in_zone: &[(String, usize)]) -> Vec<Alert> {
        if self.closed {
            return Vec::new();
        }
        self.see(now);
        let mut out = Vec::new();
        self.close_schedules(now, &mut out);
        for f in &mut self.fences {
            if f.schedule.as_ref().is_some_and(|s| !s.is_active(now)) {
                continue;
            }
            let n = persons_in_zone.iter().find(|(z, _)| *z == f.zone).map_or(0, |&(_, n)| n);
            let value = n as f32;
            let transition = f.h.update(now, value);
            f.slot.note(value);
            match transition {
                Some(Transition::Raised { since }) => {
                    let message = format!(
                        "intrusion in fence zone {}: {} inside for {}",
                        f.zone,
                        people(n),
                        duration(now - since)
                    );
                    let mut details = json!({
                        "persons": n,
                        "threshold": 1,
                        "since": sightline_contract::ts::format(since),
                    });
                    if let Some(s) = &f.schedule {
                        details["schedule"] = json!(s.to_string());
                    }
                    out.push(f.slot.raise(&self.ids, (now, since), value, (message, details)));
                }
                Some(Transition::Cleared { since }) => {
                    let peak = f.slot.peak().map_or(0, |(p, _)| p as usize);
                    let message = format!(
                        "fence zone {} clear: nobody inside for {} (at most {} inside)",
                        f.zone,
                        duration(now - since),
                        people(peak)
                    );
                    let details = json!({ "reason": "zone_empty", "persons": 0, "peak": peak });
                    out.extend(f.slot.clear(&self.ids, now, (message, details)));
                }
                None => {}
            }
        }
        out
    }

    /// One analysed frame's image statistics. Any frame ends a `camera_offline` episode; drives
    /// `camera_frozen` and `camera_tampered` (and the running sharpness median).
    pub fn on_frame_health(&mut self, now: OffsetDateTime, health: FrameHealth) -> Vec<Alert> {
        if self.closed {
            return Vec::new();
        }
        self.see(now);
        let mut out = Vec::new();
        self.last_frame = Some(self.last_frame.map_or(now, |l| l.max(now)));
        out.extend(self.clear_offline(now));
        let camera = &self.ids.camera;

        match self.frozen_h.update(now, if health.changed { 0.0 } else { 1.0 }) {
            Some(Transition::Raised { since }) => {
                let message = format!("camera {camera} frozen: identical frames for {}", duration(now - since));
                let details = json!({ "frozen_s": secs(now - since), "threshold_s": secs(self.frozen_h.dwell) });
                out.push(self.frozen.raise(&self.ids, (now, since), 1.0, (message, details)));
            }
            Some(Transition::Cleared { since }) => {
                let started = self.frozen.peak().map_or(since, |(_, s)| s);
                let message = format!("camera {camera} image moving again (frozen for {})", duration(since - started));
                let details = json!({ "reason": "frames_changing", "frozen_s": secs(since - started) });
                out.extend(self.frozen.clear(&self.ids, now, (message, details)));
            }
            None => {}
        }

        let reference = self.sharpness.median();
        let black = health.mean_luma < self.black_luma;
        let uniform = health.luma_std < self.uniform_luma_std;
        let defocused = reference.is_some_and(|r| r > 0.0 && health.sharpness < self.defocus_ratio * r);
        let bad = black || uniform || defocused;
        if !bad && health.changed && health.sharpness.is_finite() {
            self.sharpness.push(health.sharpness);
        }
        match self.tampered_h.update(now, if bad { 1.0 } else { 0.0 }) {
            Some(Transition::Raised { since }) => {
                let mut why = Vec::new();
                let mut reasons = Vec::new();
                if black {
                    why.push(format!("image black (mean luma {:.0})", health.mean_luma));
                    reasons.push("black");
                }
                if uniform {
                    why.push(format!("image uniform, lens covered? (luma std {:.1})", health.luma_std));
                    reasons.push("covered");
                }
                if defocused {
                    let usual = reference.unwrap_or(0.0);
                    why.push(format!("image defocused (sharpness {:.0}, usually {usual:.0})", health.sharpness));
                    reasons.push("defocused");
                }
                let message = format!("camera {camera} tampered: {} for {}", why.join(", "), duration(now - since));
                let mut details = json!({
                    "reasons": reasons,
                    "mean_luma": round3(health.mean_luma),
                    "luma_std": round3(health.luma_std),
                    "sharpness": round3(health.sharpness),
                    "black_luma": round3(self.black_luma),
                    "uniform_luma_std": round3(self.uniform_luma_std),
                    "since": sightline_contract::ts::format(since),
                });
                if let Some(r) = reference {
                    details["sharpness_reference"] = json!(round3(r));
                    details["defocus_ratio"] = json!(round3(self.defocus_ratio));
                }
                out.push(self.tampered.raise(&self.ids, (now, since), 1.0, (message, details)));
            }
            Some(Transition::Cleared { .. }) => {
                let message = format!("camera {camera} image normal again");
                let details = json!({
                    "reason": "image_normal",
                    "mean_luma": round3(health.mean_luma),
                    "luma_std": round3(health.luma_std),
                    "sharpness": round3(health.sharpness),
                });
                out.extend(self.tampered.clear(&self.ids, now, (message, details)));
            }
            None => {}
        }
        out
    }

    /// The periodic tick: raises `camera_offline` once no frame came for `offline_after_s`
    /// (`last_frame` is the caller's latest frame time, `None` if none yet), clears it if a
    /// frame newer than the episode's start is reported, and ends fence / crowd episodes
    /// whose schedule window has closed.
    pub fn on_silence(&mut self, now: OffsetDateTime, last_frame: Option<OffsetDateTime>) -> Vec<Alert> {
        if self.closed {
            return Vec::new();
        }
        self.see(now);
        let mut out = Vec::new();
        let last = match (last_frame, self.last_frame) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.last_frame = last;
        if self.offline.episode.is_some() {
            if last > self.offline_last_frame {
                out.extend(self.clear_offline(now));
            }
        } else {
            let from = last.or(self.first_call).unwrap_or(now);
            let silence = now - from;
            if silence >= self.offline_after {
                let camera = &self.ids.camera;
                let message = match last {
                    Some(_) => format!("camera {camera} offline: no frames for {}", duration(silence)),
                    None => {
                        format!("camera {camera} offline: no frames since the agent started ({})", duration(silence))
                    }
                };
                let details = json!({
                    "silence_s": secs(silence),
                    "threshold_s": secs(self.offline_after),
                    "last_frame": last.map(sightline_contract::ts::format),
                });
                out.push(self.offline.raise(&self.ids, (now, from), 1.0, (message, details)));
                self.offline_last_frame = last;
                // The camera was dark: nothing observed before counts towards a dwell after.
                self.frozen_h.interrupt();
                self.tampered_h.interrupt();
                self.fences.iter_mut().for_each(|f| f.h.interrupt());
                self.rules.iter_mut().for_each(|r| r.h.interrupt());
            }
        }
        self.close_schedules(now, &mut out);
        out
    }

    /// Clears every raised alert (`reason` goes into the message and `details.reason`), e.g.
    /// when the camera is disabled or the agent shuts down, so no episode stays open for
    /// consumers. The engine is closed then: later observations raise nothing (the camera's
    /// analysis may still call in before it stops, and a raise then would never be cleared).
    pub fn clear_all(&mut self, now: OffsetDateTime, reason: &str) -> Vec<Alert> {
        self.closed = true;
        let mut out = Vec::new();
        let ids = &self.ids;
        let text = |what: String| (format!("{what} cleared: {reason}"), json!({ "reason": reason }));
        self.offline_last_frame = None;
        out.extend(self.offline.clear(ids, now, text(format!("camera {} offline", ids.camera))));
        self.frozen_h.force_clear(now);
        out.extend(self.frozen.clear(ids, now, text(format!("camera {} frozen", ids.camera))));
        self.tampered_h.force_clear(now);
        out.extend(self.tampered.clear(ids, now, text(format!("camera {} tampered", ids.camera))));
        for f in &mut self.fences {
            f.h.force_clear(now);
            out.extend(f.slot.clear(ids, now, text(format!("intrusion in fence zone {}", f.zone))));
        }
        for r in &mut self.rules {
            r.h.force_clear(now);
            let what = format!("crowd in {}", r.place());
            out.extend(r.slot.clear(ids, now, text(what)));
        }
        out
    }

    /// The `alert` ids of the raised episodes (health first, then fences, then crowd rules).
    pub fn active(&self) -> Vec<&str> {
        [&self.offline, &self.frozen, &self.tampered]
            .into_iter()
            .chain(self.fences.iter().map(|f| &f.slot))
            .chain(self.rules.iter().map(|r| &r.slot))
            .filter_map(|s| s.episode.as_ref().map(|e| e.alert.as_str()))
            .collect()
    }

    fn see(&mut self, now: OffsetDateTime) {
        self.first_call.get_or_insert(now);
    }

    fn clear_offline(&mut self, now: OffsetDateTime) -> Option<Alert> {
        let (_, started) = self.offline.peak()?;
        let message = format!("camera {} back online (no frames for {})", self.ids.camera, duration(now - started));
        let details = json!({ "reason": "frames_again", "silence_s": secs(now - started) });
        self.offline_last_frame = None;
        self.offline.clear(&self.ids, now, (message, details))
    }

    /// Applies the schedules: outside its window a fence or rule forgets its pending dwell and
    /// its raised episode ends; an episode or pending dwell from an earlier window (the window
    /// closed between two calls) ends or restarts likewise.
    fn close_schedules(&mut self, now: OffsetDateTime, out: &mut Vec<Alert>) {
        let ids = &self.ids;
        for f in &mut self.fences {
            let Some(s) = &f.schedule else { continue };
            if gate(s, &mut f.h, &f.slot, now) {
                let peak = f.slot.peak().map_or(0, |(p, _)| p as usize);
                let message = format!(
                    "fence zone {} disarmed at the end of its schedule ({s}); intrusion cleared (at most {} inside)",
                    f.zone,
                    people(peak)
                );
                let details = json!({ "reason": "schedule_ended", "schedule": s.to_string(), "peak": peak });
                out.extend(f.slot.clear(ids, now, (message, details)));
            }
        }
        for r in &mut self.rules {
            let Some(s) = &r.schedule else { continue };
            if gate(s, &mut r.h, &r.slot, now) {
                let peak = r.slot.peak().map_or(0.0, |(p, _)| p);
                let message = format!(
                    "crowd in {}: rule inactive outside its schedule ({s}); alert cleared (peak {})",
                    r.place(),
                    r.threshold(peak)
                );
                let details = json!({
                    "rule": r.index,
                    "reason": "schedule_ended",
                    "schedule": s.to_string(),
                    "unit": r.unit(),
                    "peak": round3(peak),
                });
                out.extend(r.slot.clear(ids, now, (message, details)));
            }
        }
    }
}

/// Applies `schedule` at `now` to a debouncer and its slot; true if a raised episode must end
/// (the debouncer is then already idle; the caller emits the clear).
fn gate(schedule: &Schedule, h: &mut Hysteresis, slot: &Slot, now: OffsetDateTime) -> bool {
    match schedule.opened_at(now) {
        None => h.force_clear(now).is_some(),
        Some(opened) => {
            if slot.episode.as_ref().is_some_and(|e| e.raised_at < opened) {
                h.force_clear(now).is_some()
            } else {
                if h.pending_since().is_some_and(|p| p < opened) {
                    h.interrupt();
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;
    use serde_json::Value;
    use sightline_contract::{AlertState, Payload};
    use time::macros::datetime;

    // ----- Crowd rules -----------------------------------------------------------------------

    #[test]
    fn crowd_rule_raises_once_with_value_and_threshold_then_clears_with_the_same_id() {
        let mut e = engine(&[square("plaza")], &[rule(Some("plaza"), 40.0, 30.0)]);
        let obs = |n: f32| vec![("plaza".to_owned(), n)];
        assert!(e.on_crowd(t(0.0), 60.0, &obs(38.0)).is_empty());
        let mut raised = Vec::new();
        for s in 1..=30 {
            let n = if s == 20 { 52.0 } else { 45.0 };
            raised.extend(e.on_crowd(t(f64::from(s)), 60.0, &obs(n)));
        }
        assert_eq!(raised.len(), 1, "{raised:#?}");
        let a = &raised[0];
        assert_eq!(a.ts, t(11.0));
        assert_eq!((a.kind, a.state, a.severity), (AlertKind::CrowdThreshold, AlertState::Raised, Severity::Warning));
        assert_eq!((a.site.as_str(), a.camera.as_str(), a.zone.as_deref()), ("riverside", "gate-north", Some("plaza")));
        assert_eq!(a.message, "crowd in plaza: 45 people for 10 s (threshold 40)");
        let d = a.details.as_ref().unwrap();
        assert_eq!((d["value"].as_f64(), d["threshold"].as_f64()), (Some(45.0), Some(40.0)));
        assert_eq!((d["unit"].as_str(), d["rule"].as_u64()), (Some("people"), Some(0)));
        assert!(a.alert.starts_with("gate-north:crowd_threshold:plaza/rule0:"), "{}", a.alert);
        assert!(a.alert.ends_with(&a.id.to_string()));
        assert_eq!(e.active(), vec![a.alert.as_str()]);

        // between the thresholds: stays raised; then below for 5 s clears (a blip resets the run)
        let mut cleared = Vec::new();
        for (s, n) in [(31, 35.0), (32, 29.0), (33, 33.0), (34, 25.0), (35, 25.0), (36, 25.0), (37, 25.0), (38, 25.0)] {
            cleared.extend(e.on_crowd(t(f64::from(s)), 60.0, &obs(n)));
        }
        assert!(cleared.is_empty(), "{cleared:#?}");
        cleared.extend(e.on_crowd(t(39.0), 60.0, &obs(24.0)));
        assert_eq!(cleared.len(), 1);
        let c = &cleared[0];
        assert_eq!((c.state, c.alert.as_str(), c.ts), (AlertState::Cleared, a.alert.as_str(), t(39.0)));
        assert_ne!(c.id, a.id);
        assert_eq!(c.message, "crowd in plaza back below 30 people for 5 s (now 24, peak 52)");
        let d = c.details.as_ref().unwrap();
        assert_eq!((d["peak"].as_f64(), d["duration_s"].as_f64()), (Some(52.0), Some(28.0)));
        assert!(e.active().is_empty());

        // a zone missing from the measurement is no measurement: nothing happens
        for s in 40..80 {
            assert!(e.on_crowd(t(f64::from(s)), 99.0, &[]).is_empty());
        }
    }

    #[test]
    fn whole_frame_and_density_rules() {
        let plaza = ZoneConfig { area_m2: Some(100.0), ..square("plaza") };
        let whole = RuleConfig { severity: Severity::Critical, dwell_s: 0.0, ..rule(None, 100.0, 80.0) };
        let dense = RuleConfig { per_m2: true, dwell_s: 2.0, ..rule(Some("plaza"), 0.4, 0.2) };
        let mut e = engine(&[plaza], &[whole, dense]);
        let zones = vec![("plaza".to_owned(), 45.0)];
        assert!(e.on_crowd(t(0.0), 90.0, &zones).is_empty());
        let a = e.on_crowd(t(1.0), 120.0, &zones);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].severity, a[0].zone.as_deref()), (Severity::Critical, None));
        assert_eq!(a[0].message, "crowd in view: 120 people for 0 s (threshold 100)");
        assert!(a[0].alert.starts_with("gate-north:crowd_threshold:-/rule0:"));
        let a = e.on_crowd(t(2.0), 120.0, &zones);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].message, "crowd in plaza: 0.45 people/m² (45 people) for 2 s (threshold 0.40/m²)");
        let d = a[0].details.as_ref().unwrap();
        assert_eq!(
            (d["unit"].as_str(), d["value"].as_f64(), d["area_m2"].as_f64()),
            (Some("people_per_m2"), Some(0.45), Some(100.0))
        );
        assert_eq!(e.active().len(), 2);
    }

    #[test]
    fn offline_restarts_pending_dwells() {
        let mut e = engine(&[square("plaza")], &[rule(Some("plaza"), 40.0, 30.0)]);
        let obs = vec![("plaza".to_owned(), 45.0)];
        for s in 0..=8 {
            e.on_frame_health(t(f64::from(s)), healthy(true));
            assert!(e.on_crowd(t(f64::from(s)), 45.0, &obs).is_empty());
        }
        let off = e.on_silence(t(20.0), Some(t(8.0)));
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].kind, AlertKind::CameraOffline);
        let back = e.on_frame_health(t(21.0), healthy(true));
        assert_eq!((back.len(), back[0].state), (1, AlertState::Cleared));
        for s in 21..31 {
            assert!(e.on_crowd(t(f64::from(s)), 45.0, &obs).is_empty(), "raised at {s}");
        }
        assert_eq!(e.on_crowd(t(31.0), 45.0, &obs).len(), 1);
    }

    // ----- Fences ----------------------------------------------------------------------------

    #[test]
    fn fence_dwell_suppression_and_clear_with_the_same_id() {
        let mut e = engine(&[square("plaza"), fence("site", None)], &[]);
        // 1.8 s inside, then gone: nothing
        for s in steps(0.0, 2.0, 0.2) {
            assert!(e.on_persons(t(s), &persons("site", 1)).is_empty(), "at {s}");
        }
        for s in steps(2.0, 10.0, 0.2) {
            assert!(e.on_persons(t(s), &[]).is_empty());
        }
        // inside from 10 s: raised at 12 s exactly once, however long they stay
        let mut alerts = Vec::new();
        for s in steps(10.0, 40.0, 0.2) {
            alerts.extend(e.on_persons(t(s), &persons("site", if s > 20.0 { 3 } else { 1 })));
        }
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(
            (a.kind, a.severity, a.zone.as_deref()),
            (AlertKind::ZoneIntrusion, Severity::Critical, Some("site"))
        );
        assert!((a.ts - t(12.0)).abs() < Duration::milliseconds(1), "{}", a.ts);
        assert_eq!(a.message, "intrusion in fence zone site: 1 person inside for 2 s");
        assert!(a.alert.starts_with("gate-north:zone_intrusion:site:"), "{}", a.alert);
        // other zones' counts do not matter
        assert!(e.on_persons(t(40.0), &[("plaza".into(), 9), ("site".into(), 1)]).is_empty());

        // empty 4.8 s, someone again, then empty 5 s: one clear, same alert id
        let mut cleared = Vec::new();
        for s in steps(40.2, 45.2, 0.2) {
            cleared.extend(e.on_persons(t(s), &persons("site", 0)));
        }
        cleared.extend(e.on_persons(t(45.2), &persons("site", 1)));
        for s in steps(45.4, 50.4, 0.2) {
            cleared.extend(e.on_persons(t(s), &[]));
        }
        assert!(cleared.is_empty(), "{cleared:#?}");
        cleared.extend(e.on_persons(t(50.4), &[]));
        assert_eq!(cleared.len(), 1);
        let c = &cleared[0];
        assert_eq!((c.state, &c.alert), (AlertState::Cleared, &a.alert));
        assert_eq!(c.message, "fence zone site clear: nobody inside for 5 s (at most 3 people inside)");
        assert_eq!(c.details.as_ref().unwrap()["reason"], "zone_empty");

        // the next episode has a new id
        let mut again = Vec::new();
        for s in steps(60.0, 63.0, 0.5) {
            again.extend(e.on_persons(t(s), &persons("site", 1)));
        }
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].alert, a.alert);
    }

    #[test]
    fn fence_only_armed_within_its_schedule() {
        let night = datetime!(2026-11-23 00:00 UTC);
        let at = |h: f64| night + Duration::seconds_f64(h * 3600.0);
        let mut e = engine(&[fence("site", Some("22:00-06:00"))], &[]);
        // noon: someone inside for a minute, nothing
        for s in steps(0.0, 60.0, 0.5) {
            assert!(e.on_persons(at(12.0) + Duration::seconds_f64(s), &persons("site", 2)).is_empty());
        }
        // 23:00: raised after the dwell
        let mut alerts = Vec::new();
        for s in steps(0.0, 3.0, 0.5) {
            alerts.extend(e.on_persons(at(23.0) + Duration::seconds_f64(s), &persons("site", 1)));
        }
        assert_eq!(alerts.len(), 1);
        let raised = alerts.remove(0);
        assert!(raised.details.as_ref().unwrap()["schedule"].as_str().unwrap().starts_with("22:00-06:00"));
        // still inside across midnight and until 06:00: cleared when the window ends
        let next = night + Duration::days(1);
        for s in steps(0.0, 60.0, 1.0) {
            assert!(e.on_persons(next + Duration::seconds_f64(s), &persons("site", 1)).is_empty());
        }
        assert!(e.on_persons(next + Duration::seconds_f64(6.0 * 3600.0 - 0.5), &persons("site", 1)).is_empty());
        let cleared = e.on_persons(next + Duration::hours(6), &persons("site", 1));
        assert_eq!(cleared.len(), 1);
        assert_eq!((cleared[0].state, &cleared[0].alert), (AlertState::Cleared, &raised.alert));
        assert_eq!(cleared[0].details.as_ref().unwrap()["reason"], "schedule_ended");
        assert!(e.active().is_empty());
        for s in steps(0.0, 30.0, 0.5) {
            assert!(e.on_persons(next + Duration::hours(6) + Duration::seconds_f64(s), &persons("site", 1)).is_empty());
        }
        // a run just before the window closed does not carry over into the next window
        let day2 = next + Duration::days(1);
        assert!(e.on_persons(day2 + Duration::seconds_f64(6.0 * 3600.0 - 1.0), &persons("site", 1)).is_empty());
        assert!(e.on_persons(day2 + Duration::hours(22), &persons("site", 1)).is_empty());
        assert!(e.on_persons(day2 + Duration::hours(22) + Duration::seconds(1), &persons("site", 1)).is_empty());
        assert_eq!(e.on_persons(day2 + Duration::hours(22) + Duration::seconds(2), &persons("site", 1)).len(), 1);
    }

    #[test]
    fn an_episode_from_a_previous_window_ends_when_the_next_one_starts() {
        let mut e = engine(&[fence("site", Some("22:00-06:00"))], &[]);
        let night = datetime!(2026-11-23 23:00 UTC);
        e.on_persons(night, &persons("site", 1));
        let raised = e.on_persons(night + Duration::seconds(2), &persons("site", 1));
        assert_eq!(raised.len(), 1);
        // nothing at all is called until the next night (no frames, no tick)
        let next = datetime!(2026-11-24 22:00:10 UTC);
        let a = e.on_persons(next, &persons("site", 1));
        assert_eq!(a.len(), 1, "{a:#?}");
        assert_eq!((a[0].state, &a[0].alert), (AlertState::Cleared, &raised[0].alert));
        assert_eq!(a[0].details.as_ref().unwrap()["reason"], "schedule_ended");
        // the new window needs its own dwell
        assert!(e.on_persons(next + Duration::seconds(1), &persons("site", 1)).is_empty());
        let again = e.on_persons(next + Duration::seconds(2), &persons("site", 1));
        assert_eq!((again.len(), again[0].state), (1, AlertState::Raised));
        assert_ne!(again[0].alert, raised[0].alert);
    }

    #[test]
    fn schedule_end_clears_on_the_periodic_tick_and_gates_crowd_rules() {
        let zone = ZoneConfig { fence: true, schedule: Some("22:00-06:00".into()), ..square("site") };
        let r = RuleConfig { dwell_s: 0.0, ..rule(Some("site"), 10.0, 5.0) };
        let mut e = engine(&[zone], &[r]);
        let day = datetime!(2026-11-23 12:00 UTC);
        // crowd rule on the zone: nothing by day
        assert!(e.on_crowd(day, 50.0, &[("site".into(), 50.0)]).is_empty());
        let night = datetime!(2026-11-24 05:00 UTC);
        assert_eq!(e.on_crowd(night, 50.0, &[("site".into(), 50.0)]).len(), 1);
        e.on_persons(night, &persons("site", 1));
        assert_eq!(e.on_persons(night + Duration::seconds(3), &persons("site", 1)).len(), 1);
        assert_eq!(e.active().len(), 2);
        // no observations at all after 05:00 (e.g. the analysis stalled), the tick closes both
        let frame = datetime!(2026-11-24 06:00:00.5 UTC);
        assert!(e.on_silence(datetime!(2026-11-24 05:59:59 UTC), Some(datetime!(2026-11-24 05:59:58 UTC))).is_empty());
        let closed = e.on_silence(datetime!(2026-11-24 06:00:01 UTC), Some(frame));
        assert_eq!(closed.len(), 2, "{closed:#?}");
        assert!(closed.iter().all(|a| a.state == AlertState::Cleared));
        let kinds: Vec<_> = closed.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, vec![AlertKind::ZoneIntrusion, AlertKind::CrowdThreshold]);
        assert!(closed[1].message.contains("outside its schedule"), "{}", closed[1].message);
        assert!(e.active().is_empty());
    }

    // ----- Camera health ---------------------------------------------------------------------

    #[test]
    fn offline_raised_after_timeout_and_cleared_by_the_next_frame() {
        let mut e = engine(&[], &[]);
        assert!(e.on_frame_health(t(0.0), healthy(true)).is_empty());
        assert!(e.on_silence(t(5.0), Some(t(0.0))).is_empty());
        assert!(e.on_silence(t(9.9), Some(t(0.0))).is_empty());
        let a = e.on_silence(t(10.0), Some(t(0.0)));
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].kind, a[0].severity, a[0].zone.as_deref()),
            (AlertKind::CameraOffline, Severity::Critical, None)
        );
        assert_eq!(a[0].message, "camera gate-north offline: no frames for 10 s");
        assert!(a[0].alert.starts_with("gate-north:camera_offline:-:"));
        assert_eq!(a[0].details.as_ref().unwrap()["last_frame"], "2026-11-23T20:00:00.000Z");
        for s in 11..60 {
            assert!(e.on_silence(t(f64::from(s)), Some(t(0.0))).is_empty());
        }
        let c = e.on_frame_health(t(60.0), healthy(true));
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].state, &c[0].alert), (AlertState::Cleared, &a[0].alert));
        assert_eq!(c[0].message, "camera gate-north back online (no frames for 1 min 0 s)");
        assert!(e.active().is_empty());
        assert!(e.on_silence(t(61.0), Some(t(60.0))).is_empty());
    }

    #[test]
    fn offline_before_any_frame_and_cleared_by_a_reported_frame() {
        let mut e = engine(&[], &[]);
        assert!(e.on_silence(t(0.0), None).is_empty());
        let a = e.on_silence(t(10.0), None);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].message, "camera gate-north offline: no frames since the agent started (10 s)");
        assert!(e.on_silence(t(12.0), None).is_empty());
        let c = e.on_silence(t(13.0), Some(t(12.5)));
        assert_eq!((c.len(), c[0].state, &c[0].alert), (1, AlertState::Cleared, &a[0].alert));
    }

    #[test]
    fn frozen_raised_after_identical_frames_and_cleared_when_moving() {
        let mut e = engine(&[], &[]);
        let mut alerts = Vec::new();
        for s in steps(0.0, 5.0, 0.2) {
            alerts.extend(e.on_frame_health(t(s), healthy(true)));
        }
        for s in steps(5.0, 30.0, 0.2) {
            alerts.extend(e.on_frame_health(t(s), healthy(false)));
        }
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!((alerts[0].kind, alerts[0].severity), (AlertKind::CameraFrozen, Severity::Warning));
        assert!((alerts[0].ts - t(15.0)).abs() < Duration::milliseconds(1));
        assert_eq!(alerts[0].message, "camera gate-north frozen: identical frames for 10 s");
        // moving again for 2 s clears
        let mut cleared = Vec::new();
        for s in steps(30.0, 32.2, 0.2) {
            cleared.extend(e.on_frame_health(t(s), healthy(true)));
        }
        assert_eq!(cleared.len(), 1);
        assert_eq!((cleared[0].state, &cleared[0].alert), (AlertState::Cleared, &alerts[0].alert));
        assert_eq!(cleared[0].message, "camera gate-north image moving again (frozen for 25 s)");
    }

    #[test]
    fn black_image_is_tampering() {
        let mut e = engine(&[], &[]);
        let black = FrameHealth { mean_luma: 4.0, luma_std: 20.0, sharpness: 100.0, changed: true };
        let mut alerts = Vec::new();
        for s in steps(0.0, 20.0, 0.2) {
            alerts.extend(e.on_frame_health(t(s), black));
        }
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert!((a.ts - t(5.0)).abs() < Duration::milliseconds(1), "{}", a.ts);
        assert_eq!((a.kind, a.severity), (AlertKind::CameraTampered, Severity::Warning));
        assert_eq!(a.details.as_ref().unwrap()["reasons"], json!(["black"]));
        assert_eq!(a.message, "camera gate-north tampered: image black (mean luma 4) for 5 s");
        let mut cleared = Vec::new();
        for s in steps(20.0, 22.2, 0.2) {
            cleared.extend(e.on_frame_health(t(s), healthy(true)));
        }
        assert_eq!(cleared.len(), 1);
        assert_eq!((cleared[0].state, &cleared[0].alert), (AlertState::Cleared, &a.alert));

        // covered: uniform grey
        let covered = FrameHealth { mean_luma: 90.0, luma_std: 2.0, sharpness: 1.0, changed: true };
        let mut alerts = Vec::new();
        for s in steps(30.0, 36.0, 0.2) {
            alerts.extend(e.on_frame_health(t(s), covered));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].details.as_ref().unwrap()["reasons"], json!(["covered"]));
    }

    #[test]
    fn defocus_relative_to_the_running_median() {
        let blurred = FrameHealth { sharpness: 10.0, ..healthy(true) };
        // before the warm-up (20 frames) nothing is judged: a camera that starts out blurred
        // learns that as its normal (documented limitation)
        let mut e = engine(&[], &[]);
        for i in 0..5 {
            assert!(e.on_frame_health(t(f64::from(i) * 0.2), healthy(true)).is_empty());
        }
        for s in steps(1.0, 60.0, 0.2) {
            assert!(e.on_frame_health(t(s), blurred).is_empty(), "at {s}");
        }

        let mut e = engine(&[], &[]);
        // a slow decline (dusk), 1% per frame from 100 to ~20, moves the median along
        let mut sharpness = 100.0_f32;
        let mut s = 0.0;
        while sharpness > 20.0 {
            let h = FrameHealth { sharpness, ..healthy(true) };
            assert!(e.on_frame_health(t(s), h).is_empty(), "at sharpness {sharpness}");
            sharpness *= 0.99;
            s += 0.2;
        }
        // back to normal, then an abrupt loss of detail (< 15% of the median) for 5 s
        for _ in 0..400 {
            assert!(e.on_frame_health(t(s), healthy(true)).is_empty());
            s += 0.2;
        }
        let start = s;
        let mut alerts = Vec::new();
        while s < start + 10.0 {
            alerts.extend(e.on_frame_health(t(s), blurred));
            s += 0.2;
        }
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(a.kind, AlertKind::CameraTampered);
        let d = a.details.as_ref().unwrap();
        assert_eq!((d["reasons"].clone(), d["sharpness_reference"].as_f64()), (json!(["defocused"]), Some(100.0)));
        assert!((a.ts - t(start + 5.0)).abs() < Duration::milliseconds(1));
        assert_eq!(a.message, "camera gate-north tampered: image defocused (sharpness 10, usually 100) for 5 s");
        // 16% of the median is not defocused: focus back, cleared after 2 s
        let mut cleared = Vec::new();
        let back = s;
        while s < back + 3.0 {
            cleared.extend(e.on_frame_health(t(s), FrameHealth { sharpness: 16.0, ..healthy(true) }));
            s += 0.2;
        }
        assert_eq!(cleared.len(), 1);
        assert_eq!((cleared[0].state, &cleared[0].alert), (AlertState::Cleared, &a.alert));
        assert!(e.active().is_empty());
    }

    #[test]
    fn all_clear_clears_every_raised_alert() {
        let mut e = engine(&[fence("site", None)], &[RuleConfig { dwell_s: 0.0, ..rule(None, 10.0, 5.0) }]);
        e.on_silence(t(0.0), None);
        assert_eq!(e.on_silence(t(10.0), None).len(), 1);
        e.on_persons(t(10.0), &persons("site", 1));
        assert_eq!(e.on_persons(t(12.0), &persons("site", 1)).len(), 1);
        assert_eq!(e.on_crowd(t(12.0), 20.0, &[]).len(), 1);
        let active: Vec<String> = e.active().into_iter().map(String::from).collect();
        assert_eq!(active.len(), 3);
        assert!(active[0].contains(":camera_offline:") && active[1].contains(":zone_intrusion:"));
        let cleared = e.clear_all(t(13.0), "camera disabled");
        let ids: Vec<&String> = cleared.iter().map(|a| &a.alert).collect();
        assert_eq!(ids, active.iter().collect::<Vec<_>>());
        assert!(
            cleared.iter().all(|a| a.state == AlertState::Cleared && a.message.ends_with("cleared: camera disabled"))
        );
        assert!(e.active().is_empty());
        assert!(e.clear_all(t(14.0), "again").is_empty());
        // closed: the silence, the intruder and the crowd go on, nothing raises again
        assert!(e.on_silence(t(30.0), None).is_empty());
        assert!(e.on_persons(t(30.0), &persons("site", 1)).is_empty());
        assert!(e.on_persons(t(33.0), &persons("site", 1)).is_empty());
        assert!(e.on_crowd(t(33.0), 20.0, &[]).is_empty());
        assert!(e.active().is_empty());
    }

    #[test]
    fn alerts_serialise_per_the_contract() {
        let mut e = engine(&[fence("site", None)], &[]);
        e.on_persons(t(0.0), &persons("site", 1));
        let a = e.on_persons(t(2.5), &persons("site", 1)).remove(0);
        let v: Value = serde_json::from_slice(&a.to_json()).unwrap();
        assert_eq!(v["schema"], "sightline.alert/1");
        assert_eq!((v["kind"].as_str(), v["state"].as_str()), (Some("zone_intrusion"), Some("raised")));
        assert_eq!((v["severity"].as_str(), v["zone"].as_str()), (Some("critical"), Some("site")));
        assert_eq!(v["ts"], "2026-11-23T20:00:02.500Z");
        assert_eq!(v["details"]["persons"], 1);
        assert_eq!(Alert::from_json(&a.to_json()).unwrap(), a);
    }
}
