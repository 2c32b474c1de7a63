//! The rules' configuration under each `[[camera]]` (zones, crowd rules, camera health; see the
//! module documentation of [`rules`](super) for the TOML) and its validation, which also compiles
//! it for the engine (schedules parsed, seconds converted).

use serde::Deserialize;
use sightline_contract::{Severity, validate_id};
use time::Duration;

use super::schedule::Schedule;

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
pub(super) struct Compiled {
    pub(super) zones: Vec<CompiledZone>,
    pub(super) rules: Vec<CompiledRule>,
    pub(super) offline_after: Duration,
    pub(super) frozen_after: Duration,
    pub(super) tampered_after: Duration,
    pub(super) health_clear: Duration,
}

pub(super) struct CompiledZone {
    pub(super) schedule: Option<Schedule>,
    pub(super) fence_dwell: Duration,
    pub(super) fence_clear: Duration,
}

pub(super) struct CompiledRule {
    pub(super) zone: Option<usize>,
    pub(super) dwell: Duration,
    pub(super) clear_dwell: Duration,
}

impl Compiled {
    pub(super) fn new(
        zones: &[ZoneConfig],
        rules: &[RuleConfig],
        health: &HealthConfig,
    ) -> Result<Compiled, RulesConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::CameraRules;
    use crate::rules::testing::square;

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
