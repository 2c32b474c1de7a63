//! Per-camera face tracker: turns per-frame face detections into one closed track
//! (one `sightline.sighting/1`) per person-pass through the camera's view.
//!
//! # Method
//!
//! A SORT / ByteTrack-style tracker:
//!
//! * **Motion.** Every track has a constant-velocity Kalman filter over the box
//!   `(cx, cy, a = w/h, h)` and its four velocities (ByteTrack's `KalmanFilterXYAH`).
//!   All noise standard deviations are proportional to the box height, as in
//!   ByteTrack, except those of the aspect ratio. Analysis runs at about 5 fps but
//!   frames can be dropped, so the filter is predicted with the real time step `dt`
//!   in seconds: velocities are in pixels per second and the process noise is a
//!   white-noise density (variance grows linearly with `dt`). A track that was not
//!   matched in the previous frame has its height velocity zeroed before predicting
//!   (as ByteTrack does), so a box coasting through an occlusion cannot shrink or
//!   grow without bound. The noise levels are ByteTrack's, converted to per-second
//!   units and retuned for faces (see the constants in `kalman.rs`).
//! * **Association**, in two stages (ByteTrack):
//!   1. detections with `det_score >= high_score` against all live tracks;
//!   2. the remaining detections with `low_score <= det_score < high_score` against
//!      the still unmatched tracks **that were matched in the previous frame**
//!      (ByteTrack's "tracked" state). Low-score faces are typically a face turning
//!      away or going into occlusion: they may carry on a track that was visible a
//!      moment ago but are too unreliable to revive one that was already missing.
//!
//!   Detections below `low_score`, and malformed ones (a non-finite number, a box of
//!   zero size), are ignored.
//!   In both stages the cost of a (track, detection) pair is
//!
//!   ```text
//!   cost = (1 - IoU(predicted box, detection box))
//!        + embedding_weight * min(emb_dist / max_embedding_distance, 1)
//!   ```
//!
//!   where `emb_dist` is the Euclidean distance between the detection's embedding and
//!   the track's *appearance*: an exponential moving average (momentum
//!   [`APPEARANCE_MOMENTUM`], as in BoT-SORT / StrongSORT) of the embeddings of its
//!   high-score matches. The average is steadier than the most recent embedding (one
//!   blurred frame does not derail it) yet follows slow appearance changes such as a
//!   head turning. A pair with `IoU < min_iou` or `emb_dist > max_embedding_distance`
//!   is infeasible. When either side has no usable embedding (empty, non-finite or of
//!   another length) the pair is gated on IoU alone and its embedding term counts as
//!   the worst acceptable one (1).
//!
//!   **Appearance fallback** (first stage only). A pair with `IoU < min_iou` is still
//!   feasible when both sides have a usable embedding and both
//!
//!   ```text
//!   emb_dist    < reid_distance
//!   centre_dist < max_jump * h * max(1, 5 * since_hit)
//!   ```
//!
//!   hold, where `centre_dist` is the Euclidean distance between the centres of the
//!   predicted box and the detection box, `h` the predicted box height, `since_hit`
//!   the time in seconds since the track was last matched (including the current
//!   step) and 5 the nominal analysis rate ([`NOMINAL_FPS`]): a track matched in the
//!   previous frame at 5 fps may jump `max_jump` heights, and the allowance grows in
//!   proportion when frames were dropped or the track missed some. Such a pair costs
//!
//!   ```text
//!   cost = 1 + embedding_weight * min(emb_dist / max_embedding_distance, 1)
//!   ```
//!
//!   i.e. what an IoU-feasible pair with `IoU = 0` would cost, so for the same
//!   embedding distance an IoU-feasible pair is always cheaper and is preferred. The
//!   fallback catches a face that moves more than `min_iou` allows before its track
//!   knows its velocity (see *Parameters*). Low-score detections never use it: they
//!   are too unreliable to be associated on appearance alone.
//!
//!   The assignment is optimal (Hungarian algorithm): the largest number of feasible
//!   pairs, and among those the lowest total cost.
//! * **Births.** An unmatched first-stage detection with `det_score >= new_track_score`
//!   starts a track.
//! * **Deaths.** A track not matched for `lost_timeout_s` closes ([`CloseReason::Lost`]).
//!   A track whose first hit is `max_duration_s` old closes ([`CloseReason::MaxDuration`])
//!   and its motion and appearance state carries on under a new id, so a person who
//!   stays in view yields one sighting per `max_duration_s`. [`Tracker::flush`] closes
//!   everything ([`CloseReason::Flushed`]). A closed track is emitted as a
//!   [`ClosedTrack`] only if it has at least `min_hits` matched detections; otherwise
//!   it is dropped silently (a false positive, or a continuation that never got a hit).
//! * **Best shot.** Of a track's matched observations only the best is kept: the
//!   highest `quality`, ties broken by `det_score`, and an observation with a usable
//!   embedding always beats one without (the sighting carries the best shot's
//!   embedding). Memory per track is bounded: a filter, an appearance vector and one
//!   observation.
//! * **Capacity.** At most `max_tracks` tracks live at once. When the tracker is full,
//!   unmatched detections do not start tracks (highest scores get the last free slots);
//!   these would have been the newest, unconfirmed tracks. Each one is counted in
//!   [`Tracker::dropped_tracks`].
//!
//! # Time
//!
//! Timestamps are frame capture times and expected to be non-decreasing. A step
//! backwards counts as `dt = 0` and the tracker then follows the new clock, so a
//! clock correction of any size neither panics nor freezes it. Timeouts and ages
//! are accumulated from these clamped steps rather than from timestamp differences.
//! A closed track reports the earliest and latest timestamps of its matched
//! detections, so `first_seen <= best_ts <= last_seen` always holds.
//!
//! # Parameters
//!
//! See [`TrackerConfig`]; [`TrackerConfig::validate`] checks a configuration and
//! [`Tracker::new`] panics on an invalid one.
//!
//! `min_iou` bounds how far a face may move between analysed frames on IoU alone:
//! two boxes of equal size shifted by a fraction `s` of their width overlap with
//! `IoU = (1 - s) / (1 + s)`, so the default 0.2 allows `s <= 2/3`. Once a track's
//! velocity is known the prediction absorbs steady motion, but on a track's second
//! frame (velocity still 0) a face moving faster than that, e.g. at 5 fps one
//! crossing the view at more than ~3 face widths per second, does not overlap its
//! track enough. Such a face is associated by the appearance fallback instead, if
//! it has an embedding within `reid_distance` of the track's appearance (default
//! 0.55, below dlib's same-person threshold of 0.6) and moved less than `max_jump`
//! box heights (default 2, i.e. 10 face heights per second at 5 fps, against ~6 for
//! a walker). Faces without embeddings still rely on IoU alone.
//!
//! # Files
//!
//! * `tracking.rs`: the [`Tracker`] itself (association, births, deaths, best shot);
//! * `config.rs`: [`TrackerConfig`] and its validation;
//! * `kalman.rs`: the constant-velocity Kalman filter over `(cx, cy, a, h)`;
//! * `assign.rs`: the optimal assignment (Hungarian algorithm), also used by the tests'
//!   simulator for the identity matching of its IDF1 metric ([`assign::hungarian`]).

pub mod assign;
mod config;
mod kalman;
mod tracking;

pub use self::config::{NOMINAL_FPS, TrackerConfig, TrackerConfigError};
pub use self::tracking::{APPEARANCE_MOMENTUM, CloseReason, ClosedTrack, FaceObservation, Tracker};
