//! The operator dashboard in a real browser: the aggregator (its embedded broker, the UI it
//! serves at `/`) on 127.0.0.1 with three cameras, Lin-Manuel Miranda's real trajectory, and
//! tokens of every role, and crowd measurements of `stage` over the last ~10 minutes; then
//! `node ui/e2e/dashboard.mjs` (playwright-core driving Debian's chromium, headless) signs in on
//! the overview, sees an alert published on MQTT arrive live, acknowledges it, sees a camera go
//! offline, sees the crowd (card, overview tile, heatmap, chart), is refused investigations as an
//! operator, and searches by photo as an integrator. Afterwards the API must show what the browser did: the acknowledgement (by the
//! operator's token) and the audited search (by the integrator's, with its purpose).
//!
//! Needs node, `ui/node_modules` (`npm ci` in ui/), the built UI and `/usr/bin/chromium`:
//! `scripts/setup.sh` installs them all. Missing ones FAIL the test (they are not optional).

use std::process::Command;
use std::time::{Duration, Instant};

use sightline_contract::{CameraState, CameraStatus, Crowd, CrowdMethod, DensityGrid, Payload, ZoneCount, topic};
use sightline_tests::browser::{CHROMIUM, artifacts, check_prerequisites, run_bounded, workspace};
use sightline_tests::*;
use time::OffsetDateTime;

/// The whole browser script may take this long; it is killed after.
const NODE_TIMEOUT: Duration = Duration::from_secs(180);
/// The first camera is the one the script alerts on and takes offline.
const CAMERAS: [&str; 3] = ["plaza", "stage", "lobby"];
const ALERT_ID: &str = "e2e-alert-1";
/// A streaming camera (not the one taken offline) with crowd measurements over the last minutes.
const CROWD_CAMERA: &str = "stage";
/// Its zones; the first is the busiest.
const CROWD_ZONES: [&str; 2] = ["front", "aisle"];
/// How many measurements, spread evenly over the last ~10 minutes (the newest a few seconds ago).
const CROWD_MEASUREMENTS: usize = 8;
const GRID_COLS: u16 = 16;
const GRID_ROWS: u16 = 9;
const PURPOSE: &str = "case 2026-7: dashboard end-to-end test";
/// The purpose the admin types to read the audit log.
const AUDIT_PURPOSE: &str = "audit review 2026-Q4";

/// A camera status published as an edge agent would.
fn status(camera: &str, state: CameraState) -> (String, Vec<u8>) {
    let s = CameraStatus {
        site: "testsite".into(),
        camera: camera.into(),
        ts: OffsetDateTime::now_utc(),
        agent: "e2e-agent".into(),
        state,
        fps_in: Some(25.0),
        fps_analyzed: Some(5.0),
        frames_dropped: Some(0),
        codec: Some("h264".into()),
        resolution: Some([1280, 720]),
        detail: None,
    };
    (topic::camera_status(&s.site, &s.camera), s.to_json())
}

/// `CROWD_MEASUREMENTS` valid `sightline.crowd/1` measurements of `camera`, oldest first, 75 s
/// apart up to 5 s ago: a crowd growing towards the front, with per-zone counts and a 16×9 density
/// grid whose cells add up to the total (a blob drifting right).
fn crowd_measurements(camera: &str) -> Vec<Crowd> {
    let now = OffsetDateTime::now_utc();
    (0..CROWD_MEASUREMENTS)
        .map(|i| {
            let back = (CROWD_MEASUREMENTS - 1 - i) as i64 * 75 + 5;
            let front = 6.0 + 3.0 * i as f32;
            let aisle = 2.0 + (i % 3) as f32;
            let total = front + aisle;
            let (cx, cy) = (4.0 + i as f32, 5.0);
            let weights: Vec<f32> = (0..GRID_ROWS)
                .flat_map(|r| {
                    (0..GRID_COLS).map(move |c| {
                        let (dx, dy) = (c as f32 + 0.5 - cx, r as f32 + 0.5 - cy);
                        (-(dx * dx + dy * dy) / 8.0).exp() + 0.02
                    })
                })
                .collect();
            let sum: f32 = weights.iter().sum();
            Crowd {
                id: uuid::Uuid::now_v7(),
                site: "testsite".into(),
                camera: camera.into(),
                ts: now - time::Duration::seconds(back),
                method: CrowdMethod::Density,
                total,
                zones: vec![
                    ZoneCount {
                        zone: CROWD_ZONES[0].into(),
                        count: front,
                        area_m2: Some(40.0),
                        density_per_m2: Some(front / 40.0),
                    },
                    ZoneCount { zone: CROWD_ZONES[1].into(), count: aisle, area_m2: None, density_per_m2: None },
                ],
                grid: Some(DensityGrid {
                    cols: GRID_COLS,
                    rows: GRID_ROWS,
                    cells: weights.iter().map(|w| w / sum * total).collect(),
                }),
            }
        })
        .collect()
}

/// `t` as an RFC 3339 query parameter (UTC, `Z`: nothing to escape).
fn ts_param(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[test]
fn the_dashboard_in_chromium_shows_live_alerts_cameras_and_investigations_by_role() {
    let root = workspace();
    check_prerequisites(&root, "dashboard.mjs", &["playwright-core", "mqtt"]);
    let artifacts = artifacts("dashboard");
    eprintln!("screenshots and node's output: {}", artifacts.display());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let site = miranda_site("[[camera]]\nid = \"plaza\"\nposition = [15.0, 20.0]\n");
    let agg = Aggregator::start_in(dir.path(), &aggregator_config(port, &dir.path().join("agg.sqlite"), &site), port)
        .unwrap();
    let api = agg.api_url().unwrap();
    let base = api.trim_end_matches("/api/v1").to_owned();
    let (code, page) = http_get(&format!("{base}/")).unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(
        !page.contains("dashboard is not built"),
        "the aggregator was built without the UI (ui/dist): run `bash scripts/setup.sh`, then rebuild"
    );

    // Miranda's real sightings on stage and lobby: his trajectory is what the search must show
    let walk =
        miranda_walks(&agg, port, dir.path()).unwrap_or_else(|e| panic!("{e:#}\naggregator log:\n{}", agg.log()));
    let trajectory = walk.trajectory().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("Miranda's trajectory: {trajectory}");

    // every camera streams (after the agents' own last statuses): the page shows them so first
    let streaming: Vec<(String, Vec<u8>)> = CAMERAS.iter().map(|c| status(c, CameraState::Streaming)).collect();
    publish(port, &streaming).unwrap();
    let operator = agg.token("e2e-operator", "operator").unwrap();
    let integrator = agg.token("e2e-integrator", "integrator").unwrap();
    let admin = agg.token("e2e-admin", "admin").unwrap();
    let cameras_ok = || {
        let (code, body) = http_get_as(&format!("{api}/cameras"), Some(&operator)).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        CAMERAS.iter().all(|c| {
            v["items"].as_array().unwrap().iter().any(|i| i["camera"] == *c && i["status"]["state"] == "streaming")
        })
    };
    eventually("the cameras' streaming statuses stored", Duration::from_secs(10), cameras_ok)
        .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));

    // crowd measurements of a streaming camera over the last ~10 minutes: its card, tile, heatmap
    // and chart must show them
    let crowds = crowd_measurements(CROWD_CAMERA);
    for c in &crowds {
        c.grid.as_ref().unwrap().check().unwrap_or_else(|(f, e)| panic!("our own grid is invalid: {f} {e}"));
    }
    let latest = crowds.last().unwrap().clone();
    let since = ts_param(crowds[0].ts - time::Duration::seconds(60));
    let messages: Vec<(String, Vec<u8>)> =
        crowds.iter().map(|c| (topic::crowd(&c.site, &c.camera), c.to_json())).collect();
    publish(port, &messages).unwrap();
    let crowd_stored = || {
        let url = format!("{api}/crowd?camera={CROWD_CAMERA}&since={since}&step=10");
        let (code, body) = http_get_as(&url, Some(&operator)).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let samples: u64 = v["items"].as_array().unwrap().iter().map(|b| b["samples"].as_u64().unwrap_or(0)).sum();
        let (_, cams) = http_get_as(&format!("{api}/cameras"), Some(&operator)).unwrap();
        let cams: serde_json::Value = serde_json::from_str(&cams).unwrap();
        let newest = cams["items"].as_array().unwrap().iter().find(|c| c["camera"] == CROWD_CAMERA).cloned();
        let grid_ok = newest.as_ref().is_some_and(|c| {
            c["latest_crowd"]["grid"]["cols"] == GRID_COLS && c["latest_crowd"]["grid"]["rows"] == GRID_ROWS
        });
        let total_ok = newest
            .as_ref()
            .and_then(|c| c["latest_crowd"]["total"].as_f64())
            .is_some_and(|t| (t - f64::from(latest.total)).abs() < 1e-3);
        samples >= CROWD_MEASUREMENTS as u64 && grid_ok && total_ok
    };
    eventually(&format!("the crowd measurements of {CROWD_CAMERA} stored"), Duration::from_secs(10), crowd_stored)
        .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));

    let photo = media("lin-manuel-miranda.png").canonicalize().expect("shared/media/lin-manuel-miranda.png");
    let mut node = Command::new("node");
    node.arg("ui/e2e/dashboard.mjs")
        .current_dir(&root)
        .env("SIGHTLINE_URL", &base)
        .env("SIGHTLINE_MQTT_HOST", "127.0.0.1")
        .env("SIGHTLINE_MQTT_PORT", port.to_string())
        .env("SIGHTLINE_SITE", "testsite")
        .env("SIGHTLINE_CAMERAS", CAMERAS.join(","))
        .env("SIGHTLINE_TOKEN_OPERATOR", &operator)
        .env("SIGHTLINE_TOKEN_INTEGRATOR", &integrator)
        .env("SIGHTLINE_TOKEN_ADMIN", &admin)
        .env("SIGHTLINE_PHOTO", &photo)
        .env("SIGHTLINE_MIRANDA_TRAJECTORY", trajectory.to_string())
        .env("SIGHTLINE_SEARCH_PURPOSE", PURPOSE)
        .env("SIGHTLINE_AUDIT_PURPOSE", AUDIT_PURPOSE)
        .env("SIGHTLINE_ALERT_ID", ALERT_ID)
        .env("SIGHTLINE_CROWD_CAMERA", CROWD_CAMERA)
        .env("SIGHTLINE_CROWD_ZONE", CROWD_ZONES[0])
        .env("SIGHTLINE_CROWD_ZONES", CROWD_ZONES.len().to_string())
        .env("SIGHTLINE_CROWD_TOTAL", format!("{}", latest.total.round()))
        .env("SIGHTLINE_CROWD_GRID", format!("{GRID_COLS}x{GRID_ROWS}"))
        .env("SIGHTLINE_CROWD_MEASUREMENTS", CROWD_MEASUREMENTS.to_string())
        .env("SIGHTLINE_ARTIFACTS", &artifacts)
        .env("SIGHTLINE_CHROMIUM", CHROMIUM);
    let started = Instant::now();
    let (status, stdout, stderr) = run_bounded(node, &artifacts, NODE_TIMEOUT);
    let outputs = format!(
        "--- node stdout ---\n{stdout}\n--- node stderr ---\n{stderr}\n--- screenshots: {} ---",
        artifacts.display()
    );
    match status {
        None => panic!("node ui/e2e/dashboard.mjs did not finish within {NODE_TIMEOUT:?} (killed)\n{outputs}"),
        Some(s) if !s.success() => {
            panic!("node ui/e2e/dashboard.mjs failed ({s})\n{outputs}\n--- aggregator log ---\n{}", agg.log())
        }
        Some(_) => eprintln!("node ui/e2e/dashboard.mjs passed in {:?}\n{outputs}", started.elapsed()),
    }

    // what the browser did is in the store: the search audited with its purpose, by the integrator
    let audit_of = |token: &str| {
        let url = format!("{api}/audit?token={token}&limit=1000&purpose=dashboard%20test%20check");
        let (code, body) = http_get_as(&url, Some(&admin)).unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let audit = audit_of("e2e-integrator");
    let searches: Vec<&serde_json::Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "search" && r["purpose"] == PURPOSE)
        .collect();
    assert!(!searches.is_empty(), "no audited search by e2e-integrator with purpose {PURPOSE:?}: {audit:#}");
    assert!(searches.iter().all(|r| r["role"] == "integrator"), "{audit:#}");
    assert!(
        searches.iter().any(|r| r["results"].as_u64().is_some_and(|n| n > 0)),
        "the search found nothing: {audit:#}"
    );
    // the trajectory it opened was read with the same purpose, and no read went without one
    let items = audit["items"].as_array().unwrap();
    assert!(items.iter().any(|r| r["action"] == "trajectory_read" && r["purpose"] == PURPOSE), "{audit:#}");
    assert!(items.iter().all(|r| r["outcome"] == "answered" && r["purpose"] == PURPOSE), "{audit:#}");
    // the admin read the audit log with the purpose it typed
    let adm = audit_of("e2e-admin");
    let reads: Vec<&serde_json::Value> =
        adm["items"].as_array().unwrap().iter().filter(|r| r["action"] == "audit_read").collect();
    assert!(reads.iter().any(|r| r["purpose"] == AUDIT_PURPOSE), "{adm:#}");
    assert!(reads.iter().all(|r| r["outcome"] == "answered"), "{adm:#}");
    // the operator's token never searched nor read trajectories
    let ops = audit_of("e2e-operator");
    assert_eq!(ops["items"], serde_json::json!([]), "{ops:#}");

    // and the alert the script published was acknowledged by the operator
    let cam = CAMERAS[0];
    let (code, alerts) = http_get_as(&format!("{api}/alerts?camera={cam}&limit=1000"), Some(&admin)).unwrap();
    assert_eq!(code, 200, "{alerts}");
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    let ours: Vec<&serde_json::Value> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["alert"]["alert"] == ALERT_ID || a["alert"]["id"] == ALERT_ID)
        .collect();
    assert!(!ours.is_empty(), "the alert {ALERT_ID} is not stored: {alerts:#}");
    // its edge agent went away, and the admin closed it (stale) with a reason
    assert!(
        ours.iter().any(|a| a["alert"]["state"] == "cleared" && a["alert"]["details"]["closed_by"] == "e2e-admin"),
        "{alerts:#}"
    );
    for a in ours {
        assert_eq!(a["acknowledged_by"], "e2e-operator", "{a:#}");
        assert!(a["acknowledged_at"].is_string(), "{a:#}");
    }
    // the camera the script took offline is offline
    let (_, cams) = http_get_as(&format!("{api}/cameras"), Some(&operator)).unwrap();
    let cams: serde_json::Value = serde_json::from_str(&cams).unwrap();
    let first = cams["items"].as_array().unwrap().iter().find(|c| c["camera"] == cam).unwrap();
    assert_eq!(first["status"]["state"], "offline", "{first:#}");
    agg.stop().unwrap();
}
