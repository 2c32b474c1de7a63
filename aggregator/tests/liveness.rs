//! Liveness through the API, over a real socket on a real SQLite store: the cameras of an offline
//! agent are `unknown`, alerts raised by an agent that went away (offline, or restarted since) are
//! `stale`, and only an admin closes a stale alert, with a reason, audited and streamed.

use std::sync::Arc;

use serde_json::{Value, json};
use sightline_aggregator::api::{self, ApiState};
use sightline_aggregator::auth::{new_token, token_hash};
use sightline_aggregator::site::{CameraPlace, SiteConfig, SiteModel};
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

fn camera_status(camera: &str, agent: &str) -> CameraStatus {
    CameraStatus {
        site: "riverside".into(),
        camera: camera.into(),
        ts: T0,
        agent: agent.into(),
        state: CameraState::Streaming,
        fps_in: Some(25.0),
        fps_analyzed: Some(5.0),
        frames_dropped: Some(0),
        codec: None,
        resolution: None,
        detail: None,
    }
}

fn agent_status(agent: &str, state: AgentState, cameras: Option<&[&str]>, started: OffsetDateTime) -> AgentStatus {
    AgentStatus {
        site: "riverside".into(),
        agent: agent.into(),
        // a Will's ts is its connect time: older than anything
        ts: started,
        state,
        version: Some("0.1.0".into()),
        cameras: cameras.map(|c| c.iter().map(|s| s.to_string()).collect()),
        started: Some(started),
    }
}

fn raised(alert: &str, camera: &str, ts: OffsetDateTime) -> Alert {
    Alert {
        id: Uuid::now_v7(),
        site: "riverside".into(),
        camera: camera.into(),
        ts,
        alert: alert.into(),
        state: AlertState::Raised,
        kind: AlertKind::CameraOffline,
        severity: Severity::Critical,
        zone: None,
        message: format!("camera {camera} offline"),
        details: Some(json!({"silence_s": 10.0})),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    addr: std::net::SocketAddr,
    operator: String,
    admin: String,
    events: sightline_aggregator::events::Events,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// gate (edge-1) and lens (edge-2) streaming, each with a raised `camera_offline`; then edge-1's
/// Last Will arrives (dated at its connect time, received at T0 + 60 s).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("aggregator.sqlite")).unwrap());
    let token = |name: &str, role| {
        let secret = new_token();
        store.create_token(name, role, None, &token_hash(&secret), T0).unwrap();
        secret
    };
    let operator = token("ops-desk", Role::Operator);
    let admin = token("dpo", Role::Admin);
    for (camera, agent) in [("gate", "edge-1"), ("lens", "edge-2")] {
        store.put_camera("riverside", camera, Some([0.0, 0.0])).unwrap();
        store.record_camera_status(&camera_status(camera, agent), T0).unwrap();
        store.record_agent_status(&agent_status(agent, AgentState::Online, Some(&[camera]), T0), T0).unwrap();
        store.record_alert(&raised(&format!("{camera}:camera_offline:-:1"), camera, T0 + secs(10)), T0).unwrap();
    }
    store.record_agent_status(&agent_status("edge-1", AgentState::Offline, None, T0), T0 + secs(60)).unwrap();

    let place = |id: &str| CameraPlace {
        id: id.into(),
        position: [0.0, 0.0],
        view_radius_m: 10.0,
        homography: None,
        agent: None,
    };
    let site = SiteModel::new(SiteConfig::new("riverside"), vec![place("gate"), place("lens")], vec![]).unwrap();
    let state = ApiState::new(store.clone(), Arc::new(FixedClock), Arc::new(Sites::single(site)));
    let events = state.events.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(api::serve(listener, Arc::new(state), rx));
    Fixture { _dir: dir, store, addr, operator, admin, events, _stop: stop }
}

/// One HTTP/1.1 request (`Connection: close`) with an optional JSON body: status and JSON answer.
async fn call(addr: std::net::SocketAddr, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let kind = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{kind}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    (status, json)
}

fn find<'a>(items: &'a Value, key: &str, value: &str) -> &'a Value {
    items["items"].as_array().unwrap().iter().find(|i| i[key] == value).unwrap_or_else(|| panic!("no {value}"))
}

#[tokio::test]
async fn cameras_of_an_offline_agent_are_unknown() {
    let f = fixture().await;
    let (code, cams) = call(f.addr, "GET", "/api/v1/cameras", &f.operator, None).await;
    assert_eq!(code, 200, "{cams}");
    let gate = find(&cams, "camera", "gate");
    assert_eq!(gate["state"], "unknown", "{gate:#}");
    assert_eq!(gate["state_detail"], "edge agent edge-1 offline since 2026-11-23T08:01:00.000Z");
    assert_eq!(gate["agent"], json!({"id": "edge-1", "state": "offline", "since": "2026-11-23T08:01:00.000Z"}));
    assert_eq!(gate["status"]["state"], "streaming", "the last report stays as received");
    let lens = find(&cams, "camera", "lens");
    assert_eq!((&lens["state"], &lens["agent"]["state"]), (&json!("streaming"), &json!("online")));

    // the agent comes back: its cameras are what they report again
    f.store
        .record_agent_status(&agent_status("edge-1", AgentState::Online, Some(&["gate"]), T0), T0 + secs(90))
        .unwrap();
    let (_, cams) = call(f.addr, "GET", "/api/v1/cameras", &f.operator, None).await;
    assert_eq!(find(&cams, "camera", "gate")["state"], "streaming");
}

#[tokio::test]
async fn alerts_of_an_agent_that_went_away_are_stale_and_an_admin_closes_them() {
    let f = fixture().await;
    let mut live = f.events.subscribe();
    let (code, alerts) = call(f.addr, "GET", "/api/v1/alerts", &f.operator, None).await;
    assert_eq!(code, 200, "{alerts}");
    let gate = alerts["items"].as_array().unwrap().iter().find(|i| i["alert"]["camera"] == "gate").unwrap();
    assert_eq!((&gate["stale"], &gate["stale_since"]), (&json!(true), &json!("2026-11-23T08:01:00.000Z")), "{gate:#}");
    let lens = alerts["items"].as_array().unwrap().iter().find(|i| i["alert"]["camera"] == "lens").unwrap();
    assert_eq!((&lens["stale"], &lens["stale_since"]), (&json!(false), &Value::Null));

    let close = |alert: &str, token: &str, body: Option<&str>| {
        let path = format!("/api/v1/alerts/{}/close", alert.replace(':', "%3A"));
        let (addr, token, body) = (f.addr, token.to_owned(), body.map(str::to_owned));
        async move { call(addr, "POST", &path, &token, body.as_deref()).await }
    };
    let reason = r#"{"reason": "edge-1 decommissioned, camera replaced"}"#;
    // operators may not; bad reasons are named; unknown alerts are 404; live agents' alerts are 409
    assert_eq!(close("gate:camera_offline:-:1", &f.operator, Some(reason)).await.0, 403);
    for bad in [r#"{}"#, r#"{"reason": "   "}"#, &format!(r#"{{"reason": "{}"}}"#, "x".repeat(501))] {
        let (code, body) = close("gate:camera_offline:-:1", &f.admin, Some(bad)).await;
        assert_eq!((code, &body["parameter"]), (400, &json!("reason")), "{bad}: {body}");
    }
    let (code, body) = close("gate:camera_offline:-:1", &f.admin, Some(r#"{"reason": "x", "force": true}"#)).await;
    assert_eq!(code, 400, "unknown fields are refused: {body}");
    assert_eq!(close("gate:camera_offline:-:1", &f.admin, None).await.0, 400, "a body is required");
    assert_eq!(close("nope", &f.admin, Some(reason)).await.0, 404);
    let (code, body) = close("lens:camera_offline:-:1", &f.admin, Some(reason)).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("edge-2 is online"), "{body}");
    assert!(f.store.audit_log(&AuditQuery { limit: 100, ..Default::default() }).unwrap().is_empty());

    let (code, clear) = close("gate:camera_offline:-:1", &f.admin, Some(reason)).await;
    assert_eq!(code, 200, "{clear}");
    assert_eq!((&clear["state"], &clear["alert"]), (&json!("cleared"), &json!("gate:camera_offline:-:1")));
    assert_eq!(clear["details"], json!({"closed_by": "dpo", "reason": "edge-1 decommissioned, camera replaced"}));
    assert_eq!(clear["ts"], "2026-11-23T09:00:00.000Z");
    // the answer is the OpenAPI document's `Alert`: its fields, the required ones present
    let (_, doc) = call(f.addr, "GET", "/api/v1/openapi.json", &f.operator, None).await;
    let ok = &doc["paths"]["/api/v1/alerts/{id}/close"]["post"]["responses"]["200"]["content"]["application/json"];
    assert_eq!(ok["schema"]["$ref"], "#/components/schemas/Alert", "{ok}");
    let schema = &doc["components"]["schemas"]["Alert"];
    let props = schema["properties"].as_object().unwrap();
    assert!(clear.as_object().unwrap().keys().all(|k| props.contains_key(k)), "{clear} vs {schema}");
    assert!(schema["required"].as_array().unwrap().iter().all(|r| clear.get(r.as_str().unwrap()).is_some()));
    let body = &doc["paths"]["/api/v1/alerts/{id}/close"]["post"]["requestBody"];
    assert!(body.to_string().contains("CloseRequest"), "{body}");
    // streamed live, stored, audited with the reason
    let event = live.try_recv().expect("the clear is a live event");
    assert_eq!(event.kind, sightline_aggregator::events::EventKind::Alert);
    assert!(event.json.contains("edge-1 decommissioned"), "{}", event.json);
    let audit = f.store.audit_log(&AuditQuery { limit: 100, ..Default::default() }).unwrap();
    assert_eq!(audit.len(), 1);
    let e = &audit[0].entry;
    assert_eq!((e.action, e.token.as_str(), e.role), (AuditAction::AlertClose, "dpo", Role::Admin));
    assert_eq!(e.purpose.as_deref(), Some("edge-1 decommissioned, camera replaced"));
    assert_eq!(e.query["alert"], "gate:camera_offline:-:1");
    assert_eq!(e.query["agent"], "edge-1");
    let (_, alerts) = call(f.addr, "GET", "/api/v1/alerts?camera=gate", &f.operator, None).await;
    let items = alerts["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["stale"] == false), "cleared: no longer stale: {alerts:#}");
    // closed already
    let (code, body) = close("gate:camera_offline:-:1", &f.admin, Some(reason)).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not raised"), "{body}");
}

#[tokio::test]
async fn alerts_of_a_previous_process_stay_stale_after_the_agent_returns() {
    let f = fixture().await;
    // edge-2 restarts (no Will seen: a quick restart by systemd): a new process is online
    let restarted = agent_status("edge-2", AgentState::Online, Some(&["lens"]), T0 + secs(100));
    f.store.record_agent_status(&restarted, T0 + secs(101)).unwrap();
    // and raises a new alert of its own
    f.store.record_alert(&raised("lens:camera_frozen:-:2", "lens", T0 + secs(120)), T0 + secs(120)).unwrap();
    let (_, alerts) = call(f.addr, "GET", "/api/v1/alerts?camera=lens", &f.operator, None).await;
    let by_id =
        |id: &str| alerts["items"].as_array().unwrap().iter().find(|i| i["alert"]["alert"] == id).unwrap().clone();
    let old = by_id("lens:camera_offline:-:1");
    assert_eq!((&old["stale"], &old["stale_since"]), (&json!(true), &json!("2026-11-23T08:01:40.000Z")));
    assert_eq!(by_id("lens:camera_frozen:-:2")["stale"], false, "the new process's own alert");
    let (_, cams) = call(f.addr, "GET", "/api/v1/cameras", &f.operator, None).await;
    assert_eq!(find(&cams, "camera", "lens")["state"], "streaming");
    let (code, clear) = call(
        f.addr,
        "POST",
        "/api/v1/alerts/lens%3Acamera_offline%3A-%3A1/close",
        &f.admin,
        Some(r#"{"reason": "orphan of the crashed process"}"#),
    )
    .await;
    assert_eq!(code, 200, "{clear}");
    let (code, _) = call(
        f.addr,
        "POST",
        "/api/v1/alerts/lens%3Acamera_frozen%3A-%3A2/close",
        &f.admin,
        Some(r#"{"reason": "try"}"#),
    )
    .await;
    assert_eq!(code, 409, "a live process clears its own alerts");
}
