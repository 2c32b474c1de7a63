//! The simulator's embedding geometry beside the real model's (`docs/correlation.md`, "The
//! simulator"). The shared media's portraits are embedded by the real pipeline (YuNet, dlib) as
//! five "cameras" would see them: as they are, halved and re-compressed, darker, brighter with
//! more contrast, and blurred. From that: what a camera alone does to one photo of one face, how
//! much of it is shared by every face that camera sees (what `camera_aware` removes), the same
//! person across photos, and strangers, beside the same figures of `Looks::world`. Only image
//! effects are measured: a camera's angle and lens are not (no such media).
//!
//! ```sh
//! cargo test -p sightline-tests --test calibration -- --nocapture
//! ```

use std::collections::HashMap;
use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage, imageops};
use sightline_tests::sim::{self, Looks, Scenario, SiteKind};
use sightline_tests::{media, model_dir};
use sightline_vision::{FacePipeline, Runtime, RuntimeConfig};

/// Portraits of one face each, with who it is.
const PORTRAITS: &[(&str, &str)] = &[
    ("obama.jpg", "obama"),
    ("obama2.jpg", "obama"),
    ("obama3.jpg", "obama"),
    ("biden.jpg", "biden"),
    ("biden2.jpg", "biden"),
    ("alex-lacamoire.png", "lacamoire"),
    ("lin-manuel-miranda.png", "miranda"),
];

type Camera = (&'static str, fn(&RgbImage) -> RgbImage);

fn jpeg(img: &RgbImage, quality: u8) -> RgbImage {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut buf), quality).encode_image(img).unwrap();
    image::load_from_memory_with_format(&buf, ImageFormat::Jpeg).unwrap().to_rgb8()
}

fn cameras() -> Vec<Camera> {
    vec![
        ("as is", |i| i.clone()),
        ("halved, jpeg 30", |i| {
            let small = imageops::resize(i, i.width() / 2, i.height() / 2, imageops::FilterType::Triangle);
            jpeg(&small, 30)
        }),
        ("darker", |i| imageops::colorops::brighten(i, -60)),
        ("brighter, contrast", |i| imageops::colorops::contrast(&imageops::colorops::brighten(i, 40), 30.0)),
        ("blurred", |i| DynamicImage::ImageRgb8(i.clone()).blur(1.5).to_rgb8()),
    ]
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// min / mean / max.
fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (v.iter().copied().fold(f64::INFINITY, f64::min), mean, v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

fn show(label: &str, v: &[f64]) -> (f64, f64, f64) {
    let s = summary(v);
    println!("{label:<44} {:.3} / {:.3} / {:.3}  (n={})", s.0, s.1, s.2, v.len());
    s
}

/// What a camera does beyond the face: for each camera, the mean over faces of its change of
/// their embeddings (`shared`, what a running per-camera mean learns) and the mean norm of
/// the change (`total`); the rest is per face.
fn camera_effects(changes: &HashMap<usize, Vec<Vec<f64>>>) -> Vec<(usize, f64, f64)> {
    let mut out: Vec<(usize, f64, f64)> = changes
        .iter()
        .map(|(&cam, deltas)| {
            let dim = deltas[0].len();
            let mut mean = vec![0.0; dim];
            for d in deltas {
                mean.iter_mut().zip(d).for_each(|(m, x)| *m += x / deltas.len() as f64);
            }
            let n = deltas.len() as f64;
            let total = deltas.iter().map(|d| norm(d)).sum::<f64>() / n;
            // the mean of n changes carries 1/n of their per-face spread: take it out
            let spread =
                deltas.iter().map(|d| d.iter().zip(&mean).map(|(x, m)| (x - m).powi(2)).sum::<f64>()).sum::<f64>()
                    / (n - 1.0);
            let shared = (norm(&mean).powi(2) - spread / n).max(0.0).sqrt();
            (cam, shared, total)
        })
        .collect();
    out.sort_by_key(|c| c.0);
    out
}

#[test]
fn the_simulated_world_is_as_hard_as_the_real_model() {
    // the real model
    let rt = Runtime::new(&RuntimeConfig { threads: 2, ..Default::default() }).unwrap();
    let mut pipeline = FacePipeline::load(&rt, &model_dir(), "yunet_n_dynamic.onnx").unwrap();
    let cams = cameras();
    // (portrait, camera) -> embedding of its largest face
    let mut emb: HashMap<(usize, usize), Vec<f32>> = HashMap::new();
    for (p, (file, _)) in PORTRAITS.iter().enumerate() {
        let img = sightline_vision::load_rgb(&media(file)).unwrap();
        for (c, (name, see)) in cams.iter().enumerate() {
            let faces = pipeline.analyze(&see(&img)).unwrap();
            let face = faces
                .into_iter()
                .max_by(|a, b| (a.face.bbox[2] * a.face.bbox[3]).total_cmp(&(b.face.bbox[2] * b.face.bbox[3])))
                .unwrap_or_else(|| panic!("no face in {file} seen {name}"));
            emb.insert((p, c), face.embedding);
        }
    }
    let (mut camera_only, mut same_person, mut strangers) = (Vec::new(), Vec::new(), Vec::new());
    let mut changes: HashMap<usize, Vec<Vec<f64>>> = HashMap::new();
    for ((p, c), e) in &emb {
        if *c > 0 {
            let plain = &emb[&(*p, 0)];
            changes.entry(*c).or_default().push(e.iter().zip(plain).map(|(x, y)| f64::from(x - y)).collect());
        }
        for ((q, d), f) in &emb {
            if (p, c) >= (q, d) {
                continue;
            }
            let x = dist(e, f);
            if p == q {
                camera_only.push(x);
            } else if PORTRAITS[*p].1 == PORTRAITS[*q].1 {
                same_person.push(x);
            } else {
                strangers.push(x);
            }
        }
    }
    println!("real model (dlib), {} portraits x {} cameras: min / mean / max", PORTRAITS.len(), cams.len());
    let real_camera = show("one photo, two cameras", &camera_only);
    let real_same = show("one person, two photos (any cameras)", &same_person);
    let real_strangers = show("strangers", &strangers);
    let effects = camera_effects(&changes);
    for &(c, shared, total) in &effects {
        println!("camera {:<20} change {total:.3}, of which shared by every face {shared:.3}", cams[c].0);
    }

    // the simulated world, the same figures
    let run = sim::simulate(&Scenario {
        site: SiteKind::Grid,
        looks: Looks::world(),
        people: 400,
        poor_shot_prob: 0.06,
        lookalike_pairs: 0,
        ..Default::default()
    });
    let (mut same_cam, mut other_cam, mut sim_strangers) = (Vec::new(), Vec::new(), Vec::new());
    let s = &run.sightings;
    for (i, a) in s.iter().enumerate().step_by(7) {
        for b in s[i + 1..].iter().step_by(13) {
            let x = dist(&a.embedding, &b.embedding);
            match (a.person == b.person, a.camera == b.camera) {
                (true, true) => same_cam.push(x),
                (true, false) => other_cam.push(x),
                (false, _) => sim_strangers.push(x),
            }
        }
    }
    let mut by_person: HashMap<u32, Vec<&sim::SimSighting>> = HashMap::new();
    for x in s {
        by_person.entry(x.person).or_default().push(x);
    }
    for v in by_person.values() {
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                let x = dist(&a.embedding, &b.embedding);
                if a.camera == b.camera { same_cam.push(x) } else { other_cam.push(x) }
            }
        }
    }
    println!("simulated world (Looks::world): min / mean / max");
    let sim_same_cam = show("one person, one camera", &same_cam);
    let sim_other_cam = show("one person, two cameras", &other_cam);
    let sim_strangers = show("strangers", &sim_strangers);

    // The real model: a camera alone moves a face by a fraction of the same-person distance,
    // and part of that is shared by every face it sees (what `camera_aware` learns).
    assert!(real_camera.1 < real_same.1, "a camera alone moves a face less than another photo does");
    assert!(real_same.2 < real_strangers.0 + 0.2, "{real_same:?} {real_strangers:?}");
    // Measured: what these cameras do to an image moves each face its own way, far more than
    // all faces one way (the shared part is what `camera_aware` can remove).
    assert!(
        effects.iter().all(|&(_, shared, total)| shared < 0.5 * total),
        "a camera's change is mostly per face: {effects:?}"
    );
    // The simulated world is no kinder than the real model: one person across cameras at least
    // as far apart as across the real photos, strangers at least as close.
    assert!(sim_other_cam.1 >= real_same.1 - 0.02, "sim {sim_other_cam:?} vs real {real_same:?}");
    assert!(sim_other_cam.1 > sim_same_cam.1, "cameras move faces in the simulator too");
    assert!(sim_strangers.1 <= real_strangers.1 + 0.05, "sim {sim_strangers:?} vs real {real_strangers:?}");
}
