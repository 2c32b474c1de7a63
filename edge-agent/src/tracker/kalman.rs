//! Constant-velocity Kalman filter over a box `(cx, cy, a = w/h, h)` and its four velocities
//! (ByteTrack's `KalmanFilterXYAH`), predicted with the real time step in seconds; see the
//! module documentation of [`tracker`](super) for the noise model.

use nalgebra::{SMatrix, SVector};

type Vec4 = SVector<f64, 4>;
type Vec8 = SVector<f64, 8>;
type Mat8 = SMatrix<f64, 8, 8>;

// Noise standard deviations. Position and height terms are multiplied by the box
// height h (ByteTrack's scaling); velocities are per second, process noise is a
// density (its variance is multiplied by dt in seconds). ByteTrack tunes for
// full-body boxes at 30 fps; a face is about a seventh of a body, so in face heights
// people move and accelerate several times faster, and the velocity terms are larger.

/// Initial std of cx, cy, h: ByteTrack's 2 × 1/20 of h.
const INIT_POS_STD: f64 = 0.1;
const INIT_ASPECT_STD: f64 = 1e-2;
/// Initial velocity std, heights per second (a walker crosses ~6 face heights/s).
const INIT_VEL_STD: f64 = 3.0;
const INIT_ASPECT_VEL_STD: f64 = 1e-3;
/// Process noise of cx, cy, h: heights per √s (ByteTrack's 1/20 per frame at 30 fps ≈ 0.27).
const POS_NOISE: f64 = 0.25;
const ASPECT_NOISE: f64 = 0.05;
/// Process noise of velocities: heights per second per √s.
const VEL_NOISE: f64 = 2.0;
const ASPECT_VEL_NOISE: f64 = 1e-3;
/// Measurement noise of cx, cy, h (ByteTrack: 1/20 of h) and of the aspect (ByteTrack: 0.1).
const MEAS_POS_STD: f64 = 0.05;
const MEAS_ASPECT_STD: f64 = 0.1;

/// Constant-velocity filter on `(cx, cy, a, h, vcx, vcy, va, vh)`.
#[derive(Clone, Debug)]
pub(super) struct Kalman {
    pub(super) mean: Vec8,
    pub(super) cov: Mat8,
}

/// `[x, y, w, h]` → `(cx, cy, w/h, h)`.
pub(super) fn measurement(bbox: &[f32; 4]) -> Vec4 {
    let [x, y, w, h] = bbox.map(f64::from);
    Vec4::new(x + w / 2.0, y + h / 2.0, w / h, h)
}

/// The height the noise scales with; bounded below so that the covariances stay
/// positive definite even for a degenerate predicted box.
fn noise_height(h: f64) -> f64 {
    if h.is_finite() { h.max(1.0) } else { 1.0 }
}

fn diag_sq(std: [f64; 8]) -> Mat8 {
    Mat8::from_diagonal(&Vec8::from(std.map(|s| s * s)))
}

impl Kalman {
    pub(super) fn new(z: Vec4) -> Self {
        let h = noise_height(z[3]);
        let (p, v) = (INIT_POS_STD * h, INIT_VEL_STD * h);
        Self {
            mean: Vec8::from([z[0], z[1], z[2], z[3], 0.0, 0.0, 0.0, 0.0]),
            cov: diag_sq([p, p, INIT_ASPECT_STD, p, v, v, INIT_ASPECT_VEL_STD, v]),
        }
    }

    /// Advances the state by `dt` seconds (finite; nothing happens for `dt <= 0`).
    pub(super) fn predict(&mut self, dt: f64) {
        if dt <= 0.0 {
            return;
        }
        let h = noise_height(self.mean[3]);
        let mut f = Mat8::identity();
        for i in 0..4 {
            f[(i, i + 4)] = dt;
        }
        let (p, v) = (POS_NOISE * h, VEL_NOISE * h);
        let q = diag_sq([p, p, ASPECT_NOISE, p, v, v, ASPECT_VEL_NOISE, v]) * dt;
        self.mean = f * self.mean;
        self.cov = f * self.cov * f.transpose() + q;
    }

    /// Corrects with a measured `(cx, cy, a, h)`.
    pub(super) fn update(&mut self, z: Vec4) {
        let h = noise_height(self.mean[3]);
        let r = Vec4::new(MEAS_POS_STD * h, MEAS_POS_STD * h, MEAS_ASPECT_STD, MEAS_POS_STD * h);
        // The measurement matrix is H = [I₄ 0], so H P Hᵀ and P Hᵀ are blocks of P.
        let s = self.cov.fixed_view::<4, 4>(0, 0) + SMatrix::<f64, 4, 4>::from_diagonal(&r.component_mul(&r));
        let pht = self.cov.fixed_view::<8, 4>(0, 0).into_owned();
        let Some(chol) = s.cholesky() else {
            // Only reachable with non-finite state: start over from the measurement.
            *self = Self::new(z);
            return;
        };
        let gain = chol.solve(&pht.transpose()).transpose(); // P Hᵀ S⁻¹
        let innovation = z - self.mean.fixed_rows::<4>(0);
        self.mean += gain * innovation;
        self.cov -= gain * s * gain.transpose();
        self.cov = (self.cov + self.cov.transpose()) * 0.5;
    }

    /// The state's box as `[x, y, w, h]`.
    pub(super) fn bbox(&self) -> [f64; 4] {
        let (cx, cy, a, h) = (self.mean[0], self.mean[1], self.mean[2], self.mean[3]);
        let w = a * h;
        [cx - w / 2.0, cy - h / 2.0, w, h]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kalman_predicts_constant_velocity_within_a_pixel() {
        // 50×60 box moving at (+120, -45) px/s, sampled with irregular gaps (dropped frames).
        let pos = |t: f64| [100.0 + 120.0 * t, 300.0 - 45.0 * t, 50.0, 60.0];
        let as_box = |b: [f64; 4]| b.map(|v| v as f32);
        let times = [0.0, 0.2, 0.4, 0.8, 1.0, 1.2, 1.8, 2.0];
        let mut kf = Kalman::new(measurement(&as_box(pos(0.0))));
        let mut prev = 0.0;
        for &t in &times[1..] {
            kf.predict(t - prev);
            kf.update(measurement(&as_box(pos(t))));
            prev = t;
        }
        kf.predict(0.6);
        let (got, want) = (kf.bbox(), pos(2.6));
        for k in 0..4 {
            assert!((got[k] - want[k]).abs() < 1.0, "component {k}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn kalman_first_prediction_is_the_detection_and_noise_grows_with_dt() {
        let z = measurement(&[10.0, 20.0, 40.0, 50.0]);
        let kf = Kalman::new(z);
        let mut still = kf.clone();
        still.predict(0.0);
        assert_eq!(still.mean, kf.mean);
        assert_eq!(still.cov, kf.cov);
        assert_eq!(kf.bbox(), [10.0, 20.0, 40.0, 50.0]);

        let (mut short, mut long) = (kf.clone(), kf.clone());
        short.predict(0.2);
        long.predict(1.0);
        for i in 0..8 {
            assert!(short.cov[(i, i)] > kf.cov[(i, i)], "state {i}");
            assert!(long.cov[(i, i)] > short.cov[(i, i)], "state {i}");
        }
        // Two half steps reach the same mean as one whole step.
        let mut halves = kf.clone();
        halves.mean[4] = 30.0;
        let mut whole = halves.clone();
        halves.predict(0.5);
        halves.predict(0.5);
        whole.predict(1.0);
        assert!((halves.mean - whole.mean).norm() < 1e-9);
    }
}
