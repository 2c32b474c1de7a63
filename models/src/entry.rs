//! One `[[model]]` table of `manifest.toml`: a model file's name, size, sha256 and origin.
//! The lowest layer of the crate: the manifest lists entries, the verifier and the fetcher
//! check files against one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One `[[model]]` table of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Short identifier, e.g. `yunet_n` (see [`crate::names`]).
    pub name: String,
    /// File name inside a model directory, e.g. `yunet_n_dynamic.onnx` (no directories).
    pub file: String,
    /// Expected sha256 of the file, 64 lowercase hex characters.
    pub sha256: String,
    /// Expected file size in bytes.
    pub bytes: u64,
    /// Licence of the file / weights.
    pub license: String,
    /// What the pipeline uses the model for.
    pub role: String,
    /// Human-readable origin.
    pub source: String,
    /// Upstream download URL pinned to a commit, if the file exists upstream byte for byte.
    #[serde(default)]
    pub url: Option<String>,
    /// How the file is produced when there is no upstream file.
    #[serde(default)]
    pub build: Option<String>,
}

impl ModelEntry {
    /// Where this model lives inside `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }
}
