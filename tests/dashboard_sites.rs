//! The operator dashboard of a center of several sites, in a real browser: the aggregator with a
//! tree of five sites (district → east → riverside, district → west → harbour; riverside and the
//! harbour both have a camera `gate`), an alert raised at each camera site, and two operator
//! tokens: one of every site, one scoped to the east township. Then `node ui/e2e/sites.mjs`
//! (chromium, headless) checks that the site picker follows the tree and the token's scope, and
//! that choosing a site scopes the alerts and the camera cards. A test binary of its own, so it
//! does not share the two cores with the other browser test.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sightline_contract::{new_event_id, topic, ts};
use sightline_tests::browser::{CHROMIUM, artifacts, check_prerequisites, run_bounded, workspace};
use sightline_tests::*;
use time::OffsetDateTime;

const CAMERAS: [(&str, &str); 3] = [("riverside", "gate"), ("riverside", "hall"), ("harbour", "gate")];

/// A raised zone alert at `site`/`camera`: its stable key and the message.
fn alert(site: &str, camera: &str) -> (String, (String, Vec<u8>)) {
    let stable = format!("{site}:{camera}:zone:e2e");
    let v = json!({
        "schema": "sightline.alert/1", "id": new_event_id(), "site": site, "camera": camera,
        "ts": ts::format(OffsetDateTime::now_utc() - time::Duration::seconds(5)),
        "alert": stable, "state": "raised", "kind": "zone_intrusion", "severity": "warning",
        "message": format!("zone intrusion on {site}/{camera}"), "details": {"persons": 1}
    });
    (stable, (topic::alert(site, camera), serde_json::to_vec(&v).unwrap()))
}

#[test]
fn the_dashboard_follows_the_site_tree_and_the_token_scope() {
    let root = workspace();
    check_prerequisites(&root, "sites.mjs", &["playwright-core"]);
    let artifacts = artifacts("dashboard-sites");
    eprintln!("screenshots and node's output: {}", artifacts.display());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agg =
        Aggregator::start_in(dir.path(), &aggregator_config(port, &dir.path().join("agg.sqlite"), FIVE_SITES), port)
            .unwrap();
    let api = agg.api_url().unwrap();
    let city = agg.token("city-desk", "operator").unwrap();
    let east = agg.token_of("east-desk", "operator", Some("east")).unwrap();
    let alerts: Vec<(String, String, (String, Vec<u8>))> = [("riverside", "gate"), ("harbour", "gate")]
        .into_iter()
        .map(|(site, camera)| {
            let (key, msg) = alert(site, camera);
            (site.to_owned(), key, msg)
        })
        .collect();
    publish(port, &alerts.iter().map(|(_, _, m)| m.clone()).collect::<Vec<_>>()).unwrap();
    eventually("both alerts stored", Duration::from_secs(15), || {
        let (code, body) = http_get_as(&format!("{api}/alerts"), Some(&city)).unwrap();
        code == 200 && serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"].as_array().unwrap().len() == 2
    })
    .unwrap();

    let base = api.trim_end_matches("/api/v1").to_owned();
    let mut node = Command::new("node");
    node.arg("ui/e2e/sites.mjs")
        .current_dir(&root)
        .env("SIGHTLINE_URL", &base)
        .env("SIGHTLINE_TOKEN_CITY", &city)
        .env("SIGHTLINE_TOKEN_EAST", &east)
        .env("SIGHTLINE_SITES_ALL", "district,east,riverside,west,harbour")
        .env("SIGHTLINE_SITES_EAST", "east,riverside")
        .env("SIGHTLINE_ALERTS", alerts.iter().map(|(s, k, _)| format!("{s}:{k}")).collect::<Vec<_>>().join(","))
        .env("SIGHTLINE_CAMERAS", CAMERAS.iter().map(|(s, c)| format!("{s}:{c}")).collect::<Vec<_>>().join(","))
        .env("SIGHTLINE_ARTIFACTS", &artifacts)
        .env("SIGHTLINE_CHROMIUM", CHROMIUM);
    let (status, stdout, stderr) = run_bounded(node, &artifacts, Duration::from_secs(120));
    eprintln!("{stdout}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser run failed ({status:?}):\n{stdout}\n{stderr}\naggregator log:\n{}",
        agg.log()
    );
    assert!(stdout.contains("e. the east operator's picker: east, riverside"), "{stdout}");
    agg.stop().unwrap();
}
