//! Person detection with YOLOX-nano (`yolox_nano.onnx`, MANIFEST §4).
//!
//! Input `images`: `[1, 3, 416, 416]` float32 BGR raw 0..255. Letterbox: `r = min(416/h, 416/w)`,
//! bilinear resize to `(floor(w*r), floor(h*r))` (interpolating, no anti-aliasing, like upstream's
//! `cv2.resize`), pasted top-left on a canvas of 114. Output `output`: `[1, 3549, 85]`, per anchor
//! `[dx, dy, dw, dh, obj, p_0 .. p_79]` (already sigmoid-activated), anchors the cells of the stride
//! 8, 16, 32 grids (52², 26², 13²) concatenated, row-major in each. Person = COCO class 0,
//! score = `obj * p_0`.
//!
//! Measured on `vtest.avi` frames 0, 100, …, 700 (`tests/crowd.rs`): persons > 0.5 = 4, 7, 7, 7, 4, 5, 7, 9
//! (identical to the manifest); > 0.6 (the default) = 3, 6, 7, 6, 3, 3, 6, 8 — frame 300, with 6 true
//! pedestrians, gives 6. About 50 ms per `detect` call here (letterbox, inference, decode; 2 threads on a
//! loaded machine; the manifest times the inference alone at 32.8 ms).

use fast_image_resize as fr;
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::{Result, VisionError};

pub const MODEL_FILE: &str = "yolox_nano.onnx";
const MODEL: &str = "yolox_nano";
/// Side of the square network input.
pub const INPUT_SIZE: u32 = 416;
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// Anchors in the output: 52² + 26² + 13².
pub const ANCHORS: usize = 3549;
/// Values per anchor: 4 box + objectness + 80 classes.
pub const ANCHOR_LEN: usize = 85;
/// Letterbox fill value (all channels).
pub const PAD_VALUE: f32 = 114.0;

/// A detected person in source-frame pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    /// `[x, y, w, h]`.
    pub bbox: [f32; 4],
    /// `obj * p_person`.
    pub score: f32,
}

/// Where a frame lands in the 416x416 input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Scale from frame to input pixels, `min(416/h, 416/w)`.
    pub ratio: f32,
    /// Size of the resized frame, pasted at the top-left of the canvas.
    pub width: u32,
    pub height: u32,
}

impl Letterbox {
    /// The upstream geometry (computed in f64 as upstream does in Python, so `w*r` lands on 416 exactly
    /// when it should).
    pub fn for_frame(w: u32, h: u32) -> Letterbox {
        let s = INPUT_SIZE as f64;
        let r = (s / h as f64).min(s / w as f64);
        let fit = |v: u32| ((v as f64 * r).floor() as u32).clamp(1, INPUT_SIZE);
        Letterbox { ratio: r as f32, width: fit(w), height: fit(h) }
    }
}

/// `[1, 3, 416, 416]` BGR float32 0..255: `resized` (already letterbox-sized) at the top-left, 114 elsewhere.
pub fn letterbox_tensor(resized: &RgbImage) -> ndarray::Array4<f32> {
    let s = INPUT_SIZE as usize;
    assert!(resized.width() as usize <= s && resized.height() as usize <= s, "letterboxed image fits 416x416");
    let mut t = ndarray::Array4::<f32>::from_elem((1, 3, s, s), PAD_VALUE);
    crate::yunet::write_bgr_planar(resized, t.as_slice_mut().expect("fresh array is contiguous"), s, s);
    t
}

/// Decodes the `[3549 * 85]` output into persons scoring above `threshold`, in frame pixels
/// (input pixels divided by `ratio`), before NMS and unclipped.
pub fn decode(output: &[f32], ratio: f32, threshold: f32) -> Vec<Person> {
    let mut persons = Vec::new();
    let mut anchors = output.chunks_exact(ANCHOR_LEN);
    for stride in STRIDES {
        let cols = INPUT_SIZE as usize / stride;
        let s = stride as f32;
        for (i, a) in anchors.by_ref().take(cols * cols).enumerate() {
            let score = a[4] * a[5];
            if score <= threshold {
                continue;
            }
            let (row, col) = ((i / cols) as f32, (i % cols) as f32);
            let (cx, cy) = ((a[0] + col) * s, (a[1] + row) * s);
            let (w, h) = (a[2].exp() * s, a[3].exp() * s);
            persons
                .push(Person { bbox: [(cx - w / 2.0) / ratio, (cy - h / 2.0) / ratio, w / ratio, h / ratio], score });
        }
    }
    persons
}

/// Clips an `[x, y, w, h]` box to a `width` x `height` frame.
fn clip(b: [f32; 4], width: f32, height: f32) -> [f32; 4] {
    let (x0, y0) = (b[0].clamp(0.0, width), b[1].clamp(0.0, height));
    let (x1, y1) = ((b[0] + b[2]).clamp(0.0, width), (b[1] + b[3]).clamp(0.0, height));
    [x0, y0, x1 - x0, y1 - y0]
}

pub struct PersonDetector {
    session: Session,
    /// Score threshold (manifest: 0.6; a sign post scored 0.55 on `vtest.avi`).
    pub threshold: f32,
    /// NMS IoU threshold (upstream: 0.45).
    pub nms_iou: f32,
    resizer: fr::Resizer,
}

impl PersonDetector {
    pub fn load(rt: &crate::Runtime, path: &std::path::Path) -> Result<Self> {
        let session = rt.session(path)?;
        crate::runtime::require_outlets(&session, MODEL, &["images"], &["output"])?;
        Ok(PersonDetector { session, threshold: 0.6, nms_iou: 0.45, resizer: fr::Resizer::new() })
    }

    /// Detects persons in an RGB frame; boxes in the frame's pixels, clipped to it, best first.
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Person>> {
        let fail_resize = |e: fr::ResizeError| VisionError::Inference { model: MODEL, detail: format!("resize: {e}") };
        let lb = Letterbox::for_frame(frame.width(), frame.height());
        let input = if (lb.width, lb.height) == frame.dimensions() {
            letterbox_tensor(frame)
        } else {
            let mut dst = RgbImage::new(lb.width, lb.height);
            self.resizer
                .resize(
                    frame,
                    &mut dst,
                    &fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Interpolation(fr::FilterType::Bilinear)),
                )
                .map_err(fail_resize)?;
            letterbox_tensor(&dst)
        };
        let fail = |e: ort::Error| VisionError::Inference { model: MODEL, detail: e.to_string() };
        let outputs = self
            .session
            .run(ort::inputs!["images" => TensorRef::from_array_view(&input).map_err(fail)?])
            .map_err(fail)?;
        let (shape, data) = outputs["output"].try_extract_tensor::<f32>().map_err(fail)?;
        if shape.len() != 3 || shape[1] as usize != ANCHORS || shape[2] as usize != ANCHOR_LEN {
            return Err(VisionError::ModelInterface { model: MODEL, detail: format!("output shape {shape:?}") });
        }
        let persons =
            crate::yunet::nms_by(decode(data, lb.ratio, self.threshold), self.nms_iou, |p| p.bbox, |p| p.score);
        let (w, h) = (frame.width() as f32, frame.height() as f32);
        Ok(persons.into_iter().map(|p| Person { bbox: clip(p.bbox, w, h), ..p }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(out: &mut [f32], anchor: usize, values: &[f32]) {
        out[anchor * ANCHOR_LEN..anchor * ANCHOR_LEN + values.len()].copy_from_slice(values);
    }

    #[test]
    fn decode_uses_each_strides_grid_and_divides_by_ratio() {
        let mut out = vec![0.0; ANCHORS * ANCHOR_LEN];
        // stride 8, row 2, col 3: centre ((0.5+3)*8, (0.25+2)*8) = (28, 18), size (16, 8)
        set(&mut out, 2 * 52 + 3, &[0.5, 0.25, 2f32.ln(), 0.0, 0.9, 1.0]);
        // stride 16, row 1, col 4: centre (64, 16), size (16, 32)
        set(&mut out, 2704 + 26 + 4, &[0.0, 0.0, 0.0, 2f32.ln(), 1.0, 0.8]);
        // stride 32, last cell (12, 12): centre (400, 400), size (32, 32)
        set(&mut out, ANCHORS - 1, &[0.5, 0.5, 0.0, 0.0, 0.7, 1.0]);
        // confident object of another class (p_1), and a weak person: both dropped
        set(&mut out, 10, &[0.0, 0.0, 0.0, 0.0, 1.0, 0.1, 0.9]);
        set(&mut out, 11, &[0.0, 0.0, 0.0, 0.0, 0.7, 0.7]);
        let r = 0.5;
        let mut p = decode(&out, r, 0.6);
        p.sort_by(|a, b| b.score.total_cmp(&a.score));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!((p[0].score - 0.9).abs() < 1e-6 && (p[1].score - 0.8).abs() < 1e-6);
        assert_eq!(p[0].bbox, [40.0, 28.0, 32.0, 16.0]);
        assert_eq!(p[1].bbox, [112.0, 0.0, 32.0, 64.0]);
        assert_eq!(p[2].bbox, [768.0, 768.0, 64.0, 64.0]);
    }

    #[test]
    fn letterbox_geometry() {
        // vtest.avi: 768x576 → r = 416/768, 416x312
        let lb = Letterbox::for_frame(768, 576);
        assert_eq!((lb.width, lb.height), (416, 312));
        assert!((lb.ratio - 416.0 / 768.0).abs() < 1e-7);
        // portrait: height limits
        let lb = Letterbox::for_frame(300, 900);
        assert_eq!((lb.width, lb.height), (138, 416));
        // 1920x1080: r = 416/1920, 416 x floor(234.0) = 234
        assert_eq!(Letterbox::for_frame(1920, 1080).height, 234);
        // small frames are upscaled
        let lb = Letterbox::for_frame(200, 100);
        assert_eq!((lb.width, lb.height, lb.ratio), (416, 208, 2.08));
        // floor, not round: 1000x333 → r = 0.416, 333*0.416 = 138.528 → 138
        assert_eq!(Letterbox::for_frame(1000, 333).height, 138);
    }

    #[test]
    fn letterbox_pads_with_114_and_swaps_to_bgr() {
        let mut img = RgbImage::new(416, 312);
        img.put_pixel(415, 311, image::Rgb([10, 20, 30]));
        let t = letterbox_tensor(&img);
        assert_eq!(t.shape(), &[1, 3, 416, 416]);
        assert_eq!((t[[0, 0, 311, 415]], t[[0, 1, 311, 415]], t[[0, 2, 311, 415]]), (30.0, 20.0, 10.0));
        assert_eq!(t[[0, 0, 0, 0]], 0.0);
        assert!((0..3).all(|c| t[[0, c, 312, 0]] == 114.0 && t[[0, c, 415, 415]] == 114.0));
    }

    #[test]
    fn boxes_are_clipped_to_the_frame() {
        assert_eq!(clip([-5.0, 10.0, 20.0, 100.0], 50.0, 60.0), [0.0, 10.0, 15.0, 50.0]);
    }
}
