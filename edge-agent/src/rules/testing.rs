//! Fixtures shared by the rules' unit tests.

use sightline_contract::Severity;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::config::{HealthConfig, RuleConfig, ZoneConfig};
use super::engine::{CameraRules, FrameHealth};

pub(super) const T0: OffsetDateTime = datetime!(2026-11-23 20:00 UTC);

pub(super) fn t(s: f64) -> OffsetDateTime {
    T0 + Duration::seconds_f64(s)
}

pub(super) fn square(name: &str) -> ZoneConfig {
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

pub(super) fn fence(name: &str, schedule: Option<&str>) -> ZoneConfig {
    ZoneConfig { fence: true, schedule: schedule.map(Into::into), ..square(name) }
}

pub(super) fn rule(zone: Option<&str>, raise_above: f32, clear_below: f32) -> RuleConfig {
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

pub(super) fn engine(zones: &[ZoneConfig], rules: &[RuleConfig]) -> CameraRules {
    CameraRules::new("riverside", "gate-north", zones, rules, &HealthConfig::default()).unwrap()
}

pub(super) fn healthy(changed: bool) -> FrameHealth {
    FrameHealth { mean_luma: 110.0, luma_std: 45.0, sharpness: 100.0, changed }
}

pub(super) fn persons(zone: &str, n: usize) -> Vec<(String, usize)> {
    vec![(zone.to_owned(), n)]
}

/// Steps of `dt` seconds from `from` (inclusive) while below `to` (exclusive).
pub(super) fn steps(from: f64, to: f64, dt: f64) -> impl Iterator<Item = f64> {
    (0..).map(move |i| from + f64::from(i) * dt).take_while(move |s| *s < to - 1e-9)
}
