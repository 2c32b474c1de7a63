//! What the dashboard's browser tests share: the workspace, where screenshots go, the tools they
//! need (node, its packages, Debian's chromium), and running the node script with a deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's chromium, which the scripts drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the workspace directory")
}

/// Where a browser test's screenshots go: `$CARGO_TARGET_DIR/test-artifacts/{name}` (or beside the
/// target directory this test runs from), emptied first.
pub fn artifacts(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test executable path");
        exe.ancestors().nth(3).expect("target/<profile>/deps/exe").to_owned()
    });
    let dir = target.join("test-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Everything `ui/e2e/{script}` needs (node 18 or newer, `modules` in `ui/node_modules`,
/// chromium), or a failure saying what is missing and how to get it.
pub fn check_prerequisites(root: &Path, script: &str, modules: &[&str]) {
    let setup = "run `bash scripts/setup.sh` (it installs chromium and node's packages and builds the UI)";
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let major: u32 =
                version.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
            assert!(major >= 18, "node {version} is too old for the dashboard's test (18 or newer): {setup}");
        }
        Ok(out) => panic!("`node --version` failed: {}; {setup}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!("node is not installed ({e}): the dashboard's browser test needs Node.js 20; {setup}"),
    }
    assert!(Path::new(CHROMIUM).is_file(), "{CHROMIUM} is missing (Debian package `chromium`): {setup}");
    let script = root.join("ui/e2e").join(script);
    assert!(script.is_file(), "{} is missing", script.display());
    for module in modules {
        let dir = root.join("ui/node_modules").join(module);
        assert!(dir.is_dir(), "{} is missing (`npm ci` in ui/): {setup}", dir.display());
    }
}

/// Runs `cmd` with stdout and stderr into files of `dir`; kills it after `timeout`. Returns the
/// exit status (`None`: killed), stdout and stderr.
pub fn run_bounded(
    mut cmd: Command,
    dir: &Path,
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, String, String) {
    let (out_path, err_path) = (dir.join("node.stdout.log"), dir.join("node.stderr.log"));
    let out = std::fs::File::create(&out_path).expect("node's stdout file");
    let err = std::fs::File::create(&err_path).expect("node's stderr file");
    let mut child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("starting node");
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let read = |p: &Path| {
        let mut s = String::new();
        let _ = std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    (status, read(&out_path), read(&err_path))
}
