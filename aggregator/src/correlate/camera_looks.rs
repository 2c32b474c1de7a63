//! [`CameraLooks`]: how each camera shifts every face it sees, learnt from its sightings and
//! removed before comparing (camera-aware appearance, `[correlation] camera_aware`).
//!
//! A camera's light, angle, lens and compression move the embeddings of everybody it sees in
//! roughly the same direction, so the same person seen by two cameras is further apart than by
//! one. The camera's shift is estimated as the running mean of its embeddings less the running
//! mean of every camera's: the people it sees average out, its shift does not. A camera's shift
//! is applied once it has seen `warmup` sightings; before that, its sightings are compared as
//! they are. Means follow the last [`WINDOW`] sightings or so (an exponential average), so a
//! camera whose view changes (day and night, a moved camera) is followed.

use std::collections::HashMap;

/// Sightings a running mean averages over, about.
pub const WINDOW: u64 = 1000;

#[derive(Clone, Debug)]
struct Running {
    n: u64,
    mean: Vec<f64>,
}

impl Running {
    fn new(dim: usize) -> Self {
        Self { n: 0, mean: vec![0.0; dim] }
    }

    fn add(&mut self, x: &[f32]) {
        self.n += 1;
        let a = 1.0 / self.n.min(WINDOW) as f64;
        for (m, &x) in self.mean.iter_mut().zip(x) {
            *m += a * (f64::from(x) - *m);
        }
    }
}

/// The running means, by (camera, model) and by model, of the embeddings the correlator placed.
#[derive(Clone, Debug)]
pub struct CameraLooks {
    warmup: u64,
    cameras: HashMap<(u32, u32), Running>,
    all: HashMap<u32, Running>,
}

impl CameraLooks {
    pub fn new(warmup: u64) -> Self {
        Self { warmup, cameras: HashMap::new(), all: HashMap::new() }
    }

    /// `emb` (of interned camera `cam` and model `model`) less the camera's shift as learnt so
    /// far; then learns from it. An empty or non-finite embedding, or one of another length
    /// than the model's before, is returned as it is and not learnt from.
    pub fn adjust(&mut self, cam: u32, model: u32, mut emb: Vec<f32>) -> Vec<f32> {
        if emb.is_empty() || !emb.iter().all(|x| x.is_finite()) {
            return emb;
        }
        let dim = emb.len();
        let all = self.all.entry(model).or_insert_with(|| Running::new(dim));
        if all.mean.len() != dim {
            return emb;
        }
        let camera = self.cameras.entry((cam, model)).or_insert_with(|| Running::new(dim));
        let raw = emb.clone();
        if camera.n >= self.warmup {
            for ((x, c), a) in emb.iter_mut().zip(&camera.mean).zip(&all.mean) {
                *x = (f64::from(*x) - (c - a)) as f32;
            }
        }
        camera.add(&raw);
        all.add(&raw);
        emb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_camera_shift_after_warm_up() {
        // two cameras see the same alternating faces; camera 1 adds 0.5 to the first component
        let faces = [[1.0f32, 0.0], [0.0, 1.0]];
        let mut looks = CameraLooks::new(10);
        let mut last = Vec::new();
        for i in 0..400 {
            let f = faces[i % 2];
            looks.adjust(0, 0, f.to_vec());
            last = looks.adjust(1, 0, vec![f[0] + 0.5, f[1]]);
        }
        // the shift is seen against the mean of both cameras: half of it is removed from each side
        let f = faces[399 % 2];
        assert!((last[0] - (f[0] + 0.25)).abs() < 0.02, "{last:?}");
        let own = looks.adjust(0, 0, f.to_vec());
        assert!((own[0] - (f[0] + 0.25)).abs() < 0.02, "both cameras meet in the middle: {own:?}");
        // before its warm-up a camera is compared as it is
        let mut cold = CameraLooks::new(10);
        assert_eq!(cold.adjust(0, 0, vec![3.0, 4.0]), [3.0, 4.0]);
    }

    #[test]
    fn leaves_what_it_cannot_learn_from() {
        let mut looks = CameraLooks::new(0);
        looks.adjust(0, 0, vec![1.0, 1.0]);
        assert_eq!(looks.adjust(0, 0, vec![f32::NAN, 1.0])[1], 1.0);
        assert_eq!(looks.adjust(0, 0, vec![1.0, 2.0, 3.0]), [1.0, 2.0, 3.0], "another length");
        assert!(looks.adjust(0, 0, Vec::new()).is_empty());
        assert_eq!(looks.all[&0].n, 1, "only the first was learnt");
    }
}
