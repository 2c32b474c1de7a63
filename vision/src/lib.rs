//! The face pipeline shared by the edge agent and the center: YuNet detection,
//! 5-landmark similarity alignment, 128-d dlib ResNet embeddings, shot quality.
//!
//! All models run on ONNX Runtime (`ort`, loaded dynamically from the
//! `libonnxruntime.so` that `scripts/setup.sh` installs). Model formats, decoding
//! and the alignment template follow `shared/models/MANIFEST.md` §1–2.

pub mod align;
pub mod crowd;
pub mod embed;
pub mod persons;
pub mod photo;
pub mod quality;
pub mod runtime;
pub mod yunet;

use image::RgbImage;

pub use crowd::{DensityEstimator, DensityMap, FloorCorrection, point_in_polygon};
pub use embed::{EMBEDDING_DIM, EMBEDDING_MODEL, FaceEmbedder};
pub use persons::{Person, PersonDetector};
pub use photo::{PhotoError, PhotoFace, PhotoLimits, check_photo};
pub use runtime::{Runtime, RuntimeConfig};
pub use yunet::{Face, FaceDetector};

/// Errors of the vision crate; each names the model or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error(
        "ONNX Runtime library not found at {path} (run scripts/setup.sh, or set `[runtime] onnxruntime` in the config or ORT_DYLIB_PATH)"
    )]
    RuntimeMissing { path: std::path::PathBuf },
    #[error("ONNX Runtime library {path} could not be loaded: {detail}")]
    RuntimeLoad { path: std::path::PathBuf, detail: String },
    #[error(
        "no ONNX Runtime library configured: set `[runtime] onnxruntime` in the config or ORT_DYLIB_PATH (scripts/setup.sh installs one under .local/onnxruntime/)"
    )]
    RuntimeUnset,
    #[error("execution provider {0:?} is not compiled in (cargo features: cuda, tensorrt, openvino) or unknown")]
    UnknownProvider(String),
    #[error(transparent)]
    Model(#[from] sightline_models::ModelError),
    #[error("model {path} could not be loaded by ONNX Runtime: {detail}")]
    ModelLoad { path: std::path::PathBuf, detail: String },
    #[error("model {model}: unexpected interface: {detail}")]
    ModelInterface { model: &'static str, detail: String },
    #[error("inference with {model} failed: {detail}")]
    Inference { model: &'static str, detail: String },
    #[error("image {path}: {detail}")]
    Image { path: std::path::PathBuf, detail: String },
}

pub type Result<T, E = VisionError> = std::result::Result<T, E>;

/// A face found in a frame, aligned and embedded.
#[derive(Clone, Debug)]
pub struct AnalyzedFace {
    pub face: Face,
    pub quality: f32,
    pub embedding: Vec<f32>,
}

/// Euclidean distance between two embeddings (the dlib metric: same person below 0.6).
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

/// Detector and embedder together: one call per frame, embeddings batched per frame.
pub struct FacePipeline {
    pub detector: FaceDetector,
    pub embedder: FaceEmbedder,
    /// Faces narrower than this (source pixels) are not embedded: too small to identify.
    pub min_face_px: f32,
    /// How long the last [`FacePipeline::analyze`] spent in each model (for latency metrics).
    pub timings: Timings,
}

/// Time spent in the models by one [`FacePipeline::analyze`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Detection, including pre- and post-processing.
    pub detect: std::time::Duration,
    /// Alignment and the embedding batch; `None` when no face was embedded.
    pub embed: Option<std::time::Duration>,
}

impl FacePipeline {
    /// Loads both models from `model_dir` (sha256-verified against the model manifest).
    pub fn load(rt: &Runtime, model_dir: &std::path::Path, detector_file: &str) -> Result<Self> {
        Ok(FacePipeline {
            detector: FaceDetector::load(rt, &model_dir.join(detector_file))?,
            embedder: FaceEmbedder::load(rt, &model_dir.join(embed::MODEL_FILE))?,
            min_face_px: 24.0,
            timings: Timings::default(),
        })
    }

    /// Detects, aligns and embeds every face in an RGB frame.
    pub fn analyze(&mut self, frame: &RgbImage) -> Result<Vec<AnalyzedFace>> {
        let start = std::time::Instant::now();
        self.timings = Timings::default();
        let faces: Vec<Face> =
            self.detector.detect(frame)?.into_iter().filter(|f| f.bbox[2] >= self.min_face_px).collect();
        self.timings.detect = start.elapsed();
        self.embed_faces(frame, faces)
    }

    /// Aligns and embeds already detected faces of `frame` (one batch), with their shot quality;
    /// records the time in `timings.embed`. The second half of [`FacePipeline::analyze`], shared
    /// with [`FacePipeline::embed_photo`] so both produce identical embeddings.
    pub(crate) fn embed_faces(&mut self, frame: &RgbImage, faces: Vec<Face>) -> Result<Vec<AnalyzedFace>> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let start = std::time::Instant::now();
        let chips: Vec<RgbImage> = faces.iter().map(|f| align::align(frame, &f.landmarks)).collect();
        let embeddings = self.embedder.embed(&chips)?;
        self.timings.embed = Some(start.elapsed());
        Ok(faces
            .into_iter()
            .zip(chips.iter())
            .zip(embeddings)
            .map(|((face, chip), embedding)| AnalyzedFace {
                quality: quality::shot_quality(&face, chip),
                face,
                embedding,
            })
            .collect())
    }
}

/// `frame` scaled down (bilinear, aspect kept) so it is at most `max_width` wide and each side at
/// least `min_side`; the frame itself when it is narrow enough. The detectors' common first step.
pub(crate) fn downscale<'a>(
    resizer: &mut fast_image_resize::Resizer,
    frame: &'a RgbImage,
    max_width: u32,
    min_side: u32,
    model: &'static str,
) -> Result<std::borrow::Cow<'a, RgbImage>> {
    use fast_image_resize as fr;
    let scale = max_width as f32 / frame.width() as f32;
    if scale >= 1.0 {
        return Ok(std::borrow::Cow::Borrowed(frame));
    }
    let w = ((frame.width() as f32 * scale).round() as u32).max(min_side);
    let h = ((frame.height() as f32 * scale).round() as u32).max(min_side);
    let mut dst = RgbImage::new(w, h);
    let bilinear = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    resizer
        .resize(frame, &mut dst, &bilinear)
        .map_err(|e| VisionError::Inference { model, detail: format!("resize: {e}") })?;
    Ok(std::borrow::Cow::Owned(dst))
}

/// Loads an image file as RGB (tests, `POST /search`, tools).
pub fn load_rgb(path: &std::path::Path) -> Result<RgbImage> {
    image::open(path)
        .map(|i| i.to_rgb8())
        .map_err(|e| VisionError::Image { path: path.to_owned(), detail: e.to_string() })
}
