//! `[correlation]`: the thresholds and rules of the correlator, their defaults and their checks.

use serde::{Deserialize, Serialize};

use crate::site::SiteError;

/// Default `max_distance`: the dlib same-person threshold (models manifest: same person
/// 0.06–0.55, different people from 0.65).
pub const DEFAULT_MAX_DISTANCE: f32 = 0.6;
/// Default `margin`, measured on the simulator (docs/correlation.md, "Tuning").
pub const DEFAULT_MARGIN: f32 = 0.05;
/// Default `horizon_s`: half an hour.
pub const DEFAULT_HORIZON_S: f64 = 1800.0;
/// Default `appearance_members`.
pub const DEFAULT_APPEARANCE_MEMBERS: usize = 16;
/// Default `merge_distance`, measured on the simulator (docs/correlation.md, "Tuning").
pub const DEFAULT_MERGE_DISTANCE: f32 = 0.4;
/// Default `camera_warmup`: sightings of a camera before its shift is removed.
pub const DEFAULT_CAMERA_WARMUP: u64 = 100;

/// How a trajectory's appearance is compared with a sighting's embedding, over its
/// `appearance_members` most recent members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Appearance {
    /// Mean of the distances to the members (default). On the scale of a pairwise dlib
    /// distance, so `max_distance` keeps its meaning; one odd shot cannot carry a look-alike in.
    MeanDistance,
    /// Distance to the mean of the members' embeddings. Per-shot noise averages out, so distances
    /// are smaller than pairwise ones for everybody: it needs `max_distance` ≈ 0.55.
    Centroid,
    /// Smallest distance to any member: one similar shot is enough, so look-alikes merge more.
    Nearest,
}

fn default_max_distance() -> f32 {
    DEFAULT_MAX_DISTANCE
}
fn default_margin() -> f32 {
    DEFAULT_MARGIN
}
fn default_horizon() -> f64 {
    DEFAULT_HORIZON_S
}
fn default_appearance() -> Appearance {
    Appearance::MeanDistance
}
fn default_members() -> usize {
    DEFAULT_APPEARANCE_MEMBERS
}
fn default_true() -> bool {
    true
}
fn default_merge_distance() -> f32 {
    DEFAULT_MERGE_DISTANCE
}
fn default_camera_warmup() -> u64 {
    DEFAULT_CAMERA_WARMUP
}

/// `[correlation]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// A sighting joins a trajectory only if its embedding distance to the trajectory's appearance
    /// is at most this (Euclidean, dlib units, (0, 2]). Default 0.6.
    #[serde(default = "default_max_distance")]
    pub max_distance: f32,
    /// The best trajectory must beat the runner-up by at least this much, unless the two look
    /// like the same person; otherwise the sighting starts a new trajectory ([0, 1]). Default 0.05.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// A sighting further than this (s) in event time from every member of a trajectory cannot
    /// join it (> 0). Default 1800.
    #[serde(default = "default_horizon")]
    pub horizon_s: f64,
    /// How a trajectory's appearance is compared. Default `mean_distance`.
    #[serde(default = "default_appearance")]
    pub appearance: Appearance,
    /// How many of a trajectory's most recent members (in event time) make its appearance
    /// ([1, 1024]). Default 16.
    #[serde(default = "default_members")]
    pub appearance_members: usize,
    /// Remove each camera's shared shift from its embeddings before comparing them
    /// (`correlate/camera_looks.rs`). Default true.
    #[serde(default = "default_true")]
    pub camera_aware: bool,
    /// Sightings of a camera before its shift is removed ([1, 100000]). Default 100.
    #[serde(default = "default_camera_warmup")]
    pub camera_warmup: u64,
    /// Merge a trajectory into another live one when their mean embeddings agree and their union
    /// is feasible (`correlate/correlator/repair.rs`). Default true.
    #[serde(default = "default_true")]
    pub repair: bool,
    /// Largest distance between two trajectories' mean embeddings that merges them ((0, 2]).
    /// Default 0.4.
    #[serde(default = "default_merge_distance")]
    pub merge_distance: f32,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            max_distance: DEFAULT_MAX_DISTANCE,
            margin: DEFAULT_MARGIN,
            horizon_s: DEFAULT_HORIZON_S,
            appearance: Appearance::MeanDistance,
            appearance_members: DEFAULT_APPEARANCE_MEMBERS,
            camera_aware: true,
            camera_warmup: DEFAULT_CAMERA_WARMUP,
            repair: true,
            merge_distance: DEFAULT_MERGE_DISTANCE,
        }
    }
}

impl CorrelationConfig {
    /// Checks every value; the error names the key (`correlation.margin`, …).
    pub fn validate(&self) -> Result<(), SiteError> {
        let d = self.max_distance;
        if !(d.is_finite() && d > 0.0 && d <= 2.0) {
            return Err(SiteError::new("correlation.max_distance", "must be in (0, 2]"));
        }
        if !(self.margin.is_finite() && (0.0..=1.0).contains(&self.margin)) {
            return Err(SiteError::new("correlation.margin", "must be in [0, 1]"));
        }
        if !(self.horizon_s.is_finite() && self.horizon_s > 0.0) {
            return Err(SiteError::new("correlation.horizon_s", "must be a finite number of seconds > 0"));
        }
        if !(1..=1024).contains(&self.appearance_members) {
            return Err(SiteError::new("correlation.appearance_members", "must be in [1, 1024]"));
        }
        let m = self.merge_distance;
        if !(m.is_finite() && m > 0.0 && m <= 2.0) {
            return Err(SiteError::new("correlation.merge_distance", "must be in (0, 2]"));
        }
        if !(1..=100_000).contains(&self.camera_warmup) {
            return Err(SiteError::new("correlation.camera_warmup", "must be in [1, 100000]"));
        }
        Ok(())
    }
}
