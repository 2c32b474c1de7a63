//! Empty-scene density baselines: the density model's map of a camera's view with nobody in it,
//! subtracted from every later map before counting (see `sightline_vision::crowd`). Installers
//! capture one per camera with `edge-agent crowd-baseline` and set `[camera.crowd] baseline`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sightline_vision::crowd::{DensityEstimator, DensityMap};
use time::OffsetDateTime;

use crate::config::{CameraConfig, Config, Source};
use crate::decode::{DecodeError, Decoder, FrameSink};
use crate::frames::{Doorbell, FrameSlot, Taken};
use crate::rtsp::{self, RtspError};

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("density baseline {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("camera {camera}: no frame within {secs} s")]
    NoFrames { camera: String, secs: u64 },
    #[error("density maps of different sizes ({0}x{1} vs {2}x{3}): did the camera change resolution?")]
    SizeChanged(usize, usize, usize, usize),
    /// Capturing: the camera's stream or file could not be read.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Rtsp(#[from] RtspError),
    /// Capturing: the density model failed.
    #[error(transparent)]
    Vision(#[from] sightline_vision::VisionError),
}

/// A stored baseline (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub camera: String,
    #[serde(with = "sightline_contract::ts::rfc3339_ms")]
    pub captured: OffsetDateTime,
    /// Frames averaged.
    pub frames: usize,
    /// Map size in cells; maps of another size are not corrected with it.
    pub width: usize,
    pub height: usize,
    pub cells: Vec<f32>,
}

impl Baseline {
    /// The per-cell mean of `maps` (all of one size).
    pub fn average(camera: &str, captured: OffsetDateTime, maps: &[DensityMap]) -> Result<Baseline, BaselineError> {
        let first = maps.first().expect("at least one map");
        let mut cells = vec![0f32; first.cells.len()];
        for m in maps {
            if (m.width, m.height) != (first.width, first.height) {
                return Err(BaselineError::SizeChanged(first.width, first.height, m.width, m.height));
            }
            for (c, v) in cells.iter_mut().zip(&m.cells) {
                *c += v / maps.len() as f32;
            }
        }
        Ok(Baseline {
            camera: camera.to_owned(),
            captured,
            frames: maps.len(),
            width: first.width,
            height: first.height,
            cells,
        })
    }

    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let fail = |detail: String| BaselineError::File { path: path.to_owned(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let b: Baseline = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if b.cells.len() != b.width * b.height {
            return Err(fail(format!("{} cells for a {}x{} map", b.cells.len(), b.width, b.height)));
        }
        Ok(b)
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let fail = |detail: String| BaselineError::File { path: path.to_owned(), detail };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let tmp = path.with_extension("json.partial");
        let json = serde_json::to_vec_pretty(self).expect("baselines serialise");
        std::fs::write(&tmp, json).map_err(|e| fail(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
    }
}

/// `edge-agent crowd-baseline`: averages the density maps of `frames` frames, one a second,
/// from the camera's source.
pub async fn capture(
    cfg: &Config,
    camera: &CameraConfig,
    density: &mut DensityEstimator,
    frames: usize,
) -> Result<Baseline, BaselineError> {
    let images = grab_frames(cfg, camera, frames.max(1), Duration::from_secs(30 + 2 * frames as u64)).await?;
    let maps = images.iter().map(|i| density.estimate(i)).collect::<Result<Vec<_>, _>>()?;
    Baseline::average(&camera.id, OffsetDateTime::now_utc(), &maps)
}

/// Up to `n` frames, one per second of stream time, from a camera's source.
async fn grab_frames(
    cfg: &Config,
    camera: &CameraConfig,
    n: usize,
    timeout: Duration,
) -> Result<Vec<RgbImage>, BaselineError> {
    let bell = Arc::new(Doorbell::default());
    let slot = Arc::new(FrameSlot::new(Arc::default(), bell.clone()));
    let sink =
        FrameSink { slot: slot.clone(), epoch: OffsetDateTime::now_utc(), interval_ns: 1_000_000_000, wait: false };
    let collect = {
        let slot = slot.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            let mut out = Vec::with_capacity(n);
            while out.len() < n && Instant::now() < deadline {
                match slot.take() {
                    Some(Taken::Frame(f)) => out.push(f.image),
                    Some(Taken::Ended) => break,
                    None => {
                        bell.wait(Duration::from_millis(250));
                    }
                }
            }
            out
        })
    };
    tokio::pin!(collect);
    let images = match camera.source() {
        Source::File { path, .. } => {
            let decoder = Decoder::for_file(&path, &cfg.decode, sink)?;
            decoder.start()?;
            tokio::select! {
                images = &mut collect => images,
                r = decoder.finished() => {
                    r?;
                    slot.end();
                    collect.await
                }
            }
        }
        Source::Rtsp { url, transport } => {
            let silence = Duration::from_secs_f64(camera.silence_timeout_s);
            let mut stream = rtsp::connect(&url, transport, silence).await?;
            let decoder = Decoder::for_stream(stream.codec, &cfg.decode, sink)?;
            decoder.start()?;
            loop {
                tokio::select! {
                    images = &mut collect => break images,
                    frame = stream.next_frame(silence) => {
                        let (pts, data) = frame?;
                        decoder.push(pts, data)?;
                    }
                }
            }
        }
    }
    .expect("frame collector does not panic");
    if images.is_empty() {
        return Err(BaselineError::NoFrames { camera: camera.id.clone(), secs: timeout.as_secs() });
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn map(v: f32) -> DensityMap {
        DensityMap { width: 2, height: 1, cells: vec![v, 2.0 * v], frame_size: (16, 8) }
    }

    #[test]
    fn average_save_load_round_trip_and_errors_name_the_file() {
        let b = Baseline::average("gate", datetime!(2026-11-23 08:00 UTC), &[map(1.0), map(3.0)]).unwrap();
        assert_eq!(b.cells, vec![2.0, 4.0]);
        assert_eq!(b.frames, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/gate.json");
        b.save(&path).unwrap();
        assert_eq!(Baseline::load(&path).unwrap(), b);

        std::fs::write(&path, r#"{"camera":"gate"}"#).unwrap();
        let e = Baseline::load(&path).unwrap_err().to_string();
        assert!(e.contains("gate.json") && e.contains("missing field"), "{e}");
        let other = DensityMap { width: 1, height: 2, cells: vec![0.0, 0.0], frame_size: (8, 16) };
        assert!(Baseline::average("gate", datetime!(2026-11-23 08:00 UTC), &[map(1.0), other]).is_err());
    }
}
