//! The *probe* of a face search or a watchlist entry: a photo (`image`, base64 JPEG or PNG,
//! embedded by the same face pipeline the edge agents run) or an `embedding` of the named
//! `model`. The probe itself is never stored or logged: the audit record keeps its SHA-256
//! digest, so an auditor can tell whether two searches used the same photo without the
//! aggregator keeping the photo.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sightline_vision::{EMBEDDING_MODEL, PhotoError, PhotoLimits, check_photo};
use utoipa::ToSchema;

use super::request::{ApiError, ApiResult};
use super::state::ApiState;

/// What a probe turned out to be.
#[derive(Serialize, ToSchema)]
pub struct Probe {
    /// `image` or `embedding`.
    pub source: &'static str,
    /// `sha256:…` of the photo bytes or of the embedding (little-endian f32): what the audit log keeps.
    pub digest: String,
    /// Faces found in the photo (the largest was used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faces_found: Option<usize>,
    /// `[x, y, w, h]` of the face used, in photo pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<f32>,
}

/// The probe's embedding and its description; `digest_out` is set as soon as the probe's digest
/// is known, so a refused photo is audited with it.
pub(super) async fn resolve_probe(
    state: &Arc<ApiState>,
    image: Option<String>,
    embedding: Option<Vec<f32>>,
    model: &str,
    digest_out: &mut Option<String>,
) -> ApiResult<(Vec<f32>, Probe)> {
    match (image, embedding) {
        (Some(_), Some(_)) => Err(ApiError::param("image", "give either `image` or `embedding`, not both")),
        (None, None) => Err(ApiError::param("image", "a probe is required: `image` (base64 JPEG/PNG) or `embedding`")),
        (None, Some(e)) => {
            // what ingest accepts of the model, no more: a probe of absurd magnitude would
            // make every indexed entry a candidate and read them all from the store
            if model == EMBEDDING_MODEL
                && let Err((what, why)) = crate::plausible::check_embedding(model, &e)
            {
                return Err(ApiError::param(what, why));
            }
            if let Some(i) = e.iter().position(|v| !v.is_finite()) {
                return Err(ApiError::param("embedding", format!("value {i} is not a finite number")));
            }
            let mut h = Sha256::new();
            e.iter().for_each(|v| h.update(v.to_le_bytes()));
            let digest = format!("sha256:{}", hex::encode(h.finalize()));
            *digest_out = Some(digest.clone());
            Ok((e, Probe { source: "embedding", digest, faces_found: None, bbox: None, quality: None }))
        }
        (Some(b64), None) => {
            if model != EMBEDDING_MODEL {
                return Err(ApiError::param("model", format!("photos are embedded with {EMBEDDING_MODEL} only")));
            }
            // `data:image/png;base64,` prefixes are accepted; whitespace (line breaks) too
            let raw = b64.split_once(";base64,").map_or(b64.as_str(), |(_, d)| d);
            let raw: String = raw.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            drop(b64);
            let max = state.search.max_photo_bytes;
            if raw.len() / 4 * 3 > max + 3 {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("`image` is larger than the {max} byte limit"),
                ));
            }
            // a slot before the photo is decoded, held until it is embedded (bounded memory)
            let slot = state.photos.enter(&state.search).await.ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!(
                        "{} photos are being processed (`[search] max_concurrent_photos`); try again in a few seconds",
                        state.search.max_concurrent_photos
                    ),
                )
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .map_err(|e| ApiError::param("image", format!("is not valid base64: {e}")))?;
            drop(raw);
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            *digest_out = Some(digest.clone());
            let limits = PhotoLimits { max_bytes: max, max_pixels: state.search.max_photo_pixels };
            // the header's pixel count, before any pixel buffer exists or the pipeline is waited for
            check_photo(&bytes, &limits).map_err(photo_error)?;
            let faces = state.faces.clone().map_err(|why| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("photos cannot be embedded here ({why}); send an `embedding` instead"),
                )
            })?;
            let face = tokio::task::spawn_blocking(move || {
                let face = faces.lock().unwrap().embed_photo(&bytes, &limits);
                drop(slot);
                face
            })
            .await
            .map_err(|e| ApiError::internal("embedding the photo", e))?;
            let face = face.map_err(photo_error)?;
            let probe = Probe {
                source: "image",
                digest,
                faces_found: Some(face.faces_found),
                bbox: Some(face.bbox),
                quality: Some(face.quality),
            };
            Ok((face.embedding, probe))
        }
    }
}

fn photo_error(e: PhotoError) -> ApiError {
    match e {
        PhotoError::NoFace | PhotoError::FaceTooSmall { .. } => ApiError {
            parameter: Some("image".into()),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_usable_face", e.to_string())
        },
        PhotoError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()),
        PhotoError::Vision(v) => ApiError::internal("embedding the photo", v),
        other => ApiError::param("image", other.to_string()),
    }
}
