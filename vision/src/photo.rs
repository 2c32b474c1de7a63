//! One uploaded photo (JPEG or PNG bytes) → one face embedding, for `POST /search` and the
//! watchlist: the same YuNet → alignment → dlib path as [`FacePipeline::analyze`] on the edge,
//! so photo and camera embeddings are comparable.
//!
//! The bytes come from the network, so decoding is defensive: a size cap on the upload, the
//! format sniffed from the content (only PNG and JPEG), the pixel count read from the header and
//! checked *before* any pixel buffer is allocated, and `image::Limits` bounding the decoder's
//! allocations (a decompression bomb fails with an error instead of allocating gigabytes).

use std::io::Cursor;

use image::{ImageDecoder, ImageError, ImageFormat, RgbImage};

use crate::{FacePipeline, Timings, VisionError};

/// Limits on an uploaded photo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhotoLimits {
    /// Largest accepted upload, in bytes (default 10 MiB).
    pub max_bytes: usize,
    /// Largest accepted image, width x height from the header (default 40 Mpx).
    pub max_pixels: u64,
}

impl Default for PhotoLimits {
    fn default() -> Self {
        PhotoLimits { max_bytes: 10 << 20, max_pixels: 40_000_000 }
    }
}

impl PhotoLimits {
    /// Cap on the decoder's allocations (`image::Limits::max_alloc`): the largest decoded buffer
    /// `max_pixels` allows (8 bytes per pixel, 16-bit RGBA) plus 64 MiB for decoder internals.
    pub fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(64 << 20)
    }
}

/// The face chosen in a photo, embedded.
#[derive(Clone, Debug, PartialEq)]
pub struct PhotoFace {
    /// 128-d dlib embedding (Euclidean metric, same person below 0.6).
    pub embedding: Vec<f32>,
    /// `[x, y, w, h]` in pixels of the photo after EXIF orientation.
    pub bbox: [f32; 4],
    /// Detector score of the chosen face.
    pub det_score: f32,
    /// Shot quality in [0, 1] (see [`crate::quality`]).
    pub quality: f32,
    /// Faces the detector found; the largest one was chosen.
    pub faces_found: usize,
    /// `[width, height]` of the photo after EXIF orientation.
    pub image_size: [u32; 2],
}

/// Why a photo could not be embedded. Every variant except [`PhotoError::Vision`] is the uploader's
/// to fix, and its message says how ([`PhotoError::is_user_error`]).
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("the photo is {bytes} bytes, over the limit of {max_bytes} bytes; upload a smaller JPEG or PNG")]
    TooLarge { bytes: usize, max_bytes: usize },
    #[error("unsupported photo format: {format}; upload a JPEG or PNG")]
    UnsupportedFormat { format: String },
    #[error("the photo could not be decoded ({detail}); upload an intact JPEG or PNG file")]
    Decode { detail: String },
    #[error(
        "the photo is {width}x{height} pixels, over the limit of {max_pixels} pixels; upload a smaller (downscaled) photo"
    )]
    TooManyPixels { width: u32, height: u32, max_pixels: u64 },
    #[error("no face found in the photo; upload a photo where the face is visible, frontal and well lit")]
    NoFace,
    #[error(
        "the face in the photo is only {width_px} px wide, under the minimum of {min_px} px; upload a closer or higher-resolution photo"
    )]
    FaceTooSmall { width_px: u32, min_px: u32 },
    #[error("face pipeline failed: {0}")]
    Vision(#[from] VisionError),
}

impl PhotoError {
    /// True when the photo is at fault (an HTTP 4xx), false for a server-side failure (5xx).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, PhotoError::Vision(_))
    }
}

/// Human name of a format sniffed from the first bytes, for [`PhotoError::UnsupportedFormat`].
fn sniff(bytes: &[u8]) -> Result<ImageFormat, String> {
    match image::guess_format(bytes) {
        Ok(f) => Ok(f),
        // ISO-BMFF `ftyp` box: HEIC/HEIF from phones (AVIF is recognised by `guess_format`)
        Err(_) if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" => {
            let brand = String::from_utf8_lossy(&bytes[8..12]).into_owned();
            Err(match brand.as_str() {
                "heic" | "heix" | "heim" | "heis" | "hevc" | "hevx" | "mif1" | "msf1" => format!("HEIC/HEIF ({brand})"),
                _ => format!("an ISO media file (brand {brand:?}), not an image"),
            })
        }
        Err(_) if bytes.is_empty() => Err("empty upload".into()),
        Err(_) => Err("unrecognised data (not an image file?)".into()),
    }
}

fn format_name(f: ImageFormat) -> String {
    match f {
        ImageFormat::Gif => "GIF".into(),
        ImageFormat::Bmp => "BMP".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Tiff => "TIFF".into(),
        ImageFormat::Avif => "AVIF".into(),
        ImageFormat::Ico => "ICO".into(),
        other => format!("{other:?}"),
    }
}

fn decode_error(e: ImageError) -> PhotoError {
    let detail = match e {
        ImageError::Limits(l) => format!("decoding needs more memory than allowed: {l}"),
        other => other.to_string(),
    };
    PhotoError::Decode { detail }
}

/// The decoder of an uploaded photo after its header was read and checked against `limits`
/// (size, format, pixel count); no pixel buffer exists yet.
fn open_photo<'a>(
    bytes: &'a [u8],
    limits: &PhotoLimits,
    alloc: &image::Limits,
) -> Result<impl ImageDecoder + 'a, PhotoError> {
    if bytes.len() > limits.max_bytes {
        return Err(PhotoError::TooLarge { bytes: bytes.len(), max_bytes: limits.max_bytes });
    }
    let format = match sniff(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Ok(other) => return Err(PhotoError::UnsupportedFormat { format: format_name(other) }),
        Err(format) => return Err(PhotoError::UnsupportedFormat { format }),
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(alloc.clone());
    // Reads the header only (PNG: up to the first IDAT; JPEG: the markers): no pixel buffers yet.
    let decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(PhotoError::TooManyPixels { width, height, max_pixels: limits.max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(PhotoError::Decode { detail: format!("the header says {width}x{height} pixels") });
    }
    Ok(decoder)
}

/// Checks an uploaded photo against `limits` from its header alone (size, PNG or JPEG, pixel
/// count), without decoding it: cheap, so a caller can refuse a photo before it waits for the
/// face pipeline. Returns `[width, height]` as the header gives them (before EXIF orientation).
pub fn check_photo(bytes: &[u8], limits: &PhotoLimits) -> Result<[u32; 2], PhotoError> {
    let mut alloc = image::Limits::default();
    alloc.max_alloc = Some(limits.max_alloc());
    let (width, height) = open_photo(bytes, limits, &alloc)?.dimensions();
    Ok([width, height])
}

/// Decodes an uploaded photo (PNG or JPEG) to RGB8 with its EXIF orientation applied, within `limits`.
pub fn decode_photo(bytes: &[u8], limits: &PhotoLimits) -> Result<RgbImage, PhotoError> {
    let mut alloc = image::Limits::default();
    alloc.max_alloc = Some(limits.max_alloc());
    let mut decoder = open_photo(bytes, limits, &alloc)?;
    // As `ImageReader::decode`: the output buffer counts towards the allocation cap.
    alloc.reserve(decoder.total_bytes()).map_err(decode_error)?;
    decoder.set_limits(alloc).map_err(decode_error)?;
    let orientation = decoder.orientation().unwrap_or_else(|e| {
        tracing::debug!(error = %e, "unreadable EXIF orientation in an uploaded photo: ignored");
        image::metadata::Orientation::NoTransforms
    });
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    Ok(match img {
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

impl FacePipeline {
    /// Embeds the face in an uploaded photo (JPEG or PNG bytes) exactly as [`FacePipeline::analyze`]
    /// embeds faces in camera frames. With several faces the largest (box area) is used.
    pub fn embed_photo(&mut self, bytes: &[u8], limits: &PhotoLimits) -> Result<PhotoFace, PhotoError> {
        let img = decode_photo(bytes, limits)?;
        self.embed_photo_image(&img)
    }

    /// [`FacePipeline::embed_photo`] on an already decoded RGB image.
    pub fn embed_photo_image(&mut self, img: &RgbImage) -> Result<PhotoFace, PhotoError> {
        let start = std::time::Instant::now();
        self.timings = Timings::default();
        // The detector caps the width (camera frames are landscape); a tall portrait is capped on
        // its height too, or YuNet runs on every pixel of a 1000x4000 photo (~1 s). The face is
        // then aligned on the full-resolution photo, as always.
        let max_width = self.detector.max_width;
        let (w, h) = img.dimensions();
        if h > w && h > max_width {
            self.detector.max_width = (u64::from(max_width) * u64::from(w) / u64::from(h)).max(32) as u32;
        }
        let faces = self.detector.detect(img);
        self.detector.max_width = max_width;
        let faces = faces?;
        self.timings.detect = start.elapsed();
        let faces_found = faces.len();
        let Some(face) = faces.into_iter().max_by(|a, b| (a.bbox[2] * a.bbox[3]).total_cmp(&(b.bbox[2] * b.bbox[3])))
        else {
            return Err(PhotoError::NoFace);
        };
        if face.bbox[2] < self.min_face_px {
            let (width_px, min_px) = (face.bbox[2].floor() as u32, self.min_face_px.ceil() as u32);
            return Err(PhotoError::FaceTooSmall { width_px, min_px });
        }
        let analyzed = self.embed_faces(img, vec![face])?.pop().ok_or_else(|| VisionError::Inference {
            model: crate::embed::EMBEDDING_MODEL,
            detail: "no embedding returned".into(),
        })?;
        Ok(PhotoFace {
            embedding: analyzed.embedding,
            bbox: analyzed.face.bbox,
            det_score: analyzed.face.score,
            quality: analyzed.quality,
            faces_found,
            image_size: [img.width(), img.height()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_names_formats() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Ok(ImageFormat::Png));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Ok(ImageFormat::Jpeg));
        assert_eq!(format_name(sniff(b"GIF89a....").unwrap()), "GIF");
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0").unwrap_err(), "HEIC/HEIF (heic)");
        assert_eq!(sniff(b"").unwrap_err(), "empty upload");
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        let limits = PhotoLimits { max_bytes: 4, ..Default::default() };
        assert!(matches!(decode_photo(b"12345", &limits), Err(PhotoError::TooLarge { bytes: 5, max_bytes: 4 })));
        let e = decode_photo(b"GIF89a\x01\0\x01\0", &PhotoLimits::default()).unwrap_err();
        assert!(matches!(&e, PhotoError::UnsupportedFormat { format } if format == "GIF"), "{e}");
        assert!(e.is_user_error() && e.to_string().contains("JPEG or PNG"), "{e}");
    }
}
