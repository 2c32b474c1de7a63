//! Cross-camera correlation: each sighting joins the trajectory it most likely belongs to, or
//! starts a new one. See `docs/correlation.md` for the method, its failure modes and its tuning.
//!
//! A sighting is compared only with the live trajectories that
//! 1. carry embeddings of the same `model` (and length),
//! 2. have a member within `horizon_s` of it in event time,
//! 3. stay physically possible with it inserted at its place *in event time*: the members just
//!    before and just after it, and any member overlapping it, pass the site model's gates
//!    (speed, links, one track at a time per camera).
//!
//! Among those, the trajectory whose appearance is closest wins if its distance is at most
//! `max_distance` and no other trajectory of a *different-looking* person comes within `margin`
//! of it; otherwise the sighting starts a new trajectory. Nothing is random and ties are broken
//! on trajectory ids, so the same sightings in the same order give the same trajectories.

mod camera_looks;
mod config;
mod correlator;
mod per_site;

pub use config::{
    Appearance, CorrelationConfig, DEFAULT_APPEARANCE_MEMBERS, DEFAULT_CAMERA_WARMUP, DEFAULT_HORIZON_S,
    DEFAULT_MARGIN, DEFAULT_MAX_DISTANCE, DEFAULT_MERGE_DISTANCE,
};
pub use correlator::{Assignment, Correlator, CorrelatorStats, Merge, Observation};
pub use per_site::SiteCorrelators;
pub use uuid::Uuid;
