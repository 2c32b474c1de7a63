//! What the vision tests share: where the real models and media are, the runtime, the face
//! pipeline, and frames of a video decoded by GStreamer.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use sightline_vision::{FacePipeline, Runtime, RuntimeConfig, load_rgb};

fn dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(fallback))
}

/// A file of the verified model directory (env `SIGHTLINE_MODEL_DIR`).
pub fn model(file: &str) -> PathBuf {
    dir("SIGHTLINE_MODEL_DIR", "../models/cache").join(file)
}

/// A file of `shared/media` (env `SIGHTLINE_MEDIA_DIR`).
pub fn media(name: &str) -> PathBuf {
    dir("SIGHTLINE_MEDIA_DIR", "../../shared/media").join(name)
}

pub fn runtime() -> Runtime {
    Runtime::new(&RuntimeConfig { threads: 2, ..Default::default() }).expect("ONNX Runtime (run scripts/setup.sh)")
}

/// The face pipeline with default settings (frames downscaled to 1280 wide for detection).
pub fn pipeline() -> FacePipeline {
    FacePipeline::load(&runtime(), &model(""), "yunet_n_dynamic.onnx").expect("models (run scripts/setup.sh)")
}

/// Frames of the media file `name` at `framerate` (GStreamer caps, e.g. "3/1"), decoded by
/// `gst-launch-1.0` into PNGs under `out`.
pub fn frames(name: &str, framerate: &str, out: &Path) -> Vec<RgbImage> {
    let pipeline = format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! videorate ! \
         video/x-raw,framerate={framerate} ! pngenc ! multifilesink",
        media(name).display()
    );
    let mut child = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split(' ').filter(|s| !s.is_empty()))
        .arg(format!("location={}", out.join("f%03d.png").display()))
        .spawn()
        .expect("gst-launch-1.0 (GStreamer tools) is needed to decode videos");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "gst-launch-1.0 failed on {name}: {status}");
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            child.wait().ok();
            panic!("gst-launch-1.0 took over 120 s on {name}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (0..).map(|i| out.join(format!("f{i:03}.png"))).take_while(|f| f.is_file()).map(|f| load_rgb(&f).unwrap()).collect()
}
