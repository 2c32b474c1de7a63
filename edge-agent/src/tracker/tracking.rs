//! The tracker itself: per-frame association of faces to tracks, births, deaths, the best shot
//! and the closed tracks that become sightings (see the module documentation of
//! [`tracker`](super) for the method).

use time::{Duration, OffsetDateTime};

use super::assign::assign;
use super::config::{NOMINAL_FPS, TrackerConfig, positive_duration};
use super::kalman::{Kalman, measurement};

/// One face in one analysed frame (coordinates in source-frame pixels).
#[derive(Clone, Debug)]
pub struct FaceObservation {
    /// `[x, y, w, h]`.
    pub bbox: [f32; 4],
    pub landmarks: [[f32; 2]; 5],
    /// Detector confidence, 0..1.
    pub det_score: f32,
    /// 0..1, computed upstream (size, frontality, sharpness, score).
    pub quality: f32,
    /// 128-d dlib embedding; metric: Euclidean, same person < 0.6. May be empty.
    pub embedding: Vec<f32>,
}

/// Why a track was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Not matched for `lost_timeout_s`.
    Lost,
    /// Reached `max_duration_s`; the person's track continues under a new id.
    MaxDuration,
    /// Closed by [`Tracker::flush`].
    Flushed,
}

/// A closed track: becomes exactly one `sightline.sighting/1`.
#[derive(Clone, Debug)]
pub struct ClosedTrack {
    /// Local id, unique per camera tracker, allocated in increasing order.
    pub track: u64,
    /// Earliest timestamp of a matched detection.
    pub first_seen: OffsetDateTime,
    /// Latest timestamp of a matched detection.
    pub last_seen: OffsetDateTime,
    /// Number of matched detections.
    pub hits: u32,
    /// Timestamp of the frame of `best`.
    pub best_ts: OffsetDateTime,
    /// Best shot: highest quality (tie: det_score), preferring one with an embedding.
    pub best: FaceObservation,
    pub reason: CloseReason,
}

/// Momentum of a track's appearance embedding (exponential moving average).
pub const APPEARANCE_MOMENTUM: f32 = 0.9;

/// Multi-object face tracker for one camera (one instance per camera stream).
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    lost_timeout: Duration,
    max_duration: Duration,
    tracks: Vec<Track>,
    next_id: u64,
    /// Timestamp of the last call, `None` before the first.
    clock: Option<OffsetDateTime>,
    dropped: u64,
}

impl Tracker {
    /// # Panics
    /// If `cfg` is invalid ([`TrackerConfig::validate`]): validate when loading config.
    pub fn new(cfg: TrackerConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        Self {
            lost_timeout: positive_duration(cfg.lost_timeout_s).expect("validated"),
            max_duration: positive_duration(cfg.max_duration_s).expect("validated"),
            cfg,
            tracks: Vec::new(),
            next_id: 1,
            clock: None,
            dropped: 0,
        }
    }

    /// Feeds one analysed frame (possibly with no faces) captured at `ts`.
    /// Returns the tracks this update closed and emits, in increasing id order.
    pub fn update(&mut self, ts: OffsetDateTime, faces: Vec<FaceObservation>) -> Vec<ClosedTrack> {
        let mut closed = Vec::new();
        self.advance(ts);
        self.expire_lost(&mut closed);
        for t in &mut self.tracks {
            t.predict();
        }
        let unmatched = self.associate(ts, faces);
        self.split_long(&mut closed);
        self.spawn(ts, unmatched);
        closed.sort_by_key(|c| c.track);
        closed
    }

    /// Time passes with no frame (stream silent): closes tracks that timed out by `now`
    /// (and splits those that reached `max_duration_s`).
    pub fn tick(&mut self, now: OffsetDateTime) -> Vec<ClosedTrack> {
        let mut closed = Vec::new();
        self.advance(now);
        self.expire_lost(&mut closed);
        self.split_long(&mut closed);
        closed.sort_by_key(|c| c.track);
        closed
    }

    /// Closes every track (stream ended, shutdown), whether or not it has timed out:
    /// those with at least `min_hits` hits are returned, with reason
    /// [`CloseReason::Flushed`], in increasing id order. `now` becomes the tracker's
    /// clock, from which a later [`Tracker::update`] measures its time step.
    pub fn flush(&mut self, now: OffsetDateTime) -> Vec<ClosedTrack> {
        self.advance(now);
        let mut closed: Vec<ClosedTrack> = std::mem::take(&mut self.tracks)
            .into_iter()
            .filter_map(|t| self.close(t.id, t.segment, CloseReason::Flushed))
            .collect();
        closed.sort_by_key(|c| c.track);
        closed
    }

    /// Number of live tracks, including tentative ones.
    pub fn active(&self) -> usize {
        self.tracks.len()
    }

    /// Detections that did not start a track because `max_tracks` tracks were live.
    pub fn dropped_tracks(&self) -> u64 {
        self.dropped
    }

    /// Moves the clock to `t`, ageing every track by the (non-negative) step.
    fn advance(&mut self, t: OffsetDateTime) {
        let dt = match self.clock {
            Some(prev) if t >= prev => t - prev,
            Some(prev) => {
                tracing::debug!(%prev, %t, "tracker: timestamp went backwards; dt = 0");
                Duration::ZERO
            }
            None => Duration::ZERO,
        };
        self.clock = Some(t);
        for tr in &mut self.tracks {
            tr.since_hit = tr.since_hit.saturating_add(dt);
            tr.unpredicted = tr.unpredicted.saturating_add(dt);
            if let Some(seg) = &mut tr.segment {
                seg.age = seg.age.saturating_add(dt);
            }
        }
    }

    fn expire_lost(&mut self, out: &mut Vec<ClosedTrack>) {
        let timeout = self.lost_timeout;
        let lost: Vec<Track> = self.tracks.extract_if(.., |t| t.since_hit >= timeout).collect();
        for t in lost {
            out.extend(self.close(t.id, t.segment, CloseReason::Lost));
        }
    }

    /// Closes the segments that reached `max_duration_s`; their tracks continue under new ids.
    fn split_long(&mut self, out: &mut Vec<ClosedTrack>) {
        for i in 0..self.tracks.len() {
            let t = &mut self.tracks[i];
            if t.segment.as_ref().is_some_and(|s| s.age >= self.max_duration) {
                let segment = t.segment.take();
                let old_id = std::mem::replace(&mut t.id, self.next_id);
                self.next_id += 1;
                out.extend(self.close(old_id, segment, CloseReason::MaxDuration));
            }
        }
    }

    /// The emitted form of a closed segment, if it has enough hits.
    fn close(&self, id: u64, segment: Option<Segment>, reason: CloseReason) -> Option<ClosedTrack> {
        let s = segment.filter(|s| s.hits >= self.cfg.min_hits)?;
        Some(ClosedTrack {
            track: id,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            hits: s.hits,
            best_ts: s.best_ts,
            best: s.best,
            reason,
        })
    }

    /// Both association stages; applies the matches and returns the unmatched
    /// first-stage detections.
    fn associate(&mut self, ts: OffsetDateTime, faces: Vec<FaceObservation>) -> Vec<FaceObservation> {
        let (mut high, mut low): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for f in faces {
            if !is_valid(&f) {
                tracing::debug!(?f.bbox, f.det_score, f.quality, "tracker: ignoring malformed face");
            } else if f.det_score >= self.cfg.high_score {
                high.push(Some(f));
            } else if f.det_score >= self.cfg.low_score {
                low.push(Some(f));
            }
        }
        let boxes: Vec<[f64; 4]> = self.tracks.iter().map(|t| t.kf.bbox()).collect();

        let all: Vec<usize> = (0..self.tracks.len()).collect();
        let first = self.match_stage(&all, &boxes, &high, true);
        let mut matched = vec![false; self.tracks.len()];
        for &(t, _) in &first {
            matched[t] = true;
        }
        let recent: Vec<usize> =
            all.into_iter().filter(|&t| !matched[t] && self.tracks[t].matched_last_frame).collect();
        let second = self.match_stage(&recent, &boxes, &low, false);

        for t in &mut self.tracks {
            t.matched_last_frame = false;
        }
        for (t, d) in first {
            let obs = high[d].take().expect("each detection matched once");
            self.tracks[t].hit(ts, obs, true);
        }
        for (t, d) in second {
            let obs = low[d].take().expect("each detection matched once");
            self.tracks[t].hit(ts, obs, false);
        }
        high.into_iter().flatten().collect()
    }

    /// Optimal assignment of `dets` to the tracks `candidates` (indices into
    /// `self.tracks`, predicted boxes in `boxes`); `reid` enables the appearance
    /// fallback (first stage). Returns (track index, det index).
    fn match_stage(
        &self,
        candidates: &[usize],
        boxes: &[[f64; 4]],
        dets: &[Option<FaceObservation>],
        reid: bool,
    ) -> Vec<(usize, usize)> {
        if candidates.is_empty() || dets.is_empty() {
            return Vec::new();
        }
        let jumps: Vec<Option<f64>> = candidates
            .iter()
            .map(|&t| reid.then(|| self.jump_allowance(&boxes[t], self.tracks[t].since_hit)))
            .collect();
        assign(candidates.len(), dets.len(), |r, c| {
            let t = candidates[r];
            let d = dets[c].as_ref().expect("unmatched before assignment");
            self.pair_cost(&boxes[t], &self.tracks[t].appearance, d, jumps[r])
        })
        .into_iter()
        .map(|(r, c)| (candidates[r], c))
        .collect()
    }

    /// The appearance fallback's largest centre jump, in pixels, for a track with
    /// predicted box `predicted` last matched `since_hit` ago:
    /// `max_jump * h * max(1, NOMINAL_FPS * since_hit_s)`.
    fn jump_allowance(&self, predicted: &[f64; 4], since_hit: Duration) -> f64 {
        let frames = (NOMINAL_FPS * since_hit.as_seconds_f64()).max(1.0);
        f64::from(self.cfg.max_jump) * predicted[3] * frames
    }

    /// Association cost of a track (predicted box, appearance) and a detection;
    /// `None` when the pair is gated out. `max_jump` (pixels) enables the appearance
    /// fallback for a pair below `min_iou`; `None` disables it.
    fn pair_cost(
        &self,
        predicted: &[f64; 4],
        appearance: &[f32],
        det: &FaceObservation,
        max_jump: Option<f64>,
    ) -> Option<f64> {
        let det_box = det.bbox.map(f64::from);
        let overlap = iou(predicted, &det_box);
        let max_dist = f64::from(self.cfg.max_embedding_distance);
        let emb_dist = embedding_distance(appearance, &det.embedding);
        let weight = f64::from(self.cfg.embedding_weight);
        if overlap < f64::from(self.cfg.min_iou) {
            // Appearance fallback: close embeddings and a bounded jump, both required.
            let (max_jump, d) = max_jump.zip(emb_dist)?;
            let centre = |b: &[f64; 4]| (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0);
            let ((px, py), (dx, dy)) = (centre(predicted), centre(&det_box));
            let jump = (px - dx).hypot(py - dy);
            // Written so that NaN fails the gates.
            if !(d < f64::from(self.cfg.reid_distance) && jump < max_jump) {
                return None;
            }
            return Some(1.0 + weight * (d / max_dist).min(1.0));
        }
        let appearance_term = match emb_dist {
            Some(d) if d > max_dist => return None,
            Some(d) => (d / max_dist).min(1.0),
            None => 1.0,
        };
        Some((1.0 - overlap) + weight * appearance_term)
    }

    /// Starts tracks from unmatched detections that score high enough, best first,
    /// while there is room.
    fn spawn(&mut self, ts: OffsetDateTime, mut unmatched: Vec<FaceObservation>) {
        unmatched.retain(|f| f.det_score >= self.cfg.new_track_score);
        unmatched.sort_by(|a, b| b.det_score.total_cmp(&a.det_score));
        for obs in unmatched {
            if self.tracks.len() >= self.cfg.max_tracks {
                self.dropped += 1;
                tracing::debug!(max_tracks = self.cfg.max_tracks, "tracker full: face does not start a track");
                continue;
            }
            self.tracks.push(Track::new(self.next_id, ts, obs));
            self.next_id += 1;
        }
    }
}

/// A live track.
#[derive(Debug)]
struct Track {
    id: u64,
    kf: Kalman,
    /// EMA of the embeddings of first-stage matches; empty until one had a usable embedding.
    appearance: Vec<f32>,
    /// Matched in the most recent frame (ByteTrack's "tracked" state).
    matched_last_frame: bool,
    /// Time since the last matched detection.
    since_hit: Duration,
    /// Elapsed time not yet applied to the filter (ticks advance time without predicting).
    unpredicted: Duration,
    /// What the next [`ClosedTrack`] of this track will report; `None` for a track
    /// that continues after a max-duration split and has not been matched since.
    segment: Option<Segment>,
}

#[derive(Debug)]
struct Segment {
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    hits: u32,
    /// Time since the segment's first hit.
    age: Duration,
    best_ts: OffsetDateTime,
    best: FaceObservation,
}

impl Track {
    fn new(id: u64, ts: OffsetDateTime, obs: FaceObservation) -> Self {
        let mut t = Self {
            id,
            kf: Kalman::new(measurement(&obs.bbox)),
            appearance: Vec::new(),
            matched_last_frame: true,
            since_hit: Duration::ZERO,
            unpredicted: Duration::ZERO,
            segment: None,
        };
        t.record(ts, obs, true);
        t
    }

    fn predict(&mut self) {
        if !self.matched_last_frame {
            self.kf.mean[7] = 0.0;
        }
        self.kf.predict(self.unpredicted.as_seconds_f64());
        self.unpredicted = Duration::ZERO;
    }

    /// A matched detection; `first_stage` says whether it may update the appearance.
    fn hit(&mut self, ts: OffsetDateTime, obs: FaceObservation, first_stage: bool) {
        self.kf.update(measurement(&obs.bbox));
        self.since_hit = Duration::ZERO;
        self.matched_last_frame = true;
        self.record(ts, obs, first_stage);
    }

    /// Counts a hit in the current segment (starting one if needed) and keeps the
    /// best shot; a `first_stage` hit also feeds the appearance average.
    fn record(&mut self, ts: OffsetDateTime, obs: FaceObservation, first_stage: bool) {
        if first_stage && usable(&obs.embedding) {
            if self.appearance.len() == obs.embedding.len() {
                for (a, e) in self.appearance.iter_mut().zip(&obs.embedding) {
                    *a = APPEARANCE_MOMENTUM * *a + (1.0 - APPEARANCE_MOMENTUM) * e;
                }
            } else {
                self.appearance.clone_from(&obs.embedding);
            }
        }
        match &mut self.segment {
            None => {
                self.segment = Some(Segment {
                    first_seen: ts,
                    last_seen: ts,
                    hits: 1,
                    age: Duration::ZERO,
                    best_ts: ts,
                    best: obs,
                })
            }
            Some(s) => {
                s.hits = s.hits.saturating_add(1);
                s.first_seen = s.first_seen.min(ts);
                s.last_seen = s.last_seen.max(ts);
                if shot_rank(&obs) > shot_rank(&s.best) {
                    s.best = obs;
                    s.best_ts = ts;
                }
            }
        }
    }
}

/// Best-shot order: a usable embedding first, then quality, then detector score.
fn shot_rank(o: &FaceObservation) -> (bool, f32, f32) {
    (usable(&o.embedding), o.quality, o.det_score)
}

/// A face the tracker can use: finite numbers and a box of positive size.
fn is_valid(f: &FaceObservation) -> bool {
    let [_, _, w, h] = f.bbox;
    f.bbox.iter().all(|v| v.is_finite()) && w > 0.0 && h > 0.0 && f.det_score.is_finite() && f.quality.is_finite()
}

fn usable(embedding: &[f32]) -> bool {
    !embedding.is_empty() && embedding.iter().all(|v| v.is_finite())
}

/// Euclidean distance, `None` unless both embeddings are usable and of the same length.
fn embedding_distance(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || !usable(a) || !usable(b) {
        return None;
    }
    let sq: f64 = a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
    Some(sq.sqrt())
}

/// Intersection over union of two `[x, y, w, h]` boxes; 0 for degenerate or non-finite boxes.
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let area = |r: &[f64; 4]| r[2] * r[3];
    let iw = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let ih = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if !(a[2] > 0.0 && a[3] > 0.0 && b[2] > 0.0 && b[3] > 0.0 && iw > 0.0 && ih > 0.0) {
        return 0.0;
    }
    let inter = iw * ih;
    let r = inter / (area(a) + area(b) - inter);
    if r.is_finite() { r } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Frame time: `ms` milliseconds after a fixed epoch.
    fn at(ms: i64) -> OffsetDateTime {
        datetime!(2024-05-01 12:00 UTC) + Duration::milliseconds(ms)
    }

    /// Deterministic pseudo-random numbers (Knuth's MMIX LCG), no RNG crate.
    struct Lcg(u64);
    impl Lcg {
        /// Uniform in [0, 1).
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A 128-d embedding: `base` plus a small deterministic perturbation.
    fn embedding(base: &[f32], rng: &mut Lcg, noise: f32) -> Vec<f32> {
        base.iter().map(|b| b + noise * (rng.next() as f32 - 0.5)).collect()
    }

    /// A base embedding: `len` along axis `axis`.
    fn axis(axis: usize, len: f32) -> Vec<f32> {
        let mut e = vec![0.0; 128];
        e[axis] = len;
        e
    }

    fn face(cx: f32, cy: f32, size: f32, det_score: f32, quality: f32, embedding: Vec<f32>) -> FaceObservation {
        FaceObservation {
            bbox: [cx - size / 2.0, cy - size / 2.0, size, size],
            landmarks: [[cx, cy]; 5],
            det_score,
            quality,
            embedding,
        }
    }

    fn center(o: &FaceObservation) -> (f32, f32) {
        (o.bbox[0] + o.bbox[2] / 2.0, o.bbox[1] + o.bbox[3] / 2.0)
    }

    /// Feeds `frames`, collecting everything closed, and flushes at `end_ms`.
    fn run(cfg: TrackerConfig, frames: Vec<(i64, Vec<FaceObservation>)>, end_ms: i64) -> Vec<ClosedTrack> {
        let mut tr = Tracker::new(cfg);
        let mut out = Vec::new();
        for (ms, faces) in frames {
            out.extend(tr.update(at(ms), faces));
        }
        out.extend(tr.flush(at(end_ms)));
        assert_eq!(tr.active(), 0);
        out
    }

    /// Two similar-looking people (embeddings 0.6 apart: inside the gate, so only
    /// the cost term separates them) walk towards each other, pause face to face
    /// (A's face 4 px left of B's, one occluding the other), then walk on past each
    /// other. Arriving, each track's prediction overshoots onto the other person's
    /// box, and leaving, each stopped track is nearer the other person's detection:
    /// on those frames IoU alone prefers the swapped pairs.
    ///
    /// Both people's best shot is at frame `peak`, so the closed tracks tell who
    /// was assigned to which track on that frame.
    const CROSSING_FRAMES: usize = 24;
    fn crossing(embedding_weight: f32, peak: usize) -> Vec<ClosedTrack> {
        let mut rng = Lcg(7);
        let base_a = axis(0, 0.5);
        let mut base_b = axis(0, 0.5);
        base_b[1] = 0.6;
        let mut xa: Vec<f32> = (0..8).map(|i| 150.0 + 20.0 * i as f32).collect(); // ..290
        let mut xb: Vec<f32> = (0..8).map(|i| 450.0 - 20.0 * i as f32).collect(); // ..310
        xa.extend([298.0; 8]);
        xb.extend([302.0; 8]);
        xa.extend((0..8).map(|i| 312.0 + 20.0 * i as f32));
        xb.extend((0..8).map(|i| 288.0 - 20.0 * i as f32));
        assert_eq!(xa.len(), CROSSING_FRAMES);
        let frames = (0..CROSSING_FRAMES)
            .map(|k| {
                let q = if k == peak { 0.9 } else { 0.5 };
                let a = face(xa[k], 200.0, 60.0, 0.9, q, embedding(&base_a, &mut rng, 0.02));
                let b = face(xb[k], 200.0, 60.0, 0.9, q, embedding(&base_b, &mut rng, 0.02));
                (200 * k as i64, vec![a, b])
            })
            .collect();
        let cfg = TrackerConfig { embedding_weight, ..TrackerConfig::default() };
        run(cfg, frames, 200 * CROSSING_FRAMES as i64)
    }

    /// Whether a best shot is person A's (B's embedding has 0.6 on axis 1).
    fn is_a(o: &FaceObservation) -> bool {
        o.embedding[1] < 0.3
    }

    #[test]
    fn crossing_paths_keep_ids() {
        for peak in 0..CROSSING_FRAMES {
            let closed = crossing(0.25, peak);
            assert_eq!(closed.len(), 2, "{closed:?}");
            let (a, b) = (&closed[0], &closed[1]);
            assert_eq!((a.track, a.hits, b.track, b.hits), (1, 24, 2, 24));
            assert_eq!((a.best_ts, b.best_ts), (at(200 * peak as i64), at(200 * peak as i64)));
            assert!(is_a(&a.best) && !is_a(&b.best), "frame {peak}: faces assigned to the wrong tracks");
        }
        // Track 1 started as A (at the left) and ends as A (at the right).
        let closed = crossing(0.25, CROSSING_FRAMES - 1);
        assert!(center(&closed[0].best).0 > 400.0 && center(&closed[1].best).0 < 200.0);
    }

    #[test]
    fn crossing_scenario_needs_the_embedding() {
        // Control for the test above: without the appearance term some frame of
        // the crossing is misassigned, so that test fails if the embedding stops deciding.
        let swapped = (0..CROSSING_FRAMES).filter(|&peak| !is_a(&crossing(0.0, peak)[0].best)).count();
        assert!(swapped > 0);
    }

    // --- appearance fallback ------------------------------------------------

    /// Frames of a 60 px face crossing the view left to right at 1.5 face widths
    /// per frame (90 px at 5 fps, ~7.5 widths per second): IoU 0 between
    /// consecutive boxes. `emb(k)` is frame k's embedding.
    const FAST_FRAMES: i64 = 13;
    fn fast_walker(mut emb: impl FnMut(i64) -> Vec<f32>) -> Vec<(i64, Vec<FaceObservation>)> {
        (0..FAST_FRAMES)
            .map(|k| {
                let x = 40.0 + 90.0 * k as f32;
                (200 * k, vec![face(x, 300.0, 60.0, 0.9, 0.6, emb(k))])
            })
            .collect()
    }

    /// Feeds `frames`, then empty frames every 200 ms until `end_ms`; returns
    /// everything closed with the time it was closed, and the tracker.
    fn feed(frames: Vec<(i64, Vec<FaceObservation>)>, end_ms: i64) -> (Vec<(i64, ClosedTrack)>, Tracker) {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        let last = frames.last().map_or(0, |f| f.0);
        for (ms, faces) in frames {
            out.extend(tr.update(at(ms), faces).into_iter().map(|c| (ms, c)));
        }
        for ms in (last + 200..=end_ms).step_by(200) {
            out.extend(tr.update(at(ms), vec![]).into_iter().map(|c| (ms, c)));
        }
        (out, tr)
    }

    #[test]
    fn fast_walker_is_one_track_on_appearance() {
        let mut rng = Lcg(21);
        let base = axis(4, 0.5);
        let frames = fast_walker(|_| embedding(&base, &mut rng, 0.02));
        let last_ms = 200 * (FAST_FRAMES - 1);
        let (closed, mut tr) = feed(frames, last_ms + 3000);
        assert_eq!(closed.len(), 1, "{closed:?}");
        let (closed_at, c) = &closed[0];
        assert_eq!((c.track, c.reason), (1, CloseReason::Lost));
        assert_eq!(c.hits, FAST_FRAMES as u32);
        assert!(c.hits >= TrackerConfig::default().min_hits);
        assert_eq!((c.first_seen, c.last_seen), (at(0), at(last_ms)));
        assert_eq!(*closed_at, last_ms + 2000, "closes at lost_timeout");
        assert_eq!(tr.active(), 0);
        assert!(tr.flush(at(last_ms + 4000)).is_empty());
    }

    #[test]
    fn fast_faces_of_different_people_are_not_linked() {
        // The same motion, but every frame shows a different person: embeddings 0.71
        // apart, inside max_embedding_distance (0.75) but not reid_distance (0.55).
        let frames = fast_walker(|k| axis(10 + k as usize, 0.5));
        let last_ms = 200 * (FAST_FRAMES - 1);
        let (closed, mut tr) = feed(frames, last_ms + 3000);
        assert!(closed.is_empty(), "{closed:?}");
        assert!(tr.flush(at(last_ms + 4000)).is_empty());
    }

    #[test]
    fn fast_low_score_faces_are_not_linked_on_appearance() {
        // The fallback is first-stage only: a 0.6-score face 1.5 widths away does not
        // carry the track on, however similar.
        let mut tr = Tracker::new(TrackerConfig::default());
        let e = axis(4, 0.5);
        tr.update(at(0), vec![face(100.0, 300.0, 60.0, 0.9, 0.5, e.clone())]);
        tr.update(at(200), vec![face(190.0, 300.0, 60.0, 0.6, 0.5, e.clone())]);
        assert_eq!(tr.tracks.len(), 1);
        assert!(!tr.tracks[0].matched_last_frame);
        // A high-score one does.
        tr.update(at(400), vec![face(190.0, 300.0, 60.0, 0.9, 0.5, e)]);
        assert_eq!(tr.tracks.len(), 1);
        assert!(tr.tracks[0].matched_last_frame);
        assert_eq!(tr.tracks[0].segment.as_ref().unwrap().hits, 2);
    }

    /// Two look-alikes (embeddings 0.2 apart) walk right side by side, 10 face
    /// heights apart, at 1.5 face widths per frame. On their second frame (no IoU
    /// with either track) each face's embedding happens to be the *other* person's,
    /// so on appearance alone the swapped pairs are cheaper; only the jump gate
    /// keeps them apart. (Without it the tracks swap on that frame and swap back on
    /// the next, so every frame is checked; the best shots are that frame's too.)
    #[test]
    fn distant_look_alikes_do_not_swap() {
        let mut rng = Lcg(5);
        let base_a = axis(0, 0.5);
        let mut base_b = axis(0, 0.5);
        base_b[1] = 0.2;
        let mut tr = Tracker::new(TrackerConfig::default());
        let n = 8;
        for k in 0..n {
            let q = if k == 1 { 0.9 } else { 0.5 };
            let (ea, eb) = if k == 1 {
                (base_b.clone(), base_a.clone())
            } else {
                (embedding(&base_a, &mut rng, 0.02), embedding(&base_b, &mut rng, 0.02))
            };
            let xa = 100.0 + 90.0 * k as f32;
            let xb = xa + 600.0;
            let a = face(xa, 300.0, 60.0, 0.9, q, ea);
            let b = face(xb, 300.0, 60.0, 0.9, q, eb);
            assert!(tr.update(at(200 * k), vec![a, b]).is_empty());
            let xs: Vec<(u64, f64)> = tr.tracks.iter().map(|t| (t.id, t.kf.mean[0])).collect();
            assert_eq!(xs.len(), 2, "frame {k}: {xs:?}");
            assert!(xs[0].0 == 1 && (xs[0].1 - f64::from(xa)).abs() < 30.0, "frame {k}: track 1 left A: {xs:?}");
            assert!(xs[1].0 == 2 && (xs[1].1 - f64::from(xb)).abs() < 30.0, "frame {k}: track 2 left B: {xs:?}");
        }
        let closed = tr.flush(at(200 * n));
        let summary: Vec<_> = closed.iter().map(|c| (c.track, c.hits)).collect();
        assert_eq!(summary, vec![(1, 8), (2, 8)], "{closed:?}");
        let best: Vec<f32> = closed.iter().map(|c| center(&c.best).0).collect();
        assert_eq!(best, vec![190.0, 790.0], "frame 1 was assigned crosswise");
    }

    #[test]
    fn appearance_fallback_gates_and_cost() {
        let tr = Tracker::new(TrackerConfig::default());
        let predicted = [100.0, 100.0, 60.0, 60.0]; // centre (130, 130), h = 60
        let app = axis(0, 0.5);
        let mut near = axis(0, 0.5);
        near[1] = 0.3; // distance 0.3
        let at_dx = |dx: f32, e: Vec<f32>| face(130.0 + dx, 130.0, 60.0, 0.9, 0.5, e);
        let ms = Duration::milliseconds;
        let allowance = |since: Duration| Some(tr.jump_allowance(&predicted, since));
        let cost =
            |dx: f32, e: Vec<f32>, since: Duration| tr.pair_cost(&predicted, &app, &at_dx(dx, e), allowance(since));

        // max_jump (2) × h (60) × max(1, 5 × since_hit): 120 px, clamped below at 1 frame.
        assert_eq!(allowance(ms(200)), Some(120.0));
        assert_eq!(allowance(ms(0)), Some(120.0));
        assert_eq!(allowance(ms(600)), Some(360.0));

        // 1.5 heights, no overlap: feasible on appearance, cost 1 + w · d / max_d.
        let c = cost(90.0, near.clone(), ms(200)).unwrap();
        assert!((c - (1.0 + 0.25 * 0.3 / 0.75)).abs() < 1e-6, "{c}");
        // An IoU-feasible pair with the same embedding distance is cheaper.
        let iou_cost = cost(10.0, near.clone(), ms(200)).unwrap();
        assert!(iou_cost < c, "{iou_cost} vs {c}");
        // Jump gate: 2.5 heights is too far one frame on, not after a dropped frame.
        assert_eq!(cost(150.0, near.clone(), ms(200)), None);
        assert_eq!(cost(150.0, near.clone(), ms(0)), None);
        assert!(cost(150.0, near.clone(), ms(400)).is_some());
        assert_eq!(cost(250.0, near.clone(), ms(400)), None);
        // Embedding gate: 0.6 >= reid_distance (but within max_embedding_distance).
        let mut far = axis(0, 0.5);
        far[1] = 0.6;
        assert_eq!(cost(90.0, far.clone(), ms(200)), None);
        assert!(cost(10.0, far, ms(200)).is_some(), "the IoU path accepts it");
        // Both sides need a usable embedding.
        assert_eq!(cost(90.0, vec![], ms(200)), None);
        assert_eq!(cost(90.0, vec![f32::NAN; 128], ms(200)), None);
        let none = tr.pair_cost(&predicted, &[], &at_dx(90.0, near.clone()), allowance(ms(200)));
        assert_eq!(none, None);
        // Disabled (second stage).
        assert_eq!(tr.pair_cost(&predicted, &app, &at_dx(90.0, near), None), None);
    }

    #[test]
    fn face_seen_for_three_seconds_closes_once_after_timeout() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let emb = axis(3, 0.5);
        let qualities = [0.5, 0.6, 0.55, 0.7, 0.92, 0.8, 0.6, 0.92, 0.5, 0.4, 0.6, 0.7, 0.65, 0.6, 0.5, 0.3];
        for (k, q) in qualities.iter().enumerate() {
            // Frames 4 and 7 tie on quality; the later one has the higher det_score.
            let score = if k == 4 { 0.85 } else { 0.95 };
            let f = face(400.0 + 8.0 * k as f32, 300.0, 80.0, score, *q, emb.clone());
            assert!(tr.update(at(200 * k as i64), vec![f]).is_empty());
        }
        // Last hit at 3.0 s; frames keep coming, empty.
        let mut closed = Vec::new();
        for k in 16..40 {
            let got = tr.update(at(200 * k), vec![]);
            if 200 * k < 5000 {
                assert!(got.is_empty(), "closed early at {} ms", 200 * k);
            }
            if 200 * k == 5000 {
                assert_eq!(got.len(), 1, "not closed at the timeout");
            }
            closed.extend(got);
        }
        assert_eq!(closed.len(), 1);
        let c = &closed[0];
        assert_eq!(c.reason, CloseReason::Lost);
        assert_eq!((c.track, c.hits), (1, 16));
        assert_eq!(c.first_seen, at(0));
        assert_eq!(c.last_seen, at(3000));
        assert_eq!(c.best_ts, at(1400));
        assert_eq!((c.best.quality, c.best.det_score), (0.92, 0.95));
        assert_eq!(tr.active(), 0);
        assert!(tr.flush(at(10_000)).is_empty());
    }

    #[test]
    fn single_frame_false_positive_is_not_emitted() {
        let mut tr = Tracker::new(TrackerConfig::default());
        assert!(tr.update(at(0), vec![face(100.0, 100.0, 40.0, 0.95, 0.9, axis(0, 0.5))]).is_empty());
        assert_eq!(tr.active(), 1);
        let mut out = Vec::new();
        for k in 1..20 {
            out.extend(tr.update(at(200 * k), vec![]));
        }
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(tr.active(), 0);
        // Nor when flushed while still live.
        tr.update(at(5000), vec![face(100.0, 100.0, 40.0, 0.95, 0.9, axis(0, 0.5))]);
        assert!(tr.flush(at(5200)).is_empty());
    }

    /// A face drifting right at 25 px/s, seen until 2 s, missing for `gap_ms`, then
    /// seen for 2 s more.
    fn gap(gap_ms: i64) -> Vec<ClosedTrack> {
        let mut rng = Lcg(3);
        let base = axis(5, 0.5);
        let mut times: Vec<i64> = (0..=10).map(|k| 200 * k).collect();
        times.extend((0..=10).map(|k| 2000 + gap_ms + 200 * k));
        let frames = times
            .iter()
            .map(|&ms| {
                let x = 300.0 + 0.025 * ms as f32;
                (ms, vec![face(x, 240.0, 70.0, 0.9, 0.7, embedding(&base, &mut rng, 0.02))])
            })
            .collect();
        run(TrackerConfig::default(), frames, times.last().unwrap() + 200)
    }

    #[test]
    fn short_gap_keeps_the_id_long_gap_splits() {
        let short = gap(1600);
        assert_eq!(short.len(), 1, "{short:?}");
        assert_eq!((short[0].track, short[0].hits), (1, 22));
        assert_eq!(short[0].last_seen, at(5600));

        let long = gap(2400);
        assert_eq!(long.len(), 2, "{long:?}");
        assert_eq!((long[0].track, long[0].reason, long[0].hits), (1, CloseReason::Lost, 11));
        assert_eq!(long[0].last_seen, at(2000));
        assert_eq!((long[1].track, long[1].reason, long[1].hits), (2, CloseReason::Flushed, 11));
        assert_eq!(long[1].first_seen, at(4400));
    }

    #[test]
    fn max_duration_splits_a_long_track() {
        let cfg = TrackerConfig { max_duration_s: 10.0, ..TrackerConfig::default() };
        let mut rng = Lcg(11);
        let base = axis(9, 0.5);
        // 25 s in view, standing with a little jitter; quality peaks once per segment.
        let frames = (0..=125)
            .map(|k: i64| {
                let jitter = (rng.next() as f32 - 0.5) * 2.0;
                let q = if k % 50 == 25 { 0.9 } else { 0.6 };
                (200 * k, vec![face(500.0 + jitter, 300.0, 90.0, 0.92, q, embedding(&base, &mut rng, 0.02))])
            })
            .collect();
        let closed = run(cfg, frames, 25_200);
        let summary: Vec<_> = closed.iter().map(|c| (c.track, c.reason, c.hits)).collect();
        assert_eq!(
            summary,
            vec![(1, CloseReason::MaxDuration, 51), (2, CloseReason::MaxDuration, 51), (3, CloseReason::Flushed, 24),]
        );
        assert_eq!(closed[0].first_seen, at(0));
        assert_eq!(closed[0].last_seen, at(10_000));
        assert_eq!(closed[1].first_seen, at(10_200));
        assert_eq!(closed[1].last_seen, at(20_200));
        assert_eq!(closed[2].first_seen, at(20_400));
        assert_eq!(closed[2].last_seen, at(25_000));
        assert_eq!(closed[0].best_ts, at(5000));
        assert_eq!(closed[1].best_ts, at(15_000));
        for c in &closed {
            assert!(c.first_seen <= c.best_ts && c.best_ts <= c.last_seen);
        }
    }

    #[test]
    fn flush_returns_tracks_with_enough_hits() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for k in 0..6 {
            let mut faces = vec![
                face(100.0, 100.0, 50.0, 0.9, 0.5, axis(0, 0.5)),
                face(400.0, 100.0, 50.0, 0.9, 0.5, axis(1, 0.5)),
            ];
            if k >= 4 {
                faces.push(face(700.0, 100.0, 50.0, 0.9, 0.5, axis(2, 0.5)));
            }
            assert!(tr.update(at(200 * k), faces).is_empty());
        }
        assert_eq!(tr.active(), 3);
        let out = tr.flush(at(1000));
        let summary: Vec<_> = out.iter().map(|c| (c.track, c.reason, c.hits)).collect();
        assert_eq!(summary, vec![(1, CloseReason::Flushed, 6), (2, CloseReason::Flushed, 6)]);
        assert_eq!(tr.active(), 0);
        assert!(tr.flush(at(1200)).is_empty());
    }

    #[test]
    fn closed_tracks_come_in_id_order() {
        let cfg = TrackerConfig { max_duration_s: 1.0, min_hits: 1, ..TrackerConfig::default() };
        let mut tr = Tracker::new(cfg);
        let a = || face(100.0, 100.0, 50.0, 0.9, 0.5, axis(0, 0.5));
        let b = || face(400.0, 100.0, 50.0, 0.9, 0.5, axis(1, 0.5));
        tr.update(at(0), vec![a()]);
        tr.update(at(600), vec![a(), b()]); // b is track 2
        let split = tr.update(at(1000), vec![a(), b()]); // a closes, continues as 3
        assert_eq!(split.iter().map(|c| (c.track, c.reason)).collect::<Vec<_>>(), vec![(1, CloseReason::MaxDuration)]);
        tr.update(at(1200), vec![a(), b()]);
        let ids: Vec<u64> = tr.flush(at(1400)).iter().map(|c| c.track).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn coasting_track_keeps_its_size() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for k in 0..5 {
            let size = 100.0 - 10.0 * k as f32; // shrinking at 50 px/s, down to 60 px
            tr.update(at(200 * k), vec![face(300.0, 300.0, size, 0.9, 0.5, vec![])]);
        }
        for k in 5..14 {
            tr.update(at(200 * k), vec![]);
        }
        // 1.8 s unmatched: without the height-velocity reset the box would have collapsed.
        assert_eq!(tr.active(), 1);
        let h = tr.tracks[0].kf.mean[3];
        assert!(h > 40.0, "coasting box shrank to h = {h}");
    }

    #[test]
    fn tick_closes_timed_out_tracks_without_frames() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for k in 0..=5 {
            tr.update(at(200 * k), vec![face(100.0, 100.0, 50.0, 0.9, 0.5, axis(0, 0.5))]);
        }
        assert!(tr.tick(at(2900)).is_empty());
        assert_eq!(tr.active(), 1);
        let out = tr.tick(at(3000));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].reason, out[0].hits, out[0].last_seen), (CloseReason::Lost, 6, at(1000)));
        assert_eq!(tr.active(), 0);
    }

    #[test]
    fn backwards_timestamps_do_not_panic() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let f = |x: f32| face(x, 100.0, 50.0, 0.9, 0.5, axis(0, 0.5));
        let mut out = Vec::new();
        for (ms, x) in [(0, 100.0), (200, 104.0), (400, 108.0), (100, 112.0), (300, 116.0), (-60_000, 120.0)] {
            out.extend(tr.update(at(ms), vec![f(x)]));
        }
        out.extend(tr.tick(at(-3_600_000)));
        assert!(out.is_empty(), "a clock step back must not time tracks out: {out:?}");
        assert_eq!(tr.active(), 1);
        // The tracker follows the new clock: 2 s after it, the track is lost.
        let out = tr.tick(at(-60_000 + 2000));
        assert_eq!(out.len(), 1, "{out:?}");
        let c = &out[0];
        assert_eq!((c.track, c.hits), (1, 6));
        assert_eq!((c.first_seen, c.last_seen), (at(-60_000), at(400)));
        assert!(c.first_seen <= c.best_ts && c.best_ts <= c.last_seen);
        assert!(tr.flush(at(-10_000_000)).is_empty());
    }

    #[test]
    fn low_score_faces_continue_recent_tracks_only() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let f = |s: f32| face(200.0, 200.0, 60.0, s, 0.5, axis(0, 0.5));
        tr.update(at(0), vec![f(0.9)]);
        tr.update(at(200), vec![f(0.9)]);
        tr.update(at(400), vec![f(0.6)]); // second stage: carries the track on
        tr.update(at(600), vec![f(0.4)]); // below low_score: ignored
        tr.update(at(800), vec![f(0.6)]); // track missed last frame: not revived
        assert_eq!(tr.active(), 1, "a low-score face must not start a track");
        let out = tr.flush(at(1000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hits, 3);
        assert_eq!(out[0].last_seen, at(400));
    }

    #[test]
    fn mid_score_faces_do_not_start_tracks() {
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.update(at(0), vec![face(200.0, 200.0, 60.0, 0.78, 0.5, axis(0, 0.5))]);
        assert_eq!(tr.active(), 0);
    }

    #[test]
    fn far_embeddings_never_associate() {
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.update(at(0), vec![face(200.0, 200.0, 60.0, 0.9, 0.5, axis(0, 0.5))]);
        // Same place, a different person (distance 1.3 > 0.75): a new track.
        tr.update(at(200), vec![face(200.0, 200.0, 60.0, 0.9, 0.5, axis(1, 1.2))]);
        assert_eq!(tr.active(), 2);
    }

    #[test]
    fn faces_without_embeddings_track_on_iou_and_lose_the_best_shot() {
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.update(at(0), vec![face(200.0, 200.0, 60.0, 0.9, 0.99, vec![])]);
        tr.update(at(200), vec![face(202.0, 200.0, 60.0, 0.9, 0.5, axis(0, 0.5))]);
        tr.update(at(400), vec![face(204.0, 200.0, 60.0, 0.9, 0.95, vec![f32::NAN; 128])]);
        assert_eq!(tr.active(), 1);
        let out = tr.flush(at(600));
        assert_eq!(out[0].hits, 3);
        assert_eq!(out[0].best_ts, at(200), "the shot with an embedding wins");
    }

    #[test]
    fn malformed_faces_are_ignored() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut bad = face(200.0, 200.0, 60.0, 0.9, 0.5, vec![]);
        bad.bbox[2] = 0.0;
        let mut nan = face(400.0, 200.0, 60.0, 0.9, 0.5, vec![]);
        nan.bbox[0] = f32::NAN;
        let mut nan_score = face(600.0, 200.0, 60.0, 0.9, 0.5, vec![]);
        nan_score.det_score = f32::NAN;
        tr.update(at(0), vec![bad, nan, nan_score]);
        assert_eq!(tr.active(), 0);
    }

    #[test]
    fn capacity_is_bounded_and_drops_are_counted() {
        let cfg = TrackerConfig { max_tracks: 3, ..TrackerConfig::default() };
        let mut tr = Tracker::new(cfg);
        let scores = [0.81, 0.99, 0.85, 0.95, 0.9];
        let faces: Vec<_> = scores
            .iter()
            .enumerate()
            .map(|(i, &s)| face(100.0 + 150.0 * i as f32, 100.0, 60.0, s, 0.5, vec![]))
            .collect();
        tr.update(at(0), faces.clone());
        assert_eq!((tr.active(), tr.dropped_tracks()), (3, 2));
        // The same faces again: the three tracks continue, the other two are dropped again.
        for k in 1..3 {
            tr.update(at(200 * k), faces.clone());
        }
        assert_eq!((tr.active(), tr.dropped_tracks()), (3, 6));
        let kept: Vec<f32> = tr.flush(at(600)).iter().map(|c| c.best.det_score).collect();
        assert_eq!(kept, vec![0.99, 0.95, 0.9]);
    }

    #[test]
    #[should_panic(expected = "invalid tracker config: `min_hits`")]
    fn new_panics_on_invalid_config() {
        Tracker::new(TrackerConfig { min_hits: 0, ..TrackerConfig::default() });
    }
}
