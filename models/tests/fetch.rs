//! Integration tests with real files in temporary directories (no network: the download
//! path is exercised with `file://` URLs through curl).

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sightline_models::{FetchStatus, Manifest, ModelError, fetch, names, verify_file};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A manifest with one model per `(name, content, url)`; file = `<name>.onnx`.
fn manifest(models: &[(&str, &[u8], Option<&str>)]) -> Manifest {
    let mut text = String::new();
    for (name, content, url) in models {
        text += &format!(
            "[[model]]\nname = \"{name}\"\nfile = \"{name}.onnx\"\nsha256 = \"{}\"\nbytes = {}\n\
             license = \"test\"\nrole = \"test\"\nsource = \"test\"\n",
            sha(content),
            content.len()
        );
        if let Some(url) = url {
            text += &format!("url = \"{url}\"\n");
        }
    }
    Manifest::from_toml_str(&text, "test-manifest.toml").unwrap()
}

/// Sorted file names in `dir` (including hidden temporary files).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn expect_fetch_failure(result: Result<sightline_models::FetchReport, ModelError>) -> (usize, Vec<String>) {
    match result {
        Err(ModelError::FetchFailed { fetched, failures }) => {
            (fetched.len(), failures.iter().map(|e| e.to_string()).collect())
        }
        other => panic!("expected FetchFailed, got {other:?}"),
    }
}

fn curl_available() -> bool {
    let ok = std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("note: curl not installed, skipping download test");
    }
    ok
}

#[test]
fn copies_from_mirror_and_verifies() {
    let mirror = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("cache/models"); // does not exist yet
    fs::write(mirror.path().join("a.onnx"), b"model a bytes").unwrap();
    fs::write(mirror.path().join("b.onnx"), vec![7u8; 300_000]).unwrap(); // > one read buffer
    let m = manifest(&[("a", b"model a bytes", None), ("b", &vec![7u8; 300_000], None)]);

    let report = fetch(&m, &dest, &[mirror.path().to_owned()], false).unwrap();

    assert_eq!(report.models.len(), 2);
    for (fetched, entry) in report.models.iter().zip(&m.models) {
        assert_eq!(fetched.status, FetchStatus::CopiedFromMirror { dir: mirror.path().to_owned() });
        assert_eq!(fetched.path, dest.join(&entry.file));
        assert!(fetched.attempts.is_empty());
        verify_file(&fetched.path, entry).unwrap();
    }
    assert_eq!(fs::read(dest.join("a.onnx")).unwrap(), b"model a bytes");
    assert_eq!(listing(&dest), ["a.onnx", "b.onnx"], "no temporary files left behind");

    // A second run finds both files in place.
    let again = fetch(&m, &dest, &[mirror.path().to_owned()], false).unwrap();
    assert!(again.models.iter().all(|f| f.status == FetchStatus::Present));
}

#[test]
fn refuses_mirror_copy_with_wrong_sha256() {
    let mirror = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let good: &[u8] = b"the real model";
    let bad: &[u8] = b"a fake  model!"; // same length: only the hash can tell
    assert_eq!(good.len(), bad.len());
    fs::write(mirror.path().join("a.onnx"), bad).unwrap();
    let m = manifest(&[("a", good, None)]);

    let (fetched, failures) = expect_fetch_failure(fetch(&m, dest.path(), &[mirror.path().to_owned()], true));

    assert_eq!(fetched, 0);
    let msg = &failures[0];
    let mirror_file = mirror.path().join("a.onnx").display().to_string();
    assert!(msg.contains("model `a`"), "{msg}");
    assert!(msg.contains(&mirror_file), "names the refused file: {msg}");
    assert!(msg.contains(&sha(good)) && msg.contains(&sha(bad)), "names both hashes: {msg}");
    assert!(msg.contains("refused"), "{msg}");
    assert!(listing(dest.path()).is_empty(), "nothing left at the destination: {:?}", listing(dest.path()));
}

#[test]
fn wrong_mirror_copy_falls_through_to_next_mirror() {
    let bad_mirror = tempfile::tempdir().unwrap();
    let good_mirror = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    fs::write(bad_mirror.path().join("a.onnx"), b"truncated").unwrap();
    fs::write(good_mirror.path().join("a.onnx"), b"truncated? no, complete").unwrap();
    let m = manifest(&[("a", b"truncated? no, complete", None)]);
    let mirrors = [bad_mirror.path().to_owned(), good_mirror.path().to_owned()];

    let report = fetch(&m, dest.path(), &mirrors, false).unwrap();

    let a = &report.models[0];
    assert_eq!(a.status, FetchStatus::CopiedFromMirror { dir: good_mirror.path().to_owned() });
    assert_eq!(a.attempts.len(), 1);
    assert!(a.attempts[0].problem.contains("expected 23 bytes"), "{}", a.attempts[0]);
    assert_eq!(listing(dest.path()), ["a.onnx"]);
}

#[test]
fn missing_everywhere_without_url_names_model_and_sources() {
    let empty_mirror = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let no_such_dir = dest.path().join("no-such-mirror");
    let m = manifest(&[("csrnet_fake", b"weights", None)]);

    let mirrors = [empty_mirror.path().to_owned(), no_such_dir.clone()];
    let (_, failures) = expect_fetch_failure(fetch(&m, dest.path(), &mirrors, true));

    let msg = &failures[0];
    assert!(msg.contains("model `csrnet_fake` (csrnet_fake.onnx) is not available"), "{msg}");
    assert!(msg.contains(&empty_mirror.path().join("csrnet_fake.onnx").display().to_string()), "{msg}");
    assert!(msg.contains(&no_such_dir.display().to_string()), "{msg}");
    assert!(msg.contains("no upstream url"), "{msg}");
    assert!(listing(dest.path()).is_empty());
}

#[test]
fn one_missing_model_does_not_stop_the_others() {
    let mirror = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    fs::write(mirror.path().join("b.onnx"), b"bbb").unwrap();
    let m = manifest(&[("a", b"aaa", None), ("b", b"bbb", None)]);

    let err = fetch(&m, dest.path(), &[mirror.path().to_owned()], false).unwrap_err();

    assert!(err.to_string().starts_with("1 of 2 model(s) could not be fetched"), "{err}");
    assert_eq!(listing(dest.path()), ["b.onnx"]);
}

#[test]
fn already_present_verified_file_is_skipped() {
    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("a.onnx"), b"in place").unwrap();
    let m = manifest(&[("a", b"in place", None)]);

    // No mirrors at all and no downloads: only the existing file can satisfy the fetch.
    let report = fetch(&m, dest.path(), &[], false).unwrap();

    assert_eq!(report.models[0].status, FetchStatus::Present);
    assert!(report.models[0].attempts.is_empty());
}

#[test]
fn invalid_existing_file_is_replaced_by_verified_copy() {
    let mirror = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    fs::write(dest.path().join("a.onnx"), b"half").unwrap();
    fs::write(mirror.path().join("a.onnx"), b"half of nothing").unwrap();
    let m = manifest(&[("a", b"half of nothing", None)]);

    let report = fetch(&m, dest.path(), &[mirror.path().to_owned()], false).unwrap();

    assert!(matches!(report.models[0].status, FetchStatus::CopiedFromMirror { .. }));
    assert!(report.models[0].attempts[0].source.starts_with("existing "));
    assert_eq!(fs::read(dest.path().join("a.onnx")).unwrap(), b"half of nothing");
}

#[test]
fn subset_via_select() {
    let mirror = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    fs::write(mirror.path().join("b.onnx"), b"bbb").unwrap();
    let m = manifest(&[("a", b"aaa", None), ("b", b"bbb", None)]);

    let report = fetch(&m.select(&["b"]).unwrap(), dest.path(), &[mirror.path().to_owned()], false).unwrap();

    assert_eq!(report.models.len(), 1);
    assert_eq!(listing(dest.path()), ["b.onnx"]);
}

#[test]
fn downloads_from_url_with_curl() {
    if !curl_available() {
        return;
    }
    let upstream = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    fs::write(upstream.path().join("remote.bin"), b"downloaded weights").unwrap();
    fs::write(upstream.path().join("evil.bin"), b"tampered  weights!").unwrap();
    let good_url = format!("file://{}", upstream.path().join("remote.bin").display());
    let evil_url = format!("file://{}", upstream.path().join("evil.bin").display());
    let missing_url = format!("file://{}", upstream.path().join("gone.bin").display());

    // Downloads disabled: the URL is listed as not tried.
    let m = manifest(&[("a", b"downloaded weights", Some(&good_url))]);
    let (_, failures) = expect_fetch_failure(fetch(&m, dest.path(), &[], false));
    assert!(failures[0].contains("downloads disabled"), "{}", failures[0]);

    // Downloads enabled: fetched, verified, renamed.
    let report = fetch(&m, dest.path(), &[], true).unwrap();
    assert_eq!(report.models[0].status, FetchStatus::Downloaded { url: good_url.clone() });
    assert_eq!(listing(dest.path()), ["a.onnx"]);

    // Wrong content behind the URL, or no file at all: refused, nothing left behind.
    let m = manifest(&[("b", b"downloaded weights", Some(&evil_url)), ("c", b"x", Some(&missing_url))]);
    let (_, failures) = expect_fetch_failure(fetch(&m, dest.path(), &[], true));
    assert!(failures[0].contains(&evil_url) && failures[0].contains(&sha(b"tampered  weights!")), "{}", failures[0]);
    assert!(failures[1].contains("curl failed") && failures[1].contains(&missing_url), "{}", failures[1]);
    assert_eq!(listing(dest.path()), ["a.onnx"]);
}

#[test]
fn verify_file_reports_missing_truncated_and_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(&[("a", b"0123456789", None)]);
    let entry = m.get("a").unwrap();
    let path = dir.path().join("a.onnx");

    let err = verify_file(&path, entry).unwrap_err();
    assert!(matches!(err, ModelError::Missing { .. }));
    assert_eq!(
        err.to_string(),
        format!("model file missing: {} (run scripts/setup.sh or `sightline-models fetch`)", path.display())
    );

    fs::write(&path, b"01234").unwrap();
    let err = verify_file(&path, entry).unwrap_err();
    assert!(matches!(err, ModelError::SizeMismatch { expected: 10, actual: 5, .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");

    fs::write(&path, b"0123456788").unwrap();
    let err = verify_file(&path, entry).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(&sha(b"0123456789")) && err.contains(&sha(b"0123456788")), "{err}");

    let err = verify_file(dir.path(), entry).unwrap_err();
    assert!(matches!(err, ModelError::NotAFile { .. }), "{err:?}");

    fs::write(&path, b"0123456789").unwrap();
    verify_file(&path, entry).unwrap();
    assert_eq!(m.verified_path("a", dir.path()).unwrap(), path);
}

#[test]
fn embedded_manifest_lists_the_five_models() {
    let m = Manifest::embedded();
    assert_eq!(m.names(), names::ALL);
    for entry in &m.models {
        assert_eq!(entry.sha256.len(), 64, "{}", entry.name);
        assert!(entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{}", entry.name);
        assert!(entry.bytes > 100_000, "{}", entry.name);
        assert!(entry.url.is_some() != entry.build.is_some(), "{}: exactly one of url / build", entry.name);
    }
    let files: Vec<&str> = m.models.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "yunet_n_dynamic.onnx",
            "yunet_s_dynamic.onnx",
            "dlib_face_recognition_resnet_model_v1.onnx",
            "csrnet.onnx",
            "yolox_nano.onnx"
        ]
    );
    assert_eq!(m.by_file("csrnet.onnx").unwrap().name, names::CSRNET);
    // The file on disk and the compiled-in copy agree.
    let on_disk = Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest.toml")).unwrap();
    assert_eq!(on_disk.models, m.models);
}

/// The shared model directory next to the project (`/work/shared/models` here), if any.
fn shared_models_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(sightline_models::MIRROR_ENV) {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).next()?,
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"),
    };
    dir.is_dir().then_some(dir)
}

#[test]
fn real_yunet_n_matches_embedded_manifest() {
    let Some(dir) = shared_models_dir() else {
        eprintln!("note: shared models directory not found, skipping real-file verification");
        return;
    };
    let path = Manifest::embedded().verified_path(names::YUNET_N, &dir).unwrap();
    assert!(path.ends_with("yunet_n_dynamic.onnx"));
}
