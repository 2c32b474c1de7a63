//! The aggregator binary on a PostgreSQL store (`[store] url` and `password_file`): it migrates a
//! fresh database, ingests into it, serves the API and the token CLI from it, and finds its data
//! again after a restart. The password is never logged.

use std::path::Path;
use std::time::Duration;

use sightline_aggregator::store::{PostgresStore, Store};
use sightline_contract::{Payload, topic};
use sightline_tests::pg::{PASSWORD, PgCluster};
use sightline_tests::{Aggregator, aggregator_config, eventually, free_port, http_get_as, publish, synthetic_sighting};
use time::OffsetDateTime;

const SITE: &str = r#"
[site]
id = "testsite"

[[camera]]
id = "stage"
position = [0.0, 0.0]
"#;

/// A face-like embedding of norm 1.4 (dlib's are 1.25 to 1.55).
fn face(seed: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..128).map(|i| ((i * (31 + seed) % 101) as f32 / 101.0 - 0.5) * 0.3).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm * 1.4).collect()
}

#[test]
fn the_aggregator_runs_on_postgres_and_restarts_on_its_data() {
    let cluster = PgCluster::shared();
    let db = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pg-password"), format!("{PASSWORD}\n")).unwrap();
    let port = free_port();
    let config = aggregator_config(port, Path::new("unused.sqlite"), SITE).replace(
        "path = \"unused.sqlite\"",
        &format!("url = \"{}\"\npassword_file = \"pg-password\"", cluster.url(&db.name)),
    );
    assert!(config.contains("password_file"), "{config}");

    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    let token = agg.token("ops", "operator").unwrap();
    let s = synthetic_sighting("stage", OffsetDateTime::now_utc() - time::Duration::seconds(40), &face(1));
    publish(port, &[(topic::sighting(&s.site, &s.camera), s.to_json())]).unwrap();
    let store = PostgresStore::open(&db.target).unwrap();
    eventually("the sighting stored in PostgreSQL", Duration::from_secs(15), || store.seen(s.id).unwrap())
        .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));
    let api = agg.api_url().unwrap();
    let (code, body) = http_get_as(&format!("{api}/cameras"), Some(&token)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"stage\""), "{body}");
    let log = agg.log();
    agg.stop().unwrap();
    assert!(log.contains(&format!("postgres://sightline@127.0.0.1:{}/{}", cluster.port(), db.name)), "{log}");
    assert!(!log.contains(PASSWORD), "the password is in the log");

    // a restart finds the sighting (the correlator is rebuilt from it) and the token
    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    let log = agg.wait_log("correlators restored from the store", 1, Duration::from_secs(10)).unwrap();
    let line = log.lines().find(|l| l.contains("correlators restored from the store")).unwrap_or_default();
    assert!(line.contains("sightings=1"), "{line}");
    let (code, body) = http_get_as(&format!("{}/cameras", agg.api_url().unwrap()), Some(&token)).unwrap();
    assert_eq!(code, 200, "{body}");
    agg.stop().unwrap();
    assert_eq!(store.list_tokens().unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["ops"]);
    assert_eq!(
        store.trajectory(store.sighting(s.id).unwrap().unwrap().trajectory).unwrap().unwrap().sightings.len(),
        1
    );
}
