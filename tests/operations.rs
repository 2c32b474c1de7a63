//! Operating the agent: the Prometheus `/metrics` and `/healthz` endpoint, and `SIGHUP` reloads
//! that restart only the cameras whose configuration changed. Real camsim, mosquitto and agent.

use std::time::Duration;

use sightline_contract::{AgentStatus, Alert, AlertKind, AlertState, CameraState, CameraStatus, Payload};
use sightline_tests::*;

fn rtsp_camera(id: &str, url: &str) -> String {
    format!("[[camera]]\nid = \"{id}\"\nrtsp = \"{url}\"\nsilence_timeout_s = 5\n")
}

fn statuses(messages: &[Message], camera: &str) -> Vec<CameraStatus> {
    messages
        .iter()
        .filter(|m| m.topic.ends_with(&format!("/{camera}/status")) && !m.topic.contains("/agent/"))
        .map(|m| CameraStatus::from_json(&m.payload).unwrap())
        .collect()
}

fn last_state(messages: &[Message], camera: &str) -> Option<CameraState> {
    statuses(messages, camera).last().map(|s| s.state)
}

#[test]
fn metrics_and_healthz_describe_the_pipeline() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camsim = Camsim::start(&[("stage", &media("short_hamilton_clip.mp4"))], true).unwrap();
    let dead = format!("rtsp://127.0.0.1:{}/nothing", free_port());
    let cameras = format!("{}{}", rtsp_camera("stage", &camsim.url("stage")), rtsp_camera("door", &dead));
    let agent = Agent::start(&agent_config(broker.port, &cameras)).unwrap();
    let base = agent.metrics_url().unwrap();

    wait_metric(&base, r#"sightline_camera_frames_analyzed_total{camera="stage"}"#, 5.0, Duration::from_secs(60))
        .unwrap();
    wait_metric(&base, r#"sightline_camera_connection_failures_total{camera="door"}"#, 0.0, Duration::from_secs(30))
        .unwrap();
    sub.wait_until(Duration::from_secs(30), |m| last_state(m, "stage") == Some(CameraState::Streaming)).unwrap();
    // latencies: the dead camera's offline alert and the first sighting are timed to their PUBACK
    wait_metric(&base, r#"sightline_publish_latency_seconds_count{kind="alert"}"#, 0.0, Duration::from_secs(30))
        .unwrap();
    wait_metric(&base, r#"sightline_publish_latency_seconds_count{kind="sighting"}"#, 0.0, Duration::from_secs(60))
        .unwrap();
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert!(value(r#"sightline_camera_frames_received_total{camera="stage"}"#) > 0.0);
    assert!(
        value(r#"sightline_camera_frames_decoded_total{camera="stage"}"#)
            >= value(r#"sightline_camera_frames_sampled_total{camera="stage"}"#)
    );
    assert_eq!(value(r#"sightline_camera_frames_analyzed_total{camera="door"}"#), 0.0);
    assert_eq!(value(r#"sightline_camera_streaming{camera="stage"}"#), 1.0);
    assert_eq!(value(r#"sightline_camera_streaming{camera="door"}"#), 0.0);
    assert!(value(r#"sightline_inference_seconds_count{model="yunet"}"#) >= 5.0);
    assert!(value(r#"sightline_inference_seconds_sum{model="yunet"}"#) > 0.0);
    // every analysed frame is timed (the scrape may fall between the count and the observation)
    let analysed = value(r#"sightline_camera_frames_analyzed_total{camera="stage"}"#);
    let timed = value("sightline_frame_latency_seconds_count");
    assert!(timed <= analysed && timed >= analysed - 1.0, "{timed} frame latencies for {analysed} frames");
    assert!(value("sightline_frame_latency_seconds_sum") > 0.0);
    // a timed sighting was acknowledged, so it was published, and its latency is plausible
    let sightings = value(r#"sightline_publish_latency_seconds_count{kind="sighting"}"#);
    assert!(sightings <= value(r#"sightline_camera_sightings_total{camera="stage"}"#));
    let mean = value(r#"sightline_publish_latency_seconds_sum{kind="sighting"}"#) / sightings;
    assert!(mean > 0.0 && mean < 10.0, "mean frame → PUBACK latency of a sighting: {mean} s");
    assert_eq!(value("sightline_mqtt_connected"), 1.0);
    assert!(value("sightline_mqtt_acknowledged_total") > 0.0);
    assert_eq!(value("sightline_outbox_evictions_total"), 0.0);
    assert_eq!(value(r#"sightline_config_reloads_total{outcome="rejected"}"#), 0.0);
    assert!(value("sightline_analysis_heartbeat_age_seconds") < 5.0);
    assert!(text.contains("# TYPE sightline_outbox_messages gauge"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics exposition ends with # EOF");

    let (code, body) = http_get(&format!("{base}/healthz")).unwrap();
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "a camera is offline: {body}");
    assert_eq!(health["mqtt_connected"], true, "{body}");
    assert_eq!(health["cameras"]["stage"], "streaming", "{body}");
    assert_ne!(health["cameras"]["door"], "streaming", "{body}");
    assert!(health["analysis_heartbeat_age_s"].as_f64().unwrap() < 5.0, "{body}");

    let (code, _) = http_get(&format!("{base}/nothing")).unwrap();
    assert_eq!(code, 404);
}

#[test]
fn sighup_restarts_only_the_cameras_that_changed() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let clip = media("short_hamilton_clip.mp4");
    let camsim = Camsim::start(&[("a", &clip), ("b", &clip)], true).unwrap();
    let (a, b) = (rtsp_camera("a", &camsim.url("a")), rtsp_camera("b", &camsim.url("b")));
    let agent = Agent::start(&agent_config(broker.port, &format!("{a}{b}"))).unwrap();
    let base = agent.metrics_url().unwrap();
    sub.wait_until(Duration::from_secs(60), |m| {
        last_state(m, "a") == Some(CameraState::Streaming) && last_state(m, "b") == Some(CameraState::Streaming)
    })
    .unwrap();
    let analysed_a = r#"sightline_camera_frames_analyzed_total{camera="a"}"#;
    let before = wait_metric(&base, analysed_a, 0.0, Duration::from_secs(30)).unwrap();

    // b removed, c added (serving b's mount), a unchanged
    let c = rtsp_camera("c", &camsim.url("b"));
    std::fs::write(agent.config_path(), agent_config(broker.port, &format!("{a}{c}"))).unwrap();
    let mark = sub.seen.len();
    agent.signal("HUP").unwrap();
    sub.wait_until(Duration::from_secs(60), |m| {
        let m = &m[mark..];
        last_state(m, "c") == Some(CameraState::Streaming)
            && statuses(m, "b").iter().any(|s| s.state == CameraState::Disabled)
            && m.iter().any(|m| {
                m.topic.ends_with("/agent/edge-test/status")
                    && AgentStatus::from_json(&m.payload).unwrap().cameras == Some(vec!["a".into(), "c".into()])
            })
    })
    .unwrap();
    let after = &sub.seen[mark..];
    let removed = statuses(after, "b").into_iter().find(|s| s.state == CameraState::Disabled).unwrap();
    assert_eq!(removed.detail.as_deref(), Some("removed from the configuration"));
    assert!(
        statuses(after, "a").iter().all(|s| s.state == CameraState::Streaming),
        "camera a was restarted: {:?}",
        statuses(after, "a")
    );
    // a's counters continue (a restarted camera starts from zero)
    wait_metric(&base, analysed_a, before + 5.0, Duration::from_secs(30)).unwrap();
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    assert_eq!(sample(&text, r#"sightline_camera_frames_analyzed_total{camera="b"}"#), None, "b left the metrics");
    assert_eq!(sample(&text, r#"sightline_config_reloads_total{outcome="applied"}"#), Some(1.0));

    // a broken file is rejected as a whole; everything keeps running
    std::fs::write(agent.config_path(), format!("{}\nsurprise = 1\n", agent_config(broker.port, &a))).unwrap();
    let mark = sub.seen.len();
    let analysed = wait_metric(&base, analysed_a, 0.0, Duration::from_secs(5)).unwrap();
    agent.signal("HUP").unwrap();
    let log = agent.wait_log("configuration reload rejected", Duration::from_secs(30)).unwrap();
    assert!(log.contains("surprise"), "the error names the unknown key:\n{log}");
    wait_metric(&base, r#"sightline_config_reloads_total{outcome="rejected"}"#, 0.0, Duration::from_secs(5)).unwrap();
    wait_metric(&base, analysed_a, analysed + 5.0, Duration::from_secs(30)).unwrap();
    assert!(
        sub.seen[mark..].iter().all(|m| !m.topic.ends_with("/c/status")
            || CameraStatus::from_json(&m.payload).unwrap().state == CameraState::Streaming),
        "camera c kept running"
    );
}

/// A camera that leaves by a reload, or with the agent, clears the alerts it had raised: no
/// episode stays open for consumers.
#[test]
fn removed_and_stopped_cameras_clear_their_alerts() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let dead = |id: &str| {
        let url = format!("rtsp://127.0.0.1:{}/nothing", free_port());
        format!("{}[camera.health]\noffline_after_s = 2.0\n", rtsp_camera(id, &url))
    };
    let (door, gate) = (dead("door"), dead("gate"));
    let mut agent = Agent::start(&agent_config(broker.port, &format!("{door}{gate}"))).unwrap();
    let offline = |m: &[Message], camera: &str, state: AlertState| {
        m.iter().filter(|m| m.topic.ends_with(&format!("/{camera}/alert"))).any(|m| {
            let a = Alert::from_json(&m.payload).unwrap();
            a.kind == AlertKind::CameraOffline && a.state == state
        })
    };
    sub.wait_until(Duration::from_secs(30), |m| {
        offline(m, "door", AlertState::Raised) && offline(m, "gate", AlertState::Raised)
    })
    .unwrap();

    std::fs::write(agent.config_path(), agent_config(broker.port, &gate)).unwrap();
    agent.signal("HUP").unwrap();
    sub.wait_until(Duration::from_secs(30), |m| offline(m, "door", AlertState::Cleared)).unwrap();
    let cleared =
        sub.on("alert").iter().map(|m| Alert::from_json(&m.payload).unwrap()).rfind(|a| a.camera == "door").unwrap();
    assert_eq!(cleared.details.unwrap()["reason"], "removed from the configuration");
    assert!(!offline(&sub.seen, "gate", AlertState::Cleared), "gate stays offline");

    agent.signal("TERM").unwrap();
    assert!(agent.wait_exit(Duration::from_secs(30)).unwrap().success(), "{}", agent.log());
    // delivered before the agent left (or from its outbox on its next start)
    sub.wait_until(Duration::from_secs(10), |m| offline(m, "gate", AlertState::Cleared))
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log()));
}
