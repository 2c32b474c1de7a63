//! Several aggregator nodes (`[cluster]`) on one PostgreSQL database and one mosquitto, six
//! sites of simulated sightings: each site is correlated by exactly one node at a time, every
//! sighting is stored exactly once, and each site's trajectories score the IDF1 a single
//! correlator scores on the same input, also when a site's owner is killed (`kill -9`)
//! mid-stream and another node takes the site over, and when PostgreSQL restarts mid-stream.
//!
//! Kinder than the world: the sites are six copies of the simulator's campus, published in one
//! burst from one client on loopback, and the nodes share one machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline_tests::cluster::{
    BROKER_SETTINGS, SiteRun, balanced, messages, node_config, one_node_idf1, owners, site_runs, stored_idf1,
};
use sightline_tests::pg::{PgCluster, PgDatabase};
use sightline_tests::{Aggregator, Mosquitto, eventually, http_request};

const SITES: usize = 6;
const NODES: usize = 3;

struct Center {
    db: PgDatabase,
    mosquitto: Mosquitto,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Aggregator>>,
    sites: Vec<SiteRun>,
}

/// The database, the broker, and the nodes, started one after the other: the first owns every
/// site (so every site's persistent session exists on the broker before anything is published),
/// then the sites spread over the nodes.
fn center() -> Center {
    center_on(PgCluster::shared().database())
}

/// [`center`] on `db`.
fn center_on(db: PgDatabase) -> Center {
    let mosquitto = Mosquitto::start_with(BROKER_SETTINGS).unwrap();
    let sites = site_runs(SITES);
    let mut center = Center { db, mosquitto, dirs: Vec::new(), nodes: Vec::new(), sites };
    for node in 0..NODES {
        let dir = tempfile::tempdir().unwrap();
        let config = node_config(dir.path(), &center.db, center.mosquitto.port, node, &center.sites);
        let agg = Aggregator::start_in(dir.path(), &config, center.mosquitto.port).unwrap();
        if node == 0 {
            eventually("the first node owns every site", Duration::from_secs(30), || {
                balanced(&center.db, &center.sites, 1)
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", agg.log()));
        }
        center.dirs.push(dir);
        center.nodes.push(Some(agg));
    }
    eventually("the sites spread over the nodes", Duration::from_secs(60), || {
        balanced(&center.db, &center.sites, NODES)
    })
    .unwrap_or_else(|e| panic!("{e}\nowners: {:?}\n{}", owners(&center.db, &center.sites), center.logs()));
    center
}

impl Center {
    fn logs(&self) -> String {
        self.nodes.iter().flatten().map(|a| a.log()).collect::<Vec<_>>().join("\n----\n")
    }

    fn total(&self) -> usize {
        self.sites.iter().map(|s| s.sightings.len()).sum()
    }

    fn stored(&self) -> i64 {
        self.db.admin().query_one("SELECT count(*) FROM sightings", &[]).unwrap().get(0)
    }

    /// Every sighting stored once, on one trajectory, and each site's IDF1 that of one
    /// correlator (± `tolerance`).
    fn check(&self, tolerance: f64) {
        let total = self.total();
        eventually("every sighting stored", Duration::from_secs(180), || self.stored() as usize >= total)
            .unwrap_or_else(|e| panic!("{e}: {} of {total}\n{}", self.stored(), self.logs()));
        let mut admin = self.db.admin();
        let rows: i64 = admin.query_one("SELECT count(*) FROM sightings", &[]).unwrap().get(0);
        assert_eq!(rows as usize, total, "stored exactly once");
        let members: i64 =
            admin.query_one("SELECT coalesce(sum(sightings), 0)::bigint FROM trajectories", &[]).unwrap().get(0);
        assert_eq!(members as usize, total, "each sighting on one trajectory");
        for site in &self.sites {
            let (one, stored) = (one_node_idf1(site), stored_idf1(&self.db, site));
            println!("{}: {} sightings, IDF1 one node {one:.4}, cluster {stored:.4}", site.id, site.sightings.len());
            assert!((one - stored).abs() <= tolerance, "{}: IDF1 {stored:.4} vs one node {one:.4}", site.id);
        }
    }
}

#[test]
fn three_nodes_share_six_sites_and_correlate_as_one() {
    let center = center();
    sightline_tests::publish(center.mosquitto.port, &messages(&center.sites, 0.0..1.0)).unwrap();
    center.check(0.01);
    // no node gave a message up, and the sites stayed where they were
    let logs = center.logs();
    assert!(!logs.contains("left unacknowledged"), "{logs}");
    // and every placement was announced: a node's following never holds up its publishing
    assert!(!logs.contains("trajectory update not published"), "{logs}");
    assert!(balanced(&center.db, &center.sites, NODES));

    // one node purges the shared store and expires the watchlist
    let elected = center.nodes.iter().flatten().filter(|a| a.log().contains("runs the retention job")).count();
    assert_eq!(elected, 1, "{logs}");

    // every node finds a face of every site, its own or another node's
    let owners = owners(&center.db, &center.sites);
    let token = center.nodes[0].as_ref().unwrap().token("investigator", "integrator").unwrap();
    for (i, node) in center.nodes.iter().flatten().enumerate() {
        let api = node.api_url().unwrap();
        for site in &center.sites {
            let s = site.sightings.last().unwrap();
            let body = serde_json::json!({ "embedding": s.embedding, "purpose": "cluster test", "max_distance": 0.01 });
            // (a node learns of what the others store as it follows their announcements: soon after)
            let mut last = String::new();
            let found = eventually("the sighting found", Duration::from_secs(60), || {
                let (code, r) =
                    http_request("POST", &format!("{api}/search"), Some(&token), Some(&body.to_string())).unwrap();
                assert_eq!(code, 200, "{r}");
                last = r;
                last.contains(&s.id.to_string())
            });
            assert!(
                found.is_ok(),
                "node-{i} (owner of {} is {}) did not find sighting {}: {last}",
                site.id,
                owners[&site.id],
                s.id
            );
        }
    }
}

#[test]
fn a_killed_owner_s_sites_are_taken_over_with_nothing_lost() {
    let mut center = center();
    let first = messages(&center.sites, 0.0..0.5);
    sightline_tests::publish(center.mosquitto.port, &first).unwrap();
    // mid-stream: some of the first half stored, not all of it
    eventually("a quarter stored", Duration::from_secs(60), || center.stored() as usize >= first.len() / 4).unwrap();

    let victim = owners(&center.db, &center.sites)["s0"].clone();
    let index: usize = victim.trim_start_matches("node-").parse().unwrap();
    let mut agg = center.nodes[index].take().unwrap();
    agg.proc.0.kill().unwrap();
    agg.proc.0.wait().unwrap();
    let killed = Instant::now();
    sightline_tests::publish(center.mosquitto.port, &messages(&center.sites, 0.5..1.0)).unwrap();

    eventually("the dead node's sites taken over", Duration::from_secs(15), || {
        balanced(&center.db, &center.sites, NODES - 1)
    })
    .unwrap_or_else(|e| panic!("{e}\nowners: {:?}\n{}", owners(&center.db, &center.sites), center.logs()));
    println!("sites of {victim} taken over {:.1} s after kill -9", killed.elapsed().as_secs_f64());
    let survivors = owners(&center.db, &center.sites);
    assert!(survivors.values().all(|n| *n != victim), "{survivors:?}");
    // s0's new owner rebuilt its correlator from what the dead node had stored (once the ingest
    // thread has handled what it had queued before)
    let rebuilt = || {
        center
            .logs()
            .lines()
            .filter(|l| l.contains("site taken: correlator restored") && l.contains("site=s0"))
            .filter_map(|l| l.split("sightings=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
    };
    eventually("s0 rebuilt from stored sightings", Duration::from_secs(60), || rebuilt() > 0)
        .unwrap_or_else(|e| panic!("{e}\n{}", center.logs()));
    center.check(0.01);
    drop(agg);
}

#[test]
fn postgres_restarting_mid_stream_pauses_the_nodes_and_loses_nothing() {
    // a PostgreSQL of its own: it is stopped mid-test
    let pg = Arc::new(PgCluster::start().unwrap());
    let center = center_on(pg.database());
    let first = messages(&center.sites, 0.0..0.5);
    sightline_tests::publish(center.mosquitto.port, &first).unwrap();
    eventually("a quarter stored", Duration::from_secs(60), || center.stored() as usize >= first.len() / 4).unwrap();

    pg.stop().unwrap();
    sightline_tests::publish(center.mosquitto.port, &messages(&center.sites, 0.5..1.0)).unwrap();
    let noticed = |needle: &str| center.nodes.iter().flatten().all(|a| a.log().contains(needle));
    eventually("every node lost its PostgreSQL session", Duration::from_secs(30), || {
        noticed("lost its PostgreSQL session")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", center.logs()));
    pg.serve().unwrap();
    eventually("the sites owned and spread again", Duration::from_secs(60), || {
        balanced(&center.db, &center.sites, NODES)
    })
    .unwrap_or_else(|e| panic!("{e}\nowners: {:?}\n{}", owners(&center.db, &center.sites), center.logs()));
    center.check(0.01);
    assert!(!center.logs().contains("left unacknowledged"), "a message was given up on:\n{}", center.logs());
}
