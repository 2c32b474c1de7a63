//! The two-threshold, two-dwell debouncer behind every alert (see "Against alert fatigue" in the
//! module documentation of [`rules`](super)).

use time::{Duration, OffsetDateTime};

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
    pub(super) dwell: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{steps, t};

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
}
