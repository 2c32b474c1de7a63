//! CSRNet crowd counting and YOLOX-nano person detection on the real models and the real media of
//! `shared/media` (expected numbers from `shared/models/MANIFEST.md` §3–4). Run with `--nocapture`
//! to see the measured counts and timings.

use std::sync::Mutex;
use std::time::Instant;

use image::RgbImage;

mod common;
use common::{frames, media, model, runtime};
use sightline_vision::{DensityEstimator, DensityMap, FloorCorrection, PersonDetector, load_rgb};

fn gray_frame() -> RgbImage {
    RgbImage::from_pixel(640, 360, image::Rgb([128, 128, 128]))
}

/// One CSRNet session for the whole test binary (2–8 s per image), and each image's map computed once.
struct Crowd {
    estimator: Option<DensityEstimator>,
    maps: Vec<(&'static str, DensityMap)>,
}

static CROWD: Mutex<Crowd> = Mutex::new(Crowd { estimator: None, maps: Vec::new() });

/// The density map of a media photo (at full resolution, as the manifest's "cells > 0.01" column),
/// or of the gray frame for `"gray"`.
fn density(name: &'static str) -> DensityMap {
    let mut crowd = CROWD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = crowd.maps.iter().find(|(n, _)| *n == name) {
        return m.clone();
    }
    let frame = if name == "gray" { gray_frame() } else { load_rgb(&media(name)).unwrap() };
    let estimator = crowd.estimator.get_or_insert_with(|| {
        let mut e = DensityEstimator::load(&runtime(), &model("csrnet.onnx")).expect("csrnet model");
        e.max_width = 1024;
        e
    });
    let t = Instant::now();
    let map = estimator.estimate(&frame).unwrap();
    eprintln!("csrnet {name} {}x{}: {} ms", frame.width(), frame.height(), t.elapsed().as_millis());
    assert_eq!(map.frame_size, frame.dimensions());
    crowd.maps.push((name, map.clone()));
    map
}

#[test]
fn crowd_counts_on_photos() {
    let default = FloorCorrection::default();
    // (photo, accepted range of the corrected count, manifest "cells > 0.01", references)
    let cases = [
        ("peekingduck_crowd1.jpg", 17.0..=28.0, 20.2, "20 dense / 25 sparse"),
        ("peekingduck_crowd2.jpg", 40.0..=58.0, 44.8, "48 / 54"),
        ("ulfd_25.jpg", 320.0..=420.0, 369.3, "336 faces seen by YuNet"),
    ];
    let mut failures = Vec::new();
    for (name, range, manifest, refs) in cases {
        let m = density(name);
        let (raw, count) = (m.raw_total(), m.count(&default));
        let plain = m.count(&FloorCorrection::threshold_only());
        eprintln!(
            "{name}: {}x{} cells, raw {raw:.1}, corrected {count:.1} (threshold {:.4}), cells>0.01 only {plain:.1}; manifest {manifest}, refs {refs}",
            m.width,
            m.height,
            m.threshold(&default)
        );
        if !range.contains(&count) {
            failures.push(format!("{name}: {count:.1} not in {range:?}"));
        }
        if name == "peekingduck_crowd1.jpg" {
            assert!((raw - 54.6).abs() <= 5.46, "raw total {raw} vs the manifest's 54.6: preprocessing?");
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn blank_frame_and_baseline() {
    let gray = density("gray");
    let (raw, count) = (gray.raw_total(), gray.count(&FloorCorrection::default()));
    let plain = gray.count(&FloorCorrection::threshold_only());
    eprintln!("gray 640x360: raw {raw:.1}, corrected {count:.2}, cells>0.01 only {plain:.1}");
    assert!(raw > 30.0, "the floor this test is about: raw {raw}");
    assert!(count < 3.0, "blank frame counts {count}");

    // a baseline captured on the same scene cancels it, whatever the threshold
    let baseline = FloorCorrection::from_empty_scene(&gray);
    assert!(gray.count(&baseline) < 0.01, "{}", gray.count(&baseline));
    let no_threshold = FloorCorrection { cell_threshold: 0.0, floor_multiple: 0.0, ..baseline.clone() };
    assert!(gray.count(&no_threshold) < 0.01);

    // a baseline of another size (1024x768 camera) is ignored, not misapplied
    let other = density("peekingduck_crowd1.jpg");
    let mismatched = FloorCorrection::from_empty_scene(&other);
    assert_ne!(other.cells.len(), gray.cells.len());
    assert_eq!(gray.count(&mismatched), count);
    let mismatched = FloorCorrection { floor_multiple: 0.0, ..mismatched };
    assert_eq!(gray.count(&mismatched), plain);
}

#[test]
fn zone_counts_are_consistent_with_the_total() {
    let m = density("peekingduck_crowd1.jpg");
    let c = FloorCorrection::default();
    let total = m.count(&c);
    let whole = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
    assert_eq!(m.count_in(&whole, &c), total);
    let left = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]];
    let right = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]];
    let (l, r) = (m.count_in(&left, &c), m.count_in(&right, &c));
    let expected: f32 =
        m.corrected(&c).iter().enumerate().filter(|(i, _)| i % m.width < m.width / 2).map(|(_, v)| v).sum();
    eprintln!("peekingduck_crowd1 zones: left {l:.2}, right {r:.2}, total {total:.2}");
    assert!((l - expected).abs() < 1e-3, "{l} vs {expected}");
    assert!((l + r - total).abs() < 1e-3, "{l} + {r} vs {total}");
    assert!(l > 0.0 && r > 0.0);
}

#[test]
fn heatmap_png_has_the_frame_size() {
    let name = "peekingduck_crowd1.jpg";
    let m = density(name);
    let frame = load_rgb(&media(name)).unwrap();
    let png = m.to_heatmap_png(&frame);
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), frame.dimensions());
    let changed = img.pixels().zip(frame.pixels()).filter(|(a, b)| a != b).count();
    let share = changed as f32 / (frame.width() * frame.height()) as f32;
    eprintln!("heatmap: {} bytes, {:.1}% of pixels tinted", png.len(), 100.0 * share);
    if let Some(out) = std::env::var_os("SIGHTLINE_HEATMAP_OUT") {
        std::fs::write(&out, &png).unwrap(); // to look at it
    }
    assert!(share > 0.01 && share < 0.9, "{share}");
    // a blank frame's floor is not painted
    let gray = density("gray");
    let gray_png = gray.to_heatmap_png(&gray_frame());
    assert_eq!(image::load_from_memory(&gray_png).unwrap().to_rgb8(), gray_frame());
}

#[test]
fn persons_on_vtest() {
    let tmp = std::env::temp_dir().join(format!("sightline-vtest-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let t = Instant::now();
    // frames 0, 100, ..., 700 (10 fps): one frame every 10 s
    let frames = frames("vtest.avi", "1/10", &tmp);
    assert!(frames.len() >= 8, "{} frames", frames.len());
    let frames = &frames[..8];
    std::fs::remove_dir_all(&tmp).ok();
    eprintln!("decoded 8 vtest frames in {} ms", t.elapsed().as_millis());

    let mut det = PersonDetector::load(&runtime(), &model("yolox_nano.onnx")).expect("yolox_nano model");
    assert_eq!((det.threshold, det.nms_iou), (0.6, 0.45));
    det.detect(&frames[0]).unwrap(); // warm-up
    let manifest_at_05 = [4, 7, 7, 7, 4, 5, 7, 9];
    let mut counts = Vec::new();
    let t = Instant::now();
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.dimensions(), (768, 576));
        det.threshold = 0.5;
        let at_05 = det.detect(frame).unwrap().len();
        det.threshold = 0.6;
        let persons = det.detect(frame).unwrap();
        for p in &persons {
            let [x, y, w, h] = p.bbox;
            assert!(x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 768.0 && y + h <= 576.0, "{p:?}");
            assert!(p.score > 0.6);
        }
        eprintln!(
            "vtest frame {}: {} persons > 0.6 (scores {:?}), {at_05} > 0.5 (manifest {})",
            i * 100,
            persons.len(),
            persons.iter().map(|p| (p.score * 100.0).round() / 100.0).collect::<Vec<_>>(),
            manifest_at_05[i]
        );
        counts.push(persons.len());
    }
    eprintln!("yolox: {:.1} ms per detect call", t.elapsed().as_secs_f64() * 1000.0 / 16.0);
    assert!(counts.iter().all(|n| (3..=10).contains(n)), "{counts:?}");
    assert!((5..=7).contains(&counts[3]), "frame 300 has 6 pedestrians: {counts:?}");
}
