//! What `fetch` produced: for each model, where its verified copy came from and which
//! sources were tried first. Plain data, shared by the fetcher and [`ModelError`](crate::ModelError),
//! whose `FetchFailed` carries the models that did arrive.

use std::fmt;
use std::path::PathBuf;

/// How a model got into the destination directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchStatus {
    /// A verified copy was already there; nothing was written.
    Present,
    /// Copied (and verified) from this mirror directory.
    CopiedFromMirror { dir: PathBuf },
    /// Downloaded (and verified) from this URL.
    Downloaded { url: String },
}

impl fmt::Display for FetchStatus {
    /// `present`, `copied from mirror` or `downloaded`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            FetchStatus::Present => "present",
            FetchStatus::CopiedFromMirror { .. } => "copied from mirror",
            FetchStatus::Downloaded { .. } => "downloaded",
        })
    }
}

/// One model that is now in place, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedModel {
    /// Model name from the manifest.
    pub name: String,
    /// Final, verified path inside the destination directory.
    pub path: PathBuf,
    /// Where the file came from.
    pub status: FetchStatus,
    /// Sources that were tried first and failed (e.g. a mirror copy refused for a wrong
    /// sha256, or an invalid file that was replaced); worth showing as warnings.
    pub attempts: Vec<Attempt>,
}

/// Result of a successful `fetch`: every selected model is in place and verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchReport {
    /// One entry per manifest model, in manifest order.
    pub models: Vec<FetchedModel>,
}

/// One source that was tried for a model and did not provide it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// What was tried, e.g. `mirror /work/shared/models/csrnet.onnx` or `download https://…`.
    pub source: String,
    /// Why it did not work, e.g. `not present` or `refused: model …: sha256 mismatch …`.
    pub problem: String,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.problem)
    }
}
