//! Best-shot quality of a face in [0, 1]: the geometric mean of four cues, each in [0, 1]:
//! detector confidence, size (width saturating at 112 px), frontality (nose centred between
//! the eyes and below them) and sharpness (variance of the Laplacian of the aligned chip).

use image::RgbImage;

use crate::Face;

/// Face width (px) at which size stops improving quality.
const FULL_SIZE_PX: f32 = 112.0;
/// Laplacian variance (on 0..255 luma) treated as fully sharp.
const SHARP_VAR: f32 = 400.0;

pub fn shot_quality(face: &Face, chip: &RgbImage) -> f32 {
    let cues = [
        face.score.clamp(0.0, 1.0),
        (face.bbox[2] / FULL_SIZE_PX).clamp(0.05, 1.0),
        frontality(&face.landmarks),
        (laplacian_variance(chip) / SHARP_VAR).clamp(0.05, 1.0),
    ];
    cues.iter().product::<f32>().powf(0.25)
}

/// 1 for a frontal face; falls towards 0.05 as the nose moves from the eyes' midline (yaw)
/// or the eye line tilts strongly (roll beyond what alignment corrects well).
pub fn frontality(lm: &[[f32; 2]; 5]) -> f32 {
    let [re, le, nose, ..] = *lm;
    let eye_dx = le[0] - re[0];
    let eye_dist = (eye_dx * eye_dx + (le[1] - re[1]).powi(2)).sqrt().max(1e-3);
    let mid = (re[0] + le[0]) / 2.0;
    let yaw = ((nose[0] - mid) / eye_dist).abs(); // 0 frontal, ~0.5 strong profile
    let roll = ((le[1] - re[1]) / eye_dist).abs(); // sin of the tilt
    (1.0 - 1.6 * yaw - 0.5 * (roll - 0.35).max(0.0)).clamp(0.05, 1.0)
}

/// Variance of the 4-neighbour Laplacian of the chip's luma.
pub fn laplacian_variance(img: &RgbImage) -> f32 {
    let luma: Vec<f32> =
        img.as_raw().chunks_exact(3).map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect();
    laplacian_variance_of(&luma, img.width() as usize, img.height() as usize)
}

/// Variance of the 4-neighbour Laplacian of a `w` x `h` grey image (row-major): a sharpness measure.
pub fn laplacian_variance_of(grey: &[f32], w: usize, h: usize) -> f32 {
    if w < 3 || h < 3 {
        return 0.0;
    }
    let (mut sum, mut sq, mut n) = (0f64, 0f64, 0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let l = (grey[i - 1] + grey[i + 1] + grey[i - w] + grey[i + w] - 4.0 * grey[i]) as f64;
            sum += l;
            sq += l * l;
            n += 1.0;
        }
    }
    ((sq / n) - (sum / n).powi(2)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharp_beats_blurred_and_frontal_beats_profile() {
        let checker = RgbImage::from_fn(150, 150, |x, y| {
            if (x / 3 + y / 3) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) }
        });
        let flat = RgbImage::from_pixel(150, 150, image::Rgb([128; 3]));
        assert!(laplacian_variance(&checker) > SHARP_VAR);
        assert_eq!(laplacian_variance(&flat), 0.0);

        let frontal = [[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 90.0], [75.0, 90.0]];
        let profile = [[40.0, 50.0], [80.0, 50.0], [78.0, 70.0], [45.0, 90.0], [75.0, 90.0]];
        assert_eq!(frontality(&frontal), 1.0);
        assert!(frontality(&profile) < 0.4);

        let face = Face { bbox: [0.0, 0.0, 120.0, 140.0], landmarks: frontal, score: 0.95 };
        assert!(shot_quality(&face, &checker) > shot_quality(&face, &flat));
        let side = Face { landmarks: profile, ..face.clone() };
        assert!(shot_quality(&face, &checker) > shot_quality(&side, &checker));
    }
}
