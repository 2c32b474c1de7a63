//! The integrator API over a real socket on a real SQLite store: auth (401, 403), JSON shapes,
//! paging, 400s naming the parameter, 404s, GeoJSON, and an audit row for every trajectory read.

use std::sync::Arc;

use serde_json::{Value, json};
use sightline_aggregator::api::{self, ApiState};
use sightline_aggregator::auth::{new_token, token_hash};
use sightline_aggregator::search::SearchIndex;
use sightline_aggregator::site::{CameraPlace, GeoRef, SiteConfig, SiteModel};
use sightline_aggregator::sites::Sites;
use sightline_aggregator::store::*;
use sightline_contract::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const NOW: OffsetDateTime = datetime!(2026-11-23 09:00 UTC);

struct FixedClock;
impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        NOW
    }
}

fn secs(s: i64) -> Duration {
    Duration::seconds(s)
}

fn sighting(camera: &str, first: OffsetDateTime, ground: Option<[f64; 2]>) -> Sighting {
    Sighting {
        id: Uuid::now_v7(),
        site: "riverside".into(),
        camera: camera.into(),
        track: 1,
        first_seen: first,
        last_seen: first + secs(5),
        best: BestShot {
            ts: first,
            bbox: [10.0, 20.0, 80.0, 110.0],
            landmarks: [[30.0, 50.0], [60.0, 50.0], [45.0, 65.0], [35.0, 85.0], [55.0, 85.0]],
            det_score: 0.93,
            quality: 0.7,
        },
        frame_size: [640, 360],
        ground,
        model: "dlib-resnet-v1".into(),
        embedding: vec![0.125; 128],
    }
}

fn alert(name: &str, kind: AlertKind, state: AlertState, camera: &str, ts: OffsetDateTime) -> Alert {
    Alert {
        id: Uuid::now_v7(),
        site: "riverside".into(),
        camera: camera.into(),
        ts,
        alert: name.into(),
        state,
        kind,
        severity: Severity::Warning,
        zone: None,
        message: format!("{name} {state:?}"),
        details: None,
    }
}

fn site(georef: bool) -> SiteModel {
    let place = |id: &str, position| CameraPlace {
        id: id.into(),
        position,
        view_radius_m: 10.0,
        homography: None,
        agent: None,
    };
    SiteModel::new(
        SiteConfig {
            georef: georef.then_some(GeoRef { origin_lat: 48.8566, origin_lon: 2.3522, rotation_deg: 0.0 }),
            ..SiteConfig::new("riverside")
        },
        vec![place("gate-north", [0.0, 120.0]), place("plaza", [30.0, 120.0]), place("lens", [60.0, 0.0])],
        vec![],
    )
    .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    addr: std::net::SocketAddr,
    operator: String,
    integrator: String,
    admin: String,
    revoked: String,
    /// Trajectory ids, oldest first: A (gate-north then plaza, 2 sightings), B (lens), C (plaza).
    trajectories: Vec<Uuid>,
    /// Sightings of A, in order.
    sightings_a: Vec<Uuid>,
    /// The API's live events.
    events: sightline_aggregator::events::Events,
    /// The API's state (its photo slots, its config).
    api: Arc<ApiState>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn fixture(georef: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("aggregator.sqlite")).unwrap());
    let token = |name: &str, role| {
        let secret = new_token();
        store.create_token(name, role, None, &token_hash(&secret), T0).unwrap();
        secret
    };
    let operator = token("ops-desk", Role::Operator);
    let integrator = token("city-app", Role::Integrator);
    let admin = token("dpo", Role::Admin);
    let revoked = token("old-app", Role::Integrator);
    assert!(store.revoke_token("old-app", T0 + secs(1)).unwrap());

    for (cam, pos) in [("gate-north", [0.0, 120.0]), ("plaza", [30.0, 120.0]), ("lens", [60.0, 0.0])] {
        store.put_camera("riverside", cam, Some(pos)).unwrap();
    }
    let trajectories: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let a1 = sighting("gate-north", T0, None);
    let a2 = sighting("plaza", T0 + secs(30), Some([31.0, 118.5]));
    store.record_sighting(&a1, trajectories[0], None, T0 + secs(6)).unwrap();
    store.record_sighting(&a2, trajectories[0], Some(0.41), T0 + secs(36)).unwrap();
    store.record_sighting(&sighting("lens", T0 + secs(100), None), trajectories[1], None, T0 + secs(106)).unwrap();
    store.record_sighting(&sighting("plaza", T0 + secs(200), None), trajectories[2], None, T0 + secs(206)).unwrap();

    store
        .record_alert(&alert("off-lens", AlertKind::CameraOffline, AlertState::Raised, "lens", T0 + secs(10)), T0)
        .unwrap();
    store
        .record_alert(&alert("off-lens", AlertKind::CameraOffline, AlertState::Cleared, "lens", T0 + secs(70)), T0)
        .unwrap();
    store
        .record_alert(&alert("crowd-plaza", AlertKind::CrowdThreshold, AlertState::Raised, "plaza", T0 + secs(90)), T0)
        .unwrap();
    for i in 0..6 {
        let c = Crowd {
            id: Uuid::now_v7(),
            site: "riverside".into(),
            camera: "plaza".into(),
            ts: T0 + secs(20 * i),
            method: CrowdMethod::Detection,
            total: i as f32,
            zones: vec![ZoneCount { zone: "steps".into(), count: 1.0, area_m2: None, density_per_m2: None }],
            grid: None,
        };
        store.record_crowd(&c, T0).unwrap();
    }

    let state = ApiState::new(store.clone(), Arc::new(FixedClock), Arc::new(Sites::single(site(georef))));
    // the latest plaza measurement came through ingest (stored, and held with its grid); the
    // gate's is only in the store (as after a restart); the lens has none
    let plaza = Crowd {
        id: Uuid::now_v7(),
        site: "riverside".into(),
        camera: "plaza".into(),
        ts: T0 + secs(150),
        method: CrowdMethod::Density,
        total: 4.5,
        zones: vec![ZoneCount { zone: "steps".into(), count: 2.5, area_m2: Some(10.0), density_per_m2: Some(0.25) }],
        grid: Some(DensityGrid {
            cols: 4,
            rows: 3,
            cells: vec![0.0, 0.5, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        }),
    };
    store.record_crowd(&plaza, T0).unwrap();
    state.latest_crowd.update(&plaza);
    let gate = Crowd {
        id: Uuid::now_v7(),
        camera: "gate-north".into(),
        total: 1.0,
        zones: vec![],
        grid: None,
        ..plaza.clone()
    };
    store.record_crowd(&gate, T0).unwrap();
    let events = state.events.clone();
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(api::serve(listener, state.clone(), rx));
    Fixture {
        _dir: dir,
        store,
        addr,
        operator,
        integrator,
        admin,
        revoked,
        sightings_a: vec![a1.id, a2.id],
        events,
        api: state,
        trajectories,
        _stop: stop,
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 client: one GET per connection (`Connection: close`), body by Content-Length.
async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Reply {
    request(addr, "GET", path, token).await
}

/// [`get`] with another method (no body).
async fn request(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> Reply {
    request_with(addr, method, path, token, None).await
}

/// [`request`] with a JSON body.
async fn request_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let length = match json {
        Some(b) => format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()),
        None if method == "POST" => "Content-Length: 0\r\n".to_string(),
        None => String::new(),
    };
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{length}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(json.unwrap_or_default().as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let body = raw[split + 4..].to_vec();
    let reply = Reply { status, headers, body };
    if let Some(len) = reply.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), reply.body.len(), "body length");
    } else {
        assert!(reply.header("transfer-encoding").is_none(), "chunked bodies are not handled by this client");
    }
    reply
}

fn audit_all(store: &SqliteStore) -> Vec<AuditRecord> {
    store.audit_log(&AuditQuery { limit: 1000, ..Default::default() }).unwrap()
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let f = fixture(true).await;
    let r = get(f.addr, "/healthz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok", "search_index": "ready"}));
}

#[tokio::test]
async fn a_probe_no_face_model_makes_is_400() {
    // values of absurd magnitude (every entry would be a candidate), a zero vector: refused with
    // the same check ingest applies to sightings
    let f = fixture(true).await;
    let it = Some(f.integrator.as_str());
    for face in [vec![1e30f32; 128], vec![0.0; 128]] {
        let body = json!({ "embedding": face, "purpose": "case 12" }).to_string();
        let r = request_with(f.addr, "POST", "/api/v1/search", it, Some(&body)).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["parameter"], "embedding", "{v}");
        assert!(v["message"].as_str().unwrap().contains("L2 norm"), "{v}");
    }
}

#[tokio::test]
async fn searches_while_the_index_loads_are_503_audited_and_healthz_says_so() {
    let f = fixture(true).await;
    f.api.index.write().unwrap().begin_load();
    assert_eq!(get(f.addr, "/healthz", None).await.json()["search_index"], "loading");
    let face = f.store.sighting(f.sightings_a[0]).unwrap().unwrap().sighting.embedding;
    let body = json!({ "embedding": face, "purpose": "case 11" });
    let it = Some(f.integrator.as_str());
    let r = request_with(f.addr, "POST", "/api/v1/search", it, Some(&body.to_string())).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"], "unavailable", "{v}");
    assert!(v["message"].as_str().unwrap().contains("loading"), "{v}");
    let e = last_audit(&f.store);
    assert_eq!(
        (e.outcome, e.action, e.purpose.as_deref()),
        (AuditOutcome::Refused, AuditAction::Search, Some("case 11"))
    );
    assert_eq!(e.query["refused"]["status"], 503);

    // loaded: the store's sightings are found, healthz says ready
    let report = SearchIndex::load_into(&f.api.index, f.store.as_ref(), T0 - secs(3600)).unwrap();
    assert_eq!(report.loaded, 4);
    assert_eq!(get(f.addr, "/healthz", None).await.json()["search_index"], "ready");
    let r = request_with(f.addr, "POST", "/api/v1/search", it, Some(&body.to_string())).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["sightings"][0]["sighting"], f.sightings_a[0].to_string());
}

#[tokio::test]
async fn missing_unknown_malformed_or_revoked_tokens_are_401() {
    let f = fixture(true).await;
    for path in ["/api/v1/cameras", "/api/v1/trajectories", "/api/v1/audit"] {
        let r = get(f.addr, path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert_eq!(r.json()["error"], "unauthorized");
    }
    for token in [f.revoked.as_str(), "slt_00000000", "not a token"] {
        let r = get(f.addr, "/api/v1/trajectories", Some(token)).await;
        assert_eq!(r.status, 401, "{token}");
        assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    }
    // nothing was answered, nothing audited
    assert!(audit_all(&f.store).is_empty());
}

#[tokio::test]
async fn too_low_a_role_is_403() {
    let f = fixture(true).await;
    let id = f.trajectories[0];
    for path in [
        "/api/v1/trajectories".to_string(),
        format!("/api/v1/trajectories/{id}"),
        format!("/api/v1/trajectories/{id}/geojson"),
        format!("/api/v1/sightings/{}", f.sightings_a[0]),
    ] {
        let r = get(f.addr, &path, Some(&f.operator)).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["error"], "forbidden");
    }
    let r = get(f.addr, "/api/v1/audit", Some(&f.integrator)).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["message"].as_str().unwrap().contains("admin"));
    // higher roles include lower ones
    assert_eq!(get(f.addr, "/api/v1/cameras", Some(&f.admin)).await.status, 200);
    assert_eq!(get(f.addr, "/api/v1/trajectories?purpose=case%2042", Some(&f.admin)).await.status, 200);
    assert!(audit_all(&f.store).iter().all(|r| r.entry.token == "dpo"));
}

#[tokio::test]
async fn operator_endpoints_answer_json() {
    let f = fixture(true).await;
    let op = Some(f.operator.as_str());

    let r = get(f.addr, "/api/v1/cameras", op).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let cams = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(cams.len(), 3);
    let gate = cams.iter().find(|c| c["camera"] == "gate-north").unwrap();
    assert_eq!(gate["site"], "riverside");
    assert_eq!(gate["position"], json!([0.0, 120.0]));
    let [lon, lat] = [gate["wgs84"][0].as_f64().unwrap(), gate["wgs84"][1].as_f64().unwrap()];
    assert!((lat - 48.8577).abs() < 1e-3 && (lon - 2.3522).abs() < 1e-6, "{lat} {lon}");

    let r = get(f.addr, "/api/v1/alerts", op).await;
    assert_eq!(r.status, 200);
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["alert"]["alert"], "crowd-plaza", "newest first");
    assert_eq!(items[0]["alert"]["ts"], "2026-11-23T08:01:30.000Z");
    let r = get(f.addr, "/api/v1/alerts?kind=camera_offline&state=cleared&camera=lens&limit=5", op).await;
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["alert"]["state"], "cleared");
    let r = get(f.addr, "/api/v1/alerts?since=2026-11-23T08:01:00Z&until=2026-11-23T08:02:00.000Z", op).await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);

    let r = get(f.addr, "/api/v1/crowd?camera=plaza&since=2026-11-23T08:00:00Z&until=2026-11-23T08:02:00Z&step=60", op)
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["step_s"], 60);
    assert_eq!(v["since"], "2026-11-23T08:00:00.000Z");
    let buckets = v["items"].as_array().unwrap();
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[0]["start"], "2026-11-23T08:00:00.000Z");
    assert_eq!(buckets[0]["mean"], 1.0); // totals 0, 1, 2
    assert_eq!(buckets[1]["samples"], 3);
    let r = get(
        f.addr,
        "/api/v1/crowd?camera=plaza&zone=steps&since=2026-11-23T08:00:00Z&until=2026-11-23T08:02:00Z&step=120",
        op,
    )
    .await;
    assert_eq!(r.json()["items"][0]["mean"], 1.0);
    assert_eq!(r.json()["items"][0]["samples"], 6);
    // operator reads are not personal data: not audited
    assert!(audit_all(&f.store).is_empty());
}

#[tokio::test]
async fn trajectories_page_newest_first_with_a_cursor_and_are_audited() {
    let f = fixture(true).await;
    let it = Some(f.integrator.as_str());
    let r = get(f.addr, "/api/v1/trajectories?limit=2&purpose=missing%20person%20report%20117", it).await;
    assert_eq!(r.status, 200);
    let page = r.json();
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [f.trajectories[2].to_string(), f.trajectories[1].to_string()]);
    assert_eq!(page["items"][0]["cameras"], json!(["plaza"]));
    assert_eq!(page["items"][0]["first_seen"], "2026-11-23T08:03:20.000Z");
    let next = page["next"].as_str().unwrap().to_string();

    let r = get(f.addr, &format!("/api/v1/trajectories?limit=2&cursor={next}&purpose=case%20117%20page%202"), it).await;
    let page2 = r.json();
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["items"][0]["id"], f.trajectories[0].to_string());
    assert_eq!(page2["items"][0]["sighting_count"], 2);
    assert_eq!(page2["items"][0]["cameras"], json!(["gate-north", "plaza"]));
    assert!(page2["next"].is_null());

    let r = get(f.addr, "/api/v1/trajectories?camera=gate-north&purpose=case%20117", it).await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);

    let log = audit_all(&f.store);
    assert_eq!(log.len(), 3);
    let first = &log[0].entry;
    assert_eq!(first.token, "city-app");
    assert_eq!(first.role, Role::Integrator);
    assert_eq!(first.action, AuditAction::TrajectoryList);
    assert_eq!(first.purpose.as_deref(), Some("missing person report 117"));
    assert_eq!(first.query["limit"], 2);
    assert_eq!(first.results, 2);
    assert_eq!(first.ts, NOW);
    assert_eq!(log[1].entry.query["cursor"], next.as_str());
    assert_eq!(log[1].entry.results, 1);
    assert_eq!(log[2].entry.query["camera"], "gate-north");
    assert_eq!(log[1].entry.purpose.as_deref(), Some("case 117 page 2"));
    assert!(log.iter().all(|r| r.entry.outcome == AuditOutcome::Answered));
}

#[tokio::test]
async fn trajectory_detail_and_sighting_are_audited_and_hide_the_embedding() {
    let f = fixture(true).await;
    let it = Some(f.integrator.as_str());
    let id = f.trajectories[0];
    let r = get(f.addr, &format!("/api/v1/trajectories/{id}?purpose=case%2042"), it).await;
    assert_eq!(r.status, 200);
    let t = r.json();
    assert_eq!(t["id"], id.to_string());
    assert_eq!(t["sightings"].as_array().unwrap().len(), 2);
    assert_eq!(t["sighting_count"], 2, "the count and the array do not share a key");
    assert_eq!(String::from_utf8_lossy(&r.body).matches("\"sightings\":").count(), 1, "one `sightings` key");
    assert_eq!(t["sightings"][0]["id"], f.sightings_a[0].to_string());
    assert_eq!(t["sightings"][0]["camera"], "gate-north");
    assert_eq!(t["sightings"][1]["ground"], json!([31.0, 118.5]));
    assert_eq!(t["sightings"][1]["distance"].as_f64().unwrap() as f32, 0.41);
    assert_eq!(t["sightings"][0]["first_seen"], "2026-11-23T08:00:00.000Z");

    let r = get(f.addr, &format!("/api/v1/sightings/{}?purpose=case%2042", f.sightings_a[1]), it).await;
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["trajectory"], id.to_string());
    assert_eq!(s["sighting"]["camera"], "plaza");
    assert_eq!(s["sighting"]["best"]["det_score"].as_f64().unwrap() as f32, 0.93);
    assert!(s["sighting"].get("embedding").is_none(), "the embedding is never served");
    assert!(!String::from_utf8_lossy(&r.body).contains("0.125"));
    assert_eq!(s["received_at"], "2026-11-23T08:00:36.000Z");

    let log = audit_all(&f.store);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].entry.action, AuditAction::TrajectoryRead);
    assert_eq!(log[0].entry.purpose.as_deref(), Some("case 42"));
    assert_eq!(log[0].entry.query["id"], id.to_string());
    assert_eq!(log[0].entry.results, 2);
    assert_eq!(log[1].entry.action, AuditAction::SightingRead);
    assert_eq!(log[1].entry.purpose.as_deref(), Some("case 42"));
    assert_eq!(log[1].entry.results, 1);
}

#[tokio::test]
async fn geojson_is_wgs84_with_a_georef_and_site_metres_without() {
    let f = fixture(true).await;
    let id = f.trajectories[0];
    let r = get(f.addr, &format!("/api/v1/trajectories/{id}/geojson?purpose=case%2042"), Some(&f.integrator)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/geo+json"));
    let g = r.json();
    assert_eq!(g["type"], "Feature");
    assert_eq!(g["geometry"]["type"], "LineString");
    let coords = g["geometry"]["coordinates"].as_array().unwrap();
    assert_eq!(coords.len(), 2);
    // [lon, lat]; gate-north's camera position (no ground), then plaza's ground point
    let (lon0, lat0) = (coords[0][0].as_f64().unwrap(), coords[0][1].as_f64().unwrap());
    assert!((lon0 - 2.3522).abs() < 1e-9 && (lat0 - 48.8577).abs() < 1e-3);
    assert!(coords[1][0].as_f64().unwrap() > lon0);
    assert_eq!(g["properties"]["crs"], "WGS84");
    assert_eq!(g["properties"]["sightings"][0]["position"], "camera");
    assert_eq!(g["properties"]["sightings"][1]["position"], "ground");
    assert!(g["properties"].get("note").is_none());
    let log = audit_all(&f.store);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entry.action, AuditAction::TrajectoryRead);
    assert_eq!(log[0].entry.query["endpoint"], "GET /api/v1/trajectories/{id}/geojson");

    let f = fixture(false).await;
    let id = f.trajectories[0];
    let g =
        get(f.addr, &format!("/api/v1/trajectories/{id}/geojson?purpose=case%2042"), Some(&f.integrator)).await.json();
    assert_eq!(g["geometry"]["coordinates"], json!([[0.0, 120.0], [31.0, 118.5]]));
    assert_eq!(g["properties"]["crs"], "site");
    assert!(g["properties"]["note"].as_str().unwrap().contains("site frame"));
    // one sighting: a Point
    let one = f.trajectories[1];
    let g =
        get(f.addr, &format!("/api/v1/trajectories/{one}/geojson?purpose=case%2042"), Some(&f.integrator)).await.json();
    assert_eq!(g["geometry"], json!({"type": "Point", "coordinates": [60.0, 0.0]}));
}

#[tokio::test]
async fn unknown_ids_are_404_and_still_audited() {
    let f = fixture(true).await;
    let it = Some(f.integrator.as_str());
    let unknown = Uuid::now_v7();
    for path in [
        format!("/api/v1/trajectories/{unknown}?purpose=case%2042"),
        format!("/api/v1/trajectories/{unknown}/geojson?purpose=case%2042"),
        format!("/api/v1/sightings/{unknown}?purpose=case%2042"),
    ] {
        let r = get(f.addr, &path, it).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"], "not_found");
    }
    let r = get(f.addr, "/api/v1/nothing-here", it).await;
    assert_eq!(r.status, 404);
    let log = audit_all(&f.store);
    assert_eq!(log.len(), 3, "every attempt to read is accountable");
    assert!(log.iter().all(|r| r.entry.results == 0 && r.entry.query["id"] == unknown.to_string()));
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let f = fixture(true).await;
    let (op, it, ad) = (Some(f.operator.as_str()), Some(f.integrator.as_str()), Some(f.admin.as_str()));
    let cases: [(&str, Option<&str>, &str); 14] = [
        ("/api/v1/alerts?since=yesterday", op, "since"),
        ("/api/v1/alerts?kind=fire", op, "kind"),
        ("/api/v1/alerts?state=open", op, "state"),
        ("/api/v1/alerts?limit=0", op, "limit"),
        ("/api/v1/alerts?limit=abc", op, "limit"),
        ("/api/v1/alerts?colour=red", op, "colour"),
        ("/api/v1/alerts?since=2026-11-23T09:00:00Z&until=2026-11-23T08:00:00Z", op, "until"),
        ("/api/v1/crowd?since=2026-11-23T08:00:00Z", op, "camera"),
        ("/api/v1/crowd?camera=plaza&step=0", op, "step"),
        ("/api/v1/trajectories?cursor=zzz&purpose=p", it, "cursor"),
        ("/api/v1/trajectories?limit=2&limit=3&purpose=p", it, "limit"),
        ("/api/v1/trajectories/not-a-uuid?purpose=p", it, "id"),
        ("/api/v1/sightings/12?purpose=p", it, "id"),
        ("/api/v1/audit?until=2026-13-01T00:00:00Z&purpose=p", ad, "until"),
    ];
    for (path, token, param) in cases {
        let r = get(f.addr, path, token).await;
        assert_eq!(r.status, 400, "{path}");
        let v = r.json();
        assert_eq!(v["error"], "bad_request", "{path}");
        assert_eq!(v["parameter"], param, "{path}");
        assert!(v["message"].as_str().unwrap().contains(&format!("`{param}`")), "{path}: {v}");
    }
    // a refused request answered nothing: not audited
    assert!(audit_all(&f.store).is_empty());
}

#[tokio::test]
async fn admins_read_the_audit_log_paged() {
    let f = fixture(true).await;
    let it = Some(f.integrator.as_str());
    for _ in 0..3 {
        assert_eq!(get(f.addr, "/api/v1/trajectories?purpose=patrol", it).await.status, 200);
    }
    let r = get(f.addr, "/api/v1/audit?limit=2&purpose=quarterly%20review", Some(&f.admin)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["token"], "city-app");
    assert_eq!(items[0]["action"], "trajectory_list");
    assert_eq!(items[0]["purpose"], "patrol");
    assert_eq!(items[0]["results"], 3);
    assert_eq!(items[0]["ts"], "2026-11-23T09:00:00.000Z");
    assert_eq!(items[0]["outcome"], "answered");
    let after = v["next_after"].as_i64().unwrap();
    let url = format!("/api/v1/audit?after={after}&token=city-app&purpose=quarterly%20review");
    let v = get(f.addr, &url, Some(&f.admin)).await.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert!(v["next_after"].is_null());
    // reading the audit log is itself audited
    let log = audit_all(&f.store);
    assert_eq!(log.iter().filter(|r| r.entry.action == AuditAction::AuditRead).count(), 2);
    let reads: Vec<&AuditEntry> = log.iter().map(|r| &r.entry).filter(|e| e.action == AuditAction::AuditRead).collect();
    assert!(reads.iter().all(|e| e.token == "dpo" && e.purpose.as_deref() == Some("quarterly review")));
}

#[tokio::test]
async fn a_failed_audit_write_fails_the_read() {
    let f = fixture(true).await;
    // make every audit insert fail, from another connection to the same database file
    let db = rusqlite::Connection::open(f._dir.path().join("aggregator.sqlite")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit disabled'); END;",
    )
    .unwrap();
    let it = Some(f.integrator.as_str());
    let id = f.trajectories[0];
    for path in [
        "/api/v1/trajectories?purpose=p".to_string(),
        format!("/api/v1/trajectories/{id}?purpose=p"),
        format!("/api/v1/trajectories/{id}/geojson?purpose=p"),
        format!("/api/v1/sightings/{}?purpose=p", f.sightings_a[0]),
        // a refusal is audited too: without its record, a 500
        "/api/v1/trajectories".to_string(),
    ] {
        let r = get(f.addr, &path, it).await;
        assert_eq!(r.status, 500, "{path}");
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(!body.contains(&id.to_string()) && !body.contains("gate-north"), "{path}: nothing answered: {body}");
        assert!(r.json()["message"].as_str().unwrap().contains("audit"));
    }
    // operator reads do not depend on the audit log
    assert_eq!(get(f.addr, "/api/v1/cameras", Some(&f.operator)).await.status, 200);
}

#[tokio::test]
async fn the_openapi_document_needs_no_token_and_lists_every_endpoint() {
    let f = fixture(true).await;
    let r = get(f.addr, "/api/v1/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/api/v1/cameras",
        "/api/v1/alerts",
        "/api/v1/crowd",
        "/api/v1/trajectories",
        "/api/v1/trajectories/{id}",
        "/api/v1/trajectories/{id}/geojson",
        "/api/v1/sightings/{id}",
        "/api/v1/audit",
        "/api/v1/openapi.json",
        "/api/v1/me",
        "/api/v1/site",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
    for (path, method) in [
        ("/metrics", "get"),
        ("/api/v1/search", "post"),
        ("/api/v1/watchlist", "get"),
        ("/api/v1/watchlist", "post"),
        ("/api/v1/watchlist/{id}", "delete"),
        ("/api/v1/events", "get"),
        ("/api/v1/alerts/{id}/ack", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let params = doc["paths"]["/api/v1/trajectories"]["get"]["parameters"].as_array().unwrap();
    assert!(params.iter().any(|p| p["name"] == "cursor"));
    assert!(doc["paths"]["/api/v1/audit"]["get"]["responses"]["403"].is_object());

    // every GET answer has a schema: JSON ones under application/json
    let not_json = ["/metrics", "/api/v1/trajectories/{id}/geojson"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        if path == "/api/v1/events" {
            continue; // Server-Sent Events: a stream, not one body
        }
        let content = get["responses"]["200"]["content"].as_object().unwrap_or_else(|| panic!("{path}: no 200 body"));
        if !not_json.contains(&path.as_str()) {
            assert!(content["application/json"]["schema"].is_object(), "{path}: no application/json schema");
        }
        assert!(content.values().all(|c| c["schema"].is_object()), "{path}: a body without a schema");
    }
    assert!(
        doc["paths"]["/api/v1/trajectories/{id}/geojson"]["get"]["responses"]["200"]["content"]["application/geo+json"]
            ["schema"]
            .is_object()
    );
    let schemas = &doc["components"]["schemas"];
    for name in ["TrajectorySummary", "TrajectoryPoint"] {
        assert_eq!(schemas[name]["properties"]["first_seen"]["type"], "string", "{name}");
        assert_eq!(schemas[name]["properties"]["first_seen"]["format"], "date-time", "{name}");
    }
    let audit = ok_schema(&doc, "/api/v1/audit");
    assert_eq!(audit["properties"]["items"]["items"]["$ref"], "#/components/schemas/AuditRecord");
    let sighting = resolve(&doc, &ok_schema(&doc, "/api/v1/sightings/{id}")["properties"]["sighting"]);
    assert!(sighting["properties"]["best"].is_object());
    assert!(sighting["properties"].get("embedding").is_none(), "the embedding is never served");
    assert_eq!(schemas["AuditAction"]["enum"].as_array().unwrap().len(), AuditAction::ALL.len());
}

/// The 200 schema of `GET path` (its `$ref` resolved).
fn ok_schema<'a>(doc: &'a Value, path: &str) -> &'a Value {
    resolve(doc, &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"])
}

/// `s`, or the component schema it refers to.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("not a local ref: {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "{r} is not in the document");
            resolve(doc, target)
        }
        None => s,
    }
}

/// Checks `v` against the schema `s`, for what utoipa generates: `$ref`, `allOf`, `oneOf`, `type`
/// (a name or a list, `null` included), `enum`, `format` (date-time: RFC 3339 with milliseconds as the
/// contract writes it; uuid), objects (every required property present, **no property the schema
/// does not name**) and arrays. `at` is where `v` is, for messages.
fn check(doc: &Value, s: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = resolve(doc, s);
    if let Some(branches) = s.get("oneOf").and_then(Value::as_array) {
        let errors: Vec<String> = branches.iter().filter_map(|b| check(doc, b, v, at).err()).collect();
        return if errors.len() < branches.len() { Ok(()) } else { Err(errors.join(" / ")) };
    }
    // an object's properties and required ones, `allOf` parts merged
    let mut properties = serde_json::Map::new();
    let mut required: Vec<String> = Vec::new();
    let mut is_object_schema = false;
    let mut parts = vec![s];
    while let Some(part) = parts.pop() {
        let part = resolve(doc, part);
        if let Some(all) = part.get("allOf").and_then(Value::as_array) {
            parts.extend(all.iter());
        }
        if let Some(props) = part.get("properties").and_then(Value::as_object) {
            is_object_schema = true;
            properties.extend(props.iter().map(|(k, p)| (k.clone(), p.clone())));
        }
        if let Some(req) = part.get("required").and_then(Value::as_array) {
            required.extend(req.iter().map(|r| r.as_str().unwrap().to_string()));
        }
        if part.get("allOf").is_some() {
            continue;
        }
        if let Some(types) = part.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                other => return Err(format!("{at}: bad type {other}")),
            };
            let matches = |t: &str| match t {
                "null" => v.is_null(),
                "boolean" => v.is_boolean(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => false,
            };
            if !types.iter().any(|t| matches(t)) {
                return Err(format!("{at}: {v} is not {types:?}"));
            }
        }
        if let Some(values) = part.get("enum").and_then(Value::as_array)
            && !values.contains(v)
        {
            return Err(format!("{at}: {v} is not one of {values:?}"));
        }
        if let (Some(format), Some(text)) = (part.get("format").and_then(Value::as_str), v.as_str()) {
            let ok = match format {
                "date-time" => ts::parse(text).is_ok_and(|t| ts::format(t) == text),
                "uuid" => Uuid::parse_str(text).is_ok(),
                _ => true,
            };
            if !ok {
                return Err(format!("{at}: {text:?} is not a {format}"));
            }
        }
        if let (Some(items), Some(array)) = (part.get("items"), v.as_array()) {
            for (i, item) in array.iter().enumerate() {
                check(doc, items, item, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let (true, Some(obj)) = (is_object_schema, v.as_object()) {
        for r in &required {
            if !obj.contains_key(r) {
                return Err(format!("{at}: required `{r}` is missing"));
            }
        }
        for (k, field) in obj {
            let Some(p) = properties.get(k) else {
                return Err(format!("{at}: `{k}` is not in the schema"));
            };
            check(doc, p, field, &format!("{at}.{k}"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn real_answers_match_their_openapi_schemas() {
    let f = fixture(true).await;
    // the optional fields too: a camera status, an alert with a zone and details
    let status = CameraStatus {
        site: "riverside".into(),
        camera: "plaza".into(),
        ts: T0 + secs(5),
        agent: "edge-1".into(),
        state: CameraState::Streaming,
        fps_in: Some(25.0),
        fps_analyzed: Some(8.0),
        frames_dropped: Some(3),
        codec: Some("h264".into()),
        resolution: Some([1920, 1080]),
        detail: None,
    };
    assert!(f.store.record_camera_status(&status, T0 + secs(6)).unwrap());
    // edge-1 went away (its Last Will): plaza is `unknown` with its agent, its alerts `stale`
    let agent = |state, cameras: Option<Vec<String>>| AgentStatus {
        site: "riverside".into(),
        agent: "edge-1".into(),
        ts: T0,
        state,
        version: None,
        cameras,
        started: Some(T0),
    };
    f.store.record_agent_status(&agent(AgentState::Online, Some(vec!["plaza".into()])), T0).unwrap();
    f.store.record_agent_status(&agent(AgentState::Offline, None), T0 + secs(200)).unwrap();
    let mut zoned = alert("steps-crowd", AlertKind::CrowdThreshold, AlertState::Raised, "plaza", T0 + secs(95));
    zoned.zone = Some("steps".into());
    zoned.details = Some(json!({"count": 12, "threshold": 10}));
    f.store.record_alert(&zoned, T0).unwrap();
    f.store.acknowledge_alert("steps-crowd", "ops-desk", T0 + secs(120)).unwrap();
    let doc = get(f.addr, "/api/v1/openapi.json", None).await.json();
    let (op, it, ad) = (Some(f.operator.as_str()), Some(f.integrator.as_str()), Some(f.admin.as_str()));

    // the acceptance minimum: a trajectory page's keys and its items' keys are the schema's
    let page = get(f.addr, "/api/v1/trajectories?limit=2&purpose=p", it).await.json();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
    let page_schema = ok_schema(&doc, "/api/v1/trajectories");
    assert_eq!(keys(&page), keys(&page_schema["properties"]));
    assert!(page["next"].is_string(), "a full page has a next one");
    let item_schema = resolve(&doc, &page_schema["properties"]["items"]["items"]);
    assert_eq!(keys(&page["items"][0]), keys(&item_schema["properties"]));

    // a refused access (no purpose), so the audit log answered below holds both outcomes
    assert_eq!(get(f.addr, "/api/v1/trajectories", it).await.status, 400);
    let trajectory = f.trajectories[0];
    let sighting = f.sightings_a[1]; // with a ground point and a distance
    let cases = [
        ("/healthz", "/healthz".to_string(), None),
        ("/api/v1/cameras", "/api/v1/cameras".to_string(), op),
        ("/api/v1/alerts", "/api/v1/alerts".to_string(), op),
        (
            "/api/v1/crowd",
            "/api/v1/crowd?camera=plaza&since=2026-11-23T08:00:00Z&until=2026-11-23T08:02:00Z".to_string(),
            op,
        ),
        ("/api/v1/crowd", "/api/v1/crowd?camera=plaza&zone=steps".to_string(), op),
        ("/api/v1/trajectories", "/api/v1/trajectories?limit=2&purpose=p".to_string(), it),
        ("/api/v1/trajectories", "/api/v1/trajectories?purpose=p".to_string(), it),
        ("/api/v1/trajectories/{id}", format!("/api/v1/trajectories/{trajectory}?purpose=p"), it),
        ("/api/v1/sightings/{id}", format!("/api/v1/sightings/{sighting}?purpose=p"), it),
        ("/api/v1/sightings/{id}", format!("/api/v1/sightings/{}?purpose=p", f.sightings_a[0]), it),
        ("/api/v1/audit", "/api/v1/audit?purpose=p".to_string(), ad),
        ("/api/v1/audit", "/api/v1/audit?limit=1&purpose=p".to_string(), ad),
        ("/api/v1/watchlist", "/api/v1/watchlist?purpose=p".to_string(), ad),
        ("/api/v1/openapi.json", "/api/v1/openapi.json".to_string(), None),
        ("/api/v1/me", "/api/v1/me".to_string(), op),
        ("/api/v1/me", "/api/v1/me".to_string(), ad),
        ("/api/v1/site", "/api/v1/site".to_string(), op),
    ];
    for (path, url, token) in cases {
        let r = get(f.addr, &url, token).await;
        assert_eq!(r.status, 200, "{url}");
        let v = r.json();
        if let Err(e) = check(&doc, ok_schema(&doc, path), &v, "$") {
            panic!("GET {url} does not match its schema: {e}\nanswer: {v:#}");
        }
    }
    // and a wrong answer does not
    let mut wrong = get(f.addr, "/api/v1/trajectories?purpose=p", it).await.json();
    wrong["items"][0]["first_seen"] = json!(12);
    assert!(check(&doc, ok_schema(&doc, "/api/v1/trajectories"), &wrong, "$").is_err());
    wrong["items"][0].as_object_mut().unwrap().remove("first_seen");
    assert!(check(&doc, ok_schema(&doc, "/api/v1/trajectories"), &wrong, "$").unwrap_err().contains("first_seen"));
    // the acknowledgement (a POST), first and repeated
    let schema = resolve(
        &doc,
        &doc["paths"]["/api/v1/alerts/{id}/ack"]["post"]["responses"]["200"]["content"]["application/json"]["schema"],
    );
    for _ in 0..2 {
        let r = request(f.addr, "POST", "/api/v1/alerts/off-lens/ack", op).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        if let Err(e) = check(&doc, schema, &v, "$") {
            panic!("POST /api/v1/alerts/off-lens/ack does not match its schema: {e}\nanswer: {v:#}");
        }
    }
    // a camera with a grid, one without (null) and one with no crowd at all are all in the schema
    let cams = get(f.addr, "/api/v1/cameras", op).await.json();
    assert!(cams["items"].as_array().unwrap().iter().any(|c| c["state"] == "unknown" && c["agent"].is_object()));
    let alerts = get(f.addr, "/api/v1/alerts", op).await.json();
    assert!(alerts["items"].as_array().unwrap().iter().any(|a| a["stale"] == true && a["stale_since"].is_string()));
    assert!(cams["items"].as_array().unwrap().iter().any(|c| c["latest_crowd"]["grid"].is_object()));
    assert!(cams["items"].as_array().unwrap().iter().any(|c| c["latest_crowd"].is_null()));
    let mut extra = get(f.addr, "/api/v1/cameras", op).await.json();
    extra["items"][0]["colour"] = json!("red");
    assert!(check(&doc, ok_schema(&doc, "/api/v1/cameras"), &extra, "$").unwrap_err().contains("colour"));
}

#[tokio::test]
async fn cameras_carry_their_latest_crowd_with_its_grid() {
    let f = fixture(true).await;
    let cams = get(f.addr, "/api/v1/cameras", Some(&f.operator)).await.json();
    let cam = |id: &str| cams["items"].as_array().unwrap().iter().find(|c| c["camera"] == id).unwrap().clone();
    let plaza = cam("plaza");
    let latest = &plaza["latest_crowd"];
    assert_eq!(latest["ts"], "2026-11-23T08:02:30.000Z", "the newest by ts: {plaza:#}");
    assert_eq!((latest["method"].as_str(), latest["total"].as_f64()), (Some("density"), Some(4.5)));
    assert_eq!(latest["zones"], json!([{ "zone": "steps", "count": 2.5 }]));
    assert_eq!((latest["grid"]["cols"].as_u64(), latest["grid"]["rows"].as_u64()), (Some(4), Some(3)));
    assert_eq!(latest["grid"]["cells"].as_array().unwrap().len(), 12);
    assert_eq!(latest["grid"]["cells"][5], 2.0);
    // only in the store (as after a restart): no grid; none at all: null
    let gate = cam("gate-north");
    assert_eq!(gate["latest_crowd"]["total"], 1.0);
    assert!(gate["latest_crowd"]["grid"].is_null(), "{gate:#}");
    let lens = cam("lens");
    assert!(lens.as_object().unwrap().contains_key("latest_crowd") && lens["latest_crowd"].is_null(), "{lens:#}");
}

#[tokio::test]
async fn me_names_the_token_and_its_role() {
    let f = fixture(true).await;
    for (token, name, role) in
        [(&f.operator, "ops-desk", "operator"), (&f.integrator, "city-app", "integrator"), (&f.admin, "dpo", "admin")]
    {
        let r = get(f.addr, "/api/v1/me", Some(token)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!({ "name": name, "role": role, "sites": null }));
    }
    assert_eq!(get(f.addr, "/api/v1/me", None).await.status, 401);
    assert_eq!(get(f.addr, "/api/v1/me", Some(&f.revoked)).await.status, 401);
    assert_eq!(get(f.addr, "/api/v1/me?x=1", Some(&f.admin)).await.status, 400);
    assert!(audit_all(&f.store).is_empty(), "not audited");
}

/// Reads an SSE response from `s` until `needle` appears (or 10 s pass); returns what was read.
async fn read_until(s: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{needle:?} not received: {}", String::from_utf8_lossy(seen)))
            .unwrap();
        assert!(n > 0, "stream closed before {needle:?}: {}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(seen).into_owned()
}

#[tokio::test]
async fn acknowledging_an_alert_records_who_and_when_once_and_streams_it() {
    let f = fixture(true).await;
    let mut live = f.events.subscribe();
    // another operator's dashboard, on the live stream of acknowledgements only
    let mut sse = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let req = format!(
        "GET /api/v1/events?kinds=alert_ack HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        f.addr, f.operator
    );
    sse.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let head = read_until(&mut sse, &mut seen, "event: ready").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // unknown alert: 404; a bad id: 400; no token: 401
    let r = request(f.addr, "POST", "/api/v1/alerts/no-such-alert/ack", Some(&f.operator)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    let r = request(f.addr, "POST", "/api/v1/alerts/a%0Ab/ack", Some(&f.operator)).await;
    assert_eq!((r.status, r.json()["parameter"].as_str()), (400, Some("id")));
    assert_eq!(request(f.addr, "POST", "/api/v1/alerts/off-lens/ack", None).await.status, 401);
    assert_eq!(get(f.addr, "/api/v1/alerts/off-lens/ack", Some(&f.operator)).await.status, 405);

    let r = request(f.addr, "POST", "/api/v1/alerts/off-lens/ack", Some(&f.operator)).await;
    assert_eq!(r.status, 200);
    let ack = r.json();
    let expected = json!({
        "alert": "off-lens",
        "acknowledged_by": "ops-desk",
        "acknowledged_at": "2026-11-23T09:00:00.000Z",
        "already": false,
    });
    assert_eq!(ack, expected);
    // every event of the alert carries it
    let alerts = get(f.addr, "/api/v1/alerts?camera=lens", Some(&f.operator)).await.json();
    let items = alerts["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for a in items {
        assert_eq!(
            (a["acknowledged_by"].as_str(), a["acknowledged_at"].as_str()),
            (Some("ops-desk"), Some("2026-11-23T09:00:00.000Z"))
        );
    }
    // live: the same JSON, as `alert_ack`
    let e = tokio::time::timeout(std::time::Duration::from_secs(5), live.recv()).await.unwrap().unwrap();
    assert_eq!(e.kind.as_str(), "alert_ack");
    assert_eq!(serde_json::from_str::<Value>(&e.json).unwrap(), expected);
    let text = read_until(&mut sse, &mut seen, "event: alert_ack").await;
    assert!(text.contains(r#""acknowledged_by":"ops-desk""#), "{text}");

    // a second acknowledgement (by an admin) keeps the first, and is not streamed again
    let r = request(f.addr, "POST", "/api/v1/alerts/off-lens/ack", Some(&f.admin)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({
            "alert": "off-lens",
            "acknowledged_by": "ops-desk",
            "acknowledged_at": "2026-11-23T09:00:00.000Z",
            "already": true,
        })
    );
    assert!(live.try_recv().is_err(), "an unchanged acknowledgement is not an event");
}

#[tokio::test]
async fn site_serves_the_map() {
    let f = fixture(true).await;
    assert_eq!(get(f.addr, "/api/v1/site", None).await.status, 401);
    let r = get(f.addr, "/api/v1/site", Some(&f.operator)).await;
    assert_eq!(r.status, 200);
    let site = r.json();
    assert_eq!(site["id"], "riverside");
    assert_eq!(site["georef"], json!({ "origin_lat": 48.8566, "origin_lon": 2.3522, "rotation_deg": 0.0 }));
    let cams = site["cameras"].as_array().unwrap();
    assert_eq!(cams.len(), 3);
    let gate = cams.iter().find(|c| c["id"] == "gate-north").unwrap();
    assert_eq!(gate["position"], json!([0.0, 120.0]));
    assert_eq!(gate["view_radius_m"], 10.0);
    let [lon, lat] = [gate["wgs84"][0].as_f64().unwrap(), gate["wgs84"][1].as_f64().unwrap()];
    assert!((lat - 48.8577).abs() < 1e-3 && (lon - 2.3522).abs() < 1e-6, "{lat} {lon}");
    assert_eq!(site["links"], json!([]));

    let f = fixture(false).await;
    let site = get(f.addr, "/api/v1/site", Some(&f.operator)).await.json();
    assert!(site["georef"].is_null());
    assert!(site["cameras"].as_array().unwrap().iter().all(|c| c["wgs84"].is_null()), "{site:#}");
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_token_with_strict_headers() {
    use sightline_aggregator::api::ui;
    let f = fixture(true).await;
    let security = |r: &Reply| {
        assert_eq!(r.header("content-security-policy"), Some(ui::CONTENT_SECURITY_POLICY));
        // no other site may frame the dashboard (clickjacking)
        let csp: Vec<&str> = r.header("content-security-policy").unwrap().split(';').map(str::trim).collect();
        assert!(csp.contains(&"frame-ancestors 'none'"), "{csp:?}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    };
    let index = get(f.addr, "/", None).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    security(&index);
    assert_eq!(index.body, ui::asset("index.html").unwrap().bytes);
    if !ui::BUILT {
        assert!(String::from_utf8_lossy(&index.body).contains("scripts/setup.sh"));
    }
    // client routes get the page (the app routes them)
    for path in ["/alerts", "/investigations/trajectory", "/cameras/"] {
        let r = get(f.addr, path, None).await;
        assert_eq!((r.status, r.body.as_slice()), (200, index.body.as_slice()), "{path}");
        security(&r);
    }
    // hashed assets are cached for good, with their type
    for a in ui::ASSETS.iter().filter(|a| a.path.starts_with("assets/")) {
        let r = get(f.addr, &format!("/{}", a.path), None).await;
        assert_eq!(r.status, 200, "{}", a.path);
        assert_eq!(r.header("content-type"), Some(a.content_type));
        assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"));
        assert_eq!(r.body, a.bytes);
        security(&r);
    }
    // an unknown file, an unknown API path and another method: JSON 404s
    for path in ["/assets/missing-123.js", "/favicon-nope.ico", "/api/v1/nope", "/api/nope", "/api"] {
        let r = get(f.addr, path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"], "not_found", "{path}");
    }
    assert_eq!(request(f.addr, "POST", "/alerts", None).await.status, 404);
    // the API itself is unchanged: still needs its token
    assert_eq!(get(f.addr, "/api/v1/cameras", None).await.status, 401);
}

#[test]
fn the_content_types_of_the_embedded_files_are_known() {
    use sightline_aggregator::api::ui;
    assert!(ui::asset("index.html").is_some(), "an index.html is always embedded");
    for a in ui::ASSETS {
        let ext = a.path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        if ["js", "css", "html", "svg", "png", "json", "woff2"].contains(&ext) {
            assert_ne!(a.content_type, "application/octet-stream", "{}", a.path);
        }
    }
}

// ---- purpose: every identity read is justified -------------------------------------------------

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `method path` with `purpose` (absent when `None`): in the query string, or in the JSON `body`.
async fn with_purpose(
    f: &Fixture,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
    purpose: Option<&str>,
) -> Reply {
    match body {
        Some(b) => {
            let mut b = b.clone();
            if let Some(p) = purpose {
                b["purpose"] = json!(p);
            }
            request_with(f.addr, method, path, Some(token), Some(&b.to_string())).await
        }
        None => {
            let path = match purpose {
                Some(p) => format!("{path}?purpose={}", encode(p)),
                None => path.to_string(),
            };
            request(f.addr, method, &path, Some(token)).await
        }
    }
}

fn last_audit(store: &SqliteStore) -> AuditEntry {
    audit_all(store).pop().expect("an audit record").entry
}

#[tokio::test]
async fn every_identity_endpoint_without_a_purpose_is_400_and_audited_as_refused() {
    let f = fixture(true).await;
    let (it, ad) = (f.integrator.as_str(), f.admin.as_str());
    let id = f.trajectories[0];
    let entry = Uuid::now_v7();
    let stored = WatchlistEntry {
        id: entry,
        name: "case 7".into(),
        purpose: "missing child".into(),
        model: "dlib-resnet-v1".into(),
        embedding: vec![0.125; 128],
        created_by: "dpo".into(),
        created_at: T0,
        expires_at: NOW + Duration::days(7),
    };
    assert!(f.store.watchlist_add(&stored).unwrap());
    let face = vec![0.125f32; 128];
    let search = json!({ "embedding": face });
    let add = json!({ "name": "case 8", "expires_at": "2026-11-30T09:00:00.000Z", "embedding": face });
    // method, path, token, body, audited as, status
    type Case<'a> = (&'a str, String, &'a str, Option<&'a Value>, AuditAction, u16);
    let cases: [Case; 9] = [
        ("GET", "/api/v1/trajectories".into(), it, None, AuditAction::TrajectoryList, 200),
        ("GET", format!("/api/v1/trajectories/{id}"), it, None, AuditAction::TrajectoryRead, 200),
        ("GET", format!("/api/v1/trajectories/{id}/geojson"), it, None, AuditAction::TrajectoryRead, 200),
        ("GET", format!("/api/v1/sightings/{}", f.sightings_a[0]), it, None, AuditAction::SightingRead, 200),
        ("POST", "/api/v1/search".into(), it, Some(&search), AuditAction::Search, 200),
        ("GET", "/api/v1/watchlist".into(), ad, None, AuditAction::WatchlistList, 200),
        ("POST", "/api/v1/watchlist".into(), ad, Some(&add), AuditAction::WatchlistAdd, 201),
        ("DELETE", format!("/api/v1/watchlist/{entry}"), ad, None, AuditAction::WatchlistRemove, 204),
        ("GET", "/api/v1/audit".into(), ad, None, AuditAction::AuditRead, 200),
    ];
    let too_long = "x".repeat(api::MAX_PURPOSE_CHARS + 1);
    let name = |token: &str| if token == it { "city-app" } else { "dpo" };
    for (method, path, token, body, action, ok) in cases {
        let what = format!("{method} {path}");
        // no purpose, an empty one, blanks, a control character, too long: refused, and audited
        for bad in [None, Some(""), Some("   "), Some("case\u{7}7"), Some(too_long.as_str())] {
            let before = audit_all(&f.store).len();
            let r = with_purpose(&f, method, &path, token, body, bad).await;
            assert_eq!(r.status, 400, "{what} with purpose {bad:?}");
            let v = r.json();
            assert_eq!(
                (v["error"].as_str(), v["parameter"].as_str()),
                (Some("bad_request"), Some("purpose")),
                "{what}"
            );
            let log = audit_all(&f.store);
            assert_eq!(log.len(), before + 1, "{what} with purpose {bad:?}: one audit record");
            let e = &log.last().unwrap().entry;
            assert_eq!(
                (e.outcome, e.action, e.purpose.as_deref(), e.results),
                (AuditOutcome::Refused, action, None, 0)
            );
            assert_eq!((e.token.as_str(), e.ts), (name(token), NOW), "{what}");
            assert_eq!(e.query["refused"]["parameter"], "purpose", "{what}: {}", e.query);
            assert_eq!(e.query["refused"]["status"], 400, "{what}");
            let endpoint = e.query["endpoint"].as_str().unwrap();
            assert!(endpoint.starts_with(method), "{what}: {endpoint}");
        }
        // with one: answered, audited with it
        let r = with_purpose(&f, method, &path, token, body, Some(" case 2026-117 ")).await;
        assert_eq!(r.status, ok, "{what}: {}", String::from_utf8_lossy(&r.body));
        let e = last_audit(&f.store);
        assert_eq!(
            (e.outcome, e.action, e.purpose.as_deref()),
            (AuditOutcome::Answered, action, Some("case 2026-117"))
        );
    }
    // nothing was removed by the refused deletions: the first one with a purpose removed it
    assert!(f.store.watchlist_active(NOW).unwrap().iter().all(|e| e.id != entry));
    // the refusals are counted
    let metrics = String::from_utf8(get(f.addr, "/metrics", None).await.body).unwrap();
    for action in ["trajectory_list", "trajectory_read", "sighting_read", "search", "watchlist_add", "audit_read"] {
        let line = format!(r#"sightline_aggregator_refused_accesses_total{{action="{action}",reason="purpose"}} "#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert!(metrics.contains(r#"{action="trajectory_read",reason="purpose"} 10"#), "{metrics}");
}

/// Opens `GET path` as an event stream and reads it up to its `ready` event.
async fn open_stream(f: &Fixture, path: &str, token: &str) -> (tokio::net::TcpStream, Vec<u8>, String) {
    let mut sse = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n", f.addr);
    sse.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let head = read_until(&mut sse, &mut seen, "event: ready").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (sse, seen, head)
}

#[tokio::test]
async fn event_streams_carry_sightings_only_when_asked_with_a_purpose() {
    let f = fixture(true).await;
    // an integrator's default stream: no sightings, no trajectory updates, nothing audited
    let (mut sse, mut seen, head) = open_stream(&f, "/api/v1/events", &f.integrator).await;
    assert!(head.contains(r#"{"kinds":["alert","alert_ack","crowd","camera_status","agent_status"]}"#), "{head}");
    f.events.sighting(&sighting("plaza", NOW, None));
    f.events.alert(&alert("after-the-sighting", AlertKind::CameraOffline, AlertState::Raised, "lens", NOW));
    // events arrive in order: had the sighting been streamed, it would be here by now
    let text = read_until(&mut sse, &mut seen, "after-the-sighting").await;
    assert!(!text.contains("event: sighting"), "{text}");
    assert!(audit_all(&f.store).is_empty(), "a stream without personal data is not audited");

    // asked for without a purpose: refused, and audited
    for path in ["/api/v1/events?kinds=sighting", "/api/v1/events?kinds=alert,trajectory&purpose="] {
        let r = get(f.addr, path, Some(&f.integrator)).await;
        assert_eq!((r.status, r.json()["parameter"].as_str()), (400, Some("purpose")), "{path}");
        let e = last_audit(&f.store);
        assert_eq!(
            (e.outcome, e.action, e.purpose),
            (AuditOutcome::Refused, AuditAction::EventsStream, None),
            "{path}"
        );
    }
    // an operator cannot have them at all
    let r = get(f.addr, "/api/v1/events?kinds=sighting&purpose=case%207", Some(&f.operator)).await;
    assert_eq!(r.status, 403);

    // with one: streamed, and audited with it before the stream starts
    let (mut sse, mut seen, _) =
        open_stream(&f, "/api/v1/events?kinds=sighting,trajectory&purpose=case%207", &f.integrator).await;
    let e = last_audit(&f.store);
    assert_eq!(
        (e.outcome, e.action, e.purpose.as_deref()),
        (AuditOutcome::Answered, AuditAction::EventsStream, Some("case 7"))
    );
    assert_eq!(e.query["kinds"], json!(["sighting", "trajectory"]));
    let s = sighting("plaza", NOW, None);
    f.events.sighting(&s);
    let text = read_until(&mut sse, &mut seen, &s.id.to_string()).await;
    assert!(text.contains("event: sighting"), "{text}");
}

/// The bytes of a PNG whose header says `width` x `height` RGB pixels (its IDAT is empty): enough
/// for a decoder to read the dimensions, never decoded.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind.as_slice(), data].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = [width.to_be_bytes(), height.to_be_bytes()].concat();
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

fn photo_search(photo: &[u8], purpose: &str) -> String {
    use base64::Engine;
    json!({ "image": base64::engine::general_purpose::STANDARD.encode(photo), "purpose": purpose }).to_string()
}

fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[tokio::test]
async fn refused_photos_are_audited_with_their_digest_and_large_ones_are_not_decoded() {
    let f = fixture(true).await;
    let it = Some(f.integrator.as_str());
    // 40 Mpx: over the default 25 Mpx, refused from the header alone (this API has no face
    // pipeline: a photo that got further would be a 503)
    let big = png_header(8000, 5000);
    let r = request_with(f.addr, "POST", "/api/v1/search", it, Some(&photo_search(&big, "case 9"))).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["parameter"], "image");
    assert!(v["message"].as_str().unwrap().contains("8000x5000 pixels, over the limit of 25000000"), "{v}");
    let e = last_audit(&f.store);
    assert_eq!(
        (e.outcome, e.action, e.purpose.as_deref()),
        (AuditOutcome::Refused, AuditAction::Search, Some("case 9"))
    );
    assert_eq!(e.query["probe"]["digest"], digest(&big));
    assert_eq!(e.query["refused"]["status"], 400);
    assert_eq!(e.query["refused"]["parameter"], "image");

    // not an image: refused, audited with the digest of what was sent
    let junk = b"these bytes are not a photo".to_vec();
    let r = request_with(f.addr, "POST", "/api/v1/search", it, Some(&photo_search(&junk, "case 9"))).await;
    assert_eq!((r.status, r.json()["parameter"].as_str()), (400, Some("image")));
    let e = last_audit(&f.store);
    assert_eq!((e.outcome, e.query["probe"]["digest"].as_str()), (AuditOutcome::Refused, Some(digest(&junk).as_str())));

    // not base64: refused, audited without a digest (there are no bytes)
    let body = json!({ "image": "***", "purpose": "case 9" }).to_string();
    let r = request_with(f.addr, "POST", "/api/v1/search", it, Some(&body)).await;
    assert_eq!((r.status, r.json()["parameter"].as_str()), (400, Some("image")));
    let e = last_audit(&f.store);
    assert_eq!((e.outcome, &e.query["probe"]["digest"]), (AuditOutcome::Refused, &Value::Null));

    let metrics = String::from_utf8(get(f.addr, "/metrics", None).await.body).unwrap();
    assert!(metrics.contains(r#"sightline_aggregator_refused_accesses_total{action="search",reason="probe"} 3"#));
}

#[tokio::test]
async fn photos_wait_briefly_for_a_free_slot_then_get_503() {
    use sightline_aggregator::api::photos::PHOTO_WAIT;
    let f = fixture(true).await;
    let it = Some(f.integrator.as_str());
    let small = photo_search(&png_header(640, 480), "case 10");
    // every slot taken (as by photos being embedded)
    let slots = f.api.photos.slots(&f.api.search);
    let held = slots.clone().acquire_many_owned(f.api.search.max_concurrent_photos as u32).await.unwrap();
    let started = std::time::Instant::now();
    let r = request_with(f.addr, "POST", "/api/v1/search", it, Some(&small)).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (503, Some("busy")));
    assert!(started.elapsed() >= PHOTO_WAIT, "it waited for a slot: {:?}", started.elapsed());
    let e = last_audit(&f.store);
    assert_eq!((e.outcome, e.purpose.as_deref()), (AuditOutcome::Refused, Some("case 10")));
    assert_eq!(e.query["refused"]["error"], "busy");
    assert!(e.query["probe"]["digest"].is_null(), "refused before it was decoded");
    // an embedding needs no slot
    let body = json!({ "embedding": vec![0.125f32; 128], "purpose": "case 10" }).to_string();
    assert_eq!(request_with(f.addr, "POST", "/api/v1/search", it, Some(&body)).await.status, 200);
    // a slot freed while a photo waits: it goes on, to the face pipeline this API lacks (503
    // `unavailable`, not `busy`); the answer is the same had it arrived after the slot was freed
    let (addr, token) = (f.addr, f.integrator.clone());
    let waiting =
        tokio::spawn(async move { request_with(addr, "POST", "/api/v1/search", Some(&token), Some(&small)).await });
    tokio::time::sleep(PHOTO_WAIT / 4).await;
    drop(held);
    let r = waiting.await.unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (503, Some("unavailable")));
    assert_eq!(slots.available_permits(), f.api.search.max_concurrent_photos, "every slot is given back");
    let metrics = String::from_utf8(get(f.addr, "/metrics", None).await.body).unwrap();
    assert!(metrics.contains(r#"sightline_aggregator_refused_accesses_total{action="search",reason="busy"} 1"#));
}

#[tokio::test]
async fn the_openapi_document_requires_purpose_on_every_identity_operation() {
    let f = fixture(true).await;
    let doc = get(f.addr, "/api/v1/openapi.json", None).await.json();
    let max = api::MAX_PURPOSE_CHARS;
    for (path, method) in [
        ("/api/v1/trajectories", "get"),
        ("/api/v1/trajectories/{id}", "get"),
        ("/api/v1/trajectories/{id}/geojson", "get"),
        ("/api/v1/sightings/{id}", "get"),
        ("/api/v1/audit", "get"),
        ("/api/v1/watchlist", "get"),
        ("/api/v1/watchlist/{id}", "delete"),
        ("/api/v1/events", "get"),
    ] {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let p = params.iter().find(|p| p["name"] == "purpose").unwrap_or_else(|| panic!("{method} {path}"));
        // the event stream needs it only with sightings or trajectories
        assert_eq!(p["required"], path != "/api/v1/events", "{method} {path}: {p}");
        assert_eq!((p["schema"]["minLength"].as_u64(), p["schema"]["maxLength"].as_u64()), (Some(1), Some(max as u64)));
    }
    let schemas = &doc["components"]["schemas"];
    for name in ["SearchRequest", "WatchlistRequest"] {
        let s = &schemas[name];
        assert!(s["required"].as_array().unwrap().contains(&json!("purpose")), "{name}: {s}");
        let p = &s["properties"]["purpose"];
        assert_eq!((p["minLength"].as_u64(), p["maxLength"].as_u64()), (Some(1), Some(max as u64)), "{name}: {p}");
    }
    assert_eq!(schemas["AuditOutcome"]["enum"], json!(["answered", "refused"]));
}
