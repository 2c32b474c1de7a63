//! Filling a model directory: verified copy already there → mirror copy → upstream download.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::entry::ModelEntry;
use crate::error::ModelError;
use crate::manifest::Manifest;
use crate::report::{Attempt, FetchReport, FetchStatus, FetchedModel};
use crate::verify::{check_hash, check_size, hash_reader, verify_file};

/// Makes every model of `manifest` available, verified, in `dest_dir` (created if needed).
///
/// For each model, in order:
/// 1. a file in `dest_dir` that passes [`verify_file`] is kept (`Present`);
/// 2. else the first of `mirror_dirs` holding a copy with the right size and sha256 is
///    copied (a wrong copy is refused and the next source tried);
/// 3. else, if the entry has a `url` and `allow_download`, it is downloaded with
///    `curl -fsSL --max-time 300` and verified.
///
/// New files are written to `.<file>.partial.<pid>` in `dest_dir`, verified, synced and
/// renamed into place, so the final path never holds partial or unverified bytes (a
/// pre-existing invalid file there is only ever replaced by a verified one).
///
/// All models are attempted even if one fails; then the error is
/// [`ModelError::FetchFailed`], listing for every missing model the sources tried and
/// why each failed, plus the models that did succeed. To fetch a subset, pass
/// [`Manifest::select`]`(names)`.
pub fn fetch(
    manifest: &Manifest,
    dest_dir: &Path,
    mirror_dirs: &[PathBuf],
    allow_download: bool,
) -> Result<FetchReport, ModelError> {
    fs::create_dir_all(dest_dir).map_err(|e| ModelError::io("cannot create model directory", dest_dir, e))?;
    let mut fetched = Vec::new();
    let mut failures = Vec::new();
    for entry in &manifest.models {
        match fetch_one(entry, dest_dir, mirror_dirs, allow_download) {
            Ok(model) => fetched.push(model),
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(FetchReport { models: fetched })
    } else {
        Err(ModelError::FetchFailed { fetched, failures })
    }
}

fn fetch_one(
    entry: &ModelEntry,
    dest_dir: &Path,
    mirror_dirs: &[PathBuf],
    allow_download: bool,
) -> Result<FetchedModel, ModelError> {
    let path = entry.path_in(dest_dir);
    let mut tried = Vec::new();
    let done = |status, attempts| Ok(FetchedModel { name: entry.name.clone(), path: path.clone(), status, attempts });

    match verify_file(&path, entry) {
        Ok(()) => return done(FetchStatus::Present, tried),
        Err(ModelError::Missing { .. }) => {}
        Err(e) => tried.push(Attempt {
            source: format!("existing {}", path.display()),
            problem: format!("invalid (kept until a verified copy replaces it): {e}"),
        }),
    }

    for dir in mirror_dirs {
        let src = entry.path_in(dir);
        let source = format!("mirror {}", src.display());
        if !dir.is_dir() {
            let problem = "mirror directory does not exist".to_owned();
            tried.push(Attempt { source: format!("mirror {}", dir.display()), problem });
        } else if !src.exists() {
            tried.push(Attempt { source, problem: "not present".to_owned() });
        } else {
            match copy_verified(&src, entry, &path) {
                Ok(()) => return done(FetchStatus::CopiedFromMirror { dir: dir.clone() }, tried),
                Err(e) => tried.push(Attempt { source, problem: format!("refused: {e}") }),
            }
        }
    }

    match (&entry.url, allow_download) {
        (None, _) => tried.push(Attempt {
            source: "download".to_owned(),
            problem: "no upstream url in the manifest (file produced by this project, see its `build` notes)"
                .to_owned(),
        }),
        (Some(url), false) => tried.push(Attempt {
            source: format!("download {url}"),
            problem: "downloads disabled (--no-download)".to_owned(),
        }),
        (Some(url), true) => match download_verified(url, entry, &path) {
            Ok(()) => return done(FetchStatus::Downloaded { url: url.clone() }, tried),
            Err(e) => {
                let problem = match e {
                    ModelError::Download { status, message, .. } => format!("curl failed ({status}): {message}"),
                    e => format!("refused: {e}"),
                };
                tried.push(Attempt { source: format!("download {url}"), problem });
            }
        },
    }

    Err(ModelError::Unavailable { model: entry.name.clone(), file: entry.file.clone(), tried })
}

/// Copies `src` into a temporary file next to `dest` while hashing it; renames it to
/// `dest` only if size and sha256 match `entry`. Errors name `src`.
fn copy_verified(src: &Path, entry: &ModelEntry, dest: &Path) -> Result<(), ModelError> {
    let meta = fs::metadata(src).map_err(|e| ModelError::io("cannot stat", src, e))?;
    if !meta.is_file() {
        return Err(ModelError::NotAFile { model: entry.name.clone(), path: src.to_owned() });
    }
    check_size(entry, src, meta.len())?; // cheap early refusal, before copying anything
    let input = File::open(src).map_err(|e| ModelError::io("cannot open", src, e))?;
    let tmp = TempFile::next_to(dest);
    let mut out = File::create(&tmp.path).map_err(|e| ModelError::io("cannot create", &tmp.path, e))?;
    let (len, sha256) = hash_reader(input, Some(&mut out)).map_err(|e| ModelError::io("cannot copy from", src, e))?;
    check_size(entry, src, len)?;
    check_hash(entry, src, sha256)?;
    out.sync_all().map_err(|e| ModelError::io("cannot sync", &tmp.path, e))?;
    drop(out);
    tmp.persist(dest)
}

/// Downloads `url` with curl into a temporary file next to `dest`; renames it to `dest`
/// only if size and sha256 match `entry`. Verification errors name the URL.
fn download_verified(url: &str, entry: &ModelEntry, dest: &Path) -> Result<(), ModelError> {
    let tmp = TempFile::next_to(dest);
    let output = Command::new("curl")
        .args(["-fsSL", "--max-time", "300", "-o"])
        .arg(&tmp.path)
        .arg(url)
        .output()
        .map_err(|e| ModelError::io("cannot run", "curl", e))?;
    if !output.status.success() {
        return Err(ModelError::Download {
            model: entry.name.clone(),
            url: url.to_owned(),
            status: output.status.to_string(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let file = File::open(&tmp.path).map_err(|e| ModelError::io("cannot open downloaded file", &tmp.path, e))?;
    let (len, sha256) = hash_reader(&file, None).map_err(|e| ModelError::io("cannot read", &tmp.path, e))?;
    check_size(entry, Path::new(url), len)?;
    check_hash(entry, Path::new(url), sha256)?;
    file.sync_all().map_err(|e| ModelError::io("cannot sync", &tmp.path, e))?;
    drop(file);
    tmp.persist(dest)
}

/// A temporary file in the destination directory, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// `<dir>/.<file>.partial.<pid>`: same directory (so the rename is atomic), hidden,
    /// and unique per process.
    fn next_to(dest: &Path) -> TempFile {
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let path = dest.with_file_name(format!(".{name}.partial.{}", std::process::id()));
        TempFile { path, persisted: false }
    }

    /// Atomically renames the temporary file to `dest` (replacing any file there).
    fn persist(mut self, dest: &Path) -> Result<(), ModelError> {
        fs::rename(&self.path, dest).map_err(|e| ModelError::io("cannot move verified file into place at", dest, e))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}
