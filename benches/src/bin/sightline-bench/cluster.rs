//! `cluster`: aggregator nodes sharing sites (`[cluster]`), against one node given the same
//! input in the same run: the CPU seconds each node spends per sighting of the sites it owns
//! (its own ingest, and following what the other nodes store), over the one node's.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sightline_tests::cluster::{BROKER_SETTINGS, SiteRun, balanced, messages, node_config, owners, site_runs};
use sightline_tests::pg::PgCluster;
use sightline_tests::{Aggregator, Mosquitto, eventually, publish};

use crate::util::{Section, Table, cpu_s, ratio, thousands};

/// Sites of the simulated center, and how many nodes share them.
const SITES: usize = 6;
const NODES: usize = 3;
/// The most CPU per sighting a node of the cluster may spend, as a multiple of one node's.
const FLOOR: f64 = 1.2;

pub struct Opts<'a> {
    pub repo: &'a Path,
}

/// One run: how many nodes, each node's CPU seconds and the sightings of the sites it owned.
struct Run {
    nodes: Vec<(String, f64, usize)>,
    seconds: f64,
}

impl Run {
    /// The worst node's CPU seconds per sighting it owned.
    fn worst(&self) -> f64 {
        self.nodes.iter().map(|(_, cpu, n)| cpu / (*n).max(1) as f64).fold(0.0, f64::max)
    }

    fn total_cpu(&self) -> f64 {
        self.nodes.iter().map(|(_, cpu, _)| cpu).sum()
    }
}

pub fn run(o: &Opts) -> Result<Section> {
    let started = Instant::now();
    let aggregator = release_aggregator(o.repo)?;
    // durable, as a production server commits
    let pg = Arc::new(PgCluster::start_durable().context("starting PostgreSQL")?);
    let sites = site_runs(SITES);
    let total: usize = sites.iter().map(|s| s.sightings.len()).sum();
    let one = measure(&aggregator, &pg, &sites, 1)?;
    let three = measure(&aggregator, &pg, &sites, NODES)?;
    let (one_per, three_per) = (one.worst(), three.worst());
    let r = three_per / one_per;
    let verdict = if r <= FLOOR { "meets" } else { "MISSES" };
    let mut table = Table::new(
        "CPU seconds per sighting, each node over the sightings of the sites it owned",
        &["run", "node", "sites' sightings", "CPU s", "CPU ms per sighting", "wall s"],
    );
    for (label, run) in [("1 node", &one), ("3 nodes", &three)] {
        for (node, cpu, n) in &run.nodes {
            table.row(vec![
                label.into(),
                node.clone(),
                thousands(*n as f64),
                format!("{cpu:.2}"),
                format!("{:.3}", cpu * 1e3 / (*n).max(1) as f64),
                format!("{:.1}", run.seconds),
            ]);
        }
    }
    let headline = vec![format!(
        "{NODES} nodes sharing {SITES} sites: the busiest node spends **{} of one node's CPU per sighting** \
         ({:.3} vs {:.3} ms), {verdict} the ≤ {FLOOR}× floor; the cluster as a whole {}",
        ratio(r),
        three_per * 1e3,
        one_per * 1e3,
        ratio(three.total_cpu() / one.total_cpu()),
    )];
    let notes = vec![
        format!(
            "{SITES} sites of the multi-camera simulator (tests/src/cluster.rs), {} sightings, published in one burst \
             through mosquitto to the release aggregator on a durable PostgreSQL; both runs on the same input, one after \
             the other. A node's CPU (user + system, /proc) counts from just before the burst to when the store holds \
             every sighting: its own ingest and following what the other nodes store (live events, search index).",
            thousands(total as f64)
        ),
        "All nodes, PostgreSQL and mosquitto share this machine's cores: the nodes' wall time is not a scaling figure."
            .into(),
    ];
    let data = json!({
        "sightings": total,
        "one_node_cpu_ms_per_sighting": one_per * 1e3,
        "cluster_worst_cpu_ms_per_sighting": three_per * 1e3,
        "ratio": r,
        "floor": FLOOR,
        "nodes": three.nodes.iter().map(|(n, cpu, s)| json!({ "node": n, "cpu_s": cpu, "sightings": s })).collect::<Vec<_>>(),
    });
    Ok(Section {
        key: "cluster",
        title: format!("Aggregator cluster: {NODES} nodes sharing {SITES} sites against one node"),
        about: "CPU seconds per sighting of each aggregator node of a cluster (one owner per site, ADR 0015) over \
                the sightings of the sites it owns, against one node ingesting every site, on the same input."
            .into(),
        headline,
        tables: vec![table],
        notes,
        data,
        // the floor is the headline's verdict; `measure` fails the section when the store does
        // not come to hold every sighting
        ok: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `nodes` nodes on a fresh database and broker: each node's CPU over the burst.
fn measure(aggregator: &Path, pg: &Arc<PgCluster>, sites: &[SiteRun], nodes: usize) -> Result<Run> {
    eprintln!("cluster: {nodes} node(s)");
    let db = pg.database();
    let mosquitto = Mosquitto::start_with(BROKER_SETTINGS)?;
    let mut dirs = Vec::new();
    let mut running = Vec::new();
    for node in 0..nodes {
        let dir = tempfile::tempdir()?;
        let config = node_config(dir.path(), &db, mosquitto.port, node, sites);
        // (no debug log: it would be most of the work measured)
        let agg = Aggregator::spawn_binary(aggregator, "info,rumqttd=warn", dir.path(), &config, mosquitto.port)?;
        agg.wait_log("subscribed: ingesting", 1, Duration::from_secs(60))?;
        if node == 0 {
            eventually("the first node owns every site", Duration::from_secs(60), || balanced(&db, sites, 1))?;
        }
        dirs.push(dir);
        running.push(agg);
    }
    eventually("the sites spread over the nodes", Duration::from_secs(60), || balanced(&db, sites, nodes))?;
    let owned = owners(&db, sites);
    let before: Vec<f64> = running.iter().map(|a| cpu_s(&a.proc.0.id().to_string())).collect();
    let start = Instant::now();
    let total: usize = sites.iter().map(|s| s.sightings.len()).sum();
    publish(mosquitto.port, &messages(sites, 0.0..1.0))?;
    let stored = || -> i64 { db.admin().query_one("SELECT count(*) FROM sightings", &[]).map_or(0, |r| r.get(0)) };
    eventually("every sighting stored", Duration::from_secs(900), || stored() as usize >= total)
        .with_context(|| format!("{} of {total} sightings stored", stored()))?;
    let seconds = start.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for (i, agg) in running.iter().enumerate() {
        let name = format!("node-{i}");
        let cpu = cpu_s(&agg.proc.0.id().to_string()) - before[i];
        let n = sites.iter().filter(|s| owned.get(&s.id) == Some(&name)).map(|s| s.sightings.len()).sum();
        out.push((name, cpu, n));
    }
    for agg in running {
        agg.stop()?;
    }
    Ok(Run { nodes: out, seconds })
}

/// Builds (if needed) the release aggregator; returns its path.
fn release_aggregator(repo: &Path) -> Result<std::path::PathBuf> {
    eprintln!("cluster: cargo build --release --locked -p sightline-aggregator");
    let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--locked", "-p", "sightline-aggregator"])
        .current_dir(repo)
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("cargo build --release of the aggregator failed");
    }
    Ok(crate::edge::target_dir(repo).join("release/aggregator"))
}
