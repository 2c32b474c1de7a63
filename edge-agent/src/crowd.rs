//! The crowd worker: a second analysis thread that runs the density model (CSRNet, seconds per
//! frame) on the frames the analysis worker hands it every `interval_s`, so it never delays face
//! analysis. It combines the density map with the latest person detections into one hybrid
//! estimate per measurement and publishes `sightline.crowd/1`.
//!
//! # Hybrid estimate
//! Person detection counts sparse scenes well and misses people in dense ones; the density map
//! is the other way round (its residual floor over-counts sparse scenes). A measurement uses
//! the detections (`method: detection`) while both the detection count and the density count
//! stay below `[crowd] dense_at` (default 20 people), and the density map (`method: density`)
//! from there on. Zone counts follow the same method: persons whose foot point lies in the
//! zone, or the density cells whose centre does. The detection count is the median over the
//! detections of the measurement interval, so one frame with missed or doubled people does
//! not make the count jump.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sightline_contract::{Crowd, CrowdMethod, ZoneCount, new_event_id, topic};
use sightline_vision::crowd::{DensityEstimator, DensityMap};
use sightline_vision::persons::Person;
use tokio::sync::mpsc;

use crate::analysis::foot;
use crate::camera::{CameraHandle, CameraSet};
use crate::config::CrowdConfig;
use crate::frames::{Doorbell, Frame, Taken};
use crate::metrics::{Metrics, model};
use crate::mqtt::Outgoing;

/// Person detections kept per camera for the median (at most one interval's worth is used).
pub const PERSON_HISTORY: usize = 64;

pub struct CrowdWorker {
    pub site: String,
    pub density: DensityEstimator,
    pub cfg: CrowdConfig,
    pub cameras: Arc<CameraSet>,
    pub bell: Arc<Doorbell>,
    pub events: mpsc::Sender<Outgoing>,
    pub done: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl CrowdWorker {
    /// Runs until `done` is set and the pending frames are measured. Blocking: call on its own thread.
    pub fn run(mut self) {
        loop {
            let done = self.done.load(Ordering::Acquire);
            let mut idle = true;
            for camera in self.cameras.snapshot().iter() {
                if let Some(Taken::Frame(frame)) = camera.crowd_slot.take() {
                    idle = false;
                    self.measure(camera, frame);
                }
            }
            if idle {
                if done {
                    break;
                }
                self.bell.wait(Duration::from_millis(250));
            }
        }
    }

    fn measure(&mut self, camera: &CameraHandle, frame: Frame) {
        let start = std::time::Instant::now();
        let map = match self.density.estimate(&frame.image) {
            Ok(m) => {
                self.metrics.observe(model::DENSITY, start.elapsed());
                m
            }
            Err(e) => {
                tracing::error!(camera = %camera.cfg.id, error = %e, "density estimation failed");
                return;
            }
        };
        // the detections of this measurement's interval (ending one detection step after the frame)
        let interval = time::Duration::seconds_f64(camera.cfg.crowd.interval_s);
        let step = time::Duration::seconds_f64(1.0 / camera.cfg.crowd.persons_fps);
        let recent: Vec<Vec<Person>> = camera
            .persons
            .lock()
            .unwrap()
            .iter()
            .filter(|(ts, _)| *ts > frame.ts - interval && *ts <= frame.ts + step)
            .map(|(_, p)| p.clone())
            .collect();
        let size = (frame.image.width() as f32, frame.image.height() as f32);
        let crowd = estimate(&self.site, camera, &frame, &map, &recent, size, self.cfg.dense_at);
        tracing::debug!(camera = %camera.cfg.id, method = ?crowd.method, total = crowd.total, "crowd");
        let zones: Vec<(String, f32)> = crowd.zones.iter().map(|z| (z.zone.clone(), z.count)).collect();
        let alerts = camera.rules.lock().unwrap().on_crowd(frame.ts, crowd.total, &zones);
        let mut out = vec![Outgoing::event(topic::crowd(&self.site, &camera.cfg.id), &crowd)];
        out.extend(alerts.iter().map(|a| Outgoing::event(topic::alert(&self.site, &camera.cfg.id), a)));
        if camera.cfg.crowd.publish_heatmap {
            let topic = format!("{}/heatmap", topic::crowd(&self.site, &camera.cfg.id).trim_end_matches("/crowd"));
            out.push(Outgoing { topic, payload: map.to_heatmap_png(&heatmap_base(&frame.image)), retain: true });
        }
        for msg in out {
            if self.events.blocking_send(msg).is_err() {
                tracing::error!(camera = %camera.cfg.id, "publisher gone: crowd measurement not sent");
            }
        }
    }
}

/// Heatmaps are drawn over the frame scaled to this width at most (a full-resolution PNG of a
/// street scene is over a megabyte; operators look at it in a dashboard tile).
pub const HEATMAP_MAX_WIDTH: u32 = 480;

fn heatmap_base(frame: &image::RgbImage) -> image::RgbImage {
    if frame.width() <= HEATMAP_MAX_WIDTH {
        return frame.clone();
    }
    let h = (frame.height() as u64 * HEATMAP_MAX_WIDTH as u64 / frame.width() as u64) as u32;
    image::imageops::thumbnail(frame, HEATMAP_MAX_WIDTH, h.max(1))
}

/// One hybrid crowd measurement (see the module doc).
pub fn estimate(
    site: &str,
    camera: &CameraHandle,
    frame: &Frame,
    map: &DensityMap,
    persons: &[Vec<Person>],
    size: (f32, f32),
    dense_at: f32,
) -> Crowd {
    let correction = &camera.correction;
    let density_total = map.count(correction);
    let detected = (!persons.is_empty()).then(|| median(persons.iter().map(|p| p.len() as f32)));
    let sparse = detected.filter(|n| *n < dense_at && density_total < dense_at);
    let (method, total) = match sparse {
        Some(n) => (CrowdMethod::Detection, n),
        None => (CrowdMethod::Density, density_total),
    };
    let zones = camera
        .cfg
        .zones
        .iter()
        .map(|z| {
            let count = match sparse {
                Some(_) => {
                    median(persons.iter().map(|p| p.iter().filter(|p| z.contains(foot(p, size))).count() as f32))
                }
                None => map.count_in(&z.polygon, correction),
            };
            ZoneCount { zone: z.name.clone(), count, area_m2: z.area_m2, density_per_m2: z.area_m2.map(|a| count / a) }
        })
        .collect();
    Crowd {
        id: new_event_id(),
        site: site.to_owned(),
        camera: camera.cfg.id.clone(),
        ts: frame.ts,
        method,
        total,
        zones,
    }
}

/// Median of a non-empty sequence (mean of the two middle values for an even count).
fn median(values: impl Iterator<Item = f32>) -> f32 {
    let mut v: Vec<f32> = values.collect();
    v.sort_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_detection_counts() {
        assert_eq!(median([5.0, 1.0, 7.0].into_iter()), 5.0);
        assert_eq!(median([6.0, 2.0, 7.0, 5.0].into_iter()), 5.5);
        assert_eq!(median([3.0].into_iter()), 3.0);
    }
}
