//! Repair after the fact: a trajectory that turns out to be the same person as another live one
//! is merged into it ([`Merge`]).
//!
//! A person's sightings split into fragments when one sighting starts a trajectory instead of
//! joining (a poor shot, a camera's shift, a late arrival) and later ones follow either
//! fragment. Every time a trajectory's evidence has doubled (its 2nd, 4th, 8th… member with an
//! embedding), or a late sighting lands inside it in event time, it is compared with the other
//! live trajectories by trajectory-level appearance: the mean of *all* its members' embeddings,
//! not only the recent ones. It is merged with the closest one if
//! - the two means are within `merge_distance` (0.4), and no other trajectory comes within `margin` of
//!   that unless it looks like the same person too;
//! - their spans in event time are at most `horizon_s` apart;
//! - every member of one fits among the other's members under the site's gates (speed, links,
//!   one track at a time per camera), as a sighting must: a merge never makes a trajectory that
//!   a person could not have walked.
//!
//! The trajectory created first survives; the other's sightings move to it and its id is
//! reported as merged into it. Nothing is random: the same sightings in the same order make the
//! same merges.

use super::*;

/// `last` of a merged-away trajectory: far enough in the past that `forget_before` drops it and
/// no horizon check can overflow.
const GONE: i64 = i64::MIN / 4;

/// One trajectory merged into another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Merge {
    /// The trajectory that no longer exists: its sightings are now `into`'s.
    pub from: Uuid,
    pub into: Uuid,
    /// Distance between the two trajectories' mean embeddings.
    pub distance: f32,
    /// Sightings moved.
    pub moved: usize,
}

impl Correlator {
    /// The merges made since the last call, in order.
    pub fn take_merges(&mut self) -> Vec<Merge> {
        std::mem::take(&mut self.merges)
    }

    /// After trajectory `idx` got a member (`inside`: in event time before its last one): merges
    /// it with its twin if it is time to look and there is one. Returns the surviving index.
    pub(super) fn repair(&mut self, idx: usize, inside: bool) -> usize {
        let tr = &self.tracks[idx];
        if !self.cfg.repair || tr.summed < 2 || !(tr.summed.is_power_of_two() || inside) {
            return idx;
        }
        let Some((other, distance)) = self.twin(idx) else { return idx };
        let (keep, gone) = (idx.min(other), idx.max(other));
        self.merge(keep, gone, distance);
        keep
    }

    /// Trajectory `idx`'s mean embedding.
    fn mean(&self, idx: usize) -> Vec<f32> {
        let tr = &self.tracks[idx];
        let inv = 1.0 / tr.summed.max(1) as f32;
        tr.sum.iter().map(|s| s * inv).collect()
    }

    /// The live trajectory that `idx` should be merged with, and the distance of their means.
    fn twin(&self, idx: usize) -> Option<(usize, f32)> {
        let max_d = self.cfg.merge_distance;
        let limit = max_d + self.cfg.margin;
        let tr = &self.tracks[idx];
        let mean = self.mean(idx);
        let g = &self.groups[tr.group];
        let mut found: Vec<(f32, Uuid, usize)> = Vec::new();
        // Candidates by their recent centroid, with room for it to differ from their mean.
        let query = g.coarse.query(&mean);
        let near = |first: i64, last: i64| !(tr.first - last > self.horizon_ms || first - tr.last > self.horizon_ms);
        g.coarse.rows_maybe_within(
            &query,
            limit + CANDIDATE_SLACK,
            |slot| g.has[slot] && g.track[slot] != idx && near(g.first[slot], g.last[slot]),
            |slot| {
                let j = g.track[slot];
                let other = &self.tracks[j];
                if other.summed == 0 {
                    return;
                }
                let d = l2sq_lanes(&mean, &self.mean(j)).sqrt();
                if d <= limit {
                    found.push((d, other.id, j));
                }
            },
        );
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let &(d, _, best) = found.first()?;
        if d > max_d {
            return None;
        }
        let best_mean = self.mean(best);
        if let Some(&(d2, _, second)) = found.get(1)
            && d2 - d < self.cfg.margin
            && l2sq_lanes(&best_mean, &self.mean(second)).sqrt() > max_d
        {
            return None;
        }
        self.union_feasible(idx, best).then_some((best, d))
    }

    /// Every member of the smaller of the two fits among the other's members.
    fn union_feasible(&self, a: usize, b: usize) -> bool {
        let (small, large) = if self.tracks[a].members.len() <= self.tracks[b].members.len() { (a, b) } else { (b, a) };
        let large = &self.tracks[large];
        self.tracks[small].members.iter().all(|m| self.gap_if_feasible(large, m.cam, (m.start, m.end)).is_some())
    }

    /// Moves `gone`'s members into `keep` and retires `gone`.
    fn merge(&mut self, keep: usize, gone: usize, distance: f32) {
        let k = self.cfg.appearance_members;
        let (into, from) = (self.tracks[keep].id, self.tracks[gone].id);
        let g_members = std::mem::take(&mut self.tracks[gone].members);
        let g_sum = std::mem::take(&mut self.tracks[gone].sum);
        let g_summed = std::mem::take(&mut self.tracks[gone].summed);
        let moved = g_members.len();
        for m in &g_members {
            if let Some(a) = self.by_sighting.get_mut(&m.sighting) {
                a.trajectory = into;
            }
        }
        let tr = &mut self.tracks[keep];
        let mut members = std::mem::take(&mut tr.members);
        members.extend(g_members);
        members.sort_by_key(|m| (m.start, m.end, m.sighting));
        let n = members.len();
        for m in &mut members[..n.saturating_sub(k)] {
            m.emb = Box::default();
        }
        tr.members = members;
        tr.sum.iter_mut().zip(g_sum.iter()).for_each(|(s, x)| *s += x);
        tr.summed += g_summed;
        tr.first = tr.members.first().map_or(tr.first, |m| m.start);
        tr.last = tr.members.iter().map(|m| m.end).max().unwrap_or(tr.last);
        let (group, slot, first, last) = (tr.group, tr.slot, tr.first, tr.last);
        self.groups[group].first[slot] = first;
        self.groups[group].last[slot] = last;
        self.refresh_centroid(keep);

        let old = &mut self.tracks[gone];
        old.first = GONE;
        old.last = GONE;
        let (group, slot) = (old.group, old.slot);
        let g = &mut self.groups[group];
        g.has[slot] = false;
        g.first[slot] = GONE;
        g.last[slot] = GONE;
        self.by_id.remove(&from);
        self.stats.merged += 1;
        self.merges.push(Merge { from, into, distance, moved });
    }
}

/// How far a trajectory's recent centroid may lie from its mean and still be a candidate.
const CANDIDATE_SLACK: f32 = 0.15;

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::super::tests::T0;
    use super::*;

    /// The correlator tests' site (cameras a at 0 m, b at 120 m, far at 2 km), merging within 0.5.
    fn correlator() -> Correlator {
        let cfg = CorrelationConfig { merge_distance: 0.5, camera_aware: false, ..Default::default() };
        super::super::tests::correlator(cfg)
    }

    /// Person 0's face with a shift of `shift` (shared by a camera) and its own noise of 0.33 in
    /// dimension `own`: two of one camera are 0.47 apart, one of each 0.62.
    fn face(own: usize, shift: f32) -> Vec<f32> {
        let mut v = vec![0f32; 128];
        v[0] = 1.0;
        v[120] = shift;
        v[own] = 0.33;
        v
    }

    fn obs(n: u128, camera: &str, start: f64, embedding: Vec<f32>) -> Observation {
        Observation {
            sighting: Uuid::from_u128(n),
            camera: camera.into(),
            first_seen: T0 + Duration::seconds_f64(start),
            last_seen: T0 + Duration::seconds_f64(start + 4.0),
            embedding,
            model: "dlib-resnet-v1".into(),
        }
    }

    /// One person: four sightings at a, then two at `second` `after` seconds later, through a
    /// shift of 0.4 that makes them start a trajectory of their own.
    fn fragments(second: &str, after: f64) -> (Correlator, Vec<Assignment>) {
        let mut c = correlator();
        let mut placed = Vec::new();
        for i in 0..4 {
            placed.push(c.assign(obs(i, "a", 10.0 * i as f64, face(10 + i as usize, 0.0))));
        }
        for i in 4..6 {
            placed.push(c.assign(obs(i, second, after + 10.0 * i as f64, face(10 + i as usize, 0.4))));
        }
        (c, placed)
    }

    #[test]
    fn fragments_of_one_person_are_merged() {
        let (mut c, placed) = fragments("b", 200.0);
        let a = placed[0].trajectory;
        assert!(placed[..4].iter().all(|p| p.trajectory == a), "{placed:?}");
        assert!(placed[4].new, "the shifted sighting starts a trajectory: {placed:?}");
        let merges = c.take_merges();
        assert_eq!(merges.len(), 1, "{merges:?}");
        assert_eq!((merges[0].from, merges[0].into, merges[0].moved), (placed[4].trajectory, a, 2));
        assert!(merges[0].distance <= 0.5, "{merges:?}");
        assert_eq!(placed[5].trajectory, a, "the sighting that triggered the merge is placed on the survivor");
        assert_eq!(c.live(), 2, "the merged-away trajectory waits for forget_before");
        c.forget_before(T0);
        assert_eq!(c.live(), 1);
        assert_eq!(c.stats().merged, 1);
        // a redelivered sighting of the merged-away trajectory answers with the survivor
        assert_eq!(c.assign(obs(4, "b", 0.0, face(14, 0.4))).trajectory, a);
        // the next sighting of that look joins the survivor
        assert_eq!(c.assign(obs(9, "b", 300.0, face(19, 0.4))).trajectory, a);
    }

    #[test]
    fn no_merge_that_nobody_could_walk() {
        // the same fragments, 2 km away a minute later
        let (mut c, placed) = fragments("far", 20.0);
        assert!(c.take_merges().is_empty());
        assert_ne!(placed[5].trajectory, placed[0].trajectory);
        // and with repair off, none either
        let mut off = correlator();
        off.cfg.repair = false;
        for i in 0..4 {
            off.assign(obs(i, "a", 10.0 * i as f64, face(10 + i as usize, 0.0)));
        }
        for i in 4..6 {
            off.assign(obs(i, "b", 200.0 + 10.0 * i as f64, face(10 + i as usize, 0.4)));
        }
        assert!(off.take_merges().is_empty());
    }

    /// Property: whatever the input, every trajectory stays walkable after merges: each member
    /// passes the site's gates with the members next to it and overlapping it.
    #[test]
    fn merges_never_make_an_infeasible_trajectory() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        // each camera shifts faces its own way: one person's sightings split by camera, and
        // the fragments' means come within `merge_distance` as they grow
        let cams = [("a", 0.0), ("b", 0.4), ("far", 0.2)];
        let mut merges = 0;
        for round in 0..40u128 {
            let mut c = correlator();
            for i in 0..60u128 {
                let person = (next() * 2.0) as usize;
                let (cam, shift) = cams[(next() * 3.0) as usize];
                let mut e = face(10 + i as usize, shift);
                e[0] = 0.0;
                e[1 + person] = 1.0;
                c.assign(obs(round * 1000 + i, cam, next() * 900.0, e));
            }
            merges += c.take_merges().len();
            for tr in c.tracks.iter().filter(|t| !t.members.is_empty()) {
                for (i, m) in tr.members.iter().enumerate() {
                    for x in &tr.members[i + 1..] {
                        let overlapping = x.start < m.end;
                        let adjacent = tr.members[i + 1].sighting == x.sighting;
                        if overlapping || adjacent {
                            assert!(c.pair_ok(m, x.cam, (x.start, x.end)), "round {round}: {m:?} then {x:?}");
                        }
                    }
                }
            }
        }
        assert!(merges > 0, "the property was exercised by some merges");
    }
}
