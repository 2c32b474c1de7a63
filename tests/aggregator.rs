//! The aggregator end to end: its embedded broker, edge agents on the real clip, and messages
//! injected over MQTT. Every wait is on messages or log lines, bounded.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sightline_contract::{BestShot, Payload, Sighting, Trajectory, new_event_id};
use sightline_tests::*;
use sightline_vision::distance;
use time::OffsetDateTime;
use uuid::Uuid;

const SITE: &str = r#"
[site]
id = "testsite"

[[camera]]
id = "stage"
position = [0.0, 0.0]

[[camera]]
id = "lobby"
position = [30.0, 0.0]
"#;

fn trajectories(sub: &Subscriber) -> Vec<Trajectory> {
    sub.on("trajectory").iter().map(|m| Trajectory::from_json(&m.payload).unwrap()).collect()
}

fn sightings(sub: &Subscriber) -> Vec<Sighting> {
    sub.on("sighting").iter().map(|m| Sighting::from_json(&m.payload).unwrap()).collect()
}

fn file_camera(id: &str, file: &std::path::Path) -> String {
    format!("[[camera]]\nid = \"{id}\"\nfile = \"{}\"\n", file.display())
}

/// Lin-Manuel Miranda passes the stage camera, walks 30 m and passes the lobby camera (the clip
/// replayed, transcoded to 960×540): his sightings on both join one trajectory.
#[test]
fn one_person_seen_by_two_cameras_30_m_apart_makes_one_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agg =
        Aggregator::start_in(dir.path(), &aggregator_config(port, &dir.path().join("agg.sqlite"), SITE), port).unwrap();
    let mut sub = Subscriber::connect(port).unwrap();
    let clip = media("short_hamilton_clip.mp4");
    let scaled = dir.path().join("lobby.mp4");
    gst_launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! video/x-raw,width=960,height=540 ! \
         x264enc speed-preset=ultrafast ! mp4mux ! filesink location={}",
        clip.display(),
        scaled.display()
    ))
    .unwrap();

    let mut stage = Agent::start(&agent_config(port, &file_camera("stage", &clip))).unwrap();
    assert!(stage.wait_exit(Duration::from_secs(90)).unwrap().success(), "{}", stage.log());
    // the walk: 30 m between the cameras (10 m between their views) takes a few seconds
    std::thread::sleep(Duration::from_secs(5));
    let mut lobby = Agent::start(&agent_config(port, &file_camera("lobby", &scaled))).unwrap();
    assert!(lobby.wait_exit(Duration::from_secs(90)).unwrap().success(), "{}", lobby.log());

    // every sighting the agents published is placed and announced
    let published = |agent: &Agent| -> usize {
        let log = agent.log();
        let line = log.lines().find(|l| l.contains("camera totals")).unwrap_or_else(|| panic!("no totals:\n{log}"));
        let at = line.find("sightings=").unwrap() + "sightings=".len();
        line[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let expected = published(&stage) + published(&lobby);
    sub.wait_until(Duration::from_secs(30), |m| {
        let ids: HashSet<Uuid> = m
            .iter()
            .filter(|m| m.topic.ends_with("/trajectory"))
            .map(|m| Trajectory::from_json(&m.payload).unwrap().sighting)
            .collect();
        ids.len() >= expected && m.iter().filter(|m| m.topic.ends_with("/sighting")).count() >= expected
    })
    .unwrap_or_else(|e| panic!("{e}: {expected} sightings expected\naggregator log:\n{}", agg.log()));

    let placed: HashMap<Uuid, Trajectory> = trajectories(&sub).into_iter().map(|t| (t.sighting, t)).collect();
    let miranda = reference_embedding("lin-manuel-miranda.png");
    let all = sightings(&sub);
    let to_photo = |s: &Sighting| distance(&s.embedding, &miranda);
    let on = |camera: &str| all.iter().filter(|s| s.camera == camera).collect::<Vec<_>>();
    // his trajectory: the one of his sighting on the stage camera (matched against his photo)
    let his_stage: Vec<&Sighting> = on("stage").into_iter().filter(|s| to_photo(s) < 0.6).collect();
    assert!(!his_stage.is_empty(), "Miranda not seen on stage");
    let his: HashSet<Uuid> = his_stage.iter().map(|s| placed[&s.id].trajectory).collect();
    // on the lobby camera (another resolution and encoding), the sighting most like his photo is
    // his, and it joined his trajectory
    let lobby = on("lobby");
    let him_in_lobby = lobby.iter().min_by(|a, b| to_photo(a).total_cmp(&to_photo(b))).expect("lobby sightings");
    let report: Vec<(String, f32, Uuid)> =
        all.iter().map(|s| (s.camera.clone(), to_photo(s), placed[&s.id].trajectory)).collect();
    eprintln!("sightings (camera, distance to his photo, trajectory): {report:?}");
    assert!(
        his.contains(&placed[&him_in_lobby.id].trajectory),
        "his lobby sighting (at {:.3} from his photo) did not join his trajectory {his:?}: {report:?}\naggregator log:\n{}",
        to_photo(him_in_lobby),
        agg.log()
    );
    // nobody else joined it: its other members are at least as close to him as to anyone
    for s in &all {
        if his.contains(&placed[&s.id].trajectory) {
            assert!(to_photo(s) < 0.75, "sighting {} at {:.3} from Miranda joined his trajectory", s.id, to_photo(s));
        }
    }
    for t in placed.values() {
        assert_eq!(t.site, "testsite");
        assert_eq!(t.new, t.distance.is_none());
    }
}

fn synthetic(camera: &str, at: OffsetDateTime, embedding: &[f32]) -> Sighting {
    Sighting {
        id: new_event_id(),
        site: "testsite".into(),
        camera: camera.into(),
        track: 1,
        first_seen: at,
        last_seen: at + time::Duration::seconds(2),
        best: BestShot {
            ts: at,
            bbox: [10.0, 10.0, 40.0, 40.0],
            landmarks: [[0.0; 2]; 5],
            det_score: 0.9,
            quality: 0.8,
        },
        frame_size: [640, 360],
        ground: None,
        model: "dlib-resnet-v1".into(),
        embedding: embedding.to_vec(),
    }
}

fn topic(s: &Sighting) -> String {
    format!("sightline/v1/{}/{}/sighting", s.site, s.camera)
}

/// Waits for the trajectory update of `sighting`.
fn placed(sub: &mut Subscriber, sighting: Uuid, agg: &Aggregator) -> Trajectory {
    sub.wait_until(Duration::from_secs(20), |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/trajectory") && Trajectory::from_json(&m.payload).unwrap().sighting == sighting
        })
    })
    .unwrap_or_else(|e| panic!("{e}\naggregator log:\n{}", agg.log()));
    trajectories(sub).into_iter().find(|t| t.sighting == sighting).unwrap()
}

fn stopped_counter(log: &str, name: &str) -> u64 {
    let line = log.lines().rfind(|l| l.contains(" stopped ")).unwrap_or_else(|| panic!("no stop line:\n{log}"));
    let at = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {line}")) + name.len() + 1;
    line[at..].split_whitespace().next().unwrap().parse().unwrap()
}

/// Bad messages on every topic are rejected (logged with the topic and the field) without
/// stopping ingestion; redeliveries are de-duplicated, also across a restart, and the restarted
/// aggregator continues the trajectories it had.
#[test]
fn bad_messages_are_rejected_duplicates_absorbed_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = aggregator_config(port, &dir.path().join("agg.sqlite"), SITE);
    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    let mut sub = Subscriber::connect(port).unwrap();
    let face: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.18).collect();
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let first = synthetic("stage", t0, &face);

    let mut missing: serde_json::Value = serde_json::from_slice(&first.to_json()).unwrap();
    missing.as_object_mut().unwrap().remove("embedding");
    let bad: Vec<(String, Vec<u8>)> = vec![
        (topic(&first), b"{not json".to_vec()),
        (topic(&first), serde_json::to_vec(&missing).unwrap()),
        ("sightline/v1/testsite/stage/crowd".into(), br#"{"schema":"sightline.alert/1"}"#.to_vec()),
        ("sightline/v1/testsite/stage/alert".into(), br#"{"schema":"sightline.alert/1","id":"nope"}"#.to_vec()),
        ("sightline/v1/testsite/stage/status".into(), b"[]".to_vec()),
        ("sightline/v1/testsite/agent/edge-1/status".into(), br#"{"schema":"sightline.agent_status/1"}"#.to_vec()),
        ("sightline/v1/othersite/stage/sighting".into(), first.to_json()),
    ];
    publish(port, &bad).unwrap();
    publish(port, &[(topic(&first), first.to_json()), (topic(&first), first.to_json())]).unwrap();
    let t1 = placed(&mut sub, first.id, &agg);
    assert!(t1.new);
    let log = agg.wait_log("message rejected", 6, Duration::from_secs(10)).unwrap();
    assert!(log.contains("field `embedding`") || log.contains("`embedding`"), "{log}");
    assert!(log.contains("sightline/v1/testsite/stage/crowd") && log.contains("schema"), "{log}");
    agg.stop().unwrap();

    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    let log = agg.wait_log("correlator restored", 1, Duration::from_secs(10)).unwrap();
    assert!(log.contains("sightings=1"), "{log}");
    let mut sub = Subscriber::connect(port).unwrap();
    // the same face a minute later on the other camera, after a redelivery of the first sighting
    let near: Vec<f32> = face.iter().enumerate().map(|(i, v)| v + if i % 2 == 0 { 0.01 } else { -0.01 }).collect();
    let second = synthetic("lobby", t0 + time::Duration::minutes(1), &near);
    publish(port, &[(topic(&first), first.to_json()), (topic(&second), second.to_json())]).unwrap();
    let t2 = placed(&mut sub, second.id, &agg);
    assert_eq!(t2.trajectory, t1.trajectory, "the restarted aggregator continues the trajectory");
    assert!(!t2.new && t2.distance.is_some_and(|d| d < 0.3), "{t2:?}");
    assert!(!trajectories(&sub).iter().any(|t| t.sighting == first.id), "a redelivery was placed again");

    // the integrator API serves the trajectory (tokens created with the CLI, stored hashed)
    let api = agg.api_url().unwrap();
    let url = format!("{api}/trajectories/{}?purpose=test", t1.trajectory);
    assert_eq!(http_get_as(&url, None).unwrap().0, 401);
    let operator = agg.token("ops", "operator").unwrap();
    assert_eq!(http_get_as(&url, Some(&operator)).unwrap().0, 403);
    let integrator = agg.token("integration", "integrator").unwrap();
    let (code, body) = http_get_as(&url, Some(&integrator)).unwrap();
    assert_eq!(code, 200, "{body}");
    for id in [first.id, second.id] {
        assert!(body.contains(&id.to_string()), "sighting {id} missing from {body}");
    }
    let admin = agg.token("auditor", "admin").unwrap();
    let (code, audit) = http_get_as(&format!("{api}/audit"), Some(&admin)).unwrap();
    assert_eq!(code, 200, "{audit}");
    assert!(audit.contains("integration") && audit.contains("\"test\""), "the read is audited: {audit}");
    let dir_log = agg.dir.clone();
    agg.stop().unwrap();
    let logs: Vec<String> = std::fs::read_dir(&dir_log)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("aggregator-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let total = |name: &str| logs.iter().map(|l| stopped_counter(l, name)).sum::<u64>();
    assert_eq!(total("rejected"), bad.len() as u64);
    assert_eq!(total("duplicates"), 2, "one redelivery per run");
    assert_eq!(total("accepted"), 2);
}
