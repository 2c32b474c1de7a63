//! The aggregator binary on a PostgreSQL store (`[store] url` and `password_file`): it migrates a
//! fresh database, ingests into it, serves the API and the token CLI from it, and finds its data
//! again after a restart. The password is never logged. When PostgreSQL restarts mid-stream,
//! ingest pauses and resumes, and every sighting is stored exactly once. A second aggregator
//! whose config has another tree of sites than the database's refuses to start, naming the site.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sightline_aggregator::store::{PostgresStore, Store};
use sightline_contract::{Payload, topic};
use sightline_tests::pg::{PASSWORD, PgCluster};
use sightline_tests::{
    Aggregator, TWO_CAMERA_SITE, aggregator_config, eventually, free_port, http_get_as, publish, synthetic_face,
    synthetic_sighting,
};
use time::OffsetDateTime;

/// An aggregator config on `db` of `cluster`, its password in a file of `dir`.
fn pg_config(dir: &Path, cluster: &PgCluster, db: &str, port: u16) -> String {
    std::fs::write(dir.join("pg-password"), format!("{PASSWORD}\n")).unwrap();
    let config = aggregator_config(port, Path::new("unused.sqlite"), TWO_CAMERA_SITE).replace(
        "path = \"unused.sqlite\"",
        &format!("url = \"{}\"\npassword_file = \"pg-password\"", cluster.url(db)),
    );
    assert!(config.contains("password_file"), "{config}");
    config
}

#[test]
fn the_aggregator_runs_on_postgres_and_restarts_on_its_data() {
    let cluster = PgCluster::shared();
    let db = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = pg_config(dir.path(), &cluster, &db.name, port);

    let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    let token = agg.token("ops", "operator").unwrap();
    let s = synthetic_sighting("stage", OffsetDateTime::now_utc() - time::Duration::seconds(40), &synthetic_face(1));
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

#[test]
fn ingest_pauses_while_postgres_restarts_and_loses_nothing() {
    // a cluster of its own: it is stopped mid-test
    let cluster = Arc::new(PgCluster::start().unwrap());
    let db = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let agg = Aggregator::start_in(dir.path(), &pg_config(dir.path(), &cluster, &db.name, port), port).unwrap();
    let store = PostgresStore::open(&db.target).unwrap();
    let start = OffsetDateTime::now_utc() - time::Duration::seconds(600);
    let sightings: Vec<_> = (0..40)
        .map(|i| synthetic_sighting("stage", start + time::Duration::seconds(10 * i), &synthetic_face(i as usize)))
        .collect();
    let messages: Vec<_> = sightings.iter().map(|s| (topic::sighting(&s.site, &s.camera), s.to_json())).collect();
    let all_seen = |from: usize, to: usize| sightings[from..to].iter().all(|s| store.seen(s.id).unwrap_or(false));

    publish(port, &messages[..20]).unwrap();
    eventually("the first 20 stored", Duration::from_secs(20), || all_seen(0, 20)).unwrap();

    cluster.stop().unwrap();
    // the broker takes them; the aggregator cannot store them, so it acknowledges none yet
    publish(port, &messages[20..]).unwrap();
    agg.wait_log("store unavailable: ingest paused", 1, Duration::from_secs(30)).unwrap();
    cluster.serve().unwrap();
    agg.wait_log("ingest resumed", 1, Duration::from_secs(60)).unwrap();
    eventually("all 40 stored", Duration::from_secs(60), || all_seen(0, 40))
        .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));
    // exactly once, each on one trajectory
    let rows: i64 = db.admin().query_one("SELECT count(*) FROM sightings", &[]).unwrap().get(0);
    assert_eq!(rows, 40);
    let members: i64 =
        db.admin().query_one("SELECT coalesce(sum(sightings), 0)::bigint FROM trajectories", &[]).unwrap().get(0);
    assert_eq!(members, 40, "trajectory rows count each sighting once");
    let log = agg.log();
    agg.stop().unwrap();
    assert!(!log.contains("left unacknowledged"), "a sighting was given up on:\n{log}");
}

#[test]
fn an_aggregator_with_another_tree_of_sites_refuses_the_shared_database() {
    let cluster = PgCluster::shared();
    let db = cluster.database();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first_port = free_port();
    let first = pg_config(one.path(), &cluster, &db.name, first_port);
    let agg = Aggregator::start_in(one.path(), &first, first_port).unwrap();

    // the same site, now placed under a district the first config does not have
    let port = free_port();
    let other = pg_config(two.path(), &cluster, &db.name, port)
        .replace(
            "[site]\nid = \"testsite\"",
            "[[site]]\nid = \"district\"\n\n[[site]]\nid = \"testsite\"\nparent = \"district\"",
        )
        .replace("[[camera]]", "[[site.camera]]");
    let mut refused = Aggregator::spawn_in(two.path(), &other, port).unwrap();
    let status = wait_exit(&mut refused, Duration::from_secs(30));
    let log = refused.log();
    assert!(!status.success(), "it started on another tree; log:\n{log}");
    assert!(log.contains("another tree of sites") && log.contains("site \"district\""), "{log}");
    assert!(log.contains("aggregator sites apply"), "{log}");

    // applied on purpose, the new tree is the database's; the first config is the odd one now
    agg.stop().unwrap();
    let out = std::process::Command::new(sightline_tests::binary("aggregator"))
        .args(["sites", "apply", "--config"])
        .arg(two.path().join("aggregator.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Aggregator::start_in(two.path(), &other, port).unwrap().stop().unwrap();
    let mut stale = Aggregator::spawn_in(one.path(), &first, first_port).unwrap();
    assert!(!wait_exit(&mut stale, Duration::from_secs(30)).success(), "{}", stale.log());
}

/// Waits for the aggregator to exit by itself.
fn wait_exit(agg: &mut Aggregator, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = agg.proc.0.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "still running after {within:?}; log:\n{}", agg.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
