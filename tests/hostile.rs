//! Hostile input end to end: RTSP servers that misbehave, a corrupt H.264 stream and a camera
//! that comes back at another resolution. camsim / a hostile RTSP server → edge-agent (real
//! models) → mosquitto → this test. The agent must stay up, report and retry the broken cameras,
//! log the errors with the camera id, and keep analysing the good ones. Waits are bounded and
//! wait on messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sightline_contract::{CameraState, CameraStatus, Payload, Sighting};
use sightline_tests::*;

const CLIP: &str = "short_hamilton_clip.mp4"; // H.264 640x360, 29.97 fps, faces

fn rtsp_camera(id: &str, url: &str, silence_s: u32) -> String {
    format!("[[camera]]\nid = \"{id}\"\nrtsp = \"{url}\"\nsilence_timeout_s = {silence_s}\n")
}

/// The statuses of `camera` in `m`, in arrival order.
fn statuses(m: &[Message], camera: &str) -> Vec<CameraStatus> {
    m.iter()
        .filter(|m| m.topic.ends_with(&format!("/{camera}/status")))
        .map(|m| CameraStatus::from_json(&m.payload).expect("valid camera status"))
        .collect()
}

fn sightings(m: &[Message], camera: &str) -> Vec<Sighting> {
    m.iter()
        .filter(|m| m.topic.ends_with(&format!("/{camera}/sighting")))
        .map(|m| Sighting::from_json(&m.payload).expect("valid sighting"))
        .collect()
}

/// A periodic report (it has rates) of a streaming camera that analysed frames.
fn analysing(s: &CameraStatus) -> bool {
    s.state == CameraState::Streaming && s.fps_analyzed.is_some_and(|f| f > 0.0)
}

fn assert_alive(agent: &mut Agent) {
    if let Some(status) = agent.proc.0.try_wait().unwrap() {
        panic!("the agent exited ({status}); log:\n{}", agent.log());
    }
    let log = agent.log();
    assert!(!log.contains("panicked"), "the agent panicked; log:\n{log}");
}

/// The agent logged a warning or error naming `camera` that contains `what`.
fn logged(log: &str, camera: &str, what: &str) -> bool {
    log.lines().any(|l| {
        (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains(&format!("camera={camera}")) && l.contains(what)
    })
}

/// The retained status of each of `cameras`, as a new subscriber receives it.
fn retained(port: u16, cameras: &[&str]) -> HashMap<String, CameraStatus> {
    let mut sub = Subscriber::connect(port).unwrap();
    let have = |m: &[Message]| {
        cameras.iter().all(|c| m.iter().any(|m| m.retain && m.topic.ends_with(&format!("/{c}/status"))))
    };
    sub.wait_until(Duration::from_secs(10), have).expect("retained statuses");
    cameras
        .iter()
        .map(|c| {
            let m = sub.seen.iter().find(|m| m.retain && m.topic.ends_with(&format!("/{c}/status"))).unwrap();
            (c.to_string(), CameraStatus::from_json(&m.payload).unwrap())
        })
        .collect()
}

/// One agent, one good camera and one camera per hostile server: the agent stays up, each hostile
/// camera is `offline` (retained) with a detail naming its URL and the problem, and is retried;
/// the errors are logged with the camera id; the good camera streams and publishes sightings.
#[test]
fn hostile_rtsp_servers_are_reported_and_retried_while_a_good_camera_streams() {
    let start = Instant::now();
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camsim = Camsim::start(&[("stage", &media(CLIP))], true).unwrap();
    // camera id, server, what the status detail says about the problem (one of)
    let hostile: [(&str, HostileRtsp, &[&str]); 4] = [
        (
            "h-close",
            HostileRtsp::start(Hostility::CloseOnAccept).unwrap(),
            // a clean close, or a reset when the DESCRIBE was already in the server's buffer
            &["EOF while expecting response to DESCRIBE", "Connection reset by peer", "Error writing to RTSP peer"],
        ),
        ("h-midway", HostileRtsp::start(Hostility::CloseMidHandshake).unwrap(), &["Incomplete RTSP message at EOF"]),
        ("h-garbage", HostileRtsp::start(Hostility::Garbage).unwrap(), &["Invalid RTSP message"]),
        ("h-sdp", HostileRtsp::start(Hostility::NonsenseSdp).unwrap(), &["Unable to parse SDP"]),
    ];
    type Hostile<'a> = (&'a str, HostileRtsp, &'a [&'a str]);
    let url = |(id, server, _): &Hostile| server.url(id);
    let mut cameras = rtsp_camera("stage", &camsim.url("stage"), 5);
    for h in &hostile {
        cameras += &rtsp_camera(h.0, &url(h), 3);
    }
    let mut agent = Agent::start(&agent_config(broker.port, &cameras)).unwrap();

    let reported = |m: &[Message], h: &Hostile| {
        statuses(m, h.0)
            .iter()
            .any(|s| s.state == CameraState::Offline && s.detail.as_deref().is_some_and(|d| d.contains(&url(h))))
    };
    sub.wait_until(Duration::from_secs(75), |m| {
        hostile.iter().all(|h| reported(m, h) && h.1.connections() >= 3)
            && statuses(m, "stage").iter().any(analysing)
            && !sightings(m, "stage").is_empty()
    })
    .unwrap_or_else(|e| {
        let conns: Vec<_> = hostile.iter().map(|h| (h.0, h.1.connections())).collect();
        panic!("{e}; connections {conns:?}; agent log:\n{}", agent.log())
    });
    assert_alive(&mut agent);

    // retained: each hostile camera offline with its problem, the good one streaming
    let ids: Vec<&str> = hostile.iter().map(|h| h.0).chain(["stage"]).collect();
    let mut last = retained(broker.port, &ids);
    for _ in 0..3 {
        // a retry may be under way (`connecting` lasts milliseconds): look again
        if hostile.iter().all(|h| last[h.0].state == CameraState::Offline) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        last = retained(broker.port, &ids);
    }
    for h in &hostile {
        let s = &last[h.0];
        let detail = s.detail.as_deref().unwrap_or_default();
        assert_eq!(s.state, CameraState::Offline, "{}: {s:?}", h.0);
        let named = h.2.iter().any(|p| detail.contains(p));
        assert!(detail.contains(&url(h)) && named, "{}: detail {detail:?} should name one of {:?}", h.0, h.2);
        assert!(s.resolution.is_none() && s.codec.is_none(), "{}: never streamed: {s:?}", h.0);
    }
    assert_eq!(last["stage"].state, CameraState::Streaming, "{:?}", last["stage"]);

    // the hostile servers saw retries, and the handshakes got as far as each mode lets them
    for h in &hostile {
        assert!(h.1.connections() >= 3, "{}: {} connections", h.0, h.1.connections());
        let describes = h.1.requests().iter().filter(|r| r.starts_with("DESCRIBE ")).count();
        if h.1.mode != Hostility::CloseOnAccept {
            assert!(describes >= 3, "{}: {:?}", h.0, h.1.requests());
        }
    }
    let log = agent.log();
    for h in &hostile {
        assert!(logged(&log, h.0, "camera stream failed"), "no error logged for camera {}; log:\n{log}", h.0);
    }
    assert!(!log.lines().any(|l| l.contains("camera=stage") && l.contains("camera stream failed")), "{log}");
    assert_alive(&mut agent);
    eprintln!("hostile servers: {:?}", start.elapsed());
}

/// camsim damages ~10 % of the clip's access units (bit flips, zeroed runs, truncated slices):
/// the agent stays up, the camera stays `streaming` (no reconnects) and keeps analysing frames
/// for 30 s, and the bad data is logged with the camera id.
#[test]
fn a_corrupt_stream_keeps_streaming() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let camsim_log = dir.path().join("camsim.log");
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let camsim = Camsim::start_logged(
        "127.0.0.1:0",
        &[("noisy", &media(CLIP))],
        true,
        &["--corrupt", "0.1", "--seed", "7"],
        &camsim_log,
    )
    .unwrap();
    let mut agent = Agent::start(&agent_config(broker.port, &rtsp_camera("noisy", &camsim.url("noisy"), 5))).unwrap();

    let streaming =
        |m: &[Message]| statuses(m, "noisy").iter().find(|s| s.state == CameraState::Streaming).map(|s| s.ts);
    sub.wait_until(Duration::from_secs(30), |m| streaming(m).is_some())
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));
    let since = streaming(&sub.seen).unwrap();
    let window = time::Duration::seconds(30);
    sub.wait_until(Duration::from_secs(50), |m| {
        statuses(m, "noisy").iter().any(|s| analysing(s) && s.ts - since >= window)
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));
    assert_alive(&mut agent);

    // since it first streamed: never another state (no reconnection), and every 2 s report over
    // the 30 s has analysed frames (the first one, maybe only just started, aside)
    let all = statuses(&sub.seen, "noisy");
    let since_streaming: Vec<&CameraStatus> = all.iter().filter(|s| s.ts >= since).collect();
    let left: Vec<_> = since_streaming.iter().filter(|s| s.state != CameraState::Streaming).collect();
    assert!(left.is_empty(), "the camera left `streaming`: {left:#?}; agent log:\n{}", agent.log());
    let reports: Vec<&&CameraStatus> = since_streaming.iter().filter(|s| s.fps_analyzed.is_some()).collect();
    assert!(reports.len() >= 14, "{reports:#?}");
    let idle = reports.iter().skip(1).filter(|s| !analysing(s)).count();
    assert_eq!(idle, 0, "reports without analysed frames: {reports:#?}");

    let damaged = std::fs::read_to_string(&camsim_log).unwrap().matches("corrupted an access unit").count();
    assert!(damaged >= 50, "camsim damaged only {damaged} access units");
    let log = agent.log();
    assert!(logged(&log, "noisy", "bad data from the camera"), "bad data not logged with the camera id:\n{log}");
    eprintln!("corrupt stream: {damaged} access units damaged, {:?}", start.elapsed());
}

/// camsim serves the clip at 640x360, is killed, and comes back on the same port and mount at
/// 960x540: the camera streams again with the new `resolution`, and new sightings carry the new
/// `frame_size`.
#[test]
fn a_camera_back_at_another_resolution_is_analysed_at_it() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let clip = media(CLIP);
    let camsim = Camsim::start_at(&listen, &[("door", &clip)], true).unwrap();
    let camera = rtsp_camera("door", &camsim.url("door"), 2);
    let mut agent = Agent::start(&agent_config(broker.port, &camera)).unwrap();

    let streaming_at = |m: &[Message], size: [u32; 2]| {
        statuses(m, "door").iter().any(|s| s.state == CameraState::Streaming && s.resolution == Some(size))
    };
    sub.wait_until(Duration::from_secs(30), |m| {
        streaming_at(m, [640, 360]) && sightings(m, "door").iter().any(|s| s.frame_size == [640, 360])
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));

    let killed = time::OffsetDateTime::now_utc();
    drop(camsim);
    sub.wait_until(Duration::from_secs(15), |m| {
        statuses(m, "door").last().is_some_and(|s| s.state == CameraState::Offline)
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));
    let before = sub.seen.len();
    let restarted = time::OffsetDateTime::now_utc();
    let back = Camsim::start_logged(
        &listen,
        &[("door", &clip)],
        true,
        &["--scale", "960x540"],
        &dir.path().join("camsim.log"),
    )
    .unwrap();
    assert_eq!(back.url("door"), format!("rtsp://{listen}/door"));
    sub.wait_until(Duration::from_secs(40), |m| {
        streaming_at(&m[before..], [960, 540]) && sightings(m, "door").iter().any(|s| s.first_seen > restarted)
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));
    assert_alive(&mut agent);

    for s in statuses(&sub.seen[before..], "door").iter().filter(|s| s.state == CameraState::Streaming) {
        assert_eq!(s.resolution, Some([960, 540]), "{s:?}");
    }
    // no track spans the two streams, and each sighting is measured in its own stream's frame
    for s in sightings(&sub.seen, "door") {
        let size = if s.last_seen < restarted {
            [640, 360]
        } else {
            assert!(s.first_seen > killed, "a track spans the restart at another resolution: {s:?}");
            [960, 540]
        };
        assert_eq!(s.frame_size, size, "{s:?}");
        let [x, y, w, h] = s.best.bbox;
        let (fw, fh) = (size[0] as f32, size[1] as f32);
        assert!(x < fw && y < fh && x + w > 0.0 && y + h > 0.0 && w > 0.0 && h > 0.0, "bbox off its frame: {s:?}");
    }
    eprintln!("resolution change: {:?}", start.elapsed());
}
