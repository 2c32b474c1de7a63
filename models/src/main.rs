//! `sightline-models`: fetch, verify and list the pipeline's ONNX models.
//!
//! ```text
//! sightline-models fetch  [--manifest models/manifest.toml] [--dest models/cache]
//!                         [--mirror DIR ...] [--no-download] [--only NAME ...]
//! sightline-models verify [--manifest models/manifest.toml] [--dest models/cache] [--only NAME ...]
//! sightline-models list   [--manifest models/manifest.toml]
//! ```
//!
//! Without `--mirror`, mirrors are `$SIGHTLINE_MODEL_MIRROR` (`:`-separated) if set, else
//! `../shared/models` relative to the current directory and relative to the project root
//! (the manifest's parent's parent). Without `--manifest`, `models/manifest.toml` is used
//! if it exists, else the manifest compiled into this binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use sightline_models::{FetchStatus, FetchedModel, MIRROR_ENV, Manifest, ModelError, fetch, verify_file};

const DEFAULT_MANIFEST: &str = "models/manifest.toml";
const DEFAULT_DEST: &str = "models/cache";
const SHARED_MODELS: &str = "../shared/models";

#[derive(Parser)]
#[command(
    name = "sightline-models",
    version,
    about = "Fetch, verify and list sightline's ONNX models (sha256-verified)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Put a verified copy of every model into --dest (present → mirror → upstream URL).
    Fetch {
        #[command(flatten)]
        common: Common,
        /// Mirror directory holding model files (repeatable; tried in order).
        /// Default: $SIGHTLINE_MODEL_MIRROR, else ../shared/models.
        #[arg(long = "mirror", value_name = "DIR")]
        mirrors: Vec<PathBuf>,
        /// Never download; only use files already present or in a mirror.
        #[arg(long)]
        no_download: bool,
    },
    /// Verify size and sha256 of every model in --dest; exits non-zero naming failures.
    Verify {
        #[command(flatten)]
        common: Common,
    },
    /// List the models of the manifest.
    List {
        /// Manifest file [default: models/manifest.toml, else the built-in manifest].
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
    },
}

#[derive(Args)]
struct Common {
    /// Manifest file [default: models/manifest.toml, else the built-in manifest].
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Model directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DEST)]
    dest: PathBuf,
    /// Only these models (repeatable or comma-separated; default: all).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fetch { common, mirrors, no_download } => {
            let (manifest, manifest_path) = load_manifest(common.manifest.as_deref())?;
            let manifest = select(&manifest, &common.only)?;
            let mirrors = if mirrors.is_empty() { default_mirrors(manifest_path.as_deref()) } else { mirrors };
            match fetch(&manifest, &common.dest, &mirrors, !no_download) {
                Ok(report) => {
                    report.models.iter().for_each(print_fetched);
                    Ok(())
                }
                Err(ModelError::FetchFailed { fetched, failures }) => {
                    fetched.iter().for_each(print_fetched);
                    let total = fetched.len() + failures.len();
                    let msgs: Vec<String> = failures.iter().map(ToString::to_string).collect();
                    bail!("{} of {total} model(s) could not be fetched:\n{}", failures.len(), msgs.join("\n"))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Verify { common } => {
            let (manifest, _) = load_manifest(common.manifest.as_deref())?;
            let manifest = select(&manifest, &common.only)?;
            let mut failed = Vec::new();
            for entry in &manifest.models {
                let path = entry.path_in(&common.dest);
                match verify_file(&path, entry) {
                    Ok(()) => println!("{:<22} {:<8} {}", entry.name, "ok", path.display()),
                    Err(e) => {
                        println!("{:<22} {:<8} {e}", entry.name, "FAILED");
                        failed.push(entry.name.as_str());
                    }
                }
            }
            if !failed.is_empty() {
                bail!(
                    "{} of {} model(s) failed verification in {}: {}",
                    failed.len(),
                    manifest.models.len(),
                    common.dest.display(),
                    failed.join(", ")
                );
            }
            Ok(())
        }
        Command::List { manifest } => {
            let (manifest, _) = load_manifest(manifest.as_deref())?;
            for m in &manifest.models {
                let origin = m.url.as_deref().unwrap_or("(no upstream url: mirror only)");
                println!("{:<22} {:<44} {:>10} B  {}", m.name, m.file, m.bytes, m.license);
                println!("{:<22} role: {}; origin: {origin}", "", m.role);
            }
            Ok(())
        }
    }
}

/// The manifest plus its path (`None` for the built-in one).
fn load_manifest(arg: Option<&Path>) -> Result<(Manifest, Option<PathBuf>)> {
    let path = match arg {
        Some(path) => path,
        None if Path::new(DEFAULT_MANIFEST).exists() => Path::new(DEFAULT_MANIFEST),
        None => {
            eprintln!("note: {DEFAULT_MANIFEST} not found here; using the manifest built into this binary");
            return Ok((Manifest::embedded().clone(), None));
        }
    };
    Ok((Manifest::load(path)?, Some(path.to_owned())))
}

fn select(manifest: &Manifest, only: &[String]) -> Result<Manifest> {
    let names: Vec<&str> = only.iter().map(String::as_str).collect();
    Ok(manifest.select(&names)?)
}

/// `$SIGHTLINE_MODEL_MIRROR` if set; else `../shared/models` relative to the current
/// directory and to the project root (manifest's parent's parent), those that exist
/// (all candidates if none does, so that error messages show where we looked).
fn default_mirrors(manifest_path: Option<&Path>) -> Vec<PathBuf> {
    if let Some(value) = std::env::var_os(MIRROR_ENV).filter(|v| !v.is_empty()) {
        return std::env::split_paths(&value).collect();
    }
    let mut candidates = vec![PathBuf::from(SHARED_MODELS)];
    if let Some(root) = manifest_path
        .and_then(|p| std::path::absolute(p).ok())
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_owned))
    {
        candidates.push(root.join(SHARED_MODELS));
    }
    let mut existing: Vec<PathBuf> = Vec::new();
    for dir in &candidates {
        if let Ok(canonical) = dir.canonicalize()
            && canonical.is_dir()
            && !existing.contains(&canonical)
        {
            existing.push(canonical);
        }
    }
    if existing.is_empty() { candidates } else { existing }
}

fn print_fetched(m: &FetchedModel) {
    for attempt in &m.attempts {
        eprintln!("warning: {}: {attempt}", m.name);
    }
    let from = match &m.status {
        FetchStatus::Present => String::new(),
        FetchStatus::CopiedFromMirror { dir } => format!("  (from {})", dir.display()),
        FetchStatus::Downloaded { url } => format!("  (from {url})"),
    };
    println!("{:<22} {:<19} {}{from}", m.name, m.status, m.path.display());
}
