//! How alert messages and details write numbers: people counts, rounded values, durations.

use time::Duration;

/// A count for people: whole numbers without decimals, estimates with one.
pub(super) fn count(v: f32) -> String {
    if (v - v.round()).abs() < 0.05 { format!("{v:.0}") } else { format!("{v:.1}") }
}

pub(super) fn people(n: usize) -> String {
    if n == 1 { "1 person".into() } else { format!("{n} people") }
}

pub(super) fn round3(v: f32) -> f64 {
    (f64::from(v) * 1000.0).round() / 1000.0
}

pub(super) fn secs(d: Duration) -> f64 {
    (d.as_seconds_f64() * 1000.0).round() / 1000.0
}

/// Human-readable duration: `2 s`, `2.5 s`, `3 min 5 s`, `1 h 2 min`.
pub(super) fn duration(d: Duration) -> String {
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
