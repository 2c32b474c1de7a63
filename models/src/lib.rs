//! # sightline-models
//!
//! The model manifest (`models/manifest.toml`, also compiled into this crate) and a
//! sha256-verified fetcher for the ONNX models used by the pipeline.
//!
//! * [`Manifest`] — parsed `[[model]]` tables: file name, size, sha256, licence, origin.
//!   [`Manifest::embedded()`] gives the copy compiled into every binary, so a binary
//!   always knows which bytes it expects.
//! * [`verify_file`] — existence, size and (streamed) sha256 check of one file.
//! * [`fetch`] — fills a model directory: keeps verified copies, else copies from
//!   mirror directories, else downloads the pinned upstream URL with `curl`. Every new
//!   file is written to a temporary file next to its final path, verified, then
//!   atomically renamed, so the final path never holds unverified bytes.
//!
//! ```no_run
//! use sightline_models::{Manifest, names};
//! let manifest = Manifest::embedded();
//! // Looks the model up and checks size + sha256 of models/cache/yunet_n_dynamic.onnx.
//! let path = manifest.verified_path(names::YUNET_N, "models/cache".as_ref())?;
//! # Ok::<(), sightline_models::ModelError>(())
//! ```
//!
//! All failures are [`ModelError`]s whose messages name the model, the file or
//! directory involved, and what is wrong.

mod entry;
mod error;
mod fetch;
mod manifest;
mod report;
mod verify;

pub use entry::ModelEntry;
pub use error::ModelError;
pub use fetch::fetch;
pub use manifest::{EMBEDDED_MANIFEST_TOML, Manifest};
pub use report::{Attempt, FetchReport, FetchStatus, FetchedModel};
pub use verify::{sha256_file, verify_file};

/// Environment variable naming mirror directories (`:`-separated) for `sightline-models fetch`.
pub const MIRROR_ENV: &str = "SIGHTLINE_MODEL_MIRROR";

/// Environment variable naming the model directory (set to `models/cache` by `.cargo/config.toml`).
pub const MODEL_DIR_ENV: &str = "SIGHTLINE_MODEL_DIR";

/// Model names as used in `manifest.toml` (use these instead of string literals).
pub mod names {
    /// YuNet-n face detector + 5 landmarks (primary), `yunet_n_dynamic.onnx`.
    pub const YUNET_N: &str = "yunet_n";
    /// YuNet-s face detector (smaller, less accurate), `yunet_s_dynamic.onnx`.
    pub const YUNET_S: &str = "yunet_s";
    /// dlib ResNet face embedding (128-d), `dlib_face_recognition_resnet_model_v1.onnx`.
    pub const DLIB_FACE_RECOGNITION: &str = "dlib_face_recognition";
    /// CSRNet crowd density, `csrnet.onnx`.
    pub const CSRNET: &str = "csrnet";
    /// YOLOX-Nano COCO-80 / person detector, `yolox_nano.onnx`.
    pub const YOLOX_NANO: &str = "yolox_nano";
    /// Every model name above, in manifest order.
    pub const ALL: [&str; 5] = [YUNET_N, YUNET_S, DLIB_FACE_RECOGNITION, CSRNET, YOLOX_NANO];
}
