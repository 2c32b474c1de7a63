//! The tracker's parameters (`[tracker]` of the agent's configuration) and their validation.

use serde::Deserialize;
use time::Duration;

/// Tracker parameters. Every field has a default, so a config section may set only some.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// First-stage (high-confidence) detection threshold.
    pub high_score: f32,
    /// Second-stage threshold; detections below it are ignored.
    pub low_score: f32,
    /// Minimum score of an unmatched detection to start a track (`>= high_score`).
    pub new_track_score: f32,
    /// Association gate: a pair with a smaller IoU never associates (0 < min_iou <= 1).
    pub min_iou: f32,
    /// Association gate: a pair whose embeddings are further apart never associates.
    pub max_embedding_distance: f32,
    /// Weight of the normalised embedding distance in the association cost.
    pub embedding_weight: f32,
    /// Appearance fallback: a first-stage pair below `min_iou` may still associate if
    /// its embeddings are closer than this (0 < reid_distance <= max_embedding_distance).
    pub reid_distance: f32,
    /// Appearance fallback: largest centre jump, in predicted box heights per nominal
    /// frame interval (1 / [`NOMINAL_FPS`] s, scaled up by the time since the track's
    /// last match), of a pair associated on appearance (> 0).
    pub max_jump: f32,
    /// A track not matched for this long (seconds) closes.
    pub lost_timeout_s: f64,
    /// A track this old (seconds since its first hit) closes and continues under a new id.
    pub max_duration_s: f64,
    /// A closed track with fewer matched detections is dropped, not emitted (>= 1).
    pub min_hits: u32,
    /// Most tracks alive at once (>= 1).
    pub max_tracks: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            high_score: 0.75,
            low_score: 0.5,
            new_track_score: 0.8,
            min_iou: 0.2,
            max_embedding_distance: 0.75,
            embedding_weight: 0.25,
            reid_distance: 0.55,
            max_jump: 2.0,
            lost_timeout_s: 2.0,
            max_duration_s: 60.0,
            min_hits: 3,
            max_tracks: 256,
        }
    }
}

/// A [`TrackerConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tracker config: `{field}` {requirement}")]
pub struct TrackerConfigError {
    pub field: &'static str,
    pub requirement: &'static str,
}

impl TrackerConfig {
    /// Checks every field's range (NaN is always out of range).
    pub fn validate(&self) -> Result<(), TrackerConfigError> {
        let check = |ok: bool, field, requirement| {
            if ok { Ok(()) } else { Err(TrackerConfigError { field, requirement }) }
        };
        check((0.0..=1.0).contains(&self.high_score), "high_score", "must be in [0, 1]")?;
        check((0.0..=self.high_score).contains(&self.low_score), "low_score", "must be in [0, high_score]")?;
        check(
            (self.high_score..=1.0).contains(&self.new_track_score),
            "new_track_score",
            "must be in [high_score, 1]",
        )?;
        check(self.min_iou > 0.0 && self.min_iou <= 1.0, "min_iou", "must be in (0, 1]")?;
        check(
            self.max_embedding_distance.is_finite() && self.max_embedding_distance > 0.0,
            "max_embedding_distance",
            "must be finite and > 0",
        )?;
        check(
            self.embedding_weight.is_finite() && self.embedding_weight >= 0.0,
            "embedding_weight",
            "must be finite and >= 0",
        )?;
        check(
            self.reid_distance > 0.0 && self.reid_distance <= self.max_embedding_distance,
            "reid_distance",
            "must be in (0, max_embedding_distance]",
        )?;
        check(self.max_jump.is_finite() && self.max_jump > 0.0, "max_jump", "must be finite and > 0")?;
        check(
            positive_duration(self.lost_timeout_s).is_some(),
            "lost_timeout_s",
            "must be a finite number of seconds > 0",
        )?;
        check(
            positive_duration(self.max_duration_s).is_some(),
            "max_duration_s",
            "must be a finite number of seconds > 0",
        )?;
        check(self.min_hits >= 1, "min_hits", "must be >= 1")?;
        check(self.max_tracks >= 1, "max_tracks", "must be >= 1")
    }
}

pub(super) fn positive_duration(seconds: f64) -> Option<Duration> {
    Duration::checked_seconds_f64(seconds).filter(|d| d.is_positive())
}

/// Nominal analysis rate (frames per second) that `max_jump` refers to: the
/// appearance fallback allows `max_jump * h * max(1, NOMINAL_FPS * since_hit_s)`.
pub const NOMINAL_FPS: f64 = 5.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_parsing_and_validation() {
        assert_eq!(TrackerConfig::default().validate(), Ok(()));
        let cfg: TrackerConfig = toml::from_str("lost_timeout_s = 3.5\nmin_hits = 5").unwrap();
        assert_eq!(cfg, TrackerConfig { lost_timeout_s: 3.5, min_hits: 5, ..TrackerConfig::default() });
        assert!(toml::from_str::<TrackerConfig>("lost_timeout = 3.5").is_err());
        let cfg: TrackerConfig = toml::from_str("reid_distance = 0.5\nmax_jump = 3.0").unwrap();
        assert_eq!((cfg.reid_distance, cfg.max_jump), (0.5, 3.0));
        assert_eq!((TrackerConfig::default().reid_distance, TrackerConfig::default().max_jump), (0.55, 2.0));

        let bad = |cfg: TrackerConfig| cfg.validate().unwrap_err().field;
        let d = TrackerConfig::default;
        assert_eq!(bad(TrackerConfig { low_score: 0.8, ..d() }), "low_score");
        assert_eq!(bad(TrackerConfig { high_score: f32::NAN, ..d() }), "high_score");
        assert_eq!(bad(TrackerConfig { new_track_score: 0.7, ..d() }), "new_track_score");
        assert_eq!(bad(TrackerConfig { min_iou: 0.0, ..d() }), "min_iou");
        assert_eq!(bad(TrackerConfig { max_embedding_distance: 0.0, ..d() }), "max_embedding_distance");
        assert_eq!(bad(TrackerConfig { embedding_weight: -1.0, ..d() }), "embedding_weight");
        for reid_distance in [0.0, 0.8, f32::NAN] {
            assert_eq!(bad(TrackerConfig { reid_distance, ..d() }), "reid_distance");
        }
        assert_eq!(TrackerConfig { reid_distance: 0.75, ..d() }.validate(), Ok(()));
        for max_jump in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(bad(TrackerConfig { max_jump, ..d() }), "max_jump");
        }
        assert_eq!(bad(TrackerConfig { lost_timeout_s: f64::INFINITY, ..d() }), "lost_timeout_s");
        assert_eq!(bad(TrackerConfig { max_duration_s: 0.0, ..d() }), "max_duration_s");
        assert_eq!(bad(TrackerConfig { min_hits: 0, ..d() }), "min_hits");
        assert_eq!(bad(TrackerConfig { max_tracks: 0, ..d() }), "max_tracks");
    }
}
