//! YuNet face detection (`yunet_n_dynamic.onnx`, MANIFEST §1).
//!
//! Input: `[1, 3, H, W]` float32 BGR 0..255, H and W multiples of 32 (zero padding
//! at the bottom/right). Outputs per stride s ∈ {8, 16, 32}: `cls_s`, `obj_s`
//! (sigmoid-activated), `bbox_s` (dx, dy, dw, dh) and `kps_s` (5 landmark offsets),
//! one anchor per feature-map cell in row-major order.

use fast_image_resize as fr;
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::{Result, VisionError};

pub const STRIDES: [usize; 3] = [8, 16, 32];
const MODEL: &str = "yunet";

/// A detected face in source-frame pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    /// `[x, y, w, h]`.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right and left mouth corner (subject's sides).
    pub landmarks: [[f32; 2]; 5],
    /// `sqrt(cls * obj)`, as OpenCV's `FaceDetectorYN` reports.
    pub score: f32,
}

/// Raw per-stride outputs of one image, borrowed from the session's output tensors.
pub struct StrideOutputs<'a> {
    pub stride: usize,
    pub cls: &'a [f32],
    pub obj: &'a [f32],
    pub bbox: &'a [f32],
    pub kps: &'a [f32],
}

/// Decodes one stride's outputs for a `padded_w`-wide input: faces with score above `threshold`,
/// in input pixels (not yet mapped back to the source frame).
pub fn decode(out: &StrideOutputs<'_>, padded_w: usize, threshold: f32, faces: &mut Vec<Face>) {
    let s = out.stride as f32;
    let cols = padded_w / out.stride;
    for (i, (&cls, &obj)) in out.cls.iter().zip(out.obj).enumerate() {
        let score = (cls.clamp(0.0, 1.0) * obj.clamp(0.0, 1.0)).sqrt();
        if score <= threshold {
            continue;
        }
        let (row, col) = ((i / cols) as f32, (i % cols) as f32);
        let b = &out.bbox[i * 4..i * 4 + 4];
        let (cx, cy) = ((b[0] + col) * s, (b[1] + row) * s);
        let (w, h) = (b[2].exp() * s, b[3].exp() * s);
        let k = &out.kps[i * 10..i * 10 + 10];
        let mut landmarks = [[0f32; 2]; 5];
        for (j, lm) in landmarks.iter_mut().enumerate() {
            *lm = [(k[2 * j] + col) * s, (k[2 * j + 1] + row) * s];
        }
        faces.push(Face { bbox: [cx - w / 2.0, cy - h / 2.0, w, h], landmarks, score });
    }
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// Greedy non-maximum suppression on any detection type: sorts by `score` (stable, best first) and keeps
/// each item whose `[x, y, w, h]` `bbox` overlaps every already kept one by at most `iou_threshold`.
pub fn nms_by<T>(
    mut items: Vec<T>,
    iou_threshold: f32,
    bbox: impl Fn(&T) -> [f32; 4],
    score: impl Fn(&T) -> f32,
) -> Vec<T> {
    items.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        let b = bbox(&item);
        if kept.iter().all(|k| iou(&bbox(k), &b) <= iou_threshold) {
            kept.push(item);
        }
    }
    kept
}

/// Greedy non-maximum suppression: keeps the best-scoring face of every group overlapping above `iou_threshold`.
pub fn nms(faces: Vec<Face>, iou_threshold: f32) -> Vec<Face> {
    nms_by(faces, iou_threshold, |f| f.bbox, |f| f.score)
}

pub struct FaceDetector {
    session: Session,
    /// Score threshold (manifest: 0.6; OpenCV's default is 0.9).
    pub threshold: f32,
    /// NMS IoU threshold (OpenCV's default 0.3).
    pub nms_iou: f32,
    /// Frames wider than this are downscaled before detection (coordinates are mapped back).
    pub max_width: u32,
    /// `[width, height]` the network last ran on (after downscaling, before padding).
    pub last_input: [u32; 2],
    resizer: fr::Resizer,
}

impl FaceDetector {
    pub fn load(rt: &crate::Runtime, path: &std::path::Path) -> Result<Self> {
        let session = rt.session(path)?;
        let outputs: Vec<String> =
            STRIDES.iter().flat_map(|s| ["cls", "obj", "bbox", "kps"].map(|k| format!("{k}_{s}"))).collect();
        let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        crate::runtime::require_outlets(&session, MODEL, &["input"], &outputs)?;
        Ok(FaceDetector {
            session,
            threshold: 0.6,
            nms_iou: 0.3,
            max_width: 1280,
            last_input: [0, 0],
            resizer: fr::Resizer::new(),
        })
    }

    /// Detects faces in an RGB frame; coordinates in the frame's pixels.
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Face>> {
        let img = crate::downscale(&mut self.resizer, frame, self.max_width, 32, MODEL)?;
        let img = img.as_ref();
        self.last_input = [img.width(), img.height()];
        let (sx, sy) = (frame.width() as f32 / img.width() as f32, frame.height() as f32 / img.height() as f32);
        let input = bgr_planar_padded(img, 32);
        let padded_w = input.shape()[3];
        let fail = |e: ort::Error| VisionError::Inference { model: MODEL, detail: e.to_string() };
        let outputs = self
            .session
            .run(ort::inputs!["input" => TensorRef::from_array_view(&input).map_err(fail)?])
            .map_err(fail)?;
        let mut faces = Vec::new();
        for stride in STRIDES {
            let get = |k: &str| -> Result<&[f32]> {
                let name = format!("{k}_{stride}");
                outputs[name.as_str()].try_extract_tensor::<f32>().map(|(_, d)| d).map_err(fail)
            };
            let out =
                StrideOutputs { stride, cls: get("cls")?, obj: get("obj")?, bbox: get("bbox")?, kps: get("kps")? };
            decode(&out, padded_w, self.threshold, &mut faces);
        }
        let mut faces = nms(faces, self.nms_iou);
        for f in &mut faces {
            f.bbox = [f.bbox[0] * sx, f.bbox[1] * sy, f.bbox[2] * sx, f.bbox[3] * sy];
            for lm in &mut f.landmarks {
                *lm = [lm[0] * sx, lm[1] * sy];
            }
        }
        Ok(faces)
    }
}

/// The raw output tensors of one inference, copied out of the session: what
/// [`FaceDetector::detect`] post-processes ([`decode`] on each stride, then [`nms`]).
/// For benchmarks and debugging of that step.
#[doc(hidden)]
pub struct RawOutputs {
    /// Width of the padded network input the anchors are laid out on.
    pub padded_w: usize,
    /// `(stride, [cls, obj, bbox, kps])` for each of [`STRIDES`].
    pub strides: Vec<(usize, [Vec<f32>; 4])>,
}

impl RawOutputs {
    /// The outputs of each stride, as [`decode`] takes them.
    pub fn stride_outputs(&self) -> impl Iterator<Item = StrideOutputs<'_>> {
        self.strides.iter().map(|(s, [cls, obj, bbox, kps])| StrideOutputs { stride: *s, cls, obj, bbox, kps })
    }
}

impl FaceDetector {
    /// Runs the network on `frame` as it is (no downscaling to `max_width`) and returns the raw
    /// outputs, undecoded (coordinates of decoded faces are then in `frame`'s pixels).
    #[doc(hidden)]
    pub fn infer_raw(&mut self, frame: &RgbImage) -> Result<RawOutputs> {
        let input = bgr_planar_padded(frame, 32);
        let padded_w = input.shape()[3];
        let fail = |e: ort::Error| VisionError::Inference { model: MODEL, detail: e.to_string() };
        let outputs = self
            .session
            .run(ort::inputs!["input" => TensorRef::from_array_view(&input).map_err(fail)?])
            .map_err(fail)?;
        let mut strides = Vec::with_capacity(STRIDES.len());
        for stride in STRIDES {
            let get = |k: &str| -> Result<Vec<f32>> {
                let name = format!("{k}_{stride}");
                outputs[name.as_str()].try_extract_tensor::<f32>().map(|(_, d)| d.to_vec()).map_err(fail)
            };
            strides.push((stride, [get("cls")?, get("obj")?, get("bbox")?, get("kps")?]));
        }
        Ok(RawOutputs { padded_w, strides })
    }
}

/// `[1, 3, H', W']` BGR float32 0..255 with H', W' rounded up to `multiple` and zero padding.
pub fn bgr_planar_padded(img: &RgbImage, multiple: u32) -> ndarray::Array4<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let m = multiple as usize;
    let (pw, ph) = (w.div_ceil(m) * m, h.div_ceil(m) * m);
    let mut t = ndarray::Array4::<f32>::zeros((1, 3, ph, pw));
    write_bgr_planar(img, t.as_slice_mut().expect("fresh array is contiguous"), pw, ph);
    t
}

/// Writes `img` as raw BGR planes (0..255) into the top-left of a `[3, height, width]` buffer.
pub(crate) fn write_bgr_planar(img: &RgbImage, data: &mut [f32], width: usize, height: usize) {
    let plane = width * height;
    let w = img.width() as usize;
    for (y, row) in img.as_raw().chunks_exact(w * 3).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            let o = y * width + x;
            data[o] = px[2] as f32;
            data[plane + o] = px[1] as f32;
            data[2 * plane + o] = px[0] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built 64x64 input: one strong anchor at stride 8, cell (row 2, col 3).
    #[test]
    fn decode_places_boxes_and_landmarks_on_the_grid() {
        let (pw, ph) = (64usize, 64usize);
        let n = (ph / 8) * (pw / 8);
        let mut cls = vec![0.0; n];
        let mut obj = vec![0.0; n];
        let mut bbox = vec![0.0; n * 4];
        let mut kps = vec![0.0; n * 10];
        let i = 2 * (pw / 8) + 3;
        cls[i] = 0.81;
        obj[i] = 1.0;
        bbox[i * 4..i * 4 + 4].copy_from_slice(&[0.5, 0.25, 2f32.ln(), 0.0]);
        kps[i * 10..i * 10 + 2].copy_from_slice(&[-0.5, 1.0]);
        // a weak anchor that must be filtered out
        cls[0] = 0.3;
        obj[0] = 0.3;
        let mut faces = Vec::new();
        decode(&StrideOutputs { stride: 8, cls: &cls, obj: &obj, bbox: &bbox, kps: &kps }, pw, 0.6, &mut faces);
        assert_eq!(faces.len(), 1);
        let f = &faces[0];
        assert!((f.score - 0.9).abs() < 1e-6, "score is sqrt(cls*obj): {}", f.score);
        // centre ((0.5+3)*8, (0.25+2)*8) = (28, 18); size (16, 8)
        assert_eq!(f.bbox, [20.0, 14.0, 16.0, 8.0]);
        assert_eq!(f.landmarks[0], [20.0, 24.0]);
        assert_eq!(f.landmarks[1], [24.0, 16.0]);
    }

    fn face(x: f32, score: f32) -> Face {
        Face { bbox: [x, 0.0, 10.0, 10.0], landmarks: [[0.0; 2]; 5], score }
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_all_disjoint() {
        // 0 and 1 overlap with IoU 8/12 = 0.67; 2 overlaps 1 with IoU 1/19 < 0.3; 3 is far away.
        let kept = nms(vec![face(0.0, 0.7), face(2.0, 0.9), face(11.0, 0.8), face(100.0, 0.65)], 0.3);
        let xs: Vec<f32> = kept.iter().map(|f| f.bbox[0]).collect();
        assert_eq!(xs, vec![2.0, 11.0, 100.0]);
    }

    #[test]
    fn iou_basics() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 0.0, 10.0, 10.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 10.0, 10.0]) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn padding_and_channel_order() {
        let mut img = RgbImage::new(33, 2);
        img.put_pixel(32, 1, image::Rgb([10, 20, 30]));
        let t = bgr_planar_padded(&img, 32);
        assert_eq!(t.shape(), &[1, 3, 32, 64]);
        assert_eq!((t[[0, 0, 1, 32]], t[[0, 1, 1, 32]], t[[0, 2, 1, 32]]), (30.0, 20.0, 10.0));
        assert_eq!(t[[0, 0, 31, 63]], 0.0);
    }
}
