//! Micro-benchmarks of the per-frame and per-sighting hot paths:
//!
//! - `yunet_postprocess`: YuNet output decoding + NMS, on the raw outputs of the real model on
//!   `lin-manuel-miranda.png` (one face) and `ulfd_25.jpg` (a crowd, ~340 faces);
//! - `align`: the 5-point similarity warp of one detected face into the 150×150 chip;
//! - `embed_preprocess`: aligned chips → the embedding model's `[N, 3, 150, 150]` input;
//! - `tracker_update`: the edge tracker's update with 10, 50 and 200 slowly moving faces;
//! - `sighting_json`: `Sighting` encode and decode with a 128-float embedding;
//! - `correlate`: `Correlator::assign` of one sighting against a window of 1k and 10k live
//!   trajectories on a 4-camera site, for a sighting that joins one and one that starts one;
//! - `face_pipeline`: for reference, detection alone and detection + alignment + embedding of a
//!   640×360 frame of `short_hamilton_clip.mp4` on ONNX Runtime (2 intra-op threads per model).
//!
//! `cargo bench -p sightline-benches --bench hot_paths` (about 2 minutes). The vision benchmarks
//! need the models (`SIGHTLINE_MODEL_DIR`), the media (`SIGHTLINE_MEDIA_DIR`) and ONNX Runtime
//! (`ORT_DYLIB_PATH`), which `.cargo/config.toml` points at `models/cache`, `../shared/media` and
//! `.local/onnxruntime/` (`scripts/setup.sh`); `gst-launch-1.0` decodes the clip (without it, the
//! frame is cut from `lin-manuel-miranda.png`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use image::RgbImage;
use sightline_aggregator::correlate::{CorrelationConfig, Correlator, Observation};
use sightline_aggregator::site::{CameraPlace, SiteConfig, SiteModel};
use sightline_benches::Rng;
use sightline_contract::{BestShot, Payload, Sighting, testing};
use sightline_edge_agent::tracker::{FaceObservation, Tracker, TrackerConfig};
use sightline_vision::yunet::{self, Face, FaceDetector};
use sightline_vision::{FacePipeline, Runtime, RuntimeConfig, align, embed, load_rgb};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const DIM: usize = 128;
const MODEL: &str = "dlib-resnet-v1";
const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const CAMERAS: [&str; 4] = ["gate", "hall", "dock", "yard"];

/// A uniformly random direction of norm `norm`.
fn direction(rng: &mut Rng, norm: f32) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|_| rng.normal() as f32).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x * norm / n).collect()
}

/// dlib-like embeddings: a shared mean (real embeddings are not centred) plus a per-person
/// direction plus per-shot noise, of norms chosen so two shots of one person are ~0.35 apart,
/// shots of two people ~0.9 apart, and embeddings have a norm of about 1.
struct Faces {
    mean: Vec<f32>,
    rng: Rng,
}

impl Faces {
    /// |person_a - person_b| ≈ √2 · PERSON, |shot - shot'| ≈ √2 · SHOT of the same person.
    const PERSON: f32 = 0.586;
    const SHOT: f32 = 0.2475;

    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        Faces { mean: direction(&mut rng, 0.75), rng }
    }

    fn person(&mut self) -> Vec<f32> {
        let d = direction(&mut self.rng, Self::PERSON);
        d.iter().zip(&self.mean).map(|(d, m)| d + m).collect()
    }

    fn shot(&mut self, person: &[f32]) -> Vec<f32> {
        let n = direction(&mut self.rng, Self::SHOT);
        person.iter().zip(&n).map(|(p, n)| p + n).collect()
    }
}

fn media(name: &str) -> PathBuf {
    std::env::var_os("SIGHTLINE_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media"))
        .join(name)
}

fn model_dir() -> PathBuf {
    std::env::var_os("SIGHTLINE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cache"))
}

fn runtime() -> Runtime {
    Runtime::new(&RuntimeConfig::default()).expect("ONNX Runtime (run scripts/setup.sh, or set ORT_DYLIB_PATH)")
}

fn image(name: &str) -> RgbImage {
    load_rgb(&media(name)).unwrap_or_else(|e| panic!("{e} (SIGHTLINE_MEDIA_DIR)"))
}

/// The best face of `frame`, by the real detector.
fn detect_one(det: &mut FaceDetector, frame: &RgbImage) -> Face {
    let faces = det.detect(frame).expect("detection");
    faces.into_iter().max_by(|a, b| a.score.total_cmp(&b.score)).expect("a face in the frame")
}

// --- vision -------------------------------------------------------------------------------------

fn yunet_postprocess(c: &mut Criterion) {
    let rt = runtime();
    let mut det = FaceDetector::load(&rt, &model_dir().join("yunet_n_dynamic.onnx")).expect("YuNet model");
    let (threshold, nms_iou) = (det.threshold, det.nms_iou);
    let postprocess = |raw: &yunet::RawOutputs| {
        let mut faces = Vec::new();
        for out in raw.stride_outputs() {
            yunet::decode(&out, raw.padded_w, threshold, &mut faces);
        }
        yunet::nms(faces, nms_iou)
    };
    let mut group = c.benchmark_group("yunet_postprocess");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for name in ["lin-manuel-miranda.png", "ulfd_25.jpg"] {
        let frame = image(name);
        let raw = det.infer_raw(&frame).expect("YuNet inference");
        let anchors: usize = raw.strides.iter().map(|(_, [cls, ..])| cls.len()).sum();
        let mut candidates = Vec::new();
        for out in raw.stride_outputs() {
            yunet::decode(&out, raw.padded_w, threshold, &mut candidates);
        }
        let kept = postprocess(&raw).len();
        eprintln!(
            "yunet_postprocess/{name}: {}x{} input, {anchors} anchors, {} above {threshold}, {kept} after NMS",
            frame.width(),
            frame.height(),
            candidates.len()
        );
        group.throughput(Throughput::Elements(anchors as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &raw, |b, raw| {
            b.iter(|| black_box(postprocess(black_box(raw))))
        });
    }
    group.finish();
}

fn align_and_preprocess(c: &mut Criterion) {
    let rt = runtime();
    let mut det = FaceDetector::load(&rt, &model_dir().join("yunet_n_dynamic.onnx")).expect("YuNet model");
    let frame = image("lin-manuel-miranda.png");
    let face = detect_one(&mut det, &frame);

    let mut group = c.benchmark_group("align");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let label = format!("{}x{} frame, {:.0}px face", frame.width(), frame.height(), face.bbox[2]);
    group.bench_function(label, |b| b.iter(|| black_box(align::align(black_box(&frame), black_box(&face.landmarks)))));
    group.finish();

    // distinct chips (slightly different landmarks) so a batch is not one chip copied
    let chips: Vec<RgbImage> = (0..32)
        .map(|i| {
            let d = (i as f32 - 16.0) * 0.1;
            align::align(&frame, &face.landmarks.map(|[x, y]| [x + d, y - d]))
        })
        .collect();
    let mut group = c.benchmark_group("embed_preprocess");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for n in [1usize, 8, 32] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("chips", n), &chips[..n], |b, batch| {
            b.iter(|| black_box(embed::rgb_planar_batch(black_box(batch))))
        });
    }
    group.finish();
}

/// A 640×360 frame of the clip with a face in it (3 s in), decoded by GStreamer; cut from
/// `lin-manuel-miranda.png` when `gst-launch-1.0` is not there.
fn clip_frame() -> (RgbImage, &'static str) {
    let dir = std::env::temp_dir().join(format!("sightline-hot-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pipeline = format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! videorate ! \
         video/x-raw,format=RGB,width=640,height=360,framerate=1/1 ! pngenc ! multifilesink",
        media("short_hamilton_clip.mp4").display()
    );
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split(' ').filter(|s| !s.is_empty()))
        .arg(format!("location={}", dir.join("f%03d.png").display()))
        .status();
    let frame = match status {
        Ok(s) if s.success() => load_rgb(&dir.join("f003.png")).ok(),
        _ => None,
    };
    std::fs::remove_dir_all(&dir).ok();
    match frame {
        Some(f) => (f, "clip frame"),
        None => {
            let png = image::imageops::resize(
                &image("lin-manuel-miranda.png"),
                640,
                556,
                image::imageops::FilterType::Triangle,
            );
            (image::imageops::crop_imm(&png, 0, 0, 640, 360).to_image(), "png crop")
        }
    }
}

fn face_pipeline(c: &mut Criterion) {
    let (frame, source) = clip_frame();
    let mut p = FacePipeline::load(&runtime(), &model_dir(), "yunet_n_dynamic.onnx").expect("models");
    let n = p.analyze(&frame).expect("analysis").len();
    eprintln!("face_pipeline: {}x{} {source}, {n} face(s) embedded", frame.width(), frame.height());
    let mut group = c.benchmark_group("face_pipeline");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6));
    group.bench_function(format!("detect/640x360 {source}"), |b| {
        b.iter(|| black_box(p.detector.detect(black_box(&frame)).unwrap()))
    });
    group.bench_function(format!("detect+align+embed/640x360 {source}"), |b| {
        b.iter(|| black_box(p.analyze(black_box(&frame)).unwrap()))
    });
    group.finish();
}

// --- edge tracker -------------------------------------------------------------------------------

/// `n` faces (40 px) on a 1920×1080 grid at 5 fps, each swaying around its place (±24 px
/// horizontally, ±8 px vertically, a 10 s period: up to ~3 px a frame) with ±1 px of detector
/// jitter and a fresh embedding shot every frame. One period of frames: it repeats seamlessly.
fn tracker_frames(n: usize) -> Vec<Vec<FaceObservation>> {
    const PERIOD: usize = 50;
    const SIZE: f32 = 40.0;
    let mut faces = Faces::new(0x7ac);
    let mut rng = Rng(n as u64);
    let people: Vec<(f32, f32, f64, Vec<f32>)> = (0..n)
        .map(|i| {
            let (col, row) = ((i % 20) as f32, (i / 20) as f32);
            (48.0 + col * 96.0, 54.0 + row * 108.0, rng.unit_f64() * std::f64::consts::TAU, faces.person())
        })
        .collect();
    (0..PERIOD)
        .map(|f| {
            people
                .iter()
                .map(|(x, y, phase, person)| {
                    let a = std::f64::consts::TAU * f as f64 / PERIOD as f64 + phase;
                    let cx = x + 24.0 * a.sin() as f32 + (rng.unit_f64() as f32 * 2.0 - 1.0);
                    let cy = y + 8.0 * (2.0 * a).sin() as f32 + (rng.unit_f64() as f32 * 2.0 - 1.0);
                    let s = SIZE + (rng.unit_f64() as f32 * 2.0 - 1.0);
                    let eye = s * 0.2;
                    FaceObservation {
                        bbox: [cx - s / 2.0, cy - s / 2.0, s, s],
                        landmarks: [
                            [cx - eye, cy - eye],
                            [cx + eye, cy - eye],
                            [cx, cy],
                            [cx - eye, cy + eye],
                            [cx + eye, cy + eye],
                        ],
                        det_score: 0.8 + 0.15 * rng.unit_f64() as f32,
                        quality: 0.4 + 0.4 * rng.unit_f64() as f32,
                        embedding: faces.shot(person),
                    }
                })
                .collect()
        })
        .collect()
}

fn tracker_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker_update");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(4));
    for n in [10usize, 50, 200] {
        let frames = tracker_frames(n);
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut k = 0usize;
        let mut next = || {
            let ts = T0 + time::Duration::milliseconds(200 * k as i64);
            let faces = frames[k % frames.len()].clone();
            k += 1;
            (ts, faces)
        };
        // past the first frames: every face has a confirmed track
        for _ in 0..10 {
            let (ts, faces) = next();
            tracker.update(ts, faces);
        }
        assert_eq!(tracker.active(), n, "one track per face");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("tracks", n), |b| {
            b.iter_batched(&mut next, |(ts, faces)| tracker.update(ts, faces), BatchSize::SmallInput)
        });
        assert_eq!(tracker.active(), n, "tracks kept their faces while benchmarked");
        assert_eq!(tracker.dropped_tracks(), 0);
    }
    group.finish();
}

// --- contract -----------------------------------------------------------------------------------

fn sighting_json(c: &mut Criterion) {
    let mut faces = Faces::new(0x15);
    let person = faces.person();
    // every field set: the encoded size and the numbers' digits are what is measured
    let s = testing::sighting()
        .id(Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0042))
        .site("riverside")
        .camera("gate")
        .track(4242)
        .first_seen(T0)
        .last_seen(T0 + time::Duration::milliseconds(6_400))
        .best(BestShot {
            ts: T0 + time::Duration::milliseconds(2_200),
            bbox: [512.25, 208.5, 96.75, 97.0],
            landmarks: [[541.5, 244.25], [583.0, 243.75], [562.5, 266.0], [545.25, 285.5], [580.75, 285.0]],
            det_score: 0.93,
            quality: 0.81,
        })
        .frame_size([1920, 1080])
        .ground([12.25, -3.5])
        .model(MODEL)
        .embedding(faces.shot(&person))
        .build();
    let json = s.to_json();
    assert_eq!(Sighting::from_json(&json).unwrap(), s, "round trip");
    let mut group = c.benchmark_group("sighting_json");
    group.sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("to_json", |b| b.iter(|| black_box(black_box(&s).to_json())));
    group.bench_function("from_json", |b| b.iter(|| black_box(Sighting::from_json(black_box(&json)).unwrap())));
    group.finish();
}

// --- aggregator correlator ----------------------------------------------------------------------

/// Four cameras at the corners of a 60 m × 80 m yard.
fn site() -> SiteModel {
    let positions = [[0.0, 0.0], [60.0, 0.0], [60.0, 80.0], [0.0, 80.0]];
    let cameras = CAMERAS
        .iter()
        .zip(positions)
        .map(|(id, position)| CameraPlace {
            id: (*id).into(),
            position,
            view_radius_m: 10.0,
            homography: None,
            agent: None,
        })
        .collect();
    let cfg = SiteConfig::new("yard");
    SiteModel::new(cfg, cameras, vec![]).expect("valid site")
}

/// A window of `n` live trajectories: each one person walking past 3–5 cameras at ~1.4 m/s
/// (2–8 s in each view), starting in the 25 minutes before `T0 + 1500 s`; all within the default
/// 30-minute horizon of a sighting at the end. Also each person's embedding and last member.
struct Window {
    members: Vec<(Observation, Uuid)>,
    people: Vec<(Vec<f32>, usize, f64)>,
}

fn window(n: usize, faces: &mut Faces) -> Window {
    let site = site();
    let mut rng = Rng(n as u64 ^ 0xc0);
    let mut members = Vec::new();
    let mut people = Vec::with_capacity(n);
    let mut sighting = 1u128 << 64;
    for p in 0..n {
        let person = faces.person();
        let trajectory = Uuid::from_u128(p as u128 + 1);
        let mut t = rng.unit_f64() * 1500.0;
        let mut cam = (rng.next_u64() % 4) as usize;
        let k = 3 + (rng.next_u64() % 3) as usize;
        for m in 0..k {
            if m > 0 {
                let next = (cam + 1 + (rng.next_u64() % 3) as usize) % 4;
                t += site.effective_distance(cam, next) / 1.4 + 5.0 + 20.0 * rng.unit_f64();
                cam = next;
            }
            let dwell = 2.0 + 6.0 * rng.unit_f64();
            sighting += 1;
            let obs = Observation {
                sighting: Uuid::from_u128(sighting),
                camera: CAMERAS[cam].into(),
                first_seen: T0 + time::Duration::seconds_f64(t),
                last_seen: T0 + time::Duration::seconds_f64(t + dwell),
                embedding: faces.shot(&person),
                model: MODEL.into(),
            };
            members.push((obs, trajectory));
            t += dwell;
        }
        people.push((person, cam, t));
    }
    // restored in event-time order, as after a restart
    members.sort_by_key(|(o, _)| o.first_seen);
    Window { members, people }
}

fn correlator(w: &Window) -> Correlator {
    let mut c = Correlator::new(CorrelationConfig::default(), site()).expect("valid config");
    for (obs, trajectory) in &w.members {
        c.restore(obs.clone(), *trajectory);
    }
    c
}

fn correlate(c: &mut Criterion) {
    let mut group = c.benchmark_group("correlate");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (n, label) in [(1_000usize, "1k"), (10_000, "10k")] {
        let mut faces = Faces::new(0xc0de);
        let w = window(n, &mut faces);
        let build = Instant::now();
        let live = correlator(&w).live();
        eprintln!(
            "correlate/{label}: {live} trajectories, {} members, window rebuilt in {:.1?}",
            w.members.len(),
            build.elapsed()
        );
        // A sighting of person `i` (40–60 s after their last one, on another camera) joins their
        // trajectory; one of a new person (in the last minutes of the window) starts one.
        let mut rng = Rng(0x5a);
        let mut sighting = 2u128 << 64;
        let mut probe = |i: usize, known: bool, faces: &mut Faces| {
            sighting += 1;
            let (embedding, cam, t) = if known {
                let (person, cam, last) = &w.people[i % n];
                let t = last + 40.0 + 20.0 * rng.unit_f64();
                (faces.shot(person), (cam + 1 + (rng.next_u64() % 3) as usize) % 4, t)
            } else {
                let person = faces.person();
                (faces.shot(&person), (rng.next_u64() % 4) as usize, 1500.0 + 200.0 * rng.unit_f64())
            };
            Observation {
                sighting: Uuid::from_u128(sighting),
                camera: CAMERAS[cam].into(),
                first_seen: T0 + time::Duration::seconds_f64(t),
                last_seen: T0 + time::Duration::seconds_f64(t + 4.0),
                embedding,
                model: MODEL.into(),
            }
        };
        // Check the scenario does what it says.
        let mut check = correlator(&w);
        let joined = (0..100).filter(|&i| !check.assign(probe(i, true, &mut faces)).new).count();
        let started = (0..100).filter(|_| check.assign(probe(0, false, &mut faces)).new).count();
        eprintln!("correlate/{label}: of 100 sightings, {joined} known people joined, {started} new people started");
        drop(check);

        for (case, known) in [("joins", true), ("starts", false)] {
            // `assign` grows the window: rebuild it (untimed) before each person was seen twice,
            // or, for new people, before the window grew by more than 10 %.
            let chunk = if known { n as u64 } else { n as u64 / 10 };
            group.bench_function(BenchmarkId::new(label, case), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut done = 0u64;
                    while done < iters {
                        let mut corr = correlator(&w);
                        let m = (iters - done).min(chunk);
                        let probes: Vec<Observation> = (0..m as usize).map(|i| probe(i, known, &mut faces)).collect();
                        let start = Instant::now();
                        for obs in probes {
                            black_box(corr.assign(black_box(obs)));
                        }
                        timed += start.elapsed();
                        done += m;
                    }
                    timed
                })
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    yunet_postprocess,
    align_and_preprocess,
    tracker_update,
    sighting_json,
    correlate,
    face_pipeline
);
criterion_main!(benches);
