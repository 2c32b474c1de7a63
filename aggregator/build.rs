//! Embeds the operator dashboard (`ui/dist/`, built by `npm run build` in `ui/`, which
//! `scripts/setup.sh` runs) into the aggregator binary: writes `$OUT_DIR/ui_assets.rs`, a table of
//! every file with its content type and an `include_bytes!` of it. Without a built UI
//! (`ui/dist/index.html` missing) a small page saying how to build it is embedded instead, and
//! cargo prints a warning.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const FALLBACK: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sightline: dashboard not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto; line-height: 1.5">
<h1>The operator dashboard is not built</h1>
<p>This aggregator was compiled without the web UI (<code>ui/dist/</code> did not exist).
The API under <code>/api/v1</code> works as usual.</p>
<p>Build the dashboard with <code>bash scripts/setup.sh</code> (it runs
<code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>), then rebuild the aggregator.</p>
</body>
</html>
"#;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dist = manifest.join("../ui/dist");
    // a directory is scanned recursively by cargo: any file added, changed or removed reruns this
    // (a missing one reruns it on every build, until the UI is built)
    println!("cargo:rerun-if-changed={}", dist.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut files = Vec::new();
    let built = dist.join("index.html").is_file();
    if built {
        if let Err(e) = walk(&dist, &dist, &mut files) {
            panic!("reading {}: {e}", dist.display());
        }
        files.sort();
    } else {
        println!(
            "cargo:warning=ui/dist/index.html not found: the aggregator embeds a placeholder page instead of the \
             operator dashboard; run `bash scripts/setup.sh` (npm ci && npm run build in ui/) and rebuild"
        );
        let page = out.join("ui-fallback-index.html");
        std::fs::write(&page, FALLBACK).expect("write the fallback page");
        files.push(("index.html".to_owned(), page));
    }

    let mut code = String::new();
    writeln!(code, "/// Whether `ui/dist` was built when the aggregator was compiled.").unwrap();
    writeln!(code, "pub const BUILT: bool = {built};").unwrap();
    writeln!(code, "/// Every embedded file: path relative to `ui/dist`, content type, bytes.").unwrap();
    writeln!(code, "pub static ASSETS: &[Asset] = &[").unwrap();
    for (rel, path) in &files {
        let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
        let Some(abs) = abs.to_str() else {
            println!("cargo:warning=ui/dist: {} skipped (not UTF-8)", path.display());
            continue;
        };
        writeln!(
            code,
            "    Asset {{ path: {rel:?}, content_type: {:?}, bytes: include_bytes!({abs:?}) }},",
            content_type(rel)
        )
        .unwrap();
    }
    writeln!(code, "];").unwrap();
    std::fs::write(out.join("ui_assets.rs"), code).expect("write ui_assets.rs");
}

/// Every regular file under `dir` as (path relative to `root` with `/`, full path).
fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, files)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            let rel = path.strip_prefix(root).expect("under root");
            let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
            match parts {
                Some(parts) => files.push((parts.join("/"), path.clone())),
                None => println!("cargo:warning=ui/dist: {} skipped (not UTF-8)", path.display()),
            }
        }
    }
    Ok(())
}

/// The `Content-Type` of a file by its extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}
