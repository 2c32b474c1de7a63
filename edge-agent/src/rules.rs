//! Alert rules: crowd thresholds, electronic fences and camera health, turned into
//! `sightline.alert/1` raise/clear pairs ready to publish.
//!
//! This module is pure logic: every method takes the time (`now`) and the observations, and
//! returns the [`Alert`]s to publish. Nothing here reads the clock, touches the network or
//! looks at pixels (the caller computes [`FrameHealth`] and the per-zone counts).
//!
//! # Against alert fatigue
//!
//! Every alert is driven by a [`Hysteresis`]:
//!
//! * **dwell**: a condition must hold on every observation for a whole dwell time before it
//!   raises (a person crossing the fence for one frame, one noisy crowd estimate: nothing);
//! * **hysteresis band**: a raised crowd alert clears only once the value is *below*
//!   `clear_below` (< `raise_above`); values in between neither raise nor clear;
//! * **clear dwell**: the clear condition must also hold for a while (missed detections in a
//!   frame or two do not end an episode);
//! * **suppression**: one raise per episode; while an alert is raised, further observations
//!   only update its peak. Every raise is followed by exactly one clear with the same `alert`
//!   id (unless the agent stops; see [`CameraRules::clear_all`]).
//!
//! "Continuously" means on every observation passed in: a single observation that breaks the
//! condition restarts the dwell. A `NaN` value breaks both runs. A `camera_offline` episode
//! also restarts every pending dwell, so "45 people before the camera went dark, 45 people
//! when it came back" is not taken as 45 people all along.
//!
//! # Alerts
//!
//! | kind | raised when | cleared when | severity |
//! |---|---|---|---|
//! | `crowd_threshold` | value > `raise_above` for `dwell_s` | value < `clear_below` for `clear_dwell_s`, or the zone's schedule window ends | per rule (`warning`) |
//! | `zone_intrusion` | ≥ 1 person in a fence zone for `fence_dwell_s` while armed | nobody inside for `fence_clear_s`, or the schedule window ends | `critical` |
//! | `camera_offline` | no frame for `offline_after_s` (checked by [`CameraRules::on_silence`]) | the next frame | `critical` |
//! | `camera_frozen` | every frame identical to the one before for `frozen_after_s` | frames change for `clear_after_s` | `warning` |
//! | `camera_tampered` | black, uniform (covered) or defocused for `tampered_after_s` | a normal image for `clear_after_s` | `warning` |
//!
//! * `ts` of every alert is the `now` of the call that produced it.
//! * `alert` (shared by the raise and its clear) is `{camera}:{kind}:{scope}:{id of the raise}`,
//!   where `scope` is `-` for camera health, the zone name for `zone_intrusion` and
//!   `{zone or -}/rule{index}` for `crowd_threshold` (e.g.
//!   `gate-north:crowd_threshold:plaza/rule0:01932c4e-…`). Ending in the raise event's UUIDv7
//!   makes it unique across agent restarts while staying readable.
//! * `id` is a fresh UUIDv7 per event, as the contract requires.
//! * `details` always holds the measured value and the threshold (see each kind's raise and
//!   clear; clears carry `reason`, `duration_s` and, where meaningful, `peak`).
//!
//! # Camera health
//!
//! * **offline**: [`CameraRules::on_silence`] is meant to be called periodically (it is also
//!   the tick that closes episodes whose schedule window ended while no observations came).
//!   The silence is measured from the later of the `last_frame` passed in and the last
//!   [`CameraRules::on_frame_health`] call; before any frame, from the first call this engine
//!   received. The first frame afterwards clears the alert at once.
//! * **frozen**: `FrameHealth::changed == false` on every frame for `frozen_after_s`.
//! * **tampered**, any of: *black* `mean_luma < black_luma` (16, video black level);
//!   *covered* (uniform) `luma_std < uniform_luma_std` (6); *defocused* `sharpness <
//!   defocus_ratio` (0.15) × the camera's own running median sharpness. The median is taken
//!   over the last `sharpness_window_frames` (300) healthy frames (changed, not black, not
//!   uniform, not defocused) and used only once `defocus_warmup_frames` (20) of them were
//!   seen. Slow changes (dusk) move the median along; an abrupt loss of detail does not, so a
//!   lasting defocus stays raised until focus returns. Setting a threshold to 0 disables that
//!   check (e.g. `black_luma = 0` for a camera that legitimately sees black at night).
//!
//! # Schedules
//!
//! A zone's `schedule` (`"HH:MM-HH:MM"`, several windows separated by commas, a window may wrap
//! midnight, start inclusive, end exclusive, minute resolution, `24:00` allowed as an end) arms
//! the zone's fence *and* gates the crowd rules on that zone. Times are UTC shifted by
//! `utc_offset_minutes` (a fixed offset: no daylight saving). Overlapping or back-to-back
//! windows act as one. Outside the window nothing is evaluated; an episode still raised when
//! the window ends is cleared (`reason: "schedule_ended"`) by the first call after the end
//! (`on_persons`, `on_crowd` or the periodic `on_silence`), even if that call falls in a later
//! window; a pending dwell never carries over into the next window.
//!
//! # Configuration (under each `[[camera]]` of the agent's TOML)
//!
//! ```toml
//! [[camera.zone]]
//! name = "plaza"                    # [a-z0-9][a-z0-9_-]{0,63}, unique per camera
//! polygon = [[0.1,0.2],[0.9,0.2],[0.9,0.95],[0.1,0.95]]  # normalised image coords (x right, y down), >= 3 points
//! area_m2 = 120.0                   # optional: enables density rules (per_m2)
//! fence = false                     # true: people inside raise zone_intrusion
//! schedule = "22:00-06:00"          # optional: when the fence / the zone's rules are active (default: always)
//! utc_offset_minutes = 0            # schedule times are UTC + this (fixed, -1439..=1439)
//! fence_dwell_s = 2.0               # someone inside this long -> raise
//! fence_clear_s = 5.0               # nobody inside this long -> clear
//!
//! [[camera.rule]]                   # crowd threshold
//! zone = "plaza"                    # omitted: the whole frame (the measurement's `total`)
//! raise_above = 40.0                # people (or people per m² with per_m2 = true)
//! clear_below = 30.0                # > 0 and < raise_above
//! per_m2 = false                    # true: needs a zone with area_m2
//! dwell_s = 10.0                    # above raise_above this long -> raise
//! clear_dwell_s = 5.0               # below clear_below this long -> clear
//! severity = "warning"              # info | warning | critical
//!
//! [camera.health]                   # every key optional; these are the defaults
//! offline_after_s = 10.0            # no frames -> camera_offline (critical)
//! frozen_after_s = 10.0             # identical frames -> camera_frozen (warning)
//! tampered_after_s = 5.0            # black/covered/defocused -> camera_tampered (warning)
//! clear_after_s = 2.0               # frozen/tampered: normal this long -> clear
//! black_luma = 16.0                 # mean luma below this (0..255) is black; 0 disables
//! uniform_luma_std = 6.0            # luma std below this is a covered lens; 0 disables
//! defocus_ratio = 0.15              # sharpness below this × the running median; 0 disables
//! defocus_warmup_frames = 20        # healthy frames before the defocus check starts
//! sharpness_window_frames = 300     # frames in the running median
//! ```
//!
//! [`validate`] checks all of it (the agent's config loader prefixes the keys it names with
//! `camera[i].`); [`CameraRules::new`] validates too.

use std::collections::VecDeque;
use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};
use sightline_contract::{Alert, AlertKind, AlertState, Severity, new_event_id, validate_id};
use time::{Duration, OffsetDateTime, UtcOffset};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A `[[camera.zone]]`: a named polygon of the image, optionally an electronic fence.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone name (`[a-z0-9][a-z0-9_-]{0,63}`), unique per camera; the alert's `zone`.
    pub name: String,
    /// Normalised image coordinates (x right, y down, each within 0..1), at least 3 points.
    pub polygon: Vec<[f32; 2]>,
    /// Ground area the polygon covers, enabling density (`per_m2`) rules.
    #[serde(default)]
    pub area_m2: Option<f32>,
    /// An electronic fence: people inside raise `zone_intrusion`. Default false.
    #[serde(default)]
    pub fence: bool,
    /// When the fence and the zone's crowd rules are active: `"HH:MM-HH:MM"` windows separated by
    /// commas, UTC + `utc_offset_minutes`, may wrap midnight. Default: always.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Fixed offset of the schedule's clock from UTC, in minutes (-1439..=1439). Default 0.
    #[serde(default)]
    pub utc_offset_minutes: i32,
    /// Someone inside the fence this long (seconds) raises. Default 2.
    #[serde(default = "default_fence_dwell")]
    pub fence_dwell_s: f64,
    /// Nobody inside the fence this long (seconds) clears. Default 5.
    #[serde(default = "default_fence_clear")]
    pub fence_clear_s: f64,
}

fn default_fence_dwell() -> f64 {
    2.0
}
fn default_fence_clear() -> f64 {
    5.0
}

impl ZoneConfig {
    /// Whether a normalised image point (`[x, y]`) lies inside the polygon (even-odd rule).
    pub fn contains(&self, point: [f32; 2]) -> bool {
        sightline_vision::crowd::point_in_polygon(point, &self.polygon)
    }
}

/// A `[[camera.rule]]`: a crowd threshold on a zone's count (or density), or on the whole frame.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The zone whose count is watched; `None`: the measurement's whole-frame `total`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Raise when the value is above this for `dwell_s`.
    pub raise_above: f32,
    /// Clear when the value is below this (> 0, < `raise_above`) for `clear_dwell_s`.
    pub clear_below: f32,
    /// Thresholds are people per m² (needs a zone with `area_m2`). Default false.
    #[serde(default)]
    pub per_m2: bool,
    /// Seconds above `raise_above` before raising. Default 10.
    #[serde(default = "default_rule_dwell")]
    pub dwell_s: f64,
    /// Seconds below `clear_below` before clearing. Default 5: a frame or two of missed
    /// detections must not end an episode (and re-raise it a dwell later).
    #[serde(default = "default_rule_clear_dwell")]
    pub clear_dwell_s: f64,
    /// Severity of the alert. Default `warning`.
    #[serde(default = "default_rule_severity")]
    pub severity: Severity,
}

fn default_rule_dwell() -> f64 {
    10.0
}
fn default_rule_clear_dwell() -> f64 {
    5.0
}
fn default_rule_severity() -> Severity {
    Severity::Warning
}

/// `[camera.health]`: camera offline / frozen / tampered detection. Every key has a default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// No frame for this long (seconds) raises `camera_offline` (critical). Default 10.
    pub offline_after_s: f64,
    /// Identical frames for this long (seconds) raise `camera_frozen` (warning). Default 10.
    pub frozen_after_s: f64,
    /// A black, covered or defocused image this long (seconds) raises `camera_tampered`
    /// (warning). Default 5.
    pub tampered_after_s: f64,
    /// Frozen / tampered clear after this long (seconds) back to normal. Default 2.
    pub clear_after_s: f64,
    /// Mean luma (0..255) below this is a black image. Default 16; 0 disables.
    pub black_luma: f32,
    /// Luma standard deviation below this is a uniform (covered) image. Default 6; 0 disables.
    pub uniform_luma_std: f32,
    /// Sharpness below this fraction of the running median is defocused. Default 0.15; 0 disables.
    pub defocus_ratio: f32,
    /// Healthy frames needed before the defocus check starts. Default 20.
    pub defocus_warmup_frames: usize,
    /// Healthy frames in the running sharpness median. Default 300.
    pub sharpness_window_frames: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            offline_after_s: 10.0,
            frozen_after_s: 10.0,
            tampered_after_s: 5.0,
            clear_after_s: 2.0,
            black_luma: 16.0,
            uniform_luma_std: 6.0,
            defocus_ratio: 0.15,
            defocus_warmup_frames: 20,
            sharpness_window_frames: 300,
        }
    }
}

/// A configuration error: `key` is the path within the camera (`zone[1].polygon`,
/// `rule[0].clear_below`, `health.offline_after_s`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RulesConfigError {
    pub key: String,
    pub message: String,
}

fn config_error(key: String, message: impl Into<String>) -> RulesConfigError {
    RulesConfigError { key, message: message.into() }
}

/// A parsed zone schedule: the windows of the day when the zone is active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    /// Per minute of the (offset) day: minutes since the window containing it opened, or
    /// `INACTIVE`. Overlapping and back-to-back windows merge (also across midnight).
    open_for: Vec<u16>,
    /// Active all day: never opens or closes.
    all_day: bool,
    utc_offset_minutes: i32,
}

const INACTIVE: u16 = u16::MAX;
const MINUTES_PER_DAY: usize = 1440;

impl Schedule {
    /// Parses `"HH:MM-HH:MM"` (or several, comma-separated) on the clock UTC + `utc_offset_minutes`.
    pub fn parse(text: &str, utc_offset_minutes: i32) -> Result<Schedule, String> {
        let bad = |why: String| {
            format!(
                "bad schedule {text:?}: {why}; expected \"HH:MM-HH:MM\" windows separated by commas, e.g. \"22:00-06:00\""
            )
        };
        if !(-1439..=1439).contains(&utc_offset_minutes) {
            return Err(format!("utc offset {utc_offset_minutes} is not within -1439..=1439 minutes"));
        }
        let mut active = vec![false; MINUTES_PER_DAY];
        for part in text.split(',') {
            let part = part.trim();
            let (start, end) = part.split_once('-').ok_or_else(|| bad(format!("{part:?} has no '-'")))?;
            let start = hhmm(start.trim(), false).map_err(&bad)?;
            let end = hhmm(end.trim(), true).map_err(&bad)?;
            if start == end {
                return Err(bad(format!("{part:?} is empty (start equals end); omit `schedule` for always")));
            }
            let len = if end > start { end - start } else { end + MINUTES_PER_DAY - start };
            (0..len).for_each(|i| active[(start + i) % MINUTES_PER_DAY] = true);
        }
        let mut open_for = vec![INACTIVE; MINUTES_PER_DAY];
        let all_day = !active.contains(&false);
        match active.iter().position(|a| !a) {
            None => open_for.fill(0),
            Some(closed) => {
                let mut run: u16 = INACTIVE;
                for i in 1..=MINUTES_PER_DAY {
                    let m = (closed + i) % MINUTES_PER_DAY;
                    run = if !active[m] {
                        INACTIVE
                    } else if run == INACTIVE {
                        0
                    } else {
                        run + 1
                    };
                    open_for[m] = run;
                }
            }
        }
        Ok(Schedule { text: text.trim().to_owned(), open_for, all_day, utc_offset_minutes })
    }

    /// Whether `t` falls within one of the windows.
    pub fn is_active(&self, t: OffsetDateTime) -> bool {
        self.open_for[self.minute(t)] != INACTIVE
    }

    /// When the window containing `t` opened (`None` outside the windows). An all-day schedule
    /// reports a time long ago.
    fn opened_at(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let open_for = self.open_for[self.minute(t)];
        if open_for == INACTIVE {
            return None;
        }
        if self.all_day {
            return Some(OffsetDateTime::UNIX_EPOCH);
        }
        let t = t.to_offset(UtcOffset::UTC);
        let minute_start =
            t - Duration::seconds(i64::from(t.second())) - Duration::nanoseconds(i64::from(t.nanosecond()));
        Some(minute_start - Duration::minutes(i64::from(open_for)))
    }

    /// Minute of the day of `t` on the schedule's clock.
    fn minute(&self, t: OffsetDateTime) -> usize {
        let t = t.to_offset(UtcOffset::UTC);
        let minute = i32::from(t.hour()) * 60 + i32::from(t.minute()) + self.utc_offset_minutes;
        minute.rem_euclid(MINUTES_PER_DAY as i32) as usize
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        match self.utc_offset_minutes {
            0 => f.write_str(" UTC"),
            o => write!(f, " UTC{}{:02}:{:02}", if o < 0 { '-' } else { '+' }, o.abs() / 60, o.abs() % 60),
        }
    }
}

/// `HH:MM` to minutes of the day; `24:00` only as an end.
fn hhmm(s: &str, end: bool) -> Result<usize, String> {
    let b = s.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    if b.len() != 5 || b[2] != b':' || !(digit(0) && digit(1) && digit(3) && digit(4)) {
        return Err(format!("{s:?} is not HH:MM"));
    }
    let num = |i: usize| usize::from(b[i] - b'0') * 10 + usize::from(b[i + 1] - b'0');
    let (h, m) = (num(0), num(3));
    if m >= 60 || h > 24 || (h == 24 && !(end && m == 0)) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

/// Seconds from the config as a duration (`> 0`, or `>= 0` with `zero_ok`), naming `key` otherwise.
fn seconds(key: String, v: f64, zero_ok: bool) -> Result<Duration, RulesConfigError> {
    let d = Duration::checked_seconds_f64(v).filter(|d| if zero_ok { !d.is_negative() } else { d.is_positive() });
    d.ok_or_else(|| {
        config_error(
            key,
            format!("must be a finite number of seconds {}, got {v}", if zero_ok { ">= 0" } else { "> 0" }),
        )
    })
}

/// Checks a camera's zones, crowd rules and health settings. Errors name the key within the
/// camera (`zone[1].polygon: needs at least 3 points, got 2`) and stop at the first one.
pub fn validate(zones: &[ZoneConfig], rules: &[RuleConfig], health: &HealthConfig) -> Result<(), RulesConfigError> {
    Compiled::new(zones, rules, health).map(|_| ())
}

/// Validated configuration, with schedules parsed and seconds converted.
struct Compiled {
    zones: Vec<CompiledZone>,
    rules: Vec<CompiledRule>,
    offline_after: Duration,
    frozen_after: Duration,
    tampered_after: Duration,
    health_clear: Duration,
}

struct CompiledZone {
    schedule: Option<Schedule>,
    fence_dwell: Duration,
    fence_clear: Duration,
}

struct CompiledRule {
    zone: Option<usize>,
    dwell: Duration,
    clear_dwell: Duration,
}

impl Compiled {
    fn new(zones: &[ZoneConfig], rules: &[RuleConfig], health: &HealthConfig) -> Result<Compiled, RulesConfigError> {
        let mut czones = Vec::with_capacity(zones.len());
        for (i, z) in zones.iter().enumerate() {
            let key = |k: &str| format!("zone[{i}].{k}");
            validate_id("zone", &z.name).map_err(|e| config_error(key("name"), e.to_string()))?;
            if zones[..i].iter().any(|o| o.name == z.name) {
                return Err(config_error(key("name"), format!("duplicate zone name {:?}", z.name)));
            }
            if z.polygon.len() < 3 {
                return Err(config_error(key("polygon"), format!("needs at least 3 points, got {}", z.polygon.len())));
            }
            if let Some((j, p)) = z.polygon.iter().enumerate().find(|(_, p)| !p.iter().all(|c| (0.0..=1.0).contains(c)))
            {
                return Err(config_error(
                    key("polygon"),
                    format!("point {j} {p:?} is outside the image (normalised coordinates are within 0..1)"),
                ));
            }
            if polygon_area(&z.polygon) < 1e-6 {
                return Err(config_error(key("polygon"), "has no area (its points are collinear or repeated)"));
            }
            if let Some(a) = z.area_m2
                && !(a.is_finite() && a > 0.0)
            {
                return Err(config_error(key("area_m2"), format!("must be a finite number > 0, got {a}")));
            }
            if !(-1439..=1439).contains(&z.utc_offset_minutes) {
                return Err(config_error(
                    key("utc_offset_minutes"),
                    format!("must be within -1439..=1439, got {}", z.utc_offset_minutes),
                ));
            }
            let schedule = match &z.schedule {
                Some(s) => {
                    Some(Schedule::parse(s, z.utc_offset_minutes).map_err(|e| config_error(key("schedule"), e))?)
                }
                None => None,
            };
            czones.push(CompiledZone {
                schedule,
                fence_dwell: seconds(key("fence_dwell_s"), z.fence_dwell_s, true)?,
                fence_clear: seconds(key("fence_clear_s"), z.fence_clear_s, true)?,
            });
        }

        let mut crules = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let key = |k: &str| format!("rule[{i}].{k}");
            let zone = match &r.zone {
                None => None,
                Some(name) => match zones.iter().position(|z| &z.name == name) {
                    Some(zi) => Some(zi),
                    None if zones.is_empty() => {
                        return Err(config_error(
                            key("zone"),
                            format!("unknown zone {name:?} (no [[camera.zone]] defined)"),
                        ));
                    }
                    None => {
                        let known: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
                        return Err(config_error(
                            key("zone"),
                            format!("unknown zone {name:?} (zones: {})", known.join(", ")),
                        ));
                    }
                },
            };
            if !r.raise_above.is_finite() {
                return Err(config_error(
                    key("raise_above"),
                    format!("must be a finite number, got {}", r.raise_above),
                ));
            }
            if !(r.clear_below.is_finite() && r.clear_below > 0.0) {
                return Err(config_error(
                    key("clear_below"),
                    format!("must be a finite number > 0 (or the alert never clears), got {}", r.clear_below),
                ));
            }
            if r.clear_below >= r.raise_above {
                return Err(config_error(
                    key("clear_below"),
                    format!("must be below raise_above ({}), got {}", r.raise_above, r.clear_below),
                ));
            }
            if r.per_m2 && zone.and_then(|zi| zones[zi].area_m2).is_none() {
                return Err(config_error(key("per_m2"), "needs `zone` naming a zone with `area_m2`"));
            }
            crules.push(CompiledRule {
                zone,
                dwell: seconds(key("dwell_s"), r.dwell_s, true)?,
                clear_dwell: seconds(key("clear_dwell_s"), r.clear_dwell_s, true)?,
            });
        }

        let key = |k: &str| format!("health.{k}");
        let h = health;
        let compiled = Compiled {
            zones: czones,
            rules: crules,
            offline_after: seconds(key("offline_after_s"), h.offline_after_s, false)?,
            frozen_after: seconds(key("frozen_after_s"), h.frozen_after_s, false)?,
            tampered_after: seconds(key("tampered_after_s"), h.tampered_after_s, false)?,
            health_clear: seconds(key("clear_after_s"), h.clear_after_s, true)?,
        };
        if !(0.0..=255.0).contains(&h.black_luma) {
            return Err(config_error(key("black_luma"), format!("must be within 0..255, got {}", h.black_luma)));
        }
        if !(h.uniform_luma_std.is_finite() && h.uniform_luma_std >= 0.0) {
            return Err(config_error(
                key("uniform_luma_std"),
                format!("must be finite and >= 0, got {}", h.uniform_luma_std),
            ));
        }
        if !(0.0..1.0).contains(&h.defocus_ratio) {
            return Err(config_error(key("defocus_ratio"), format!("must be within [0, 1), got {}", h.defocus_ratio)));
        }
        if h.defocus_warmup_frames == 0 {
            return Err(config_error(key("defocus_warmup_frames"), "must be at least 1"));
        }
        if h.sharpness_window_frames < h.defocus_warmup_frames {
            return Err(config_error(
                key("sharpness_window_frames"),
                format!("must be at least defocus_warmup_frames ({})", h.defocus_warmup_frames),
            ));
        }
        Ok(compiled)
    }
}

/// Shoelace area of a polygon (absolute).
fn polygon_area(p: &[[f32; 2]]) -> f32 {
    let n = p.len();
    let twice: f32 = (0..n).map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1]).sum();
    twice.abs() / 2.0
}

// ---------------------------------------------------------------------------------------------
// Hysteresis
// ---------------------------------------------------------------------------------------------

/// A state change reported by [`Hysteresis::update`], once per episode each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The value has been above `raise_above` on every observation since `since` (for at least the dwell).
    Raised { since: OffsetDateTime },
    /// The value has been below `clear_below` on every observation since `since` (for at least
    /// the clear dwell); from [`Hysteresis::force_clear`], `since` is the time passed in.
    Cleared { since: OffsetDateTime },
}

/// Two-threshold, two-dwell debouncer: the building block of every alert here.
///
/// Idle, it raises once `value > raise_above` held on every observation for `dwell`; raised,
/// it clears once `value < clear_below` held on every observation for `clear_dwell`. Values in
/// between (and `NaN`) restart the run towards the other state without changing state. Each
/// transition is reported exactly once; observations that keep the state report nothing.
/// With `dwell` zero the first observation above raises at once. Observations going back in
/// time restart the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Hysteresis {
    raise_above: f32,
    clear_below: f32,
    dwell: Duration,
    clear_dwell: Duration,
    active: bool,
    /// Start of the current run of observations towards the other state.
    run_start: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
}

impl Hysteresis {
    /// A new, idle debouncer. For a boolean condition use `raise_above == clear_below == 0.5` and
    /// feed 1.0 / 0.0.
    ///
    /// # Panics
    /// If a threshold is `NaN`, `clear_below > raise_above`, or a dwell is negative.
    pub fn new(raise_above: f32, clear_below: f32, dwell: Duration, clear_dwell: Duration) -> Hysteresis {
        assert!(
            clear_below <= raise_above,
            "Hysteresis: clear_below ({clear_below}) must not exceed raise_above ({raise_above})"
        );
        assert!(!dwell.is_negative() && !clear_dwell.is_negative(), "Hysteresis: dwells must not be negative");
        Hysteresis { raise_above, clear_below, dwell, clear_dwell, active: false, run_start: None, last: None }
    }

    /// Feeds one observation; returns the transition it completes, if any.
    pub fn update(&mut self, now: OffsetDateTime, value: f32) -> Option<Transition> {
        if self.last.is_some_and(|last| now < last) {
            self.run_start = None;
        }
        self.last = Some(now);
        let towards = if self.active { value < self.clear_below } else { value > self.raise_above };
        if !towards {
            self.run_start = None;
            return None;
        }
        let since = *self.run_start.get_or_insert(now);
        let need = if self.active { self.clear_dwell } else { self.dwell };
        if now - since < need {
            return None;
        }
        self.active = !self.active;
        self.run_start = None;
        Some(if self.active { Transition::Raised { since } } else { Transition::Cleared { since } })
    }

    /// Whether an episode is raised.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Start of the run towards the other state, if one is under way.
    pub fn pending_since(&self) -> Option<OffsetDateTime> {
        self.run_start
    }

    /// Restarts the pending run (continuity was broken, e.g. the camera was offline); keeps the state.
    pub fn interrupt(&mut self) {
        self.run_start = None;
    }

    /// Ends the episode now, if one is raised (e.g. the schedule window ended), and forgets any
    /// pending run. Reports `Cleared { since: now }` only if it was raised.
    pub fn force_clear(&mut self, now: OffsetDateTime) -> Option<Transition> {
        self.run_start = None;
        std::mem::take(&mut self.active).then_some(Transition::Cleared { since: now })
    }
}

// ---------------------------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------------------------

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

/// The camera an engine's alerts are about.
#[derive(Clone, Debug)]
struct Ids {
    site: String,
    camera: String,
}

/// A raised episode.
#[derive(Clone, Debug)]
struct Episode {
    alert: String,
    raised_at: OffsetDateTime,
    /// Start of the run of observations that raised it.
    started: OffsetDateTime,
    /// Highest value observed during the episode.
    peak: f32,
}

/// What an alert is about, and its current episode.
#[derive(Clone, Debug)]
struct Slot {
    kind: AlertKind,
    severity: Severity,
    zone: Option<String>,
    scope: String,
    episode: Option<Episode>,
}

impl Slot {
    fn new(kind: AlertKind, severity: Severity, zone: Option<String>, scope: String) -> Slot {
        Slot { kind, severity, zone, scope, episode: None }
    }

    fn raise(
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
    fn clear(&mut self, ids: &Ids, now: OffsetDateTime, text: (String, Value)) -> Option<Alert> {
        let episode = self.episode.take()?;
        let (message, mut details) = text;
        if let Value::Object(map) = &mut details {
            map.insert("duration_s".into(), json!(secs(now - episode.raised_at)));
        }
        tracing::debug!(alert = %episode.alert, %message, "alert cleared");
        Some(self.event(ids, new_event_id(), episode.alert, AlertState::Cleared, now, (message, details)))
    }

    /// The raised episode's peak value and its start (the beginning of the run that raised it).
    fn peak(&self) -> Option<(f32, OffsetDateTime)> {
        self.episode.as_ref().map(|e| (e.peak, e.started))
    }

    fn note(&mut self, value: f32) {
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
}

impl CameraRules {
    /// Validates the configuration (see [`validate`]) and builds an idle engine. `site` and
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
    /// consumers. Pending dwells restart.
    pub fn clear_all(&mut self, now: OffsetDateTime, reason: &str) -> Vec<Alert> {
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

/// A count for people: whole numbers without decimals, estimates with one.
fn count(v: f32) -> String {
    if (v - v.round()).abs() < 0.05 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn people(n: usize) -> String {
    if n == 1 { "1 person".into() } else { format!("{n} people") }
}

fn round3(v: f32) -> f64 {
    (f64::from(v) * 1000.0).round() / 1000.0
}

fn secs(d: Duration) -> f64 {
    (d.as_seconds_f64() * 1000.0).round() / 1000.0
}

/// Human-readable duration: `2 s`, `2.5 s`, `3 min 5 s`, `1 h 2 min`.
fn duration(d: Duration) -> String {
    let s = d.as_seconds_f64().max(0.0);
    if s < 59.95 {
        let r = (s * 10.0).round() / 10.0;
        if r.fract() == 0.0 { format!("{r:.0} s") } else { format!("{r:.1} s") }
    } else if s < 3599.5 {
        let s = s.round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    } else {
        let m = (s / 60.0).round() as u64;
        format!("{} h {} min", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_contract::Payload;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-23 20:00 UTC);

    fn t(s: f64) -> OffsetDateTime {
        T0 + Duration::seconds_f64(s)
    }

    fn square(name: &str) -> ZoneConfig {
        ZoneConfig {
            name: name.into(),
            polygon: vec![[0.1, 0.2], [0.9, 0.2], [0.9, 0.95], [0.1, 0.95]],
            area_m2: None,
            fence: false,
            schedule: None,
            utc_offset_minutes: 0,
            fence_dwell_s: 2.0,
            fence_clear_s: 5.0,
        }
    }

    fn fence(name: &str, schedule: Option<&str>) -> ZoneConfig {
        ZoneConfig { fence: true, schedule: schedule.map(Into::into), ..square(name) }
    }

    fn rule(zone: Option<&str>, raise_above: f32, clear_below: f32) -> RuleConfig {
        RuleConfig {
            zone: zone.map(Into::into),
            raise_above,
            clear_below,
            per_m2: false,
            dwell_s: 10.0,
            clear_dwell_s: 5.0,
            severity: Severity::Warning,
        }
    }

    fn engine(zones: &[ZoneConfig], rules: &[RuleConfig]) -> CameraRules {
        CameraRules::new("riverside", "gate-north", zones, rules, &HealthConfig::default()).unwrap()
    }

    fn healthy(changed: bool) -> FrameHealth {
        FrameHealth { mean_luma: 110.0, luma_std: 45.0, sharpness: 100.0, changed }
    }

    fn persons(zone: &str, n: usize) -> Vec<(String, usize)> {
        vec![(zone.to_owned(), n)]
    }

    /// Steps of `dt` seconds from `from` (inclusive) while below `to` (exclusive).
    fn steps(from: f64, to: f64, dt: f64) -> impl Iterator<Item = f64> {
        (0..).map(move |i| from + f64::from(i) * dt).take_while(move |s| *s < to - 1e-9)
    }

    // ----- Hysteresis ------------------------------------------------------------------------

    #[test]
    fn hysteresis_scripted_series_raises_once_and_clears_once() {
        let mut h = Hysteresis::new(40.0, 30.0, Duration::seconds(10), Duration::seconds(5));
        let mut series: Vec<f32> = vec![38.0, 41.0, 43.0, 39.0]; // 0..=3: a short run, broken at 3
        series.extend([41.0, 42.0, 44.0, 41.0, 43.0, 45.0, 41.0, 42.0, 43.0, 44.0, 42.0]); // 4..=14: raise at 14
        series.extend([35.0, 41.0, 31.0, 39.0, 45.0, 33.0].iter().cycle().take(26)); // 15..=40: noise in the band
        series.extend([29.0, 28.0, 31.0, 25.0, 25.0, 25.0, 25.0, 25.0, 20.0]); // 41..=49: clear run from 44
        series.extend([35.0, 39.0, 38.0, 31.0].iter().cycle().take(10)); // 50..=59: noise
        series.extend([45.0; 9]); // 60..=68: above, but only 8 s
        series.extend([35.0, 20.0, 41.0, 38.0]); // 69..=72
        let mut transitions = Vec::new();
        for (i, v) in series.iter().enumerate() {
            if let Some(tr) = h.update(t(i as f64), *v) {
                transitions.push((i, tr));
            }
        }
        assert_eq!(
            transitions,
            vec![(14, Transition::Raised { since: t(4.0) }), (49, Transition::Cleared { since: t(44.0) })]
        );
        assert!(!h.is_active());
    }

    #[test]
    fn hysteresis_dwell_not_met_never_raises() {
        let mut h = Hysteresis::new(40.0, 30.0, Duration::seconds(10), Duration::seconds(5));
        for round in 0..5 {
            let base = f64::from(round) * 20.0;
            for s in steps(base, base + 10.0, 0.5) {
                assert_eq!(h.update(t(s), 50.0), None); // above for 9.5 s
            }
            assert_eq!(h.update(t(base + 10.0), 40.0), None); // not above: the run restarts
            assert_eq!(h.pending_since(), None);
        }
        assert!(!h.is_active());
    }

    #[test]
    fn hysteresis_edge_cases() {
        // zero dwell: the first observation above raises; equal to the threshold is not above
        let mut h = Hysteresis::new(0.5, 0.5, Duration::ZERO, Duration::ZERO);
        assert_eq!(h.update(t(0.0), 0.5), None);
        assert_eq!(h.update(t(1.0), 1.0), Some(Transition::Raised { since: t(1.0) }));
        assert_eq!(h.update(t(2.0), 1.0), None);
        assert_eq!(h.update(t(3.0), 0.0), Some(Transition::Cleared { since: t(3.0) }));

        // NaN breaks a run; going back in time restarts it
        let mut h = Hysteresis::new(10.0, 5.0, Duration::seconds(2), Duration::seconds(2));
        h.update(t(0.0), 20.0);
        h.update(t(1.0), f32::NAN);
        assert_eq!(h.update(t(2.0), 20.0), None);
        assert_eq!(h.pending_since(), Some(t(2.0)));
        assert_eq!(h.update(t(1.5), 20.0), None);
        assert_eq!(h.pending_since(), Some(t(1.5)));
        assert_eq!(h.update(t(3.5), 20.0), Some(Transition::Raised { since: t(1.5) }));

        // interrupt restarts the pending run; force_clear ends the episode once
        h.update(t(4.0), 1.0);
        h.interrupt();
        assert_eq!(h.update(t(5.0), 1.0), None);
        assert_eq!(h.force_clear(t(5.5)), Some(Transition::Cleared { since: t(5.5) }));
        assert_eq!(h.force_clear(t(6.0)), None);
        assert!(!h.is_active());
    }

    #[test]
    #[should_panic(expected = "clear_below")]
    fn hysteresis_rejects_inverted_thresholds() {
        Hysteresis::new(30.0, 40.0, Duration::ZERO, Duration::ZERO);
    }

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
    fn schedule_windows_wrap_midnight() {
        let s = Schedule::parse("22:00-06:00", 0).unwrap();
        let at = |h: u8, m: u8, sec: u8| {
            datetime!(2026-11-23 00:00 UTC).replace_time(time::Time::from_hms(h, m, sec).unwrap())
        };
        for (h, m, sec, active) in [
            (21, 59, 59, false),
            (22, 0, 0, true),
            (23, 59, 59, true),
            (0, 0, 0, true),
            (5, 59, 59, true),
            (6, 0, 0, false),
            (12, 0, 0, false),
        ] {
            assert_eq!(s.is_active(at(h, m, sec)), active, "{h}:{m}:{sec}");
        }
        // the clock is UTC + offset; other offsets of `t` do not matter
        let cet = Schedule::parse("22:00-06:00", 60).unwrap();
        assert!(cet.is_active(at(21, 0, 0)) && !cet.is_active(at(20, 59, 0)) && !cet.is_active(at(5, 0, 0)));
        assert!(cet.is_active(datetime!(2026-11-23 22:30 +01:00)));
        assert_eq!(cet.to_string(), "22:00-06:00 UTC+01:00");
        let all = Schedule::parse("00:00-24:00", 0).unwrap();
        assert!(all.is_active(at(0, 0, 0)) && all.is_active(at(23, 59, 59)));
        assert_eq!(all.opened_at(at(12, 0, 0)), Some(OffsetDateTime::UNIX_EPOCH));
        // back-to-back windows are one window: it opened at 12:00 the day before
        let joined = Schedule::parse("12:00-24:00,00:00-06:00", 0).unwrap();
        assert_eq!(joined.opened_at(at(3, 0, 30)), Some(at(12, 0, 0) - Duration::days(1)));
        assert_eq!(s.opened_at(at(5, 59, 59)), Some(at(22, 0, 0) - Duration::days(1)));
        assert_eq!(s.opened_at(at(22, 0, 0)), Some(at(22, 0, 0)));
        assert_eq!(s.opened_at(at(12, 0, 0)), None);
        let two = Schedule::parse("00:00-06:00, 12:00-24:00", 0).unwrap();
        assert!(two.is_active(at(3, 0, 0)) && !two.is_active(at(9, 0, 0)) && two.is_active(at(23, 59, 0)));
        for bad in
            ["22:00", "2200-0600", "25:00-06:00", "22:60-06:00", "24:00-06:00", "22:00-22:00", "22:00-06:00,", " "]
        {
            assert!(Schedule::parse(bad, 0).is_err(), "{bad:?}");
        }
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

    // ----- Configuration ---------------------------------------------------------------------

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CameraSection {
        #[serde(default, rename = "zone")]
        zones: Vec<ZoneConfig>,
        #[serde(default, rename = "rule")]
        rules: Vec<RuleConfig>,
        #[serde(default)]
        health: HealthConfig,
    }

    const EXAMPLE: &str = r#"
[[zone]]
name = "plaza"
polygon = [[0.1,0.2],[0.9,0.2],[0.9,0.95],[0.1,0.95]]
area_m2 = 120.0

[[zone]]
name = "site-a"
polygon = [[0.0,0.0],[0.3,0.0],[0.3,0.3]]
fence = true
schedule = "22:00-06:00"
utc_offset_minutes = 60
fence_dwell_s = 1.5

[[rule]]
zone = "plaza"
raise_above = 40.0
clear_below = 30.0
severity = "critical"

[[rule]]
raise_above = 0.5
clear_below = 0.3
per_m2 = true
zone = "plaza"

[health]
offline_after_s = 20.0
"#;

    #[test]
    fn toml_shape_and_defaults() {
        let c: CameraSection = toml::from_str(EXAMPLE).unwrap();
        validate(&c.zones, &c.rules, &c.health).unwrap();
        assert_eq!((c.zones[0].fence, c.zones[0].fence_dwell_s, c.zones[0].fence_clear_s), (false, 2.0, 5.0));
        assert_eq!((c.zones[1].fence_dwell_s, c.zones[1].utc_offset_minutes), (1.5, 60));
        assert_eq!(
            (c.rules[0].dwell_s, c.rules[0].clear_dwell_s, c.rules[0].severity),
            (10.0, 5.0, Severity::Critical)
        );
        assert_eq!((c.rules[1].per_m2, c.rules[1].severity), (true, Severity::Warning));
        assert_eq!(c.health, HealthConfig { offline_after_s: 20.0, ..HealthConfig::default() });
        let e = CameraRules::new("riverside", "gate-north", &c.zones, &c.rules, &c.health).unwrap();
        assert_eq!((e.site(), e.camera()), ("riverside", "gate-north"));

        let e = toml::from_str::<CameraSection>(&EXAMPLE.replace("fence_dwell_s", "fence_dwell")).unwrap_err();
        assert!(e.to_string().contains("unknown field `fence_dwell`"), "{e}");
        let e = toml::from_str::<CameraSection>(&EXAMPLE.replace("offline_after_s", "offline_s")).unwrap_err();
        assert!(e.to_string().contains("unknown field `offline_s`"), "{e}");
        let e = toml::from_str::<CameraSection>(&EXAMPLE.replace("\"critical\"", "\"urgent\"")).unwrap_err();
        assert!(e.to_string().contains("urgent"), "{e}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let base: CameraSection = toml::from_str(EXAMPLE).unwrap();
        let check = |edit: &dyn Fn(&mut CameraSection), expected: &str| {
            let mut c: CameraSection = toml::from_str(EXAMPLE).unwrap();
            edit(&mut c);
            let e = validate(&c.zones, &c.rules, &c.health).unwrap_err().to_string();
            assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
            let e2 = CameraRules::new("s", "c", &c.zones, &c.rules, &c.health).unwrap_err().to_string();
            assert_eq!(e, e2);
        };
        assert!(validate(&base.zones, &base.rules, &base.health).is_ok());
        check(&|c| c.zones[1].polygon.truncate(2), "zone[1].polygon: needs at least 3 points, got 2");
        check(&|c| c.zones[1].polygon[2] = [1.2, 0.3], "zone[1].polygon: point 2");
        check(&|c| c.zones[1].polygon[2] = [0.6, 0.0], "zone[1].polygon: has no area");
        check(&|c| c.zones[0].name = "Plaza".into(), "zone[0].name: invalid zone id");
        check(&|c| c.zones[1].name = "plaza".into(), "zone[1].name: duplicate zone name");
        check(&|c| c.zones[0].area_m2 = Some(0.0), "zone[0].area_m2: must be a finite number > 0");
        check(&|c| c.zones[1].schedule = Some("22-06".into()), "zone[1].schedule: bad schedule \"22-06\"");
        check(&|c| c.zones[1].utc_offset_minutes = 1440, "zone[1].utc_offset_minutes");
        check(&|c| c.zones[1].fence_clear_s = -1.0, "zone[1].fence_clear_s: must be a finite number of seconds >= 0");
        check(&|c| c.rules[0].clear_below = 45.0, "rule[0].clear_below: must be below raise_above (40), got 45");
        check(&|c| c.rules[0].clear_below = 0.0, "rule[0].clear_below: must be a finite number > 0");
        check(&|c| c.rules[0].raise_above = f32::NAN, "rule[0].raise_above");
        check(
            &|c| c.rules[1].zone = Some("plazza".into()),
            "rule[1].zone: unknown zone \"plazza\" (zones: plaza, site-a)",
        );
        check(
            &|c| c.rules[1].zone = Some("site-a".into()),
            "rule[1].per_m2: needs `zone` naming a zone with `area_m2`",
        );
        check(&|c| c.rules[1].zone = None, "rule[1].per_m2");
        check(&|c| c.rules[0].dwell_s = f64::INFINITY, "rule[0].dwell_s");
        check(&|c| c.health.offline_after_s = 0.0, "health.offline_after_s: must be a finite number of seconds > 0");
        check(&|c| c.health.defocus_ratio = 1.0, "health.defocus_ratio");
        check(&|c| c.health.sharpness_window_frames = 10, "health.sharpness_window_frames");
        check(&|c| c.health.black_luma = -1.0, "health.black_luma");
        check(
            &|c| {
                c.zones.clear();
                c.rules.truncate(1);
            },
            "rule[0].zone: unknown zone \"plaza\" (no [[camera.zone]] defined)",
        );
    }

    #[test]
    fn zone_contains_points() {
        let z = ZoneConfig { polygon: vec![[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]], ..square("tri") };
        assert!(z.contains([0.5, 0.5]));
        assert!(!z.contains([0.15, 0.8]) && !z.contains([0.95, 0.5]) && !z.contains([0.5, 0.05]));
    }
}
