//! Face embeddings with dlib's ResNet (`dlib_face_recognition_resnet_model_v1.onnx`, MANIFEST §2):
//! input `[N, 3, 150, 150]` RGB 0..255, output `[N, 128]`, Euclidean metric, same person below 0.6.

use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::align::CHIP_SIZE;
use crate::{Result, VisionError};

pub const MODEL_FILE: &str = "dlib_face_recognition_resnet_model_v1.onnx";
/// The `model` name published with every embedding.
pub const EMBEDDING_MODEL: &str = "dlib-resnet-v1";
pub const EMBEDDING_DIM: usize = 128;
const MODEL: &str = "dlib-resnet-v1";

pub struct FaceEmbedder {
    session: Session,
    /// Largest batch sent in one inference call (bounds memory on crowded frames).
    pub max_batch: usize,
}

impl FaceEmbedder {
    pub fn load(rt: &crate::Runtime, path: &std::path::Path) -> Result<Self> {
        let session = rt.session(path)?;
        crate::runtime::require_outlets(&session, MODEL, &["input"], &["embedding"])?;
        Ok(FaceEmbedder { session, max_batch: 16 })
    }

    /// Embeds aligned 150x150 chips, batched.
    pub fn embed(&mut self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let fail = |e: ort::Error| VisionError::Inference { model: MODEL, detail: e.to_string() };
        let mut out = Vec::with_capacity(chips.len());
        for batch in chips.chunks(self.max_batch.max(1)) {
            let input = rgb_planar_batch(batch);
            let outputs = self
                .session
                .run(ort::inputs!["input" => TensorRef::from_array_view(&input).map_err(fail)?])
                .map_err(fail)?;
            let (shape, data) = outputs["embedding"].try_extract_tensor::<f32>().map_err(fail)?;
            if shape.len() != 2 || shape[1] as usize != EMBEDDING_DIM || shape[0] as usize != batch.len() {
                return Err(VisionError::ModelInterface { model: MODEL, detail: format!("output shape {shape:?}") });
            }
            out.extend(data.chunks_exact(EMBEDDING_DIM).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

/// `[N, 3, 150, 150]` RGB float32 0..255 from aligned chips.
pub fn rgb_planar_batch(chips: &[RgbImage]) -> ndarray::Array4<f32> {
    let s = CHIP_SIZE as usize;
    let mut t = ndarray::Array4::<f32>::zeros((chips.len(), 3, s, s));
    for (n, chip) in chips.iter().enumerate() {
        assert_eq!(chip.dimensions(), (CHIP_SIZE, CHIP_SIZE), "chips are aligned to 150x150");
        let mut view = t.index_axis_mut(ndarray::Axis(0), n);
        let plane = s * s;
        let data = view.as_slice_mut().expect("contiguous");
        for (i, px) in chip.as_raw().chunks_exact(3).enumerate() {
            data[i] = px[0] as f32;
            data[plane + i] = px[1] as f32;
            data[2 * plane + i] = px[2] as f32;
        }
    }
    t
}
