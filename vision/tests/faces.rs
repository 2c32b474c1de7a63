//! The face pipeline on the real models and the real still images of `shared/media`
//! (expected numbers from `shared/models/MANIFEST.md` §1–2).

mod common;

use sightline_vision::{FacePipeline, Runtime, RuntimeConfig, distance, load_rgb};

fn pipeline() -> FacePipeline {
    let mut p = common::pipeline();
    // the manifest's counts were taken at full resolution
    p.detector.max_width = 4096;
    p
}

fn media(name: &str) -> image::RgbImage {
    load_rgb(&common::media(name)).unwrap()
}

#[test]
fn face_counts_match_the_manifest() {
    let mut p = pipeline();
    let exact = [
        ("obama.jpg", 1),
        ("obama2.jpg", 1),
        ("obama3.jpg", 1),
        ("biden.jpg", 1),
        ("biden2.jpg", 1),
        ("two_people.jpg", 2),
        ("lin-manuel-miranda.png", 1),
        ("alex-lacamoire.png", 1),
    ];
    for (name, want) in exact {
        let faces = p.detector.detect(&media(name)).unwrap();
        assert_eq!(faces.len(), want, "{name}: {faces:?}");
        assert!(faces.iter().all(|f| f.score > 0.85), "{name}: {faces:?}");
    }
    // crowd photos: the manifest's counts, with ±2 for NMS ordering details
    for (name, want) in [("peekingduck_crowd1.jpg", 18i64), ("peekingduck_crowd2.jpg", 25), ("ulfd_25.jpg", 336)] {
        let n = p.detector.detect(&media(name)).unwrap().len() as i64;
        assert!((n - want).abs() <= 2, "{name}: {n} faces, manifest says {want}");
    }
}

fn embedding(p: &mut FacePipeline, name: &str) -> Vec<f32> {
    let faces = p.analyze(&media(name)).unwrap();
    assert_eq!(faces.len(), 1, "{name}");
    faces.into_iter().next().unwrap().embedding
}

#[test]
fn same_person_is_close_and_different_people_are_far() {
    let mut p = pipeline();
    let labelled = [
        ("obama.jpg", "obama"),
        ("obama2.jpg", "obama"),
        ("obama3.jpg", "obama"),
        ("biden.jpg", "biden"),
        ("biden2.jpg", "biden"),
        ("lin-manuel-miranda.png", "miranda"),
        ("alex-lacamoire.png", "lacamoire"),
    ];
    let names: Vec<&str> = labelled.iter().map(|(n, _)| *n).collect();
    let embs: Vec<(&str, Vec<f32>)> = labelled.iter().map(|(n, who)| (*who, embedding(&mut p, n))).collect();
    let mut same = 0;
    for (i, (pa, ea)) in embs.iter().enumerate() {
        for (pb, eb) in &embs[i + 1..] {
            let d = distance(ea, eb);
            if pa == pb {
                same += 1;
                assert!(d < 0.6, "{pa} vs {pb}: {d}");
            } else {
                assert!(d >= 0.6, "{pa} vs {pb}: {d}");
            }
        }
    }
    assert_eq!(same, 4, "obama x3 (3 pairs) + biden x2 (1 pair)");

    // The manifest's measured distances (YuNet alignment), within a tolerance for our
    // least-squares fit vs OpenCV's LMEDS.
    let d = |a: usize, b: usize| distance(&embs[a].1, &embs[b].1);
    for (a, b, want) in [(0, 1, 0.352), (0, 2, 0.330), (1, 2, 0.424), (3, 4, 0.407), (0, 3, 0.874)] {
        assert!((d(a, b) - want).abs() < 0.08, "{} vs {}: {} (manifest {want})", names[a], names[b], d(a, b));
    }

    // two_people.jpg, left to right: Obama, then Biden
    let mut two = p.analyze(&media("two_people.jpg")).unwrap();
    two.sort_by(|a, b| a.face.bbox[0].total_cmp(&b.face.bbox[0]));
    assert!(distance(&two[0].embedding, &embs[0].1) < 0.45);
    assert!(distance(&two[1].embedding, &embs[3].1) < 0.45);
    assert!(distance(&two[0].embedding, &embs[3].1) > 0.7);
}

#[test]
fn missing_and_corrupt_models_are_named() {
    let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
    let tmp = std::env::temp_dir().join(format!("sightline-vision-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let e = FacePipeline::load(&rt, &tmp, "yunet_n_dynamic.onnx").err().unwrap().to_string();
    assert!(e.contains("yunet_n_dynamic.onnx") && e.contains("missing"), "{e}");

    std::fs::write(tmp.join("yunet_n_dynamic.onnx"), b"not an onnx model").unwrap();
    let e = FacePipeline::load(&rt, &tmp, "yunet_n_dynamic.onnx").err().unwrap().to_string();
    assert!(e.contains("yunet_n_dynamic.onnx"), "{e}");

    // an unlisted, corrupt file reaches ONNX Runtime, whose error is reported with the path
    std::fs::write(tmp.join("custom.onnx"), b"garbage").unwrap();
    let e = FacePipeline::load(&rt, &tmp, "custom.onnx").err().unwrap().to_string();
    assert!(e.contains("custom.onnx") && e.contains("could not be loaded"), "{e}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn a_missing_runtime_library_is_a_clear_error() {
    let e = Runtime::new(&RuntimeConfig {
        onnxruntime: Some("/nonexistent/libonnxruntime.so".into()),
        ..Default::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("/nonexistent/libonnxruntime.so") && e.contains("setup.sh"), "{e}");
}
