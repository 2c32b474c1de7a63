//! Plausibility at ingest, end to end: the real aggregator binary with its embedded broker, a raw
//! MQTT client publishing each hostile message of issue 18 next to valid ones. The hostile ones
//! are refused (never stored, counted in `/metrics` by the field at fault, logged with it); the
//! valid ones are stored; a retained camera status dated 9999 does not pin its camera.
//!
//! Also the measurement behind the limits on real faces (`real_faces_fit_the_limits`): the
//! embedding norms and the box overhangs of YuNet + dlib on the real media.
//!
//! ```sh
//! cargo build --bins && cargo test -p sightline-tests --test ingest_plausibility -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sightline_aggregator::plausible::{IngestConfig, KNOWN_MODELS, Plausibility};
use sightline_aggregator::store::{RetentionPolicy, SqliteStore, Store};
use sightline_contract::{Payload, Sighting, new_event_id, topic, ts};
use sightline_tests::*;
use time::OffsetDateTime;
use uuid::Uuid;

fn sighting_topic(s: &Sighting) -> String {
    topic::sighting(&s.site, &s.camera)
}

/// A sighting's JSON with `edit` applied.
fn edited(s: &Sighting, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&s.to_json()).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn crowd(camera: &str, ts: &str, total: f64) -> (Uuid, String, Vec<u8>) {
    let id = new_event_id();
    let v = json!({
        "schema": "sightline.crowd/1", "id": id, "site": "testsite", "camera": camera, "ts": ts,
        "method": "density", "total": total, "zones": []
    });
    (id, topic::crowd("testsite", camera), serde_json::to_vec(&v).unwrap())
}

fn alert(camera: &str, kind: &str, at: OffsetDateTime, details: Value) -> (Uuid, String, Vec<u8>) {
    let id = new_event_id();
    let v = json!({
        "schema": "sightline.alert/1", "id": id, "site": "testsite", "camera": camera, "ts": ts::format(at),
        "alert": format!("{camera}:{kind}:-:{id}"), "state": "raised", "kind": kind, "severity": "warning",
        "message": format!("{kind} on {camera}"), "details": details
    });
    (id, topic::alert("testsite", camera), serde_json::to_vec(&v).unwrap())
}

fn camera_status(camera: &str, ts: &str, state: &str, detail: &str) -> Vec<u8> {
    let v = json!({
        "schema": "sightline.camera_status/1", "site": "testsite", "camera": camera, "ts": ts,
        "agent": "edge-1", "state": state, "detail": detail
    });
    serde_json::to_vec(&v).unwrap()
}

/// Publishes `payload` on `topic` with QoS 1, retained, and waits for the PUBACK.
fn publish_retained(port: u16, topic: &str, payload: Vec<u8>) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(format!("test-retain-{}", std::process::id()), "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 10);
    client.publish(topic, QoS::AtLeastOnce, true, payload).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("retained publish of {topic} not acknowledged: {other:?}"),
        }
    }
    let _ = client.disconnect();
}

/// The aggregator's `/metrics` text.
fn metrics(base: &str) -> String {
    let (code, text) = http_get(&format!("{base}/metrics")).unwrap();
    assert_eq!(code, 200, "{text}");
    text
}

fn count(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// Every hostile message of the issue, next to valid ones: the hostile ones are refused and
/// counted by field, never stored; the valid ones are stored; the aggregator's own
/// `watchlist_match` comes back over MQTT as a duplicate, not as a forgery.
#[test]
fn hostile_messages_are_refused_counted_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store_path = dir.path().join("agg.sqlite");
    let agg = Aggregator::start_in(dir.path(), &aggregator_config(port, &store_path, TWO_CAMERA_SITE), port).unwrap();
    let api = agg.api_url().unwrap();
    let base = api.trim_end_matches("/api/v1").to_owned();
    let admin = agg.token("dpo", "admin").unwrap();
    let mut sub = Subscriber::connect(port).unwrap();
    let now = OffsetDateTime::now_utc();

    // valid messages
    let valid_sighting = synthetic_sighting("stage", now - time::Duration::seconds(40), &synthetic_face(1));
    let (valid_crowd, crowd_topic, crowd_payload) = crowd("stage", &ts::format(now - time::Duration::seconds(5)), 12.0);
    let (valid_alert, alert_topic, alert_payload) =
        alert("stage", "zone_intrusion", now - time::Duration::seconds(3), json!({"persons": 1}));
    let valid: Vec<(String, Vec<u8>)> = vec![
        (sighting_topic(&valid_sighting), valid_sighting.to_json()),
        (crowd_topic, crowd_payload),
        (alert_topic, alert_payload),
    ];

    // hostile messages: (event id, topic, payload, kind, field at fault)
    let mut hostile: Vec<(Uuid, String, Vec<u8>, &str, &str)> = Vec::new();
    let mut bad_sighting = |field: &'static str, camera: &str, edit: &dyn Fn(&mut Value)| {
        let s = synthetic_sighting(camera, now - time::Duration::seconds(20), &synthetic_face(2));
        let payload = edited(&s, |v| edit(v));
        hostile.push((s.id, sighting_topic(&s), payload, "sighting", field));
    };
    bad_sighting("last_seen", "stage", &|v| v["last_seen"] = "9999-12-31T23:59:59.000Z".into());
    bad_sighting("last_seen", "stage", &|v| {
        v["first_seen"] = "1970-01-01T00:00:00.000Z".into();
        v["last_seen"] = "1970-01-01T00:00:02.000Z".into();
        v["best"]["ts"] = "1970-01-01T00:00:01.000Z".into();
    });
    bad_sighting("best.ts", "stage", &|v| v["best"]["ts"] = ts::format(now + time::Duration::seconds(10)).into());
    bad_sighting("frame_size", "stage", &|v| v["frame_size"] = json!([0, 0]));
    bad_sighting("embedding", "lobby", &|v| v["embedding"] = json!(vec![0.0; 128]));
    bad_sighting("model", "lobby", &|v| {
        v["model"] = "evil-model".into();
        v["embedding"] = json!([0.5, 0.5, 0.5, 0.5]);
    });
    bad_sighting("camera", "ghost", &|_| {});
    // a crowd time in the future written with an offset: local "now" at UTC-3 is 3 h ahead
    let future = (now + time::Duration::hours(3)).to_offset(time::macros::offset!(-3));
    let future = future.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (id, t, p) = crowd("stage", &future, 3.0);
    hostile.push((id, t, p, "crowd", "ts"));
    let (id, t, p) = crowd("lobby", &ts::format(now), 1e30);
    hostile.push((id, t, p, "crowd", "total"));
    let (id, t, p) = alert("lobby", "camera_tampered", now, json!({ "blob": "x".repeat(500 * 1024) }));
    hostile.push((id, t, p, "alert", "details"));
    let (id, t, p) = alert("stage", "watchlist_match", now, json!({"watchlist": new_event_id()}));
    hostile.push((id, t, p, "alert", "kind"));
    let agent = json!({"schema": "sightline.agent_status/1", "site": "testsite", "agent": "edge-1",
                       "ts": "9999-01-01T00:00:00.000Z", "state": "online"});
    let agent_topic = topic::agent_status("testsite", "edge-1");
    hostile.push((Uuid::nil(), agent_topic, serde_json::to_vec(&agent).unwrap(), "agent_status", "ts"));

    // hostile first, then the valid ones: one ingest thread handles them in order
    let mut messages: Vec<(String, Vec<u8>)> = hostile.iter().map(|(_, t, p, ..)| (t.clone(), p.clone())).collect();
    messages.extend(valid.iter().cloned());
    publish(port, &messages).unwrap();
    sub.wait_until(Duration::from_secs(10), |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/trajectory")
                && String::from_utf8_lossy(&m.payload).contains(&valid_sighting.id.to_string())
        })
    })
    .unwrap_or_else(|e| panic!("{e}: the valid sighting was not placed\n{}", agg.log()));
    let accepted = |text: &str| {
        ["sighting", "crowd", "alert"]
            .iter()
            .map(|k| count(text, &format!(r#"sightline_aggregator_messages_total{{kind="{k}",outcome="accepted"}}"#)))
            .sum::<f64>()
    };
    eventually("the valid messages stored", Duration::from_secs(10), || accepted(&metrics(&base)) == 3.0)
        .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));

    // counted by kind and field, and as rejected
    let text = metrics(&base);
    let mut expected: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (_, _, _, kind, field) in &hostile {
        *expected.entry((kind, field)).or_default() += 1.0;
    }
    for ((kind, field), n) in &expected {
        let series = format!(r#"sightline_aggregator_messages_rejected_total{{kind="{kind}",field="{field}"}}"#);
        assert_eq!(count(&text, &series), *n, "{series} in\n{text}");
    }
    let rejected: f64 = ["sighting", "crowd", "alert", "agent_status"]
        .iter()
        .map(|k| count(&text, &format!(r#"sightline_aggregator_messages_total{{kind="{k}",outcome="rejected"}}"#)))
        .sum();
    assert_eq!(rejected, hostile.len() as f64, "{text}");
    // logged with the topic and the field
    let log = agg.wait_log("message rejected", hostile.len(), Duration::from_secs(5)).unwrap();
    for (_, t, _, _, field) in &hostile {
        assert!(log.contains(&format!("field `{field}`")), "field `{field}` ({t}) not logged:\n{log}");
    }
    assert!(log.contains("sightline/v1/testsite/ghost/sighting"), "{log}");

    // the aggregator's own watchlist_match comes back over MQTT: a duplicate, not a forgery
    let expires = ts::format(now + time::Duration::days(1));
    let entry = json!({ "name": "case 18", "purpose": "test", "expires_at": expires, "embedding": synthetic_face(3) });
    let (code, body) =
        http_request("POST", &format!("{api}/watchlist"), Some(&admin), Some(&entry.to_string())).unwrap();
    assert_eq!(code, 201, "{body}");
    let matching = synthetic_sighting("lobby", now - time::Duration::seconds(10), &synthetic_face(3));
    publish(port, &[(sighting_topic(&matching), matching.to_json())]).unwrap();
    let duplicate = r#"sightline_aggregator_messages_total{kind="alert",outcome="duplicate"}"#;
    eventually("the aggregator's own alert received back", Duration::from_secs(10), || {
        count(&metrics(&base), duplicate) == 1.0
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", metrics(&base)));
    let text = metrics(&base);
    assert_eq!(count(&text, "sightline_aggregator_watchlist_matches_total"), 1.0, "{text}");
    assert_eq!(count(&text, r#"sightline_aggregator_messages_rejected_total{kind="alert",field="kind"}"#), 1.0);
    assert_eq!(count(&text, r#"sightline_aggregator_messages_total{kind="alert",outcome="rejected"}"#), 2.0);
    agg.stop().unwrap();

    // the store has the valid messages and the aggregator's alert, none of the hostile ones
    let store = SqliteStore::open(&store_path).unwrap();
    for id in [valid_sighting.id, valid_crowd, valid_alert, matching.id] {
        assert!(store.seen(id).unwrap(), "valid event {id} not stored");
    }
    for (id, t, _, kind, field) in &hostile {
        assert!(!store.seen(*id).unwrap(), "hostile {kind} ({field}) on {t} was stored");
    }
    let alerts = store.alerts(&sightline_aggregator::store::AlertQuery { limit: 100, ..Default::default() }).unwrap();
    let kinds: Vec<String> = alerts.iter().map(|a| format!("{:?}", a.alert.kind)).collect();
    assert_eq!(alerts.len(), 2, "the edge's alert and the aggregator's watchlist_match only: {kinds:?}");
    assert!(alerts.iter().any(|a| a.alert.id == valid_alert));
    assert!(alerts.iter().all(|a| a.alert.details.as_ref().is_some_and(|d| d.to_string().len() < 4096)));
    assert!(store.agents().unwrap().is_empty(), "the agent status of 9999 was stored");
    let cameras: Vec<String> = store.cameras().unwrap().into_iter().map(|c| c.camera).collect();
    assert_eq!(cameras, ["lobby", "stage"], "only the site's cameras");
    let latest = store.latest_crowd().unwrap();
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!((latest[0].id, latest[0].total), (valid_crowd, 12.0));
}

/// A retained camera status dated 9999 is refused, so the camera's real statuses that follow are
/// stored and shown (before, the stored 9999 one won every later comparison by `ts`).
#[test]
fn a_retained_status_from_year_9999_does_not_pin_the_camera() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agg = Aggregator::start_in(
        dir.path(),
        &aggregator_config(port, &dir.path().join("agg.sqlite"), TWO_CAMERA_SITE),
        port,
    )
    .unwrap();
    let api = agg.api_url().unwrap();
    let base = api.trim_end_matches("/api/v1").to_owned();
    let operator = agg.token("ops", "operator").unwrap();
    let status_topic = topic::camera_status("testsite", "stage");
    publish_retained(port, &status_topic, camera_status("stage", "9999-01-01T00:00:00.000Z", "streaming", "forged"));
    let rejected = r#"sightline_aggregator_messages_rejected_total{kind="camera_status",field="ts"}"#;
    eventually("the status of 9999 refused", Duration::from_secs(10), || count(&metrics(&base), rejected) == 1.0)
        .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));

    // the camera's agent then reports, as it does every status_interval_s
    let stage = || {
        let (code, body) = http_get_as(&format!("{api}/cameras"), Some(&operator)).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["items"].as_array().unwrap().iter().find(|c| c["camera"] == "stage").cloned().unwrap()
    };
    assert!(stage()["status"].is_null(), "{}", stage());
    for (state, detail) in [("offline", "connection refused"), ("streaming", "back")] {
        let real = ts::format(OffsetDateTime::now_utc());
        publish_retained(port, &status_topic, camera_status("stage", &real, state, detail));
        eventually(&format!("the real status {state} shown"), Duration::from_secs(10), || {
            let s = stage();
            s["status"]["state"] == state && s["status"]["ts"] == real.as_str() && s["status"]["detail"] == detail
        })
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stage(), agg.log()));
    }
    agg.stop().unwrap();
}

/// What real faces look like to ingest: YuNet + dlib on the real media (every face in the
/// photos, every frame of the clip, the portraits cropped so the frame border cuts 10 % to 60 %
/// of the face on each side, and cropped around the face to 1.2 to 0.6 times its box) are all
/// accepted, with a wide margin on the embedding norm. Prints the measurement quoted in
/// `aggregator/src/plausible.rs` and `docs/aggregator.md` (2026-12-07: 691 faces, norms 1.254 to
/// 1.544, median 1.386; boxes overhang the frame by at most 0.274 of their size, and are at most
/// 1.249 times the frame).
#[test]
fn real_faces_fit_the_limits() {
    use sightline_vision::{FacePipeline, Runtime, RuntimeConfig, load_rgb};
    let rt = Runtime::new(&RuntimeConfig { threads: 2, ..Default::default() }).unwrap();
    let mut p = FacePipeline::load(&rt, &model_dir(), "yunet_n_dynamic.onnx").unwrap();
    let now = OffsetDateTime::now_utc();
    let checks =
        Plausibility::new(IngestConfig::default(), RetentionPolicy::default(), [("testsite".into(), "stage".into())]);
    let accepted = |bbox: [f32; 4], frame: [u32; 2], embedding: &[f32]| {
        let mut s = synthetic_sighting("stage", now - time::Duration::seconds(5), embedding);
        s.best.bbox = bbox;
        s.frame_size = frame;
        checks.sighting(&s, now)
    };
    let norm = |e: &[f32]| e.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let mut norms: Vec<(f64, String)> = Vec::new();

    // every face of the photos
    let photos = [
        "obama.jpg",
        "obama2.jpg",
        "obama3.jpg",
        "biden.jpg",
        "biden2.jpg",
        "two_people.jpg",
        "alex-lacamoire.png",
        "lin-manuel-miranda.png",
    ];
    let mut portraits = Vec::new();
    for name in photos {
        let img = load_rgb(&media(name)).unwrap();
        let faces = p.analyze(&img).unwrap();
        assert!(!faces.is_empty(), "{name}");
        for f in &faces {
            norms.push((norm(&f.embedding), name.to_owned()));
            accepted(f.face.bbox, [img.width(), img.height()], &f.embedding)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        if faces.len() == 1 {
            portraits.push((name, img, faces[0].face.bbox));
        }
    }

    // every frame of the clip
    let frames = tempfile::tempdir().unwrap();
    gst_launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! pngenc ! multifilesink location={}",
        media("short_hamilton_clip.mp4").display(),
        frames.path().join("f%03d.png").display()
    ))
    .unwrap();
    let mut clip_faces = 0;
    for i in 0.. {
        let path = frames.path().join(format!("f{i:03}.png"));
        if !path.is_file() {
            break;
        }
        let img = load_rgb(&path).unwrap();
        for f in p.analyze(&img).unwrap() {
            clip_faces += 1;
            norms.push((norm(&f.embedding), format!("clip frame {i}")));
            accepted(f.face.bbox, [img.width(), img.height()], &f.embedding)
                .unwrap_or_else(|e| panic!("clip frame {i}: {e:?}"));
        }
    }
    assert!(clip_faces > 200, "{clip_faces} faces in the clip");

    // the portraits cropped so that the border cuts off 10 % to 60 % of the face, on each side:
    // how far YuNet's box then overhangs the frame, relative to the box
    let mut overhangs: Vec<(f32, String, bool)> = Vec::new();
    for (name, img, [bx, by, bw, bh]) in &portraits {
        let (w, h) = (img.width() as f32, img.height() as f32);
        for cut in [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6] {
            // (x0, y0, x1, y1) of the crop
            let crops = [
                ("left", (bx + cut * bw, 0.0, w, h)),
                ("right", (0.0, 0.0, bx + (1.0 - cut) * bw, h)),
                ("top", (0.0, by + cut * bh, w, h)),
                ("bottom", (0.0, 0.0, w, by + (1.0 - cut) * bh)),
            ];
            for (side, (x0, y0, x1, y1)) in crops {
                let (x0, y0) = (x0.max(0.0) as u32, y0.max(0.0) as u32);
                let (cw, ch) = ((x1.min(w) as u32).saturating_sub(x0), (y1.min(h) as u32).saturating_sub(y0));
                if cw < 64 || ch < 64 {
                    continue;
                }
                let crop = image::imageops::crop_imm(img, x0, y0, cw, ch).to_image();
                let faces = p.analyze(&crop).unwrap();
                let Some(f) = faces
                    .iter()
                    .max_by(|a, b| (a.face.bbox[2] * a.face.bbox[3]).total_cmp(&(b.face.bbox[2] * b.face.bbox[3])))
                else {
                    continue;
                };
                let [x, y, fw, fh] = f.face.bbox;
                let over = [-x / fw, -y / fh, (x + fw - cw as f32) / fw, (y + fh - ch as f32) / fh]
                    .into_iter()
                    .fold(0.0f32, f32::max);
                let ok = accepted(f.face.bbox, [cw, ch], &f.embedding).is_ok();
                norms.push((norm(&f.embedding), format!("{name} cut {side} {cut}")));
                overhangs.push((over, format!("{name} cut {:.0} % {side}", cut * 100.0), ok));
                assert!(ok, "{name} cut {cut} {side}: box {:?} in {cw}x{ch} refused", f.face.bbox);
            }
        }
    }

    // zoomed in until the face fills the frame or more: how much larger than the frame the box is
    let mut oversize: Vec<(f32, String, bool)> = Vec::new();
    for (name, img, [bx, by, bw, bh]) in &portraits {
        for zoom in [1.2f32, 1.0, 0.8, 0.6] {
            let (cx, cy) = (bx + bw / 2.0, by + bh / 2.0);
            let (cw, ch) = ((bw * zoom) as u32, (bh * zoom) as u32);
            let (x0, y0) = ((cx - cw as f32 / 2.0).max(0.0) as u32, (cy - ch as f32 / 2.0).max(0.0) as u32);
            let (cw, ch) = (cw.min(img.width() - x0), ch.min(img.height() - y0));
            let crop = image::imageops::crop_imm(img, x0, y0, cw, ch).to_image();
            let faces = p.analyze(&crop).unwrap();
            let Some(f) = faces
                .iter()
                .max_by(|a, b| (a.face.bbox[2] * a.face.bbox[3]).total_cmp(&(b.face.bbox[2] * b.face.bbox[3])))
            else {
                continue;
            };
            let ratio = (f.face.bbox[2] / cw as f32).max(f.face.bbox[3] / ch as f32);
            let ok = accepted(f.face.bbox, [cw, ch], &f.embedding).is_ok();
            assert!(ok, "{name} zoom {zoom}: box {:?} in {cw}x{ch} refused", f.face.bbox);
            norms.push((norm(&f.embedding), format!("{name} zoom {zoom}")));
            oversize.push((ratio, format!("{name} cropped to {zoom} x its box ({cw}x{ch})"), ok));
        }
    }
    oversize.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (ratio, what, ok) in &oversize {
        println!("box / frame {ratio:>6.3}  {what}{}", if *ok { "" } else { "  (refused)" });
    }

    norms.sort_by(|a, b| a.0.total_cmp(&b.0));
    overhangs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (lo, hi) = KNOWN_MODELS[0].norm;
    println!(
        "dlib embedding L2 norms over {} faces: min {:.4} ({}), max {:.4} ({}); accepted {lo}..{hi}",
        norms.len(),
        norms[0].0,
        norms[0].1,
        norms[norms.len() - 1].0,
        norms[norms.len() - 1].1
    );
    let median = norms[norms.len() / 2].0;
    println!("median norm {median:.4}");
    for (over, what, ok) in &overhangs {
        println!("overhang {over:>6.3} of the box  {what}{}", if *ok { "" } else { "  (refused)" });
    }
    for (n, what) in &norms {
        assert!((lo..=hi).contains(n), "{what}: norm {n}");
    }
    // the margin: at least 2x below the smallest and above the largest measured
    assert!(lo <= norms[0].0 / 2.0 && hi >= norms[norms.len() - 1].0 * 2.0, "the accepted range has no margin");
}
