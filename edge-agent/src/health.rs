//! Per-frame image statistics for camera-health rules: brightness, contrast, sharpness,
//! and whether the picture changed since the previous analysed frame.

use image::RgbImage;

use crate::rules::FrameHealth;

/// Width of the grey thumbnail the statistics are computed on (cheap, and robust to noise).
const THUMB_W: u32 = 160;
/// Mean absolute difference (0..255) below which two thumbnails count as the same picture:
/// real sensors add noise well above this, a frozen encoder repeats the picture exactly.
const SAME_PICTURE: f32 = 0.05;

#[derive(Default)]
pub struct HealthProbe {
    prev: Option<Vec<f32>>,
}

impl HealthProbe {
    pub fn measure(&mut self, frame: &RgbImage) -> FrameHealth {
        let (thumb, w, h) = grey_thumbnail(frame);
        let n = thumb.len().max(1) as f32;
        let mean = thumb.iter().sum::<f32>() / n;
        let var = thumb.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let changed = match &self.prev {
            Some(p) if p.len() == thumb.len() => {
                p.iter().zip(&thumb).map(|(a, b)| (a - b).abs()).sum::<f32>() / n >= SAME_PICTURE
            }
            _ => true,
        };
        let sharpness = sightline_vision::quality::laplacian_variance_of(&thumb, w, h);
        self.prev = Some(thumb);
        FrameHealth { mean_luma: mean, luma_std: var.sqrt(), sharpness, changed }
    }
}

/// Box-filtered grey thumbnail `THUMB_W` wide (or the frame's width if smaller).
fn grey_thumbnail(frame: &RgbImage) -> (Vec<f32>, usize, usize) {
    let (fw, fh) = (frame.width().max(1), frame.height().max(1));
    let step = (fw / THUMB_W).max(1);
    let (w, h) = ((fw / step) as usize, (fh / step) as usize);
    let mut out = vec![0f32; w * h];
    let raw = frame.as_raw();
    for ty in 0..h {
        for tx in 0..w {
            let mut acc = 0f32;
            for dy in 0..step {
                let row = (ty as u32 * step + dy) as usize * fw as usize;
                for dx in 0..step {
                    let i = (row + (tx as u32 * step + dx) as usize) * 3;
                    acc += 0.299 * raw[i] as f32 + 0.587 * raw[i + 1] as f32 + 0.114 * raw[i + 2] as f32;
                }
            }
            out[ty * w + tx] = acc / (step * step) as f32;
        }
    }
    (out, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(offset: u32) -> RgbImage {
        RgbImage::from_fn(640, 360, |x, y| {
            if ((x + offset) / 8 + y / 8).is_multiple_of(2) {
                image::Rgb([220, 220, 220])
            } else {
                image::Rgb([30, 30, 30])
            }
        })
    }

    #[test]
    fn black_uniform_sharp_and_frozen_are_told_apart() {
        let mut p = HealthProbe::default();
        let black = p.measure(&RgbImage::new(640, 360));
        assert!(black.mean_luma < 1.0 && black.luma_std < 1.0 && black.changed);
        let again = p.measure(&RgbImage::new(640, 360));
        assert!(!again.changed, "the same picture twice is not a change");

        let sharp = p.measure(&checker(0));
        assert!(sharp.changed && sharp.luma_std > 50.0 && sharp.sharpness > 1000.0, "{sharp:?}");
        let moved = p.measure(&checker(4));
        assert!(moved.changed);
        let grey = p.measure(&RgbImage::from_pixel(640, 360, image::Rgb([128, 128, 128])));
        assert!(grey.sharpness < 1.0 && (grey.mean_luma - 128.0).abs() < 1.0);
    }
}
