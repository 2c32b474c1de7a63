//! Several aggregator nodes on one PostgreSQL database and one broker (`[cluster]`): sites of
//! simulated sightings, each node's config, who owns which site, and the scores of what the
//! store holds against one correlator's (`tests/cluster.rs`, the cluster benchmark).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sightline_aggregator::correlate::{CorrelationConfig, Correlator};
use sightline_aggregator::store::postgres::locks::site_key;
use sightline_contract::{Payload, Sighting, topic};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::pg::{PASSWORD, PgDatabase};
use crate::sim::{self, Scenario, SimRun, id_metrics};

/// mosquitto's listener settings for a cluster: a site's backlog waits in its session while its
/// owner stores the messages one by one (and while no node owns it); mosquitto's default of 1,000
/// queued messages per client would drop the rest of a burst (docs/aggregator.md, "Several nodes").
pub const BROKER_SETTINGS: &str = "allow_anonymous true\nmax_queued_messages 0\n";

/// One site's simulated run, its sightings moved to the last half hour (the aggregator takes
/// nothing older than its `[ingest] max_age_s`, and a node taking a site over replays two
/// correlation horizons), as the edge would publish them.
pub struct SiteRun {
    pub id: String,
    pub run: SimRun,
    pub sightings: Vec<Sighting>,
}

pub fn site_runs(sites: usize) -> Vec<SiteRun> {
    (0..sites)
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
pub fn one_node_idf1(site: &SiteRun) -> f64 {
    let mut c = Correlator::new(CorrelationConfig::default(), site.run.site.site_model(false)).unwrap();
    let items: Vec<_> =
        site.run.sightings.iter().map(|s| (Some(s.person), Some(c.assign(s.observation()).trajectory))).collect();
    id_metrics(&items).idf1
}

/// The IDF1 of what the store holds for a site.
pub fn stored_idf1(db: &PgDatabase, site: &SiteRun) -> f64 {
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
pub fn node_config(dir: &Path, db: &PgDatabase, mqtt_port: u16, node: usize, sites: &[SiteRun]) -> String {
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
pub fn owners(db: &PgDatabase, sites: &[SiteRun]) -> BTreeMap<String, String> {
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

/// Every site owned, each of `nodes` nodes holding as many.
pub fn balanced(db: &PgDatabase, sites: &[SiteRun], nodes: usize) -> bool {
    let owners = owners(db, sites);
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for node in owners.values() {
        *per_node.entry(node).or_default() += 1;
    }
    owners.len() == sites.len() && per_node.len() == nodes && per_node.values().all(|&n| n == sites.len() / nodes)
}

/// The sightings of every site in arrival order, interleaved site by site.
pub fn messages(sites: &[SiteRun], part: std::ops::Range<f64>) -> Vec<(String, Vec<u8>)> {
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
