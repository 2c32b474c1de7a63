//! End to end on real parts: camsim serving the real clip over RTSP (or a file source) →
//! `edge-agent` with the real models → a real mosquitto on a free loopback port → this test
//! subscribing. Every wait is bounded and waits on messages, not on time.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sightline_contract::{CameraState, CameraStatus, Payload, Sighting};
use sightline_tests::*;
use sightline_vision::distance;

/// Every sighting received, parsed and checked against the contract.
fn sightings(sub: &Subscriber) -> Vec<Sighting> {
    let all: Vec<Sighting> = sub
        .on("sighting")
        .iter()
        .map(|m| Sighting::from_json(&m.payload).unwrap_or_else(|e| panic!("invalid sighting on {}: {e}", m.topic)))
        .collect();
    for s in &all {
        assert_eq!(s.embedding.len(), 128);
        assert_eq!(s.model, "dlib-resnet-v1");
        assert!(s.first_seen <= s.best.ts && s.best.ts <= s.last_seen, "{s:?}");
        let [x, y, w, h] = s.best.bbox;
        assert!(w > 0.0 && h > 0.0 && x + w > 0.0 && y + h > 0.0, "{:?}", s.best.bbox);
        assert!(x < s.frame_size[0] as f32 && y < s.frame_size[1] as f32, "{:?}", s.best.bbox);
        assert!((0.0..=1.0).contains(&s.best.quality));
    }
    let mut ids: Vec<_> = all.iter().map(|s| s.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "event ids are unique");
    all
}

fn statuses(sub: &Subscriber, camera: &str) -> Vec<CameraStatus> {
    sub.on("status")
        .iter()
        .filter(|m| m.topic.ends_with(&format!("/{camera}/status")))
        .map(|m| CameraStatus::from_json(&m.payload).unwrap())
        .collect()
}

fn matches(s: &[Sighting], reference: &[f32]) -> usize {
    s.iter().filter(|s| distance(&s.embedding, reference) < 0.6).count()
}

fn rtsp_camera(id: &str, url: &str) -> String {
    format!("[[camera]]\nid = \"{id}\"\nrtsp = \"{url}\"\nsilence_timeout_s = 5\n")
}

/// Serves `file` over RTSP (looping), runs the agent on it and checks the identities seen
/// during the clip's first pass: Lin-Manuel Miranda is found; Barack Obama (audience, frames
/// ~234–264) is not matched by any sighting that ended within the first 200 frames.
fn rtsp_identities(file: &Path, expect_codec: &str) {
    let miranda = reference_embedding("lin-manuel-miranda.png");
    let obama = reference_embedding("obama.jpg");
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camsim = Camsim::start(&[("stage", file)], true).unwrap();
    let agent = Agent::start(&agent_config(broker.port, &rtsp_camera("stage", &camsim.url("stage")))).unwrap();

    // Streaming starts; then wait for a sighting that began in the clip's second pass (>= 9.3 s),
    // by which time every track of the first pass has closed.
    let streaming = |m: &[Message]| {
        m.iter().filter(|m| m.topic.ends_with("/stage/status")).find_map(|m| {
            let s = CameraStatus::from_json(&m.payload).unwrap();
            (s.state == CameraState::Streaming).then_some(s.ts)
        })
    };
    sub.wait_until(Duration::from_secs(30), |m| streaming(m).is_some())
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));
    let epoch = streaming(&sub.seen).unwrap();
    sub.wait_until(Duration::from_secs(60), |m| {
        m.iter().filter(|m| m.topic.ends_with("/sighting")).any(|m| {
            Sighting::from_json(&m.payload).is_ok_and(|s| s.first_seen - epoch > time::Duration::milliseconds(9300))
        })
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));

    let all = sightings(&sub);
    let first_pass: Vec<Sighting> =
        all.iter().filter(|s| s.first_seen - epoch < time::Duration::milliseconds(9300)).cloned().collect();
    assert!(matches(&first_pass, &miranda) >= 1, "no sighting of Lin-Manuel Miranda in {first_pass:#?}");
    let early = 200.0 / 29.97;
    for s in first_pass.iter().filter(|s| (s.last_seen - epoch).as_seconds_f64() < early) {
        let d = distance(&s.embedding, &obama);
        assert!(d >= 0.6, "sighting {} (track {}) in the first 200 frames matches obama.jpg at {d}", s.id, s.track);
    }
    let status = statuses(&sub, "stage").into_iter().find(|s| s.state == CameraState::Streaming).unwrap();
    assert!(status.codec.as_deref().unwrap_or("").starts_with(expect_codec), "{status:?}");
    assert_eq!(status.resolution, Some([640, 360]));
    assert_eq!(all[0].frame_size, [640, 360]);
}

#[test]
fn rtsp_h264_sightings_reach_mosquitto() {
    rtsp_identities(&media("short_hamilton_clip.mp4"), "avc1");
}

#[test]
fn rtsp_h265_sightings_reach_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip-h265.mp4");
    gst_launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! x265enc speed-preset=ultrafast key-int-max=30 ! h265parse ! mp4mux ! filesink location={}",
        media("short_hamilton_clip.mp4").display(),
        out.display()
    ))
    .unwrap();
    rtsp_identities(&out, "hvc1");
}

#[test]
fn file_source_replays_and_exits() {
    let miranda = reference_embedding("lin-manuel-miranda.png");
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camera = format!(
        "[[camera]]\nid = \"replay\"\nfile = \"{}\"\npace = \"fast\"\n",
        media("short_hamilton_clip.mp4").display()
    );
    let mut agent = Agent::start(&agent_config(broker.port, &camera)).unwrap();
    let status = agent.wait_exit(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "agent failed: {}", agent.log());
    // the agent flushed before exiting: its retained offline status is the last thing it sent
    sub.wait_agent_stopped(Duration::from_secs(10)).unwrap();
    let all = sightings(&sub);
    assert!(all.len() >= 2, "{all:#?}");
    assert!(matches(&all, &miranda) >= 1, "no sighting of Lin-Manuel Miranda in {all:#?}");
    let log = agent.log();
    assert!(log.contains("decoded=275"), "every frame of the clip decoded: {log}");
}

fn run_agent(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("edge-agent")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn bad_input_gives_clear_errors() {
    // a URL nothing answers
    let url = format!("rtsp://127.0.0.1:{}/nothing", free_port());
    let (ok, out) = run_agent(&["probe", &url, "--timeout-s", "5"]);
    assert!(!ok && out.contains(&url) && out.contains("cannot connect"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let good = agent_config(1883, &rtsp_camera("gate", "rtsp://127.0.0.1:8554/gate"));
    let (ok, out) = run_agent(&["check-config", &write("good.toml", &good)]);
    assert!(ok && out.contains("models verified"), "{out}");

    // a model file outside the model directory: refused, naming the key
    let detector = |file: &str| good.replacen("\n[mqtt]\n", &format!("\n[faces]\ndetector = {file:?}\n\n[mqtt]\n"), 1);
    let outside = model_dir().join("../yunet_n_dynamic.onnx");
    let (ok, out) = run_agent(&["check-config", &write("outside.toml", &detector(&outside.display().to_string()))]);
    assert!(!ok && out.contains("faces.detector") && out.contains("model_dir"), "{out}");
    // a model of its own in the model directory loads, and is reported unverified
    let own = tempfile::tempdir().unwrap();
    let embedder = "dlib_face_recognition_resnet_model_v1.onnx";
    for (from, to) in [("yunet_n_dynamic.onnx", "own-detector.onnx"), (embedder, embedder)] {
        std::os::unix::fs::symlink(model_dir().join(from), own.path().join(to)).unwrap();
    }
    let custom =
        detector("own-detector.onnx").replace(&model_dir().display().to_string(), &own.path().display().to_string());
    let (ok, out) = run_agent(&["check-config", &write("own.toml", &custom)]);
    assert!(ok && out.contains("UNVERIFIED") && out.contains(r#"faces.detector = "own-detector.onnx""#), "{out}");
    assert!(!out.contains("models verified"), "{out}");

    // a typo'd key: named, with its line
    let (ok, out) =
        run_agent(&["check-config", &write("typo.toml", &good.replace("silence_timeout_s", "silense_timeout_s"))]);
    assert!(!ok && out.contains("silense_timeout_s") && out.contains("line"), "{out}");

    // a missing model file
    let empty = tempfile::tempdir().unwrap();
    let missing = good.replace(&model_dir().display().to_string(), &empty.path().display().to_string());
    let (ok, out) = run_agent(&["check-config", &write("missing.toml", &missing)]);
    assert!(!ok && out.contains("yunet_n_dynamic.onnx") && out.contains("missing"), "{out}");

    // a corrupt model file (right name, wrong bytes)
    std::fs::write(empty.path().join("yunet_n_dynamic.onnx"), vec![7u8; 322906]).unwrap();
    let (ok, out) = run_agent(&["check-config", &write("corrupt.toml", &missing)]);
    assert!(!ok && out.contains("yunet_n_dynamic.onnx") && out.contains("sha256"), "{out}");
}

#[test]
fn an_unreachable_camera_is_reported_offline_and_does_not_stall_the_others() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camsim = Camsim::start(&[("stage", &media("short_hamilton_clip.mp4"))], true).unwrap();
    let url = format!("rtsp://127.0.0.1:{}/gone", free_port());
    let cameras = format!("{}{}", rtsp_camera("gone", &url), rtsp_camera("stage", &camsim.url("stage")));
    let agent = Agent::start(&agent_config(broker.port, &cameras)).unwrap();
    // the broken camera is reported with its URL, and keeps being retried, while the working
    // camera of the same agent streams and produces sightings
    let offline_reports = |m: &[Message]| {
        m.iter()
            .filter(|m| m.topic.ends_with("/gone/status"))
            .filter(|m| {
                let s = CameraStatus::from_json(&m.payload).unwrap();
                s.state == CameraState::Offline && s.detail.as_deref().is_some_and(|d| d.contains(&url))
            })
            .count()
    };
    sub.wait_until(Duration::from_secs(60), |m| {
        offline_reports(m) >= 2 && m.iter().any(|m| m.topic.ends_with("/stage/sighting"))
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));
}
