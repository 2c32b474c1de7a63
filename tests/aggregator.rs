//! The aggregator end to end: its embedded broker, edge agents on the real clip, and messages
//! injected over MQTT. Every wait is on messages or log lines, bounded.

use std::time::Duration;

use sightline_contract::{Alert, AlertKind, AlertState, Payload, Severity, Sighting, Trajectory, new_event_id};
use sightline_tests::*;
use time::OffsetDateTime;
use uuid::Uuid;

fn trajectories(sub: &Subscriber) -> Vec<Trajectory> {
    sub.on("trajectory").iter().map(|m| Trajectory::from_json(&m.payload).unwrap()).collect()
}

/// Lin-Manuel Miranda passes the stage camera, walks 30 m and passes the lobby camera (the clip
/// replayed, transcoded to 960×540): his sightings on both join one trajectory.
#[test]
fn one_person_seen_by_two_cameras_30_m_apart_makes_one_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agg = Aggregator::start_in(
        dir.path(),
        &aggregator_config(port, &dir.path().join("agg.sqlite"), TWO_CAMERA_SITE),
        port,
    )
    .unwrap();
    let walk = miranda_walks(&agg, port, dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let (all, placed) = (&walk.sightings, &walk.placed);
    let to_photo = |s: &Sighting| walk.to_photo(s);
    // his trajectory: the one of his sighting on the stage camera (matched against his photo)
    let his = walk.his_stage_trajectories();
    assert!(!his.is_empty(), "Miranda not seen on stage");
    // on the lobby camera (another resolution and encoding), the sighting most like his photo is
    // his, and it joined his trajectory
    let him_in_lobby = walk.him_in_lobby().expect("lobby sightings");
    let report = walk.report();
    eprintln!("sightings (camera, distance to his photo, trajectory): {report:?}");
    assert!(
        his.contains(&placed[&him_in_lobby.id].trajectory),
        "his lobby sighting (at {:.3} from his photo) did not join his trajectory {his:?}: {report:?}\naggregator log:\n{}",
        to_photo(him_in_lobby),
        agg.log()
    );
    // nobody else joined it: its other members are at least as close to him as to anyone
    for s in all {
        if his.contains(&placed[&s.id].trajectory) {
            assert!(to_photo(s) < 0.75, "sighting {} at {:.3} from Miranda joined his trajectory", s.id, to_photo(s));
        }
    }
    for t in placed.values() {
        assert_eq!(t.site, "testsite");
        assert_eq!(t.new, t.distance.is_none());
    }

    // an investigator searches with his photo: his trajectory comes first, and the search is
    // audited (with the photo's digest, never the photo)
    let api = agg.api_url().unwrap();
    let integrator = agg.token("investigations", "integrator").unwrap();
    let photo = std::fs::read(media("lin-manuel-miranda.png")).unwrap();
    let image = base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, &photo);
    let request = serde_json::json!({ "image": image, "purpose": "case 2026-114: missing person" });
    let search = |body: &serde_json::Value| {
        http_request("POST", &format!("{api}/search"), Some(&integrator), Some(&body.to_string())).unwrap()
    };
    let (code, body) = search(&request);
    assert_eq!(code, 200, "{body}\naggregator log:\n{}", agg.log());
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    eprintln!("search: {found:#}");
    assert_eq!(found["probe"]["source"], "image");
    assert_eq!(found["probe"]["faces_found"], 1);
    let best = found["trajectories"][0]["trajectory"].as_str().unwrap().parse::<Uuid>().unwrap();
    assert!(his.contains(&best), "the best match {best} is not his trajectory {his:?}: {found:#}");
    assert_eq!(found["trajectories"][0]["cameras"], serde_json::json!(["lobby", "stage"]), "{found:#}");
    // every match is his (nobody else is within the distance limit)
    for s in found["sightings"].as_array().unwrap() {
        let id: Uuid = s["sighting"].as_str().unwrap().parse().unwrap();
        let sighting = all.iter().find(|x| x.id == id).unwrap();
        assert!(to_photo(sighting) < 0.6, "{s}");
    }
    // without a purpose: refused, naming the field
    let (code, body) = search(&serde_json::json!({ "image": image }));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains(r#""parameter":"purpose""#), "{body}");
    // a photo without a face: 422, audited as a refused attempt with the photo's digest
    let mut blank = Vec::new();
    image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]))
        .write_to(&mut std::io::Cursor::new(&mut blank), image::ImageFormat::Png)
        .unwrap();
    let blank_b64 = base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, &blank);
    let (code, body) = search(&serde_json::json!({ "image": blank_b64, "purpose": "case 2026-114: missing person" }));
    assert_eq!(code, 422, "{body}");
    let admin = agg.token("dpo", "admin").unwrap();
    let (code, audit) = http_get_as(&format!("{api}/audit?purpose=checking%20case%202026-114"), Some(&admin)).unwrap();
    assert_eq!(code, 200, "{audit}");
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let all_searches = audit["items"].as_array().unwrap().iter().filter(|r| r["action"] == "search");
    let (searches, refused): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        all_searches.partition(|r| r["outcome"] == "answered");
    assert_eq!(refused.len(), 2, "{audit:#}");
    assert!(refused[0]["purpose"].is_null() && refused[0]["query"]["refused"]["parameter"] == "purpose", "{audit:#}");
    let no_face = refused[1];
    assert_eq!(no_face["purpose"], "case 2026-114: missing person");
    assert_eq!(no_face["query"]["refused"]["status"], 422, "{no_face:#}");
    use sha2::Digest;
    let blank_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blank)));
    assert_eq!(no_face["query"]["probe"]["digest"], blank_digest.as_str(), "{no_face:#}");
    assert_eq!(searches.len(), 1, "{audit:#}");
    assert_eq!(searches[0]["token"], "investigations");
    assert_eq!(searches[0]["purpose"], "case 2026-114: missing person");
    assert_eq!(searches[0]["results"], found["sightings"].as_array().unwrap().len());
    assert!(searches[0]["query"]["probe"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(!searches[0].to_string().contains(&image[..64]), "the photo is not kept");

    // strangers from the portraits, seen by both cameras in the minute before him (within the
    // horizon, out of view of his own passes), never join his trajectory (nor, by repair, does his
    // trajectory merge with theirs)
    let mut sub = Subscriber::connect(port).unwrap();
    let before = all.iter().map(|s| s.first_seen).min().unwrap() - time::Duration::seconds(60);
    let strangers: Vec<Sighting> = ["obama.jpg", "obama2.jpg", "biden.jpg", "biden2.jpg", "alex-lacamoire.png"]
        .iter()
        .enumerate()
        .flat_map(|(i, file)| {
            let face = reference_embedding(file);
            ["stage", "lobby"]
                .map(|camera| synthetic_sighting(camera, before + time::Duration::seconds(5 * i as i64), &face))
        })
        .collect();
    publish(port, &strangers.iter().map(|s| (topic(s), s.to_json())).collect::<Vec<_>>()).unwrap();
    for s in &strangers {
        let t = self::placed(&mut sub, s.id, &agg);
        assert!(!his.contains(&t.trajectory), "a stranger's sighting joined his trajectory: {t:?}");
        assert!(t.merged_from.iter().all(|m| !his.contains(m)), "his trajectory was merged away: {t:?}");
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
    let config = aggregator_config(port, &dir.path().join("agg.sqlite"), TWO_CAMERA_SITE);
    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    let mut sub = Subscriber::connect(port).unwrap();
    let face: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.18).collect();
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let first = synthetic_sighting("stage", t0, &face);

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
    let log = agg.wait_log("correlators restored", 1, Duration::from_secs(10)).unwrap();
    assert!(log.contains("sightings=1"), "{log}");
    let mut sub = Subscriber::connect(port).unwrap();
    // the same face a minute later on the other camera, after a redelivery of the first sighting
    let near: Vec<f32> = face.iter().enumerate().map(|(i, v)| v + if i % 2 == 0 { 0.01 } else { -0.01 }).collect();
    let second = synthetic_sighting("lobby", t0 + time::Duration::minutes(1), &near);
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
    let (code, audit) = http_get_as(&format!("{api}/audit?purpose=review"), Some(&admin)).unwrap();
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

fn watchlist_alerts(sub: &Subscriber) -> Vec<Alert> {
    sub.on("alert")
        .iter()
        .map(|m| Alert::from_json(&m.payload).unwrap())
        .filter(|a| a.kind == AlertKind::WatchlistMatch)
        .collect()
}

/// Live events, the watchlist and the metrics on a running aggregator: an operator's event
/// stream receives an alert published on MQTT; an admin's watchlist entry raises
/// `watchlist_match` on MQTT (once per trajectory) when a matching sighting arrives, and removing
/// it clears the alert; an integrator's stream sees the sightings and is audited.
#[test]
fn live_events_watchlist_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agg = Aggregator::start_in(
        dir.path(),
        &aggregator_config(port, &dir.path().join("agg.sqlite"), TWO_CAMERA_SITE),
        port,
    )
    .unwrap();
    let api = agg.api_url().unwrap();
    let base = api.trim_end_matches("/api/v1");
    let operator = agg.token("ops", "operator").unwrap();
    let integrator = agg.token("app", "integrator").unwrap();
    let admin = agg.token("dpo", "admin").unwrap();
    let mut sub = Subscriber::connect(port).unwrap();

    // operators may not stream where people go
    let refused = EventStream::open(&format!("{api}/events?kinds=alert,sighting"), Some(&operator)).err().unwrap();
    assert!(refused.to_string().contains("HTTP 403"), "{refused}");
    let mut ops = EventStream::open(&format!("{api}/events"), Some(&operator)).unwrap();
    let ready = ops.next(Duration::from_secs(5)).unwrap();
    assert_eq!(ready.event, "ready");
    assert!(!ready.data.contains("sighting"), "{ready:?}");
    // integrators ask for them, with a purpose (their default stream has none: tests/api.rs)
    let refused = EventStream::open(&format!("{api}/events?kinds=sighting"), Some(&integrator)).err().unwrap();
    assert!(refused.to_string().contains("HTTP 400") && refused.to_string().contains("purpose"), "{refused}");
    let url = format!("{api}/events?kinds=sighting,trajectory&purpose=dashboard");
    let mut app = EventStream::open(&url, Some(&integrator)).unwrap();
    assert_eq!(app.next(Duration::from_secs(5)).unwrap().event, "ready");

    // an edge alert reaches the operator's stream
    let now = OffsetDateTime::now_utc();
    let edge_alert = Alert {
        id: new_event_id(),
        site: "testsite".into(),
        camera: "stage".into(),
        ts: now,
        alert: "crowd:stage:front".into(),
        state: AlertState::Raised,
        kind: AlertKind::CrowdThreshold,
        severity: Severity::Warning,
        zone: Some("front".into()),
        message: "41 people in front".into(),
        details: None,
    };
    publish(port, &[("sightline/v1/testsite/stage/alert".into(), edge_alert.to_json())]).unwrap();
    let id = edge_alert.id.to_string();
    let got = ops.wait_for("alert", Duration::from_secs(5), |e| e.id.as_deref() == Some(&id)).unwrap();
    assert!(got.data.contains("41 people in front"), "{got:?}");

    // a watchlist entry (an embedding) and a matching sighting
    let face: Vec<f32> = (0..128).map(|i| ((i * 53 % 97) as f32 / 97.0 - 0.5) * 0.18).collect();
    let expires = sightline_contract::ts::format(now + time::Duration::days(2));
    let entry =
        serde_json::json!({ "name": "case 7", "purpose": "missing child", "expires_at": expires, "embedding": face });
    let add =
        |token: &str| http_request("POST", &format!("{api}/watchlist"), Some(token), Some(&entry.to_string())).unwrap();
    let (code, body) = add(&integrator);
    assert_eq!(code, 403, "integrators cannot change the watchlist: {body}");
    let (code, body) = add(&admin);
    assert_eq!(code, 201, "{body}");
    let entry_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
    assert!(!body.contains(r#""embedding":"#), "{body}");

    let near: Vec<f32> = face.iter().enumerate().map(|(i, v)| v + if i % 3 == 0 { 0.02 } else { -0.01 }).collect();
    let stranger: Vec<f32> = face.iter().map(|v| -v).collect();
    let first = synthetic_sighting("stage", now - time::Duration::seconds(30), &near);
    let other = synthetic_sighting("lobby", now - time::Duration::seconds(25), &stranger);
    let again = synthetic_sighting("lobby", now - time::Duration::seconds(10), &near);
    for s in [&first, &other, &again] {
        publish(port, &[(topic(s), s.to_json())]).unwrap();
        placed(&mut sub, s.id, &agg);
    }
    // the alert is published before the trajectory update of its sighting's successor
    sub.wait_until(Duration::from_secs(10), |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/stage/alert") && String::from_utf8_lossy(&m.payload).contains("watchlist_match")
        })
    })
    .unwrap();
    let raised = watchlist_alerts(&sub);
    assert_eq!(raised.len(), 1, "one alert for the trajectory, not one per sighting: {raised:?}");
    let details = raised[0].details.clone().unwrap();
    assert_eq!(details["watchlist"], entry_id.as_str());
    assert_eq!(details["sighting"], first.id.to_string());
    assert_eq!((raised[0].camera.as_str(), raised[0].severity), ("stage", Severity::Critical));
    // the operator saw it live, and the integrator saw the sightings (no embeddings)
    ops.wait_for("alert", Duration::from_secs(5), |e| e.data.contains("watchlist_match")).unwrap();
    let id = other.id.to_string();
    let seen = app.wait_for("sighting", Duration::from_secs(5), |e| e.id.as_deref() == Some(&id)).unwrap();
    assert!(!seen.data.contains("embedding"), "{seen:?}");
    app.wait_for("trajectory", Duration::from_secs(5), |e| e.data.contains(&again.id.to_string())).unwrap();

    let url = format!("{api}/watchlist/{entry_id}?purpose=found");
    assert_eq!(http_request("DELETE", &url, Some(&admin), None).unwrap().0, 204);
    sub.wait_until(Duration::from_secs(10), |m| {
        m.iter().any(|m| m.topic.ends_with("/alert") && String::from_utf8_lossy(&m.payload).contains(r#""cleared""#))
    })
    .unwrap();
    let all = watchlist_alerts(&sub);
    assert_eq!(all.last().unwrap().state, AlertState::Cleared);
    assert_eq!(all.last().unwrap().alert, raised[0].alert);

    // the audit log has every watchlist change and the integrator's stream
    let (_, audit) = http_get_as(&format!("{api}/audit?purpose=review"), Some(&admin)).unwrap();
    for action in [r#""watchlist_add""#, r#""watchlist_remove""#, r#""events_stream""#] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }

    // metrics: no token needed, counts by kind and outcome
    let (code, text) = http_get(&format!("{base}/metrics")).unwrap();
    assert_eq!(code, 200);
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(value(r#"sightline_aggregator_messages_total{kind="sighting",outcome="accepted"}"#), 3.0);
    // each handled sighting is timed from its receipt, and stored within a plausible time
    assert_eq!(value(r#"sightline_aggregator_ingest_seconds_count{kind="sighting"}"#), 3.0);
    let ingest_s = value(r#"sightline_aggregator_ingest_seconds_sum{kind="sighting"}"#);
    assert!(ingest_s > 0.0 && ingest_s < 30.0, "{ingest_s} s to ingest 3 sightings");
    assert_eq!(value("sightline_aggregator_watchlist_matches_total"), 1.0);
    assert_eq!(value("sightline_aggregator_event_subscribers"), 2.0);
    assert_eq!(value("sightline_aggregator_search_index_embeddings"), 3.0);
    assert_eq!(value("sightline_aggregator_mqtt_connected"), 1.0);
    assert_eq!(value(r#"sightline_aggregator_http_responses_total{route="/api/v1/watchlist",status="201"}"#), 1.0);
    drop((ops, app));
    agg.stop().unwrap();
}

/// Peak resident memory (`VmHWM`) of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

/// A 39.7 Mpx photo (the size that took the aggregator from 147 to 574 MB) is over
/// `[search] max_photo_pixels` (25 Mpx by default): it is refused from its header (400 naming
/// `image`), audited as a refused search with its digest, and the aggregator's peak memory does
/// not grow by its pixels (decoded, its RGB alone is 119 MB).
#[test]
fn a_40_mpx_photo_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agg = Aggregator::start_in(
        dir.path(),
        &aggregator_config(port, &dir.path().join("agg.sqlite"), TWO_CAMERA_SITE),
        port,
    )
    .unwrap();
    let api = agg.api_url().unwrap();
    assert!(!agg.log().contains("photos cannot be embedded"), "the face pipeline is loaded:\n{}", agg.log());
    let integrator = agg.token("investigations", "integrator").unwrap();
    let (w, h) = (7280, 5456);
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80).encode_image(&img).unwrap();
    drop(img);
    let b64 = base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, &jpeg);
    let body = serde_json::json!({ "image": b64, "purpose": "case 2026-118" }).to_string();

    let pid = agg.proc.0.id();
    let before = peak_rss_mib(pid);
    let (code, answer) = http_request("POST", &format!("{api}/search"), Some(&integrator), Some(&body)).unwrap();
    let after = peak_rss_mib(pid);
    eprintln!("{w}x{h} JPEG of {} KiB: peak RSS {before:.0} MiB before, {after:.0} MiB after", jpeg.len() >> 10);
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer.contains(r#""parameter":"image""#) && answer.contains("over the limit of 25000000 pixels"),
        "{answer}"
    );
    assert!(after - before < 64.0, "peak RSS grew from {before:.0} to {after:.0} MiB: the photo was decoded");

    let admin = agg.token("dpo", "admin").unwrap();
    let (_, audit) = http_get_as(&format!("{api}/audit?purpose=review"), Some(&admin)).unwrap();
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let search = audit["items"].as_array().unwrap().iter().find(|r| r["action"] == "search").unwrap();
    use sha2::Digest;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&jpeg)));
    assert_eq!((search["outcome"].as_str(), search["purpose"].as_str()), (Some("refused"), Some("case 2026-118")));
    assert_eq!(search["query"]["probe"]["digest"], digest.as_str(), "{search:#}");
    agg.stop().unwrap();
}

/// Repair after the fact through the real ingest: one person's sightings on the lobby camera,
/// shifted by it, start a fragment of their own; when the fragment's second sighting arrives, the
/// two fragments' means agree and it is merged into the first. The merge is announced
/// (`merged_from`), the merged id answers on the API with the survivor, admins see the merge with
/// its evidence, and a restart keeps it: the next lobby sighting joins the survivor.
#[test]
fn fragments_of_one_person_are_merged_announced_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let site = format!("{TWO_CAMERA_SITE}\n[correlation]\nmerge_distance = 0.5\n");
    let config = aggregator_config(port, &dir.path().join("agg.sqlite"), &site);
    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    let mut sub = Subscriber::connect(port).unwrap();
    // the face, plus 0.33 of noise of its own per sighting; the lobby adds 0.4 in one direction:
    // two of one camera are 0.47 apart, one of each 0.62 (beyond max_distance 0.6)
    let base = synthetic_face(7);
    let shot = |n: usize, lobby: bool| -> Vec<f32> {
        let mut v = base.clone();
        v[10 + n] += 0.33;
        if lobby {
            v[120] += 0.4;
        }
        v
    };
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let at = |s: i64| t0 + time::Duration::seconds(s);
    let stage: Vec<Sighting> =
        (0..4).map(|n| synthetic_sighting("stage", at(10 * n as i64), &shot(n, false))).collect();
    let lobby: Vec<Sighting> =
        (4..7).map(|n| synthetic_sighting("lobby", at(200 + 10 * n as i64), &shot(n, true))).collect();
    let msgs = |s: &[Sighting]| s.iter().map(|s| (topic(s), s.to_json())).collect::<Vec<_>>();
    publish(port, &msgs(&stage)).unwrap();
    let survivor = placed(&mut sub, stage[3].id, &agg).trajectory;
    publish(port, &msgs(&lobby[..1])).unwrap();
    let fragment = placed(&mut sub, lobby[0].id, &agg);
    assert!(fragment.new && fragment.trajectory != survivor, "the shifted sighting starts a fragment: {fragment:?}");
    publish(port, &msgs(&lobby[1..2])).unwrap();
    let merging = placed(&mut sub, lobby[1].id, &agg);
    assert_eq!(merging.trajectory, survivor, "{merging:?}");
    assert_eq!(merging.merged_from, [fragment.trajectory], "the merge is announced");

    let api = agg.api_url().unwrap();
    let integrator = agg.token("integration", "integrator").unwrap();
    let read = |id: Uuid| {
        let (code, body) =
            http_get_as(&format!("{api}/trajectories/{id}?purpose=missing%20person"), Some(&integrator)).unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let merged = read(fragment.trajectory);
    assert_eq!(merged["id"], survivor.to_string(), "the merged id answers with the survivor: {merged}");
    assert_eq!(merged["merged_from"], fragment.trajectory.to_string());
    assert_eq!(merged["sightings"].as_array().unwrap().len(), 6, "{merged}");
    let admin = agg.token("auditor", "admin").unwrap();
    let (code, body) = http_get_as(&format!("{api}/merges"), Some(&admin)).unwrap();
    assert_eq!(code, 200, "{body}");
    let merges: serde_json::Value = serde_json::from_str(&body).unwrap();
    let m = &merges["items"][0];
    assert_eq!(
        (m["from"].as_str(), m["into"].as_str()),
        (Some(&*fragment.trajectory.to_string()), Some(&*survivor.to_string()))
    );
    assert_eq!((m["sighting"].as_str(), m["moved"].as_u64()), (Some(&*lobby[1].id.to_string()), Some(1)));
    assert!(m["distance"].as_f64().is_some_and(|d| d <= 0.5), "{m}");
    assert_eq!(http_get_as(&format!("{api}/merges"), Some(&integrator)).unwrap().0, 403, "admins only");
    agg.stop().unwrap();

    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    agg.wait_log("correlators restored", 1, Duration::from_secs(10)).unwrap();
    let mut sub = Subscriber::connect(port).unwrap();
    publish(port, &msgs(&lobby[2..])).unwrap();
    let after = placed(&mut sub, lobby[2].id, &agg);
    assert_eq!(after.trajectory, survivor, "the restarted aggregator kept the merge: {after:?}");
    assert!(after.merged_from.is_empty(), "and does not repeat it: {after:?}");
    let api = agg.api_url().unwrap();
    let (code, body) = http_get_as(&format!("{api}/merges"), Some(&admin)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"].as_array().unwrap().len(), 1);
    agg.stop().unwrap();
}
