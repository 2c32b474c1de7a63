//! The crate's error type.
//!
//! Messages are self-contained: an underlying `io::Error` is part of the message (and
//! not repeated as `Error::source()`), so printing an error with `{}` says everything.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::report::{Attempt, FetchedModel};

/// Everything that can go wrong when reading the manifest, verifying or fetching models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The manifest file could not be read.
    #[error("cannot read model manifest {path}: {error}")]
    ManifestRead { path: PathBuf, error: io::Error },

    /// The manifest is not valid TOML, has unknown/missing fields, or fails validation.
    #[error("invalid model manifest {origin}: {message}")]
    ManifestInvalid { origin: String, message: String },

    /// A model name that the manifest does not list.
    #[error("unknown model `{name}` (model manifest {origin} lists: {known})")]
    UnknownModel { name: String, origin: String, known: String },

    /// The model file does not exist.
    #[error("model file missing: {path} (run scripts/setup.sh or `sightline-models fetch`)")]
    Missing { path: PathBuf },

    /// The path exists but is not a regular file (e.g. a directory).
    #[error("model `{model}`: {path} is not a regular file")]
    NotAFile { model: String, path: PathBuf },

    /// The file has the wrong size (truncated, or a different file).
    #[error("model `{model}`: {path} is {actual} bytes, expected {expected} bytes (truncated or wrong file)")]
    SizeMismatch { model: String, path: PathBuf, expected: u64, actual: u64 },

    /// The file has the right size but the wrong content.
    #[error("model `{model}`: sha256 mismatch for {path}: expected {expected}, actual {actual}")]
    HashMismatch { model: String, path: PathBuf, expected: String, actual: String },

    /// An I/O operation (`op`, e.g. "cannot read") on `path` failed.
    #[error("{op} {path}: {error}")]
    Io { op: &'static str, path: PathBuf, error: io::Error },

    /// `curl` failed to download `url` (exit status and curl's message).
    #[error("model `{model}`: download of {url} failed ({status}): {message}")]
    Download { model: String, url: String, status: String, message: String },

    /// No source could provide a verified copy of one model.
    #[error("model `{model}` ({file}) is not available from any source; tried:{}", list(.tried))]
    Unavailable { model: String, file: String, tried: Vec<Attempt> },

    /// `fetch` could not provide every model. `fetched` holds the models
    /// that are in place (verified); `failures` holds one [`ModelError::Unavailable`]
    /// (or setup error) per missing model.
    #[error("{} of {} model(s) could not be fetched:{}",
        .failures.len(), .failures.len() + .fetched.len(), list(.failures))]
    FetchFailed { fetched: Vec<FetchedModel>, failures: Vec<ModelError> },
}

impl ModelError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        ModelError::Io { op, path: path.into(), error }
    }
}

/// Formats items as an indented bullet list, one per line (each line starts with `\n`).
fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return " (nothing)".to_owned();
    }
    items.iter().map(|item| format!("\n  - {}", item.to_string().replace('\n', "\n    "))).collect()
}
