//! A center of several sites in a tree, end to end: the real aggregator binary with its embedded
//! broker and a config of five sites (district → east → riverside, district → west → harbour;
//! riverside and harbour both have a camera called `gate`). Sightings, crowd counts, alerts and
//! statuses of riverside and harbour go in over MQTT; tokens scoped to the east and west
//! townships read them back on every endpoint and stream. A township token sees its sites and
//! nothing of its sibling's: not in lists, not by id, not by search, not live; asking for a
//! sibling site is refused and audited.
//!
//! ```sh
//! cargo build --bins && cargo test -p sightline-tests --test site_scoping -- --nocapture
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use sightline_contract::{Payload, Sighting, new_event_id, topic, ts};
use sightline_tests::*;
use time::OffsetDateTime;

fn sighting(site: &str, camera: &str, at: OffsetDateTime, embedding: &[f32]) -> Sighting {
    sightline_contract::testing::sighting().site(site).camera(camera).at(at).embedding(embedding).build()
}

fn crowd(site: &str, camera: &str, at: OffsetDateTime, total: f64) -> (String, Vec<u8>) {
    let v = json!({
        "schema": "sightline.crowd/1", "id": new_event_id(), "site": site, "camera": camera,
        "ts": ts::format(at), "method": "density", "total": total, "zones": []
    });
    (topic::crowd(site, camera), serde_json::to_vec(&v).unwrap())
}

/// A raised zone alert; returns its stable id with the message.
fn alert(site: &str, camera: &str, at: OffsetDateTime) -> (String, (String, Vec<u8>)) {
    let id = new_event_id();
    let stable = format!("{site}:{camera}:zone:{id}");
    let v = json!({
        "schema": "sightline.alert/1", "id": id, "site": site, "camera": camera, "ts": ts::format(at),
        "alert": stable, "state": "raised", "kind": "zone_intrusion", "severity": "warning",
        "message": format!("zone intrusion on {site}/{camera}"), "details": {"persons": 1}
    });
    (stable, (topic::alert(site, camera), serde_json::to_vec(&v).unwrap()))
}

struct Client {
    api: String,
}

impl Client {
    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let (code, body) = http_get_as(&format!("{}{path}", self.api), Some(token)).unwrap();
        (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    fn ok(&self, path: &str, token: &str) -> Value {
        let (code, body) = self.get(path, token);
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let (code, text) =
            http_request("POST", &format!("{}{path}", self.api), Some(token), Some(&body.to_string())).unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().unwrap_or_else(|| panic!("no items in {v}"))
}

fn sites_of(v: &Value, field: &str) -> Vec<String> {
    let mut s: Vec<String> = items(v).iter().map(|i| i[field].as_str().unwrap_or("?").to_owned()).collect();
    s.sort();
    s.dedup();
    s
}

#[test]
fn township_tokens_see_their_sites_and_nothing_of_their_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = dir.path().join("agg.sqlite");
    let agg = Aggregator::start_in(dir.path(), &aggregator_config(port, &store, FIVE_SITES), port).unwrap();
    let c = Client { api: agg.api_url().unwrap() };
    let city = agg.token("city-dpo", "admin").unwrap();
    let east_ops = agg.token_of("east-desk", "operator", Some("east")).unwrap();
    let east_app = agg.token_of("east-app", "integrator", Some("east")).unwrap();
    let east_dpo = agg.token_of("east-dpo", "admin", Some("east")).unwrap();
    let west_app = agg.token_of("west-app", "integrator", Some("west")).unwrap();
    // a site that is not in the config is refused at creation, naming it
    let e = agg.token_of("nowhere", "operator", Some("east,northpole")).unwrap_err().to_string();
    assert!(e.contains("\"northpole\" is not a site"), "{e}");

    // the same person walks riverside's gate then hall; the same face is seen at harbour's gate
    let now = OffsetDateTime::now_utc();
    let at = |s: i64| now - time::Duration::seconds(s);
    let person = synthetic_face(1);
    let r1 = sighting("riverside", "gate", at(60), &person);
    let r2 = sighting("riverside", "hall", at(40), &person);
    let h1 = sighting("harbour", "gate", at(50), &person);
    let (r_alert, r_alert_msg) = alert("riverside", "gate", at(30));
    let (h_alert, h_alert_msg) = alert("harbour", "gate", at(30));
    let mut messages: Vec<(String, Vec<u8>)> =
        [&r1, &r2, &h1].iter().map(|s| (topic::sighting(&s.site, &s.camera), s.to_json())).collect();
    messages.extend([
        crowd("riverside", "gate", at(20), 5.0),
        crowd("harbour", "gate", at(20), 50.0),
        r_alert_msg,
        h_alert_msg,
    ]);
    publish(port, &messages).unwrap();
    let q = "purpose=scoping%20test";
    eventually("everything stored", Duration::from_secs(20), || {
        let (code, t) = c.get(&format!("/trajectories?{q}"), &city);
        let (_, a) = c.get("/alerts", &city);
        code == 200 && items(&t).len() == 2 && a["items"].as_array().is_some_and(|a| a.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));

    // ---- the tree ----
    let all = c.ok("/sites", &city);
    let ids: Vec<(&str, u64)> =
        items(&all).iter().map(|s| (s["id"].as_str().unwrap(), s["depth"].as_u64().unwrap())).collect();
    assert_eq!(ids, [("district", 0), ("east", 1), ("riverside", 2), ("west", 1), ("harbour", 2)]);
    let east = c.ok("/sites", &east_ops);
    let ids: Vec<&str> = items(&east).iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["east", "riverside"]);
    assert_eq!(items(&east)[0]["parent"], Value::Null, "the district above is not the token's to see");
    assert_eq!(items(&east)[1]["parent"], "east");
    assert_eq!(c.ok("/me", &east_ops)["sites"], json!(["east"]));
    assert_eq!(c.ok("/me", &city)["sites"], Value::Null);

    // ---- lists ----
    assert_eq!(sites_of(&c.ok("/cameras", &city), "site"), ["harbour", "riverside"]);
    assert_eq!(sites_of(&c.ok("/cameras", &east_ops), "site"), ["riverside"]);
    assert_eq!(items(&c.ok("/cameras", &east_ops)).len(), 2);
    assert_eq!(sites_of(&c.ok("/cameras?site=west", &city), "site"), ["harbour"]);
    let east_alerts = c.ok("/alerts", &east_ops);
    assert_eq!(items(&east_alerts).len(), 1, "{east_alerts}");
    assert_eq!(items(&east_alerts)[0]["alert"]["alert"], r_alert.as_str());
    // both sites have a camera `gate`: the crowd series holds riverside's counts only
    let since = ts::format(at(120));
    let series = c.ok(&format!("/crowd?camera=gate&since={since}"), &east_ops);
    let max = items(&series).iter().map(|b| b["max"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(max, 5.0, "{series}");
    let series = c.ok(&format!("/crowd?camera=gate&since={since}"), &city);
    assert_eq!(items(&series).iter().map(|b| b["max"].as_f64().unwrap()).fold(0.0, f64::max), 50.0);
    let east_traj = c.ok(&format!("/trajectories?{q}"), &east_app);
    assert_eq!(sites_of(&east_traj, "site"), ["riverside"]);
    assert_eq!(items(&east_traj)[0]["cameras"], json!(["gate", "hall"]), "one person across riverside's cameras");
    let west_traj = c.ok(&format!("/trajectories?{q}"), &west_app);
    assert_eq!(sites_of(&west_traj, "site"), ["harbour"]);

    // ---- by id: a sibling's items do not exist ----
    let harbour_traj = items(&west_traj)[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(c.get(&format!("/trajectories/{harbour_traj}?{q}"), &east_app).0, 404);
    assert_eq!(c.get(&format!("/trajectories/{harbour_traj}/geojson?{q}"), &east_app).0, 404);
    assert_eq!(c.get(&format!("/trajectories/{harbour_traj}?{q}"), &west_app).0, 200);
    assert_eq!(c.get(&format!("/sightings/{}?{q}", h1.id), &east_app).0, 404);
    assert_eq!(c.get(&format!("/sightings/{}?{q}", r1.id), &east_app).0, 200);
    assert_eq!(c.post(&format!("/alerts/{h_alert}/ack"), &east_ops, &json!({})).0, 404);
    assert_eq!(c.post(&format!("/alerts/{r_alert}/ack"), &east_ops, &json!({})).0, 200);

    // ---- search: the same face is found only where the token may look ----
    let probe = json!({ "embedding": person, "purpose": "scoping test", "max_distance": 0.3 });
    let found = |token: &str, body: &Value| {
        let (code, r) = c.post("/search", token, body);
        assert_eq!(code, 200, "{r}");
        let mut s: Vec<String> =
            r["sightings"].as_array().unwrap().iter().map(|h| h["site"].as_str().unwrap().to_owned()).collect();
        s.sort();
        s
    };
    assert_eq!(found(&city, &probe), ["harbour", "riverside", "riverside"]);
    assert_eq!(found(&east_app, &probe), ["riverside", "riverside"]);
    assert_eq!(found(&west_app, &probe), ["harbour"]);
    let mut narrowed = probe.clone();
    narrowed["site"] = json!("harbour");
    assert_eq!(found(&city, &narrowed), ["harbour"]);
    let (code, r) = c.post("/search", &east_app, &narrowed);
    assert_eq!((code, r["parameter"].as_str()), (403, Some("site")), "{r}");

    // ---- a sibling site asked for by name: refused and audited ----
    for path in ["/cameras?site=west", "/alerts?site=harbour", "/crowd?camera=gate&site=harbour", "/site?site=harbour"]
    {
        let (code, r) = c.get(path, &east_ops);
        assert_eq!((code, r["parameter"].as_str()), (403, Some("site")), "{path}: {r}");
    }
    let (code, r) = c.get(&format!("/trajectories?{q}&site=district"), &east_app);
    assert_eq!(code, 403, "the district above is outside the township's scope: {r}");
    // not a site id (too long, upper case, a path): a 400 naming `site`, nothing audited
    let audited_before = items(&c.ok(&format!("/audit?{q}&limit=1000"), &city)).len();
    for bad in ["x".repeat(300), "East".to_owned(), "..%2Fwest".to_owned(), "%00".to_owned()] {
        let (code, r) = c.get(&format!("/cameras?site={bad}"), &east_ops);
        assert_eq!((code, r["parameter"].as_str()), (400, Some("site")), "{bad}: {r}");
        assert!(!r.to_string().contains(&"x".repeat(100)), "the bad value is not echoed: {r}");
    }
    let audit_now = items(&c.ok(&format!("/audit?{q}&limit=1000"), &city)).len();
    assert_eq!(audit_now, audited_before + 1, "only the audit read itself was audited");
    // a token of every site asking for an unknown site: a 400 naming it
    let (code, r) = c.get("/cameras?site=atlantis", &city);
    assert_eq!((code, r["parameter"].as_str()), (400, Some("site")), "{r}");
    // the watchlist spans every site
    assert_eq!(c.get(&format!("/watchlist?{q}"), &east_dpo).0, 403);

    // ---- live events: a township's stream carries its sites' events only ----
    let mut stream = EventStream::open(&format!("{}/events?kinds=alert", c.api), Some(&east_ops)).unwrap();
    assert_eq!(stream.next(Duration::from_secs(5)).unwrap().event, "ready");
    let (h_live, h_msg) = alert("harbour", "gate", at(1));
    let (r_live, r_msg) = alert("riverside", "hall", at(1));
    // one ingest thread: harbour's is streamed before riverside's
    publish(port, &[h_msg, r_msg]).unwrap();
    let e = stream.next(Duration::from_secs(10)).unwrap();
    assert_eq!(e.event, "alert");
    let got: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(got["alert"], r_live.as_str(), "harbour's alert {h_live} must not reach the east stream");
    let (code, r) = c.get("/events?site=west", &east_ops);
    assert_eq!(code, 403, "{r}");

    // ---- the audit log: a township admin reads its township's records only ----
    let log = c.ok(&format!("/audit?{q}&limit=1000"), &east_dpo);
    let tokens: std::collections::BTreeSet<&str> = items(&log).iter().map(|r| r["token"].as_str().unwrap()).collect();
    assert!(tokens.contains("east-app") && tokens.contains("east-desk"), "{tokens:?}");
    assert!(!tokens.contains("west-app") && !tokens.contains("city-dpo"), "{tokens:?}");
    for r in items(&log) {
        assert_eq!(r["sites"], json!(["east"]), "{r}");
    }
    let refusals: Vec<&Value> = items(&log).iter().filter(|r| r["action"] == "out_of_scope").collect();
    assert!(refusals.len() >= 5, "each refused site is audited: {refusals:#?}");
    assert!(refusals.iter().all(|r| r["outcome"] == "refused"));
    let everything = c.ok(&format!("/audit?{q}&limit=1000"), &city);
    let all_tokens: std::collections::BTreeSet<&str> =
        items(&everything).iter().map(|r| r["token"].as_str().unwrap()).collect();
    assert!(all_tokens.contains("west-app") && all_tokens.contains("east-app"), "{all_tokens:?}");
    let west_only = c.ok(&format!("/audit?{q}&limit=1000&site=west"), &city);
    assert!(items(&west_only).iter().all(|r| r["token"] == "west-app"), "{west_only}");
    assert_eq!(c.get(&format!("/audit?{q}&site=west"), &east_dpo).0, 403);

    agg.stop().unwrap();
}
