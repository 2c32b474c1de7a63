//! Alert rules: crowd thresholds, electronic fences and camera health, turned into
//! `sightline.alert/1` raise/clear pairs ready to publish.
//!
//! This module is pure logic: every method takes the time (`now`) and the observations, and
//! returns the [`Alert`](sightline_contract::Alert)s to publish. Nothing here reads the clock, touches the network or
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
//!
//! # Files
//!
//! * `config.rs`: the TOML schema (`[[camera.zone]]`, `[[camera.rule]]`, `[camera.health]`) and
//!   [`validate`];
//! * `schedule.rs`: the zone [`Schedule`] parser and clock;
//! * `hysteresis.rs`: the [`Hysteresis`] debouncer every alert is driven by;
//! * `engine.rs`: [`CameraRules`], one camera's engine (crowd rules, fences, camera health);
//! * `slot.rs`: one alert's raise/clear episode and its contract message;
//! * `text.rs`: how messages write counts and durations.

mod config;
mod engine;
mod hysteresis;
mod schedule;
mod slot;
mod text;

pub use self::config::{HealthConfig, RuleConfig, RulesConfigError, ZoneConfig, validate};
pub use self::engine::{CameraRules, FrameHealth};
pub use self::hysteresis::{Hysteresis, Transition};
pub use self::schedule::Schedule;

#[cfg(test)]
mod testing;
