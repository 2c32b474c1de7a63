//! [`Correlator`]: the live trajectories of the correlation window and the placing of each
//! sighting among them (the rules are in the folder's documentation).
//!
//! Trajectories are kept in creation order with their members sorted in event time; their
//! centroids are kept apart, by (model, dimension), in one [`Matrix`] per group with an 8-bit copy
//! ([`Coarse`]), so that choosing a trajectory starts with one contiguous scan of a quarter of the
//! centroids' bytes, which rules out exactly the trajectories whose centroid is out of reach,
//! before the exact rules run on the few that pass.

use std::collections::HashMap;

use sightline_contract::Sighting;
use time::OffsetDateTime;
use uuid::Uuid;

use super::camera_looks::CameraLooks;
use super::config::{Appearance, CorrelationConfig};
use crate::site::{SiteError, SiteModel, same_camera_ok, span_ms, unix_ms};
use crate::vectors::{Coarse, Interner, Matrix, l2sq_lanes, l2sq_lanes_within};

mod repair;

pub use repair::Merge;

/// What the correlator needs of a sighting.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub sighting: Uuid,
    pub camera: String,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub embedding: Vec<f32>,
    pub model: String,
}

impl Observation {
    pub fn from_sighting(s: &Sighting) -> Self {
        Self {
            sighting: s.id,
            camera: s.camera.clone(),
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            embedding: s.embedding.clone(),
            model: s.model.clone(),
        }
    }
}

/// Where a sighting went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assignment {
    /// The trajectory it joined or started (new ones get a UUIDv7).
    pub trajectory: Uuid,
    /// It started the trajectory.
    pub new: bool,
    /// Embedding distance to the trajectory's appearance when it joined (`None` when `new`).
    pub distance: Option<f32>,
}

/// Counters since the correlator was created (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorrelatorStats {
    /// Sightings that joined an existing trajectory.
    pub joined: u64,
    /// Sightings that started a trajectory (all reasons, including the two below).
    pub started: u64,
    /// ... of which because two different-looking trajectories were within `margin`.
    pub ambiguous: u64,
    /// ... of which because the embedding was empty or not finite (never compared).
    pub unusable: u64,
    /// Sightings already placed (redelivered): answered with their first assignment.
    pub duplicates: u64,
    /// Trajectories merged into another (`correlator/repair.rs`).
    pub merged: u64,
}

#[derive(Clone, Debug)]
struct Member {
    sighting: Uuid,
    cam: u32,
    start: i64,
    end: i64,
    /// Empty once the member is no longer among the `appearance_members` most recent, or when it
    /// cannot be compared (restored with another model).
    emb: Box<[f32]>,
}

#[derive(Clone, Debug)]
struct Track {
    id: Uuid,
    model: u32,
    dim: usize,
    /// Sorted by (start, end, sighting).
    members: Vec<Member>,
    /// Sum of the embeddings of every member that carried a comparable one (not only the recent
    /// ones), and how many: the trajectory-level appearance that repairs compare.
    sum: Box<[f32]>,
    summed: u32,
    first: i64,
    last: i64,
    /// Its [`Group`] (by model and dimension) and row in it, where its centroid is kept.
    group: usize,
    slot: usize,
}

/// The trajectories of one (model, dimension), in creation order (as in `Correlator::tracks`),
/// column by column so that `choose` scans contiguous memory: one row of `dim` values per
/// trajectory for its centroid, the mean of its recent members' embeddings (the appearance for
/// `Appearance::Centroid`, a lower bound of the mean distance for `Appearance::MeanDistance`).
#[derive(Clone, Debug)]
struct Group {
    model: u32,
    /// One row per trajectory; meaningful only where `has`.
    centroids: Matrix,
    /// The centroids in 8 bits, row for row.
    coarse: Coarse,
    /// The trajectory has a centroid (some recent member carries an embedding).
    has: Vec<bool>,
    /// The trajectory's `first` and `last`.
    first: Vec<i64>,
    last: Vec<i64>,
    /// Index in `Correlator::tracks`.
    track: Vec<usize>,
}

impl Group {
    fn dim(&self) -> usize {
        self.centroids.dim()
    }

    fn centroid(&self, slot: usize) -> &[f32] {
        if self.has[slot] { self.centroids.row(slot) } else { &[] }
    }
}

impl Track {
    /// The members among the `k` most recent that carry an embedding.
    fn recent(&self, k: usize) -> impl Iterator<Item = &Member> {
        self.members[self.members.len().saturating_sub(k)..].iter().filter(|m| !m.emb.is_empty())
    }
}

/// A sighting ready for comparison.
struct Probe {
    cam: u32,
    start: i64,
    end: i64,
    model: u32,
    emb: Vec<f32>,
}

#[derive(Clone, Copy)]
struct Candidate {
    idx: usize,
    d2: f32,
}

/// Places sightings into trajectories. Single-threaded: wrap it in a mutex to share it.
pub struct Correlator {
    cfg: CorrelationConfig,
    site: SiteModel,
    horizon_ms: i64,
    /// In creation order.
    tracks: Vec<Track>,
    /// The tracks' centroids and spans, by (model, dimension).
    groups: Vec<Group>,
    by_id: HashMap<Uuid, usize>,
    by_sighting: HashMap<Uuid, Assignment>,
    cameras: Interner,
    /// Interned camera -> index in the site model.
    cam_site: Vec<Option<usize>>,
    models: Interner,
    /// Each camera's shift, when `camera_aware`.
    looks: CameraLooks,
    /// Merges not yet taken by [`Self::take_merges`].
    merges: Vec<Merge>,
    stats: CorrelatorStats,
}

impl Correlator {
    pub fn new(cfg: CorrelationConfig, site: SiteModel) -> Result<Self, SiteError> {
        cfg.validate()?;
        let horizon_ms = (cfg.horizon_s * 1000.0).round() as i64;
        let looks = CameraLooks::new(cfg.camera_warmup);
        Ok(Self {
            cfg,
            site,
            horizon_ms,
            tracks: Vec::new(),
            groups: Vec::new(),
            by_id: HashMap::new(),
            by_sighting: HashMap::new(),
            cameras: Interner::new(),
            cam_site: Vec::new(),
            models: Interner::new(),
            looks,
            merges: Vec::new(),
            stats: CorrelatorStats::default(),
        })
    }

    pub fn config(&self) -> &CorrelationConfig {
        &self.cfg
    }

    pub fn site(&self) -> &SiteModel {
        &self.site
    }

    pub fn stats(&self) -> CorrelatorStats {
        self.stats
    }

    /// Live trajectories.
    pub fn live(&self) -> usize {
        self.tracks.len()
    }

    /// Places a sighting (in any arrival order: it is placed by event time). A sighting already
    /// placed gets its first assignment again.
    pub fn assign(&mut self, obs: Observation) -> Assignment {
        if let Some(a) = self.by_sighting.get(&obs.sighting) {
            self.stats.duplicates += 1;
            return *a;
        }
        let sighting = obs.sighting;
        let probe = self.probe(obs);
        let usable = !probe.emb.is_empty() && probe.emb.iter().all(|x| x.is_finite());
        let choice = if usable { self.choose(&probe) } else { Err(Why::Unusable) };
        let assignment = match choice {
            Ok((idx, d)) => {
                self.stats.joined += 1;
                let inside = probe.start < self.tracks[idx].last;
                self.insert(idx, sighting, probe);
                let idx = self.repair(idx, inside);
                Assignment { trajectory: self.tracks[idx].id, new: false, distance: Some(d) }
            }
            Err(why) => {
                self.stats.started += 1;
                match why {
                    Why::Ambiguous => self.stats.ambiguous += 1,
                    Why::Unusable => self.stats.unusable += 1,
                    Why::NoCandidate => {}
                }
                let id = Uuid::now_v7();
                let idx = self.create(id, &probe);
                self.insert(idx, sighting, probe);
                Assignment { trajectory: id, new: true, distance: None }
            }
        };
        self.by_sighting.insert(sighting, assignment);
        assignment
    }

    /// Rebuilds state after a restart: puts a stored sighting back into its stored trajectory,
    /// without any gate. Replay in event-time order; a sighting already placed is ignored.
    pub fn restore(&mut self, obs: Observation, trajectory: Uuid) {
        if self.by_sighting.contains_key(&obs.sighting) {
            return;
        }
        let sighting = obs.sighting;
        let probe = self.probe(obs);
        let (idx, new) = match self.by_id.get(&trajectory) {
            Some(&idx) => (idx, false),
            None => (self.create(trajectory, &probe), true),
        };
        self.insert(idx, sighting, probe);
        self.by_sighting.insert(sighting, Assignment { trajectory, new, distance: None });
    }

    /// Drops the trajectories whose last sighting ended before `t`, and the members of live
    /// trajectories that ended before `t` and no longer count for their appearance.
    pub fn forget_before(&mut self, t: OffsetDateTime) {
        let t = unix_ms(t);
        let k = self.cfg.appearance_members;
        let Self { tracks, groups, by_sighting, by_id, .. } = self;
        let mut kept = Vec::with_capacity(tracks.len());
        tracks.retain_mut(|tr| {
            if tr.last < t {
                for m in &tr.members {
                    by_sighting.remove(&m.sighting);
                }
                kept.push(false);
                return false;
            }
            kept.push(true);
            let keep_from = tr.members.len().saturating_sub(k);
            let mut i = 0;
            tr.members.retain(|m| {
                let keep = i >= keep_from || m.end >= t;
                if !keep {
                    by_sighting.remove(&m.sighting);
                }
                i += 1;
                keep
            });
            tr.first = tr.members.iter().map(|m| m.start).min().unwrap_or(tr.first);
            true
        });
        by_id.clear();
        by_id.extend(tracks.iter().enumerate().map(|(i, tr)| (tr.id, i)));
        // Compact the groups the same way: their rows are in track order.
        let mut new_idx = Vec::with_capacity(kept.len());
        let mut n = 0usize;
        for &k in &kept {
            new_idx.push(n);
            n += usize::from(k);
        }
        for g in groups.iter_mut() {
            let Group { centroids, coarse, has, first, last, track, .. } = g;
            let w = centroids.retain_rows(|r, w| {
                let old = track[r];
                if !kept[old] {
                    return false;
                }
                let idx = new_idx[old];
                if w != r {
                    has[w] = has[r];
                    coarse.move_row(r, w);
                }
                let tr = &mut tracks[idx];
                tr.slot = w;
                first[w] = tr.first;
                last[w] = tr.last;
                track[w] = idx;
                true
            });
            coarse.truncate(w);
            has.truncate(w);
            first.truncate(w);
            last.truncate(w);
            track.truncate(w);
        }
    }

    fn probe(&mut self, obs: Observation) -> Probe {
        let (start, end) = span_ms((obs.first_seen, obs.last_seen));
        let cam = match self.cameras.get(&obs.camera) {
            Some(cam) => cam,
            None => {
                self.cam_site.push(self.site.camera_index(&obs.camera));
                self.cameras.intern(&obs.camera)
            }
        };
        let model = self.models.intern(&obs.model);
        let emb = if self.cfg.camera_aware { self.looks.adjust(cam, model, obs.embedding) } else { obs.embedding };
        Probe { cam, start, end, model, emb }
    }

    fn create(&mut self, id: Uuid, p: &Probe) -> usize {
        let idx = self.tracks.len();
        let dim = p.emb.len();
        let group = match self.groups.iter().position(|g| g.model == p.model && g.dim() == dim) {
            Some(g) => g,
            None => {
                self.groups.push(Group {
                    model: p.model,
                    centroids: Matrix::new(dim),
                    coarse: Coarse::new(dim),
                    has: Vec::new(),
                    first: Vec::new(),
                    last: Vec::new(),
                    track: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[group];
        let slot = g.track.len();
        g.centroids.push_zeros();
        g.coarse.push_zeros();
        g.has.push(false);
        g.first.push(p.start);
        g.last.push(p.end);
        g.track.push(idx);
        self.tracks.push(Track {
            id,
            model: p.model,
            dim,
            members: Vec::new(),
            sum: vec![0.0; dim].into_boxed_slice(),
            summed: 0,
            first: p.start,
            last: p.end,
            group,
            slot,
        });
        self.by_id.insert(id, idx);
        idx
    }

    fn insert(&mut self, idx: usize, sighting: Uuid, p: Probe) {
        let k = self.cfg.appearance_members;
        let tr = &mut self.tracks[idx];
        let comparable = p.model == tr.model && p.emb.len() == tr.dim && p.emb.iter().all(|x| x.is_finite());
        let emb = if comparable { p.emb.into_boxed_slice() } else { Box::default() };
        if comparable {
            tr.sum.iter_mut().zip(emb.iter()).for_each(|(s, x)| *s += x);
            tr.summed += 1;
        }
        let key = (p.start, p.end, sighting);
        let pos = tr.members.partition_point(|m| (m.start, m.end, m.sighting) < key);
        tr.members.insert(pos, Member { sighting, cam: p.cam, start: p.start, end: p.end, emb });
        tr.first = tr.first.min(p.start);
        tr.last = tr.last.max(p.end);
        let g = &mut self.groups[tr.group];
        g.first[tr.slot] = tr.first;
        g.last[tr.slot] = tr.last;
        let n = tr.members.len();
        if pos + k < n {
            // Older than the `k` most recent: never part of the appearance.
            tr.members[pos].emb = Box::default();
            return;
        }
        if n > k {
            tr.members[n - k - 1].emb = Box::default();
        }
        self.refresh_centroid(idx);
    }

    /// Recomputes the trajectory's centroid from its recent members.
    fn refresh_centroid(&mut self, idx: usize) {
        let k = self.cfg.appearance_members;
        let tr = &self.tracks[idx];
        let g = &mut self.groups[tr.group];
        let n = tr.members.len();
        {
            let mut sum = vec![0f32; tr.dim];
            let mut count = 0u32;
            for m in tr.members[n.saturating_sub(k)..].iter().filter(|m| !m.emb.is_empty()) {
                for (s, x) in sum.iter_mut().zip(m.emb.iter()) {
                    *s += x;
                }
                count += 1;
            }
            if count > 0 {
                let inv = 1.0 / count as f32;
                sum.iter_mut().for_each(|s| *s *= inv);
                g.centroids.row_mut(tr.slot).copy_from_slice(&sum);
                g.coarse.set(tr.slot, &sum);
                g.has[tr.slot] = true;
            } else {
                g.has[tr.slot] = false;
            }
        }
    }

    /// The trajectory to join (index, distance), or why none.
    fn choose(&self, p: &Probe) -> Result<(usize, f32), Why> {
        self.choose_scan(p, self.cfg.appearance == Appearance::Nearest)
    }

    /// [`Self::choose`]; `full`: compare with every trajectory instead of only those whose
    /// centroid is within reach (the same answer, except for `Appearance::Nearest`).
    fn choose_scan(&self, p: &Probe, full: bool) -> Result<(usize, f32), Why> {
        let max_d = self.cfg.max_distance;
        let limit = max_d + self.cfg.margin;
        let limit2 = limit * limit;
        let mut best: Option<Candidate> = None;
        let mut second: Option<Candidate> = None;
        let before = |a: &Candidate, b: &Candidate| (a.d2, self.tracks[a.idx].id) < (b.d2, self.tracks[b.idx].id);
        let horizon_ms = self.horizon_ms;
        let in_horizon = |first: i64, last: i64| !(p.start - last > horizon_ms || first - p.end > horizon_ms);
        let mut consider = |idx: usize| {
            let tr = &self.tracks[idx];
            if tr.model != p.model || tr.dim != p.emb.len() {
                return;
            }
            if !in_horizon(tr.first, tr.last) {
                return;
            }
            if !self.fits(tr, p) {
                return;
            }
            let Some(d2) = self.appearance_d2(tr, &p.emb, limit2) else { return };
            let c = Candidate { idx, d2 };
            match best {
                Some(b) if !before(&c, &b) => {
                    if second.is_none_or(|s| before(&c, &s)) {
                        second = Some(c);
                    }
                }
                _ => {
                    second = best;
                    best = Some(c);
                }
            }
        };
        if full {
            (0..self.tracks.len()).for_each(&mut consider);
        } else if let Some(g) = self.groups.iter().find(|g| g.model == p.model && g.dim() == p.emb.len()) {
            // The distance to the centroid is at most the appearance distance (equal for
            // `Centroid`, a lower bound for `MeanDistance`; no bound for `Nearest`, which scans
            // everything): one pass over the group's 8-bit centroids keeps every trajectory that
            // may be within `limit` of its centroid (`Coarse` proves the others are not), in
            // creation order, and only those go through the full rules above, whose exact
            // comparisons decide as a full scan would.
            let query = g.coarse.query(&p.emb);
            g.coarse.rows_maybe_within(
                &query,
                limit,
                |slot| g.has[slot] && in_horizon(g.first[slot], g.last[slot]),
                |slot| consider(g.track[slot]),
            );
        }
        let Some(b) = best else { return Err(Why::NoCandidate) };
        let d = b.d2.sqrt();
        if d > max_d {
            return Err(Why::NoCandidate);
        }
        if let Some(s) = second
            && s.d2.sqrt() - d < self.cfg.margin
            && !self.look_alike(&self.tracks[b.idx], &self.tracks[s.idx])
        {
            return Err(Why::Ambiguous);
        }
        Ok((b.idx, d))
    }

    /// The trajectory's centroid, empty if none of its recent members carries an embedding.
    fn centroid(&self, tr: &Track) -> &[f32] {
        self.groups[tr.group].centroid(tr.slot)
    }

    /// Do two trajectories look like the same person (fragments of one), by the same appearance
    /// rule and threshold as a sighting?
    fn look_alike(&self, a: &Track, b: &Track) -> bool {
        let max2 = self.cfg.max_distance * self.cfg.max_distance;
        match self.cfg.appearance {
            Appearance::Centroid => {
                let (a, b) = (self.centroid(a), self.centroid(b));
                !a.is_empty() && !b.is_empty() && l2sq_lanes(a, b) <= max2
            }
            Appearance::Nearest | Appearance::MeanDistance => {
                let k = self.cfg.appearance_members;
                let mut sum = 0.0f32;
                let mut n = 0u32;
                let mut min = f32::INFINITY;
                for x in a.recent(k) {
                    for y in b.recent(k) {
                        let d2 = l2sq_lanes(&x.emb, &y.emb);
                        min = min.min(d2);
                        sum += d2.sqrt();
                        n += 1;
                    }
                }
                match self.cfg.appearance {
                    Appearance::Nearest => min <= max2,
                    _ => n > 0 && sum / n as f32 <= self.cfg.max_distance,
                }
            }
        }
    }

    /// Squared distance from `emb` to the trajectory's appearance, `None` if above `limit2`.
    fn appearance_d2(&self, tr: &Track, emb: &[f32], limit2: f32) -> Option<f32> {
        match self.cfg.appearance {
            Appearance::Centroid => l2sq_lanes_within(self.centroid(tr), emb, limit2),
            Appearance::Nearest => {
                let k = self.cfg.appearance_members;
                let mut best: Option<f32> = None;
                for m in tr.recent(k) {
                    if let Some(d2) = l2sq_lanes_within(&m.emb, emb, best.unwrap_or(limit2)) {
                        best = Some(d2);
                    }
                }
                best
            }
            Appearance::MeanDistance => {
                // The distance to the centroid is a lower bound of the mean distance (triangle
                // inequality): most trajectories are ruled out with one comparison.
                l2sq_lanes_within(self.centroid(tr), emb, limit2)?;
                let k = self.cfg.appearance_members;
                let (mut sum, mut n) = (0.0f32, 0u32);
                for m in tr.recent(k) {
                    sum += l2sq_lanes(&m.emb, emb).sqrt();
                    n += 1;
                }
                let mean = sum / n.max(1) as f32;
                (n > 0 && mean * mean <= limit2).then_some(mean * mean)
            }
        }
    }

    /// Can the sighting be inserted into the trajectory at its place in event time? Checks the
    /// members overlapping it and the nearest member on each side that does not, and the horizon.
    fn fits(&self, tr: &Track, p: &Probe) -> bool {
        self.gap_if_feasible(tr, p.cam, (p.start, p.end)).is_some_and(|gap| gap <= self.horizon_ms)
    }

    /// The gap in event time (ms, 0 if overlapping) from a span seen by camera `cam` to the
    /// trajectory's nearest member, if the members overlapping it and the nearest member on each
    /// side that does not pass the site's gates with it; `None` if one does not.
    fn gap_if_feasible(&self, tr: &Track, cam: u32, span: (i64, i64)) -> Option<i64> {
        let m = &tr.members;
        let idx = m.partition_point(|x| x.start <= span.0);
        let mut nearest = i64::MAX;
        for x in m[..idx].iter().rev() {
            if !self.pair_ok(x, cam, span) {
                return None;
            }
            let gap = span.0 - x.end;
            nearest = nearest.min(gap.max(0));
            if gap >= 0 {
                break;
            }
        }
        for x in &m[idx..] {
            if !self.pair_ok(x, cam, span) {
                return None;
            }
            let gap = x.start - span.1;
            nearest = nearest.min(gap.max(0));
            if gap >= 0 {
                break;
            }
        }
        Some(nearest)
    }

    fn pair_ok(&self, m: &Member, cam: u32, span: (i64, i64)) -> bool {
        if m.cam == cam {
            return same_camera_ok((m.start, m.end), span);
        }
        self.site.feasible_ms(self.cam_site[m.cam as usize], (m.start, m.end), self.cam_site[cam as usize], span)
    }
}

#[derive(Debug, PartialEq)]
enum Why {
    NoCandidate,
    Ambiguous,
    Unusable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::{CameraPlace, Link, SiteConfig};
    use time::Duration;
    use time::macros::datetime;

    pub(super) const T0: OffsetDateTime = datetime!(2026-11-23 08:00:00 UTC);
    const MODEL: &str = "dlib-resnet-v1";

    /// Cameras on a line: a at 0 m, b at 120 m, c at 15 m (views overlapping a's), far at 2 km.
    fn site(links: Vec<Link>) -> SiteModel {
        let cam = |id: &str, x: f64| CameraPlace {
            id: id.into(),
            position: [x, 0.0],
            view_radius_m: 10.0,
            homography: None,
            agent: None,
        };
        SiteModel::new(
            SiteConfig::new("riverside"),
            vec![cam("a", 0.0), cam("b", 120.0), cam("c", 15.0), cam("far", 2000.0)],
            links,
        )
        .unwrap()
    }

    pub(super) fn correlator(cfg: CorrelationConfig) -> Correlator {
        Correlator::new(cfg, site(vec![])).unwrap()
    }

    /// A unit direction per person (coordinates 0/1 in distinct dimensions), plus a small offset:
    /// `person(p, e)` and `person(p, f)` are `|e - f|` apart, different people ~1.4 apart.
    fn emb(person: usize, offset: f32) -> Vec<f32> {
        let mut v = vec![0f32; 128];
        v[person] = 1.0;
        v[127] = offset;
        v
    }

    /// An embedding between two people: distance `d` from `a`'s direction (on the segment a->b).
    fn between(a: usize, b: usize, d: f32) -> Vec<f32> {
        let t = d / 2f32.sqrt();
        let mut v = vec![0f32; 128];
        v[a] = 1.0 - t;
        v[b] = t;
        v
    }

    fn obs(n: u128, camera: &str, start: f64, end: f64, embedding: Vec<f32>) -> Observation {
        Observation {
            sighting: Uuid::from_u128(n),
            camera: camera.into(),
            first_seen: T0 + Duration::seconds_f64(start),
            last_seen: T0 + Duration::seconds_f64(end),
            embedding,
            model: MODEL.into(),
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: CorrelationConfig = toml::from_str("").unwrap();
        assert_eq!(c, CorrelationConfig::default());
        assert_eq!(c.max_distance, 0.6);
        assert_eq!(c.horizon_s, 1800.0);
        assert_eq!(c.appearance, Appearance::MeanDistance);
        let c: CorrelationConfig = toml::from_str("appearance = \"nearest\"\nmargin = 0").unwrap();
        assert_eq!((c.appearance, c.margin), (Appearance::Nearest, 0.0));
        assert!(toml::from_str::<CorrelationConfig>("threshold = 0.5").is_err());
        let bad = |f: fn(&mut CorrelationConfig)| {
            let mut c = CorrelationConfig::default();
            f(&mut c);
            Correlator::new(c, site(vec![])).err().unwrap().key
        };
        assert_eq!(bad(|c| c.max_distance = 0.0), "correlation.max_distance");
        assert_eq!(bad(|c| c.margin = f32::NAN), "correlation.margin");
        assert_eq!(bad(|c| c.horizon_s = -1.0), "correlation.horizon_s");
        assert_eq!(bad(|c| c.appearance_members = 0), "correlation.appearance_members");
    }

    #[test]
    fn same_person_joins_and_distance_is_reported() {
        let mut c = correlator(CorrelationConfig::default());
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        assert!(a.new && a.distance.is_none());
        let b = c.assign(obs(2, "c", 20.0, 25.0, emb(0, 0.3)));
        assert_eq!((b.trajectory, b.new), (a.trajectory, false));
        assert!((b.distance.unwrap() - 0.3).abs() < 1e-6);
        // Another person starts their own.
        let d = c.assign(obs(3, "c", 20.0, 25.0, emb(1, 0.0)));
        assert!(d.new && d.trajectory != a.trajectory);
        assert_eq!(c.live(), 2);
        // Redelivery: the same answer, nothing added.
        assert_eq!(c.assign(obs(2, "c", 20.0, 25.0, emb(0, 0.3))), b);
        assert_eq!(
            c.stats(),
            CorrelatorStats { joined: 1, started: 2, ambiguous: 0, unusable: 0, duplicates: 1, merged: 0 }
        );
    }

    #[test]
    fn speed_gate() {
        let mut c = correlator(CorrelationConfig::default());
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        // b is 100 m of walking away: 10 s later is too fast for one person.
        let b = c.assign(obs(2, "b", 15.0, 20.0, emb(0, 0.1)));
        assert!(b.new);
        // 60 s later is a walk: both trajectories are possible, the closer one wins.
        let d = c.assign(obs(3, "b", 65.0, 70.0, emb(0, 0.02)));
        assert_eq!((d.trajectory, d.new), (a.trajectory, false));
        // 2 km in 100 s: no.
        assert!(c.assign(obs(4, "far", 170.0, 175.0, emb(0, 0.0))).new);
    }

    #[test]
    fn links_override_speed() {
        let link = Link { from: "a".into(), to: "c".into(), min_s: 120.0, max_s: None, one_way: false };
        let mut c = Correlator::new(CorrelationConfig::default(), site(vec![link])).unwrap();
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        // c's view overlaps a's, but the link says it takes 2 minutes (a fence between them).
        assert!(c.assign(obs(2, "c", 10.0, 15.0, emb(0, 0.3))).new);
        let late = c.assign(obs(3, "c", 130.0, 135.0, emb(0, 0.1)));
        assert_eq!((late.trajectory, late.new), (a.trajectory, false));
    }

    #[test]
    fn horizon() {
        let mut c = correlator(CorrelationConfig { horizon_s: 600.0, ..Default::default() });
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        assert_eq!(c.assign(obs(2, "a", 600.0, 610.0, emb(0, 0.1))).trajectory, a.trajectory);
        let far = c.assign(obs(3, "a", 1211.0, 1220.0, emb(0, 0.1)));
        assert!(far.new, "1211 - 610 > 600 s");
        // A late sighting just before the first member, within the horizon, joins.
        let early = c.assign(obs(4, "c", -300.0, -290.0, emb(0, 0.2)));
        assert_eq!(early.trajectory, a.trajectory);
    }

    #[test]
    fn threshold_and_margin() {
        let mut c = correlator(CorrelationConfig::default());
        let p = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        let q = c.assign(obs(2, "a", 10.0, 15.0, emb(1, 0.0)));
        assert!(q.new);
        // 0.61 from p: too far.
        assert!(c.assign(obs(3, "a", 20.0, 40.0, between(0, 2, 0.61))).new);
        // Between p and q (1.41 apart: different people): 0.55 from p, 0.87 from q: clear.
        let clear = c.assign(obs(4, "a", 30.0, 35.0, between(0, 1, 0.55)));
        assert_eq!(clear.trajectory, p.trajectory);
        // Two different-looking people within the margin of each other: start a new one.
        let mut c = correlator(CorrelationConfig { max_distance: 0.8, margin: 0.05, ..Default::default() });
        let _p = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        let _q = c.assign(obs(2, "a", 10.0, 15.0, emb(1, 0.0)));
        let amb = c.assign(obs(3, "a", 20.0, 25.0, between(0, 1, 0.69)));
        assert!(amb.new);
        assert_eq!(c.stats().ambiguous, 1);
        // With margin 0, the nearest wins.
        let mut c = correlator(CorrelationConfig { max_distance: 0.8, margin: 0.0, ..Default::default() });
        let p = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        let _q = c.assign(obs(2, "a", 10.0, 15.0, emb(1, 0.0)));
        assert_eq!(c.assign(obs(3, "a", 20.0, 25.0, between(0, 1, 0.69))).trajectory, p.trajectory);
    }

    #[test]
    fn fragments_of_one_person_are_not_ambiguous() {
        // p's trajectory was split (a run between cameras); both fragments look alike, so a
        // sighting close to both joins the closer one instead of starting a third.
        let mut c = correlator(CorrelationConfig::default());
        let p1 = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        let p2 = c.assign(obs(2, "b", 10.0, 15.0, emb(0, 0.1)));
        assert!(p2.new);
        let next = c.assign(obs(3, "b", 300.0, 305.0, emb(0, 0.07)));
        assert!(!next.new);
        assert_eq!(next.trajectory, p2.trajectory);
        assert_ne!(p1.trajectory, p2.trajectory);
    }

    #[test]
    fn appearance_rules() {
        // Members 0.4 apart; the sighting is 0.1 from one and 0.3 from the other.
        for (appearance, want) in
            [(Appearance::MeanDistance, 0.2), (Appearance::Centroid, 0.1), (Appearance::Nearest, 0.1)]
        {
            let mut c = correlator(CorrelationConfig { appearance, ..Default::default() });
            let t = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0))).trajectory;
            assert_eq!(c.assign(obs(2, "a", 10.0, 15.0, emb(0, 0.4))).trajectory, t);
            let x = c.assign(obs(3, "a", 20.0, 25.0, emb(0, 0.1)));
            assert_eq!(x.trajectory, t);
            assert!((x.distance.unwrap() - want).abs() < 1e-6, "{appearance:?}: {x:?}");
        }
        // Only the `appearance_members` most recent members count.
        let mut c = correlator(CorrelationConfig { appearance_members: 1, ..Default::default() });
        let t = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0))).trajectory;
        assert_eq!(c.assign(obs(2, "a", 10.0, 15.0, emb(0, 0.4))).trajectory, t);
        let x = c.assign(obs(3, "a", 20.0, 25.0, emb(0, 0.1)));
        assert!((x.distance.unwrap() - 0.3).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn model_mismatch_never_compared() {
        let mut c = correlator(CorrelationConfig::default());
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        let mut other = obs(2, "a", 10.0, 15.0, emb(0, 0.0));
        other.model = "arcface-r100".into();
        let b = c.assign(other);
        assert!(b.new && b.trajectory != a.trajectory);
        // Different length, same name: not comparable either.
        assert!(c.assign(obs(3, "a", 20.0, 25.0, vec![0.0; 64])).new);
        // Unusable embeddings start their own trajectory and are counted.
        assert!(c.assign(obs(4, "a", 30.0, 35.0, vec![])).new);
        let mut nan = emb(0, 0.0);
        nan[3] = f32::NAN;
        assert!(c.assign(obs(5, "a", 40.0, 45.0, nan)).new);
        assert_eq!(c.stats().unusable, 2);
        // The dlib trajectory still takes dlib sightings.
        assert_eq!(c.assign(obs(6, "a", 50.0, 55.0, emb(0, 0.1))).trajectory, a.trajectory);
    }

    #[test]
    fn late_sighting_between_two_members() {
        let mut c = correlator(CorrelationConfig::default());
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        assert_eq!(c.assign(obs(2, "a", 200.0, 205.0, emb(0, 0.1))).trajectory, a.trajectory);
        // Replayed later: at b between the two a sightings. 100 m each way, 95 s each way: fine.
        let late = c.assign(obs(3, "b", 100.0, 105.0, emb(0, 0.05)));
        assert_eq!((late.trajectory, late.new), (a.trajectory, false));
        // At b 10 s before the one at 200 on a: too fast *to* the member after it.
        assert!(c.assign(obs(5, "b", 180.0, 190.0, emb(0, 0.05))).new);
        // Another replay at b, 20 s after the a sighting at 200: too fast from a.
        assert_ne!(c.assign(obs(4, "b", 225.0, 230.0, emb(0, 0.05))).trajectory, a.trajectory);
        // At far, overlapping nothing but between members in time: 2 km away, impossible.
        assert!(c.assign(obs(6, "far", 150.0, 151.0, emb(0, 0.0))).new);
    }

    #[test]
    fn overlap_in_time() {
        let mut c = correlator(CorrelationConfig::default());
        let a = c.assign(obs(1, "a", 0.0, 60.0, emb(0, 0.0)));
        // Same camera, overlapping: another person, however similar (twins).
        assert!(c.assign(obs(2, "a", 30.0, 40.0, emb(0, 0.3))).new);
        // Same camera, right after (a track split at its maximum duration): same trajectory.
        assert_eq!(c.assign(obs(3, "a", 60.0, 90.0, emb(0, 0.02))).trajectory, a.trajectory);
        // c's view overlaps a's: seen by both at once is fine.
        assert_eq!(c.assign(obs(4, "c", 70.0, 80.0, emb(0, 0.02))).trajectory, a.trajectory);
        // b is 100 m away: overlapping a member in time there is impossible.
        assert!(c.assign(obs(5, "b", 20.0, 25.0, emb(0, 0.0))).new);
    }

    #[test]
    fn unknown_cameras_are_gated_by_time_only() {
        let mut c = correlator(CorrelationConfig::default());
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        assert_eq!(c.assign(obs(2, "nowhere", 6.0, 8.0, emb(0, 0.1))).trajectory, a.trajectory);
        assert!(c.assign(obs(3, "nowhere", 7.0, 9.0, emb(0, 0.1))).new, "same unknown camera, overlapping");
    }

    #[test]
    fn restore_rebuilds_the_same_state() {
        let seq = [
            obs(1, "a", 0.0, 5.0, emb(0, 0.0)),
            obs(2, "a", 3.0, 9.0, emb(1, 0.0)),
            obs(3, "c", 30.0, 35.0, emb(0, 0.2)),
            obs(4, "b", 90.0, 95.0, emb(1, 0.2)),
        ];
        let mut live = correlator(CorrelationConfig::default());
        let placed: Vec<_> = seq.iter().map(|o| live.assign(o.clone()).trajectory).collect();
        let mut again = correlator(CorrelationConfig::default());
        for (o, t) in seq.iter().zip(&placed) {
            again.restore(o.clone(), *t);
        }
        assert_eq!(again.live(), 2);
        let next = obs(5, "b", 140.0, 145.0, emb(0, 0.1));
        let x = live.assign(next.clone());
        let y = again.assign(next);
        assert_eq!((x.trajectory, x.new), (y.trajectory, y.new));
        assert_eq!(x.trajectory, placed[0]);
        // A restored sighting is known: redelivery does not place it again.
        assert_eq!(again.assign(seq[1].clone()).trajectory, placed[1]);
    }

    #[test]
    fn forget_before_bounds_memory() {
        let mut c = correlator(CorrelationConfig { appearance_members: 2, ..Default::default() });
        let a = c.assign(obs(1, "a", 0.0, 5.0, emb(0, 0.0)));
        for i in 0..5 {
            let t = 100.0 * (i + 1) as f64;
            assert_eq!(c.assign(obs(10 + i, "a", t, t + 5.0, emb(0, 0.1))).trajectory, a.trajectory);
        }
        assert!(c.assign(obs(2, "b", 50.0, 55.0, emb(1, 0.0))).new);
        assert_eq!(c.live(), 2);
        c.forget_before(T0 + Duration::seconds(300));
        assert_eq!(c.live(), 1);
        let tr = &c.tracks[0];
        assert_eq!(tr.id, a.trajectory);
        assert_eq!(tr.members.len(), 3, "members 300, 400, 500 remain");
        assert!(tr.members.iter().rev().take(2).all(|m| !m.emb.is_empty()));
        assert!(tr.members[0].emb.is_empty());
        assert_eq!(c.by_sighting.len(), 3);
        // The forgotten trajectory's sightings are forgotten too; a's still takes sightings.
        assert!(c.assign(obs(2, "b", 50.0, 55.0, emb(1, 0.0))).new);
        assert_eq!(c.stats().duplicates, 0);
        assert_eq!(c.assign(obs(99, "a", 600.0, 605.0, emb(0, 0.0))).trajectory, a.trajectory);
    }

    #[test]
    fn deterministic_apart_from_ids() {
        let run = || {
            let mut c = correlator(CorrelationConfig::default());
            let mut labels: Vec<usize> = Vec::new();
            let mut seen: Vec<Uuid> = Vec::new();
            for i in 0..60u128 {
                let person = (i * 7 % 5) as usize;
                let o = obs(i + 1, ["a", "c", "b"][(i % 3) as usize], i as f64 * 70.0, i as f64 * 70.0 + 5.0, {
                    let mut e = emb(person, 0.0);
                    e[100 + (i % 20) as usize] = 0.2;
                    e
                });
                let t = c.assign(o).trajectory;
                let pos = seen.iter().position(|x| *x == t).unwrap_or_else(|| {
                    seen.push(t);
                    seen.len() - 1
                });
                labels.push(pos);
            }
            labels
        };
        let first = run();
        assert_eq!(first, run());
        assert_eq!(first.iter().max(), Some(&4));
    }

    #[test]
    fn coarse_scan_gives_the_full_scan_answer_among_many_look_alikes() {
        // Many trajectories of unit-length faces, and sightings placed at distances spread
        // around `max_distance` and `max_distance + margin` from some of them, where the 8-bit
        // bound is tightest: the pruned choice must be the full scan's, step after step, and the
        // coarse pass must rule most trajectories out.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let unit = |rnd: &mut dyn FnMut() -> f64| {
            let v: Vec<f32> = (0..128).map(|_| (rnd() - 0.5) as f32).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        for appearance in [Appearance::MeanDistance, Appearance::Centroid] {
            let mut c = correlator(CorrelationConfig { appearance, ..Default::default() });
            let mut faces = Vec::new();
            for i in 0..1500u128 {
                let f = unit(&mut rnd);
                c.assign(obs(i + 1, "nowhere", i as f64 * 0.5, i as f64 * 0.5 + 0.2, f.clone()));
                faces.push(f);
            }
            let (mut kept, mut rows) = (0, 0);
            for i in 0..400u128 {
                // a face moved by a distance in [0.5, 0.75) along a random direction
                let f = &faces[(rnd() * faces.len() as f64) as usize];
                let dir = unit(&mut rnd);
                let by = 0.5 + 0.25 * rnd() as f32;
                let e: Vec<f32> = f.iter().zip(&dir).map(|(x, d)| x + by * d).collect();
                let t = 800.0 + i as f64;
                let o = obs(10_000 + i, ["a", "c", "nowhere"][i as usize % 3], t, t + 0.5, e);
                let p = c.probe(o.clone());
                assert_eq!(c.choose_scan(&p, false), c.choose_scan(&p, true), "{appearance:?} {i}");
                let g = &c.groups[0];
                let limit = c.cfg.max_distance + c.cfg.margin;
                g.coarse.rows_maybe_within(&g.coarse.query(&p.emb), limit, |_| true, |_| kept += 1);
                rows += g.coarse.len();
                c.assign(o);
            }
            assert!(kept * 20 < rows, "{appearance:?}: {kept} of {rows} rows kept by the coarse pass");
            assert!(c.stats().joined > 50, "{:?}", c.stats());
        }
    }

    #[test]
    fn centroid_prefilter_gives_the_full_scan_answer() {
        // Random sightings of a few people (some near the decision boundaries), other models and
        // lengths, and forgetting: the prefiltered scan must answer exactly as the full one, and
        // the centroid columns stay in step with the trajectories.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for appearance in [Appearance::MeanDistance, Appearance::Centroid] {
            for (max_distance, margin, k) in [(0.6, 0.05, 16), (0.8, 0.1, 3), (0.55, 0.0, 1)] {
                let cfg =
                    CorrelationConfig { appearance, max_distance, margin, appearance_members: k, ..Default::default() };
                let mut c = correlator(cfg);
                let mut compared = 0;
                for i in 0..600u128 {
                    let person = (rnd() * 6.0) as usize;
                    let mut e = between(person, (person + 1) % 6, (rnd() * 0.8) as f32);
                    for x in e.iter_mut().skip(10) {
                        *x += (rnd() as f32 - 0.5) * 0.06;
                    }
                    let t = i as f64 * 20.0 + rnd() * 400.0;
                    let cam = ["a", "b", "c", "far", "nowhere"][(rnd() * 5.0) as usize];
                    let mut o = obs(i + 1, cam, t, t + 1.0 + rnd() * 10.0, e);
                    match (rnd() * 40.0) as u32 {
                        0 => o.model = "other".into(),
                        1 => o.embedding.truncate(64),
                        _ => {}
                    }
                    if i % 97 == 96 {
                        c.forget_before(T0 + Duration::seconds_f64(t - 900.0));
                    }
                    let usable = o.embedding.iter().all(|x| x.is_finite());
                    let p = c.probe(o.clone());
                    if usable {
                        assert_eq!(c.choose_scan(&p, false), c.choose_scan(&p, true), "{appearance:?} {i}");
                        compared += 1;
                    }
                    c.assign(o);
                    for (idx, tr) in c.tracks.iter().enumerate() {
                        let g = &c.groups[tr.group];
                        assert_eq!((g.model, g.dim()), (tr.model, tr.dim));
                        assert_eq!(g.coarse.len(), g.track.len());
                        assert_eq!((g.track[tr.slot], g.first[tr.slot], g.last[tr.slot]), (idx, tr.first, tr.last));
                    }
                    assert_eq!(c.groups.iter().map(|g| g.track.len()).sum::<usize>(), c.tracks.len());
                }
                assert_eq!(compared, 600);
                assert!(c.stats().joined > 100, "{:?}", c.stats());
            }
        }
    }
}
