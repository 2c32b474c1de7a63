//! Face alignment: a similarity transform (rotation, uniform scale, translation) fitted by
//! least squares from YuNet's 5 landmarks onto the 150x150 template of MANIFEST §2, then a
//! bilinear warp of the RGB frame into the chip the embedding model expects.

use image::{Rgb, RgbImage};
use imageproc::geometric_transformations::{Interpolation, Projection, warp_into};

pub const CHIP_SIZE: u32 = 150;

/// Template landmark positions in chip pixels, YuNet order (MANIFEST §2).
pub const TEMPLATE: [[f32; 2]; 5] = [[47.38, 45.50], [101.62, 45.50], [74.50, 77.52], [49.55, 100.03], [99.45, 100.03]];

/// A 2-D similarity transform `q = [[a, -b], [b, a]] p + t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    /// Least-squares fit mapping `src[i]` onto `dst[i]` (Umeyama without reflection).
    pub fn fit(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Similarity {
        assert_eq!(src.len(), dst.len());
        let n = src.len() as f64;
        let mean = |pts: &[[f32; 2]]| {
            let (x, y) = pts.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0] as f64, y + p[1] as f64));
            (x / n, y / n)
        };
        let ((mpx, mpy), (mqx, mqy)) = (mean(src), mean(dst));
        let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
        for (p, q) in src.iter().zip(dst) {
            let (ax, ay) = (p[0] as f64 - mpx, p[1] as f64 - mpy);
            let (bx, by) = (q[0] as f64 - mqx, q[1] as f64 - mqy);
            dot += ax * bx + ay * by;
            cross += ax * by - ay * bx;
            norm += ax * ax + ay * ay;
        }
        let norm = norm.max(1e-9);
        let (a, b) = (dot / norm, cross / norm);
        Similarity {
            a: a as f32,
            b: b as f32,
            tx: (mqx - (a * mpx - b * mpy)) as f32,
            ty: (mqy - (b * mpx + a * mpy)) as f32,
        }
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [self.a * p[0] - self.b * p[1] + self.tx, self.b * p[0] + self.a * p[1] + self.ty]
    }

    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }
}

/// Warps the face with these landmarks (frame pixels) into a 150x150 RGB chip.
pub fn align(frame: &RgbImage, landmarks: &[[f32; 2]; 5]) -> RgbImage {
    let t = Similarity::fit(landmarks, &TEMPLATE);
    let mut chip = RgbImage::new(CHIP_SIZE, CHIP_SIZE);
    match Projection::from_matrix([t.a, -t.b, t.tx, t.b, t.a, t.ty, 0.0, 0.0, 1.0]) {
        Some(p) => warp_into(frame, &p, Interpolation::Bilinear, Rgb([0, 0, 0]), &mut chip),
        None => tracing::debug!(?landmarks, "degenerate landmarks: empty chip"),
    }
    chip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_known_similarity() {
        let truth = Similarity { a: 0.5 * 0.3f32.cos(), b: 0.5 * 0.3f32.sin(), tx: 12.0, ty: -7.0 };
        let src: Vec<[f32; 2]> = vec![[100.0, 80.0], [160.0, 82.0], [130.0, 120.0], [105.0, 150.0], [155.0, 151.0]];
        let dst: Vec<[f32; 2]> = src.iter().map(|p| truth.apply(*p)).collect();
        let fit = Similarity::fit(&src, &dst);
        for (got, want) in [(fit.a, truth.a), (fit.b, truth.b), (fit.tx, truth.tx), (fit.ty, truth.ty)] {
            assert!((got - want).abs() < 1e-3, "{fit:?} vs {truth:?}");
        }
        assert!((fit.scale() - 0.5).abs() < 1e-4);
    }

    #[test]
    fn warp_lands_landmarks_on_the_template() {
        // A frame where each landmark is a bright 3x3 dot; the face is twice the template size,
        // shifted by (40, 30). The chip must show each dot at its template position.
        let mut frame = RgbImage::new(400, 300);
        let lms: [[f32; 2]; 5] = TEMPLATE.map(|p| [p[0] * 2.0 + 40.0, p[1] * 2.0 + 30.0]);
        for p in &lms {
            for dy in -2i32..=2 {
                for dx in -2i32..=2 {
                    frame.put_pixel((p[0] as i32 + dx) as u32, (p[1] as i32 + dy) as u32, Rgb([255, 255, 255]));
                }
            }
        }
        let chip = align(&frame, &lms);
        assert_eq!(chip.dimensions(), (150, 150));
        for p in TEMPLATE {
            let px = chip.get_pixel(p[0].round() as u32, p[1].round() as u32);
            assert!(px[0] > 200, "dot missing at template point {p:?}: {px:?}");
        }
        // and a point between the eyes is dark
        assert!(chip.get_pixel(74, 30)[0] < 50);
    }
}
