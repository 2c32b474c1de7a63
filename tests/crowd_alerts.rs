//! Crowd measurement, fences and camera health end to end: camsim / file sources → edge-agent
//! (real models) → mosquitto → this test. Waits are bounded and wait on messages.

use std::time::Duration;

use sightline_contract::{Alert, AlertKind, AlertState, Crowd, CrowdMethod, Payload};
use sightline_tests::*;

fn alerts(sub: &Subscriber) -> Vec<Alert> {
    sub.on("alert").iter().map(|m| Alert::from_json(&m.payload).expect("valid alert")).collect()
}

fn crowds(sub: &Subscriber) -> Vec<Crowd> {
    sub.on("crowd").iter().map(|m| Crowd::from_json(&m.payload).expect("valid crowd")).collect()
}

fn has_alert(m: &[Message], kind: AlertKind, state: AlertState) -> bool {
    m.iter()
        .filter(|m| m.topic.ends_with("/alert"))
        .filter_map(|m| Alert::from_json(&m.payload).ok())
        .any(|a| a.kind == kind && a.state == state)
}

/// Pedestrians (vtest.avi, transcoded to H.264 by camsim) counted by detection; a fence over the
/// right-hand walkway, where people pass and then leave it empty, raises and later clears.
#[test]
fn pedestrians_are_counted_and_a_fence_raises_and_clears() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camsim = Camsim::start(&[("walkway", &media("vtest.avi"))], true).unwrap();
    let camera = format!(
        r#"[[camera]]
id = "walkway"
rtsp = "{}"
[camera.crowd]
enabled = true
interval_s = 3.0
persons_fps = 2.0
[[camera.zone]]
name = "east-path"
polygon = [[0.7, 0.5], [0.9, 0.5], [0.9, 0.7], [0.7, 0.7]]
fence = true
fence_dwell_s = 1.0
fence_clear_s = 3.0
"#,
        camsim.url("walkway")
    );
    let agent = Agent::start(&agent_config(broker.port, &camera)).unwrap();
    sub.wait_until(Duration::from_secs(120), |m| {
        has_alert(m, AlertKind::ZoneIntrusion, AlertState::Cleared)
            && m.iter().filter(|m| m.topic.ends_with("/crowd")).count() >= 3
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));

    for c in crowds(&sub) {
        assert_eq!(c.method, CrowdMethod::Detection, "{c:?}");
        assert!((3.0..=10.0).contains(&c.total), "people per message: {c:?}");
        assert_eq!(c.zones.len(), 1);
        assert!(c.zones[0].count <= c.total);
    }
    let fence: Vec<Alert> = alerts(&sub).into_iter().filter(|a| a.kind == AlertKind::ZoneIntrusion).collect();
    let raised = fence.iter().find(|a| a.state == AlertState::Raised).expect("raised first");
    let cleared = fence.iter().find(|a| a.state == AlertState::Cleared).unwrap();
    assert_eq!(raised.alert, cleared.alert, "raise and clear share the alert id");
    assert_eq!(raised.zone.as_deref(), Some("east-path"));
    assert!(raised.ts < cleared.ts);
    let raises = fence.iter().filter(|a| a.state == AlertState::Raised && a.alert == raised.alert).count();
    assert_eq!(raises, 1, "no repeated raise while active: {fence:#?}");
}

/// camsim stops: `camera_offline` within the configured time; camsim returns: cleared.
#[test]
fn a_camera_that_goes_dark_is_raised_offline_and_cleared_on_return() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let clip = media("short_hamilton_clip.mp4");
    let camsim = Camsim::start_at(&listen, &[("door", &clip)], true).unwrap();
    let camera = format!(
        "[[camera]]\nid = \"door\"\nrtsp = \"{}\"\nsilence_timeout_s = 2\n[camera.health]\noffline_after_s = 3.0\n",
        camsim.url("door")
    );
    let agent = Agent::start(&agent_config(broker.port, &camera)).unwrap();
    let streaming = |m: &[Message]| {
        m.iter()
            .any(|m| m.topic.ends_with("/door/status") && String::from_utf8_lossy(&m.payload).contains("\"streaming\""))
    };
    sub.wait_until(Duration::from_secs(30), streaming).unwrap_or_else(|e| panic!("{e}; {}", agent.log()));

    drop(camsim);
    let dark = std::time::Instant::now();
    sub.wait_until(Duration::from_secs(20), |m| has_alert(m, AlertKind::CameraOffline, AlertState::Raised))
        .unwrap_or_else(|e| panic!("{e}; {}", agent.log()));
    // 3 s without frames, detected on the worker's 250 ms tick (plus broker round trips)
    assert!(dark.elapsed() < Duration::from_secs(8), "raised after {:?}", dark.elapsed());

    let streamed = |m: &[Message]| {
        m.iter()
            .filter(|m| {
                m.topic.ends_with("/door/status") && String::from_utf8_lossy(&m.payload).contains("\"streaming\"")
            })
            .count()
    };
    let before = streamed(&sub.seen);
    let _camsim = Camsim::start_at(&listen, &[("door", &clip)], true).unwrap();
    let back = std::time::Instant::now();
    sub.wait_until(Duration::from_secs(30), |m| streamed(m) > before)
        .unwrap_or_else(|e| panic!("{e}; {}", agent.log()));
    assert!(back.elapsed() < Duration::from_secs(10), "streaming again after {:?}", back.elapsed());
    sub.wait_until(Duration::from_secs(60), |m| has_alert(m, AlertKind::CameraOffline, AlertState::Cleared))
        .unwrap_or_else(|e| panic!("{e}; {}", agent.log()));
    let offline: Vec<Alert> = alerts(&sub).into_iter().filter(|a| a.kind == AlertKind::CameraOffline).collect();
    assert_eq!(offline.len(), 2, "{offline:#?}");
    assert_eq!(offline[0].alert, offline[1].alert);
    assert_eq!(offline[0].severity, sightline_contract::Severity::Critical);
}

fn black_video(dir: &std::path::Path) -> std::path::PathBuf {
    let black = dir.join("black.mp4");
    gst_launch(&format!(
        "videotestsrc pattern=black num-buffers=100 ! video/x-raw,width=640,height=360,framerate=10/1 ! x264enc ! h264parse ! mp4mux ! filesink location={}",
        black.display()
    ))
    .unwrap();
    black
}

/// An empty scene's density map, captured by the installer command, removes the density
/// model's residual floor: the same empty scene then counts ~0 instead of a few phantom people.
#[test]
fn an_empty_scene_baseline_removes_the_density_floor() {
    let dir = tempfile::tempdir().unwrap();
    let black = black_video(dir.path());
    let baseline = dir.path().join("baselines/empty.json");
    let broker = Mosquitto::start().unwrap();
    let camera = |with_baseline: bool| {
        let line = if with_baseline { format!("baseline = \"{}\"\n", baseline.display()) } else { String::new() };
        let camera = format!(
            "[[camera]]\nid = \"empty\"\nfile = \"{}\"\npace = \"fast\"\n[camera.crowd]\nenabled = true\ninterval_s = 1.0\n{line}",
            black.display()
        );
        // dense_at = 0: always the density method, whatever the detector says
        format!("{}\n[crowd]\ndense_at = 0.0\n", agent_config(broker.port, &camera))
    };
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, camera(true)).unwrap();
    let out = std::process::Command::new(binary("edge-agent"))
        .args(["crowd-baseline", "--config", &config.display().to_string(), "--camera", "empty", "--frames", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(baseline.is_file());

    let totals = |with_baseline: bool| {
        let mut sub = Subscriber::connect(broker.port).unwrap();
        let mut agent = Agent::start(&camera(with_baseline)).unwrap();
        assert!(agent.wait_exit(Duration::from_secs(120)).unwrap().success(), "{}", agent.log());
        sub.wait_agent_stopped(Duration::from_secs(10)).unwrap();
        let t: Vec<f32> = crowds(&sub).iter().map(|c| c.total).collect();
        assert!(!t.is_empty(), "{}", agent.log());
        t
    };
    let without = totals(false);
    let with = totals(true);
    assert!(without.iter().all(|t| *t > 1.0), "the floor this test removes is there: {without:?}");
    assert!(with.iter().all(|t| *t < 0.5), "baseline-corrected: {with:?}");
}

/// A black picture (covered or blinded lens) raises `camera_tampered`.
#[test]
fn a_black_video_raises_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let black = black_video(dir.path());
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camera =
        format!("[[camera]]\nid = \"lens\"\nfile = \"{}\"\n[camera.health]\ntampered_after_s = 2.0\n", black.display());
    let agent = Agent::start(&agent_config(broker.port, &camera)).unwrap();
    sub.wait_until(Duration::from_secs(30), |m| has_alert(m, AlertKind::CameraTampered, AlertState::Raised))
        .unwrap_or_else(|e| panic!("{e}; {}", agent.log()));
    let a = alerts(&sub).into_iter().find(|a| a.kind == AlertKind::CameraTampered).unwrap();
    assert_eq!(a.camera, "lens");
    assert!(a.message.contains("black"), "{}", a.message);
}

/// A dense street scene (a still photo made into a video) is counted by density within the
/// documented band and raises a crowd threshold rule.
#[test]
fn a_dense_scene_is_measured_by_density_and_raises_a_crowd_alert() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("crowd2.mp4");
    gst_launch(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! imagefreeze num-buffers=40 ! video/x-raw,framerate=10/1 ! x264enc ! h264parse ! mp4mux ! filesink location={}",
        media("peekingduck_crowd2.jpg").display(),
        video.display()
    ))
    .unwrap();
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camera = format!(
        r#"[[camera]]
id = "street"
file = "{}"
pace = "fast"
[camera.crowd]
enabled = true
interval_s = 1.0
publish_heatmap = true
[camera.health]
frozen_after_s = 3600.0
[[camera.rule]]
raise_above = 30.0
clear_below = 10.0
dwell_s = 0.0
severity = "critical"
"#,
        video.display()
    );
    let mut agent =
        Agent::start(&format!("{}\n[crowd]\nthreads = 2\nmax_width = 1024\n", agent_config(broker.port, &camera)))
            .unwrap();
    let status = agent.wait_exit(Duration::from_secs(180)).unwrap();
    assert!(status.success(), "{}", agent.log());
    sub.wait_agent_stopped(Duration::from_secs(10)).unwrap();
    let measured = crowds(&sub);
    assert!(!measured.is_empty(), "no crowd measurement: {}", agent.log());
    for c in &measured {
        assert_eq!(c.method, CrowdMethod::Density, "{c:?}");
        // manifest: cells > 0.01 give 44.8; references 48 (dense CSRNet) / 54 (sparse)
        assert!((40.0..=58.0).contains(&c.total), "{c:?}");
    }
    let heatmap = sub.on("heatmap").last().map(|m| m.payload.clone()).expect("a heatmap was published");
    let png = image::load_from_memory(&heatmap).expect("the heatmap is a PNG");
    assert_eq!((png.width(), png.height()), (480, 360), "drawn over the frame scaled to 480 wide");
    let raised: Vec<Alert> = alerts(&sub)
        .into_iter()
        .filter(|a| a.kind == AlertKind::CrowdThreshold && a.state == AlertState::Raised)
        .collect();
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(raised[0].severity, sightline_contract::Severity::Critical);
}
