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
//!
//! # Grid
//! Each measurement carries a coarse `grid` of where the people are (16 columns, rows matching
//! the frame's aspect, e.g. 16×9 for 16:9 and 16×12 for 4:3), by the same method as `total`: the
//! corrected density cells summed into the grid cells they fall in, or the foot points of the
//! detections (of the interval's frame whose count is nearest the median) counted per grid cell.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sightline_contract::{Crowd, CrowdMethod, DensityGrid, MAX_GRID_SIDE, ZoneCount, new_event_id, topic};
use sightline_vision::crowd::{DensityEstimator, DensityMap};
use sightline_vision::persons::Person;
use tokio::sync::mpsc;

use crate::camera::{CameraHandle, CameraSet};
use crate::config::CrowdConfig;
use crate::frames::{Doorbell, Frame, Taken};
use crate::message::Outgoing;
use crate::metrics::{Metrics, model};
use crate::persons::foot;

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
        let mut out = vec![Outgoing::event(topic::crowd(&self.site, &camera.cfg.id), &crowd).since(frame.arrived)];
        out.extend(
            alerts.iter().map(|a| Outgoing::event(topic::alert(&self.site, &camera.cfg.id), a).since(frame.arrived)),
        );
        if camera.cfg.crowd.publish_heatmap {
            let topic = format!("{}/heatmap", topic::crowd(&self.site, &camera.cfg.id).trim_end_matches("/crowd"));
            out.push(Outgoing {
                topic,
                payload: map.to_heatmap_png(&heatmap_base(&frame.image)),
                retain: true,
                origin: None,
            });
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
    let (cols, rows) = grid_shape(size);
    let grid = match sparse {
        Some(n) => {
            // the interval's detections whose count is nearest the median (the latest of equals)
            let nearest =
                persons.iter().rev().min_by(|a, b| (a.len() as f32 - n).abs().total_cmp(&(b.len() as f32 - n).abs()));
            detection_grid(nearest.map_or(&[][..], Vec::as_slice), size, cols, rows)
        }
        None => density_grid(&map.corrected(correction), map.width, map.height, cols, rows),
    };
    Crowd {
        id: new_event_id(),
        site: site.to_owned(),
        camera: camera.cfg.id.clone(),
        ts: frame.ts,
        method,
        total,
        zones,
        grid: Some(grid),
    }
}

/// Columns of the crowd grid.
pub const GRID_COLS: u16 = 16;

/// The grid's `(cols, rows)` for a frame of `(width, height)` pixels: [`GRID_COLS`] columns and
/// as many rows as keep the cells about square (at least 1, at most the contract's limit).
pub fn grid_shape((w, h): (f32, f32)) -> (u16, u16) {
    let rows = if w > 0.0 && h > 0.0 { (f32::from(GRID_COLS) * h / w).round() } else { 9.0 };
    (GRID_COLS, (rows as u16).clamp(1, MAX_GRID_SIDE))
}

/// A density map (`width` × `height` cells, row-major) summed into a `cols` × `rows` grid: each map
/// cell goes whole into the grid cell its position falls in, so the grid sums to the map.
pub fn density_grid(cells: &[f32], width: usize, height: usize, cols: u16, rows: u16) -> DensityGrid {
    let (c, r) = (usize::from(cols), usize::from(rows));
    let mut grid = vec![0f32; c * r];
    if width > 0 && height > 0 {
        for (i, v) in cells.iter().enumerate().take(width * height) {
            let (x, y) = (i % width, i / width);
            grid[(y * r / height) * c + x * c / width] += v.max(0.0);
        }
    }
    DensityGrid { cols, rows, cells: grid }
}

/// People counted per grid cell by their foot point (bottom centre of the box) in a frame of
/// `size` pixels; feet outside the frame count in the nearest edge cell.
pub fn detection_grid(persons: &[Person], size: (f32, f32), cols: u16, rows: u16) -> DensityGrid {
    let (c, r) = (usize::from(cols), usize::from(rows));
    let mut grid = vec![0f32; c * r];
    for p in persons {
        let [x, y] = foot(p, size);
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let col = ((x * c as f32) as isize).clamp(0, c as isize - 1) as usize;
        let row = ((y * r as f32) as isize).clamp(0, r as isize - 1) as usize;
        grid[row * c + col] += 1.0;
    }
    DensityGrid { cols, rows, cells: grid }
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
    use super::*;

    #[test]
    fn grid_shape_follows_the_frame() {
        assert_eq!(grid_shape((1920.0, 1080.0)), (16, 9));
        assert_eq!(grid_shape((768.0, 576.0)), (16, 12));
        assert_eq!(grid_shape((100.0, 10_000.0)), (16, MAX_GRID_SIDE));
        assert_eq!(grid_shape((10_000.0, 10.0)), (16, 1));
        assert_eq!(grid_shape((0.0, 0.0)), (16, 9));
    }

    #[test]
    fn density_grid_keeps_the_sum_and_the_place() {
        // an 80×45 map with people in its top-left and bottom-right cells
        let (w, h) = (80, 45);
        let mut cells = vec![0.0; w * h];
        cells[0] = 1.5;
        cells[w * h - 1] = 2.0;
        cells[w * 20 + 40] = 0.25;
        let g = density_grid(&cells, w, h, 16, 9);
        assert_eq!((g.cols, g.rows, g.cells.len()), (16, 9, 144));
        assert_eq!(g.cells[0], 1.5);
        assert_eq!(g.cells[143], 2.0);
        assert_eq!(g.cells[4 * 16 + 8], 0.25);
        assert!((g.cells.iter().sum::<f32>() - 3.75).abs() < 1e-6);
        assert!(g.check().is_ok());
        // a map smaller than the grid still lands every value
        let g = density_grid(&[1.0, 2.0, 3.0, 4.0], 2, 2, 16, 9);
        assert_eq!(g.cells.iter().sum::<f32>(), 10.0);
        assert_eq!(g.cells[0], 1.0);
        assert_eq!(g.cells[4 * 16 + 8], 4.0);
    }

    #[test]
    fn detection_grid_counts_foot_points() {
        let person = |x: f32, y: f32, w: f32, h: f32| Person { bbox: [x, y, w, h], score: 0.9 };
        // 1600×900 frame, 16×9 grid: 100 px cells
        let persons = [
            person(0.0, 0.0, 50.0, 90.0),       // foot (25, 90): cell (0, 0)
            person(1500.0, 700.0, 90.0, 200.0), // foot (1545, 900): bottom edge, cell (15, 8)
            person(790.0, 300.0, 20.0, 150.0),  // foot (800, 450): cell (8, 4)
            person(795.0, 310.0, 10.0, 140.0),  // the same cell
        ];
        let g = detection_grid(&persons, (1600.0, 900.0), 16, 9);
        assert_eq!(g.cells[0], 1.0);
        assert_eq!(g.cells[8 * 16 + 15], 1.0);
        assert_eq!(g.cells[4 * 16 + 8], 2.0);
        assert_eq!(g.cells.iter().sum::<f32>(), 4.0);
        assert!(g.check().is_ok());
    }

    #[test]
    fn median_of_detection_counts() {
        assert_eq!(median([5.0, 1.0, 7.0].into_iter()), 5.0);
        assert_eq!(median([6.0, 2.0, 7.0, 5.0].into_iter()), 5.5);
        assert_eq!(median([3.0].into_iter()), 3.0);
    }
}
