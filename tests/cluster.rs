//! Several aggregator nodes (`[cluster]`) on one PostgreSQL database and one mosquitto, six
//! sites of simulated sightings: each site is correlated by exactly one node at a time, every
//! sighting is stored exactly once, and each site's trajectories score the IDF1 a single
//! correlator scores on the same input, also when a site's owner is killed (`kill -9`)
//! mid-stream and another node takes the site over, and when PostgreSQL restarts mid-stream.
//!
//! Kinder than the world: the sites are six copies of the simulator's campus, published in one
//! burst from one client on loopback, and the nodes share one machine.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline_aggregator::correlate::{CorrelationConfig, Correlator};
use sightline_aggregator::store::postgres::locks::site_key;
use sightline_contract::{Payload, Sighting, topic};
use sightline_tests::pg::{PASSWORD, PgCluster, PgDatabase};
use sightline_tests::sim::{self, Scenario, SimRun, id_metrics};
use sightline_tests::{Aggregator, Mosquitto, eventually, http_request};
use time::OffsetDateTime;
use uuid::Uuid;

const SITES: usize = 6;
const NODES: usize = 3;

/// One site's simulated run, its sightings moved to the last half hour (the aggregator takes
/// nothing older than its `[ingest] max_age_s`, and a node taking a site over replays two
/// correlation horizons), as the edge would publish them.
struct SiteRun {
    id: String,
    run: SimRun,
    sightings: Vec<Sighting>,
}

fn site_runs() -> Vec<SiteRun> {
    (0..SITES)
        .map(|i| {
            let sc = Scenario {
                name: "cluster",
                seed: 300 + i as u64,
                people: 150,
                arrival_window_s: 1200.0,
                detect_prob: 0.8,
                poor_shot_prob: 0.05,
                lookalike_pairs: 4,
                late_prob: 0.08,
                late_s: (30.0, 600.0),
                ..Default::default()
            };
            let run = sim::simulate(&sc);
            let last = run.sightings.iter().map(|s| s.last_seen).max().unwrap();
            let shift = OffsetDateTime::now_utc() - time::Duration::seconds(30) - last;
            let id = format!("s{i}");
            let sightings = run
                .sightings
                .iter()
                .map(|s| {
                    sightline_contract::testing::sighting()
                        .id(s.id)
                        .site(&id)
                        .camera(&s.camera)
                        .first_seen(s.first_seen + shift)
                        .best_ts(s.first_seen + shift)
                        .last_seen(s.last_seen + shift)
                        .model(sim::MODEL)
                        .embedding(s.embedding.clone())
                        .build()
                })
                .collect();
            SiteRun { id, run, sightings }
        })
        .collect()
}

/// The IDF1 one correlator scores on a site's sightings in arrival order: the reference.
fn one_node_idf1(site: &SiteRun) -> f64 {
    let mut c = Correlator::new(CorrelationConfig::default(), site.run.site.site_model(false)).unwrap();
    let items: Vec<_> =
        site.run.sightings.iter().map(|s| (Some(s.person), Some(c.assign(s.observation()).trajectory))).collect();
    id_metrics(&items).idf1
}

/// The IDF1 of what the store holds for a site.
fn stored_idf1(db: &PgDatabase, site: &SiteRun) -> f64 {
    let placed: HashMap<Uuid, Uuid> = db
        .admin()
        .query("SELECT id, trajectory FROM sightings WHERE site = $1", &[&site.id])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let items: Vec<_> = site.run.sightings.iter().map(|s| (Some(s.person), placed.get(&s.id).copied())).collect();
    id_metrics(&items).idf1
}

/// The aggregator config of node `node`: no embedded broker, the shared database and broker,
/// the six sites under one district.
fn node_config(dir: &Path, db: &PgDatabase, mqtt_port: u16, node: usize, sites: &[SiteRun]) -> String {
    std::fs::write(dir.join("pg-password"), format!("{PASSWORD}\n")).unwrap();
    let mut text = format!(
        "[broker]\nembedded = false\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [store]\nurl = \"{}\"\npassword_file = \"pg-password\"\n\n[cluster]\nnode = \"node-{node}\"\nclaim_every_s = 0.5\n\n\
         [[site]]\nid = \"district\"\n",
        db.cluster.url(&db.name)
    );
    for s in sites {
        text.push_str(&format!("\n[[site]]\nid = \"{}\"\nparent = \"district\"\n", s.id));
        for c in &s.run.site.cameras {
            text.push_str(&format!(
                "\n[[site.camera]]\nid = \"{}\"\nposition = [{:?}, {:?}]\nview_radius_m = {:?}\n",
                c.id,
                c.position[0],
                c.position[1],
                sim::VIEW_RADIUS_M
            ));
        }
    }
    text
}

/// Each site's owner as PostgreSQL sees it (the node names of the lock sessions).
fn owners(db: &PgDatabase, sites: &[SiteRun]) -> BTreeMap<String, String> {
    let by_key: HashMap<i64, &str> = sites.iter().map(|s| (i64::from(site_key(&s.id)), s.id.as_str())).collect();
    db.admin()
        .query(
            "SELECT l.objid::bigint, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'sightline-node:%'",
            &[],
        )
        .unwrap()
        .iter()
        .filter_map(|r| {
            let (key, app): (i64, String) = (r.get(0), r.get(1));
            by_key.get(&key).map(|site| ((*site).to_owned(), app.trim_start_matches("sightline-node:").to_owned()))
        })
        .collect()
}

/// Every site owned, each node holding `SITES / nodes`.
fn balanced(db: &PgDatabase, sites: &[SiteRun], nodes: usize) -> bool {
    let owners = owners(db, sites);
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for node in owners.values() {
        *per_node.entry(node).or_default() += 1;
    }
    owners.len() == SITES && per_node.len() == nodes && per_node.values().all(|&n| n == SITES / nodes)
}

/// The sightings of every site in arrival order, interleaved site by site.
fn messages(sites: &[SiteRun], part: std::ops::Range<f64>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let longest = sites.iter().map(|s| s.sightings.len()).max().unwrap();
    for i in 0..longest {
        for s in sites {
            let n = s.sightings.len() as f64;
            if (i as f64) >= part.start * n && (i as f64) < part.end * n {
                let x = &s.sightings[i];
                out.push((topic::sighting(&x.site, &x.camera), x.to_json()));
            }
        }
    }
    out
}

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
    // a site's backlog waits in its session while its owner stores the messages one by one (and
    // while no node owns it): mosquitto's default of 1,000 queued messages per client would drop
    // the rest of a burst (docs/aggregator.md, "Several nodes")
    let mosquitto = Mosquitto::start_with("allow_anonymous true\nmax_queued_messages 0\n").unwrap();
    let sites = site_runs();
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
            let (code, r) =
                http_request("POST", &format!("{api}/search"), Some(&token), Some(&body.to_string())).unwrap();
            assert_eq!(code, 200, "{r}");
            assert!(
                r.contains(&s.id.to_string()),
                "node-{i} (owner of {} is {}) did not find sighting {}: {r}",
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
