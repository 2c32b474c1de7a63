//! `ingest`: what the aggregator's ingest thread does per sighting (`ingest/worker.rs` and
//! `ingest/batch.rs`), with many trajectories live, one message at a time and by group commit, on
//! SQLite and on PostgreSQL, against the floor of issue 15: 5,000 sightings/s on one node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use sightline_aggregator::correlate::{CorrelationConfig, Correlator, Observation};
use sightline_aggregator::ingest::MAX_MESSAGES;
use sightline_aggregator::search::SearchIndex;
use sightline_aggregator::site::{CameraPlace, SiteConfig, SiteModel};
use sightline_aggregator::store::{PostgresStore, SightingPlacement, SqliteStore, Store};
use sightline_contract::{BestShot, Sighting, testing};
use sightline_tests::pg::PgCluster;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::util::{DIM, Rng, Section, Stats, Table, ms, ratio, status_kib, thousands};

const MODEL: &str = "dlib-resnet-v1";
const SITE: &str = "bench";
/// "Now": the preloaded trajectories lie in the hour before, the new sightings after.
const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const CAMERAS: usize = 16;
const SPACING_M: f64 = 50.0;
/// New sightings arrive this far apart in event time (20 000 take 20 minutes).
const EVERY_MS: i64 = 60;
/// Issue 15's floor: sightings/s on one node with 100k live trajectories, on each backend.
const FLOOR_PER_S: f64 = 5_000.0;

pub struct Opts {
    pub quick: bool,
    pub seed: u64,
    /// New sightings timed per run; `None`: 5,000 (quick: 2,000).
    pub sightings: Option<usize>,
}

fn cam_id(c: usize) -> String {
    format!("cam-{c:02}")
}

fn position(c: usize) -> [f64; 2] {
    [(c % 4) as f64 * SPACING_M, (c / 4) as f64 * SPACING_M]
}

fn sighting(
    id: Uuid,
    camera: usize,
    first: OffsetDateTime,
    last: OffsetDateTime,
    track: u64,
    embedding: Vec<f32>,
) -> Sighting {
    testing::sighting()
        .id(id)
        .site(SITE)
        .camera(cam_id(camera))
        .track(track)
        .first_seen(first)
        .last_seen(last)
        .best(BestShot {
            ts: last,
            bbox: [400.0, 200.0, 96.0, 120.0],
            landmarks: [[430.0, 250.0], [465.0, 250.0], [448.0, 270.0], [435.0, 295.0], [462.0, 295.0]],
            det_score: 0.93,
            quality: 0.6,
        })
        .frame_size([1280, 720])
        .model(MODEL)
        .embedding(embedding)
        .build()
}

/// What every run starts from and ingests.
struct Workload {
    live: usize,
    site: SiteModel,
    cfg: CorrelationConfig,
    /// The live trajectories' sightings, in event-time order, with their trajectory.
    preload: Vec<(Sighting, Uuid)>,
    /// The sightings to ingest, in arrival order.
    new: Vec<Sighting>,
    returning: usize,
}

fn workload(o: &Opts) -> Result<Workload> {
    let live = if o.quick { 10_000 } else { 100_000 };
    let count = o.sightings.unwrap_or(if o.quick { 2_000 } else { 5_000 });
    let mut rng = Rng(o.seed ^ 0x1a6e57);
    let site = SiteModel::new(
        SiteConfig::new(SITE),
        (0..CAMERAS)
            .map(|c| CameraPlace {
                id: cam_id(c),
                position: position(c),
                view_radius_m: 10.0,
                homography: None,
                agent: None,
            })
            .collect(),
        vec![],
    )?;

    // `live` people, each seen by two cameras in the last hour
    let mut faces = vec![0f32; live * DIM];
    let mut ends = Vec::with_capacity(live);
    let mut preload = Vec::with_capacity(2 * live);
    for p in 0..live {
        rng.unit(&mut faces[p * DIM..(p + 1) * DIM]);
        let face = &faces[p * DIM..(p + 1) * DIM];
        let traj = Uuid::from_u128(0x7000_0000_0000_0000_0000_0000_0000_0000 | p as u128);
        let (a, b) = (rng.below(CAMERAS), rng.below(CAMERAS));
        let walk_s = (((position(a)[0] - position(b)[0]).hypot(position(a)[1] - position(b)[1]) - 20.0).max(0.0)) / 1.4;
        let start = T0 - time::Duration::seconds_f64(60.0 + 3540.0 * rng.unit_f64());
        let end_a = start + time::Duration::seconds_f64(2.0 + 4.0 * rng.unit_f64());
        let start_b = end_a + time::Duration::seconds_f64(walk_s + 5.0 + 20.0 * rng.unit_f64());
        let end_b = start_b + time::Duration::seconds_f64(2.0 + 4.0 * rng.unit_f64());
        ends.push(end_b);
        for (k, (cam, s, e)) in [(a, start, end_a), (b, start_b, end_b)].into_iter().enumerate() {
            let mut emb = vec![0f32; DIM];
            let by = 0.1 + 0.15 * rng.unit_f64() as f32;
            rng.near(face, by, &mut emb);
            let id = Uuid::from_u128(0x5000_0000_0000_0000_0000_0000_0000_0000 | (2 * p + k) as u128);
            preload.push((sighting(id, cam, s, e, (2 * p + k) as u64, emb), traj));
        }
    }
    // replayed in event-time order, as `service::run` does from the store
    preload.sort_by_key(|(s, _)| s.first_seen);

    // the new sightings: half a known person again, half somebody new
    let mut new = Vec::with_capacity(count);
    let mut returning = 0;
    for i in 0..count {
        let first = T0 + time::Duration::milliseconds(i as i64 * EVERY_MS);
        let last = first + time::Duration::seconds_f64(1.0 + 4.0 * rng.unit_f64());
        let cam = rng.below(CAMERAS);
        let mut emb = vec![0f32; DIM];
        let mut face = None;
        if i % 2 == 0 {
            // somebody whose trajectory ended in the last 25 minutes (within the horizon)
            for _ in 0..64 {
                let p = rng.below(live);
                if ends[p] >= first - time::Duration::minutes(25) && ends[p] + time::Duration::seconds(90) < first {
                    face = Some(p);
                    break;
                }
            }
        }
        match face {
            Some(p) => {
                returning += 1;
                let by = 0.1 + 0.15 * rng.unit_f64() as f32;
                rng.near(&faces[p * DIM..(p + 1) * DIM], by, &mut emb);
            }
            None => {
                let mut f = [0f32; DIM];
                rng.unit(&mut f);
                rng.near(&f, 0.15, &mut emb);
            }
        }
        let id = Uuid::from_u128(0x6000_0000_0000_0000_0000_0000_0000_0000 | i as u128);
        new.push(sighting(id, cam, first, last, i as u64, emb));
    }
    Ok(Workload { live, site, cfg: CorrelationConfig::default(), preload, new, returning })
}

/// Resident bytes the live state takes.
struct Memory {
    per_live_trajectory: f64,
    per_indexed_embedding: f64,
}

/// The correlator and the search index as a restarted aggregator rebuilds them: every preloaded
/// sighting restored (`Correlator::restore`) and indexed.
fn live_state(w: &Workload) -> Result<(Correlator, SearchIndex, Memory)> {
    let mut correlator = Correlator::new(w.cfg.clone(), w.site.clone())?;
    let mut index = SearchIndex::new(MODEL, DIM);
    let rss_before = status_kib("self", "VmRSS");
    for (s, traj) in &w.preload {
        correlator.restore(Observation::from_sighting(s), *traj);
    }
    let rss_correlator = status_kib("self", "VmRSS");
    for (s, traj) in &w.preload {
        index.insert(s.id, *traj, &s.site, &s.camera, s.last_seen, &s.embedding)?;
    }
    let rss_index = status_kib("self", "VmRSS");
    anyhow::ensure!(correlator.live() == w.live, "correlator holds {} trajectories, not {}", correlator.live(), w.live);
    let memory = Memory {
        per_live_trajectory: (rss_correlator - rss_before) * 1024.0 / w.live as f64,
        per_indexed_embedding: (rss_index - rss_correlator) * 1024.0 / w.preload.len() as f64,
    };
    Ok((correlator, index, memory))
}

fn put_cameras(store: &dyn Store) -> Result<()> {
    for c in 0..CAMERAS {
        store.put_camera(SITE, &cam_id(c), Some(position(c)))?;
    }
    Ok(())
}

/// When the new sighting was received: just after it ended.
fn received(s: &Sighting) -> OffsetDateTime {
    s.last_seen + time::Duration::milliseconds(300)
}

/// One timed run of the ingest path over every new sighting.
#[derive(Default)]
struct Run {
    /// Wall time of the whole run.
    seconds: f64,
    /// Per batch: de-duplication; per sighting: `assign`, index insert; per batch: the store
    /// write.
    seen: Vec<Duration>,
    correlate: Vec<Duration>,
    index: Vec<Duration>,
    commits: Vec<Duration>,
    /// Sightings per commit.
    batches: Vec<usize>,
    /// Where each sighting went.
    placed: Vec<(Uuid, Option<f32>)>,
    joined: usize,
}

impl Run {
    fn per_s(&self) -> f64 {
        self.placed.len() as f64 / self.seconds
    }

    fn share(&self, v: &[Duration]) -> f64 {
        v.iter().map(Duration::as_secs_f64).sum::<f64>() / self.seconds
    }

    fn store_share(&self) -> f64 {
        self.share(&self.seen) + self.share(&self.commits)
    }
}

/// Every new sighting through what the ingest thread does: de-duplication, `Correlator::assign`,
/// the store, `SearchIndex::insert`. `group`: as the ingest thread flushes a backlog, batches of
/// `MAX_MESSAGES` sightings, each de-duplicated with one `seen_among`, placed in arrival order and
/// stored with one `record_sightings`; otherwise one `seen` and one `record_sighting` per
/// sighting.
fn ingest(w: &Workload, store: &dyn Store, group: bool) -> Result<Run> {
    let (mut correlator, mut index, _) = live_state(w)?;
    let mut run = Run::default();
    let started = Instant::now();
    for batch in w.new.chunks(if group { MAX_MESSAGES } else { 1 }) {
        let t0 = Instant::now();
        let ids: Vec<Uuid> = batch.iter().map(|s| s.id).collect();
        anyhow::ensure!(store.seen_among(&ids)?.is_empty(), "a sighting is already stored");
        run.seen.push(t0.elapsed());
        let mut placements = Vec::with_capacity(batch.len());
        for s in batch {
            let t1 = Instant::now();
            let a = correlator.assign(Observation::from_sighting(s));
            run.correlate.push(t1.elapsed());
            run.placed.push((a.trajectory, a.distance));
            run.joined += usize::from(!a.new);
            placements.push(SightingPlacement {
                sighting: s,
                trajectory: a.trajectory,
                distance: a.distance,
                received_at: received(s),
            });
        }
        let t2 = Instant::now();
        let stored = store.record_sightings(&placements)?;
        run.commits.push(t2.elapsed());
        run.batches.push(batch.len());
        anyhow::ensure!(stored.iter().all(|n| *n), "a sighting was not stored");
        for p in &placements {
            let t3 = Instant::now();
            let s = p.sighting;
            index.insert(s.id, p.trajectory, &s.site, &s.camera, s.last_seen, &s.embedding)?;
            run.index.push(t3.elapsed());
        }
    }
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

/// The store alone: the same sightings and placements, one `record_sighting` each or
/// `record_sightings` in batches of the sizes the ingest run made. Sightings/s.
fn store_alone(w: &Workload, store: &dyn Store, placed: &[(Uuid, Option<f32>)], batches: &[usize]) -> Result<f64> {
    let all: Vec<SightingPlacement<'_>> = w
        .new
        .iter()
        .zip(placed)
        .map(|(s, &(trajectory, distance))| SightingPlacement {
            sighting: s,
            trajectory,
            distance,
            received_at: received(s),
        })
        .collect();
    let started = Instant::now();
    let mut at = 0;
    for &n in batches {
        store.record_sightings(&all[at..at + n])?;
        at += n;
    }
    Ok(all.len() as f64 / started.elapsed().as_secs_f64())
}

/// One backend's two ingest runs and the store alone in the same two ways.
struct Backend {
    name: &'static str,
    single: Run,
    group: Run,
    store_single: f64,
    store_group: f64,
}

fn backend(name: &'static str, w: &Workload, mut fresh: impl FnMut() -> Result<Arc<dyn Store>>) -> Result<Backend> {
    eprintln!("ingest: {name}: one message at a time");
    let single = ingest(w, fresh()?.as_ref(), false)?;
    eprintln!("ingest: {name}: group commit");
    let group = ingest(w, fresh()?.as_ref(), true)?;
    anyhow::ensure!(
        single.placed.iter().zip(&group.placed).all(|(a, b)| a.1 == b.1) && single.joined == group.joined,
        "{name}: group commit placed sightings differently"
    );
    eprintln!("ingest: {name}: the store alone");
    let ones = vec![1; w.new.len()];
    let store_single = store_alone(w, fresh()?.as_ref(), &single.placed, &ones)?;
    let store_group = store_alone(w, fresh()?.as_ref(), &group.placed, &group.batches)?;
    Ok(Backend { name, single, group, store_single, store_group })
}

pub fn run(o: &Opts) -> Result<Section> {
    let started = Instant::now();
    eprintln!("ingest: generating the workload");
    let w = workload(o)?;
    let count = w.new.len();
    eprintln!("ingest: preloading {} live trajectories (2 sightings each) to measure memory", w.live);
    let t = Instant::now();
    let (_, _, memory) = live_state(&w)?;
    let preload_s = t.elapsed().as_secs_f64();

    let dir = tempfile::Builder::new().prefix("sightline-bench-ingest-").tempdir()?;
    let mut files = 0;
    let mut sqlite_paths = Vec::new();
    let sqlite = backend("SQLite", &w, || {
        files += 1;
        let path = dir.path().join(format!("aggregator-{files}.sqlite"));
        sqlite_paths.push(path.clone());
        let store = SqliteStore::open(&path)?;
        put_cameras(&store)?;
        Ok(Arc::new(store))
    })?;
    // the one-at-a-time run's file and write-ahead log, per stored sighting (16 camera rows and
    // the schema included)
    let file_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", sqlite_paths[0].display())).ok())
        .map(|m| m.len())
        .sum();
    let bytes_per_stored = file_bytes as f64 / count as f64;

    eprintln!("ingest: starting PostgreSQL (durable: fsync and synchronous_commit on)");
    let cluster = Arc::new(PgCluster::start_durable()?);
    let postgres = backend("PostgreSQL", &w, || {
        let db = cluster.database();
        let store = PostgresStore::open(&db.target)?;
        put_cameras(&store)?;
        Ok(Arc::new(store))
    })?;

    let mut table = Table::new(
        &format!(
            "{} new sightings with {} live trajectories ({} cameras): de-duplication + `assign` + store + index \
             insert, one message at a time and by group commit (a backlog: batches of {MAX_MESSAGES}), each run from \
             the same live state into a fresh store.",
            thousands(count as f64),
            thousands(w.live as f64),
            CAMERAS,
        ),
        &[
            "store",
            "ingest",
            "sightings/s",
            "correlation share",
            "store share",
            "commits",
            "commit p50 / p99 (ms)",
            "store alone (sightings/s)",
        ],
    );
    let mut headline = Vec::new();
    for b in [&sqlite, &postgres] {
        for (mode, r, alone) in
            [("one at a time", &b.single, b.store_single), ("group commit", &b.group, b.store_group)]
        {
            let commits = Stats::of(&r.commits);
            table.row(vec![
                b.name.into(),
                mode.into(),
                thousands(r.per_s()),
                format!("{:.1} %", 100.0 * r.share(&r.correlate)),
                format!("{:.1} %", 100.0 * r.store_share()),
                thousands(r.commits.len() as f64),
                format!("{} / {}", ms(commits.p50_ms), ms(commits.p99_ms)),
                thousands(alone),
            ]);
        }
        let met = b.group.per_s() >= FLOOR_PER_S;
        headline.push(format!(
            "{} with {} live trajectories: **{} sightings/s** by group commit (≥ {}: {}), {} one message at a \
             time: **{}**; the store alone {} vs {} sightings/s ({})",
            b.name,
            thousands(w.live as f64),
            thousands(b.group.per_s()),
            thousands(FLOOR_PER_S),
            if met { "floor met" } else { "FLOOR MISSED" },
            thousands(b.single.per_s()),
            ratio(b.group.per_s() / b.single.per_s()),
            thousands(b.store_group),
            thousands(b.store_single),
            ratio(b.store_group / b.store_single),
        ));
    }
    let correlate = Stats::of(&sqlite.group.correlate);
    headline.push(format!(
        "Correlation: p50 {} ms, p99 {} ms per sighting, {:.1} % of the SQLite group-commit run: alone it bounds \
         ingest at {} sightings/s (every trajectory within the horizon is compared, through its 8-bit centroid)",
        ms(correlate.p50_ms),
        ms(correlate.p99_ms),
        100.0 * sqlite.group.share(&sqlite.group.correlate),
        thousands(correlate.per_s)
    ));
    headline.push(format!(
        "Memory: {} B resident per live trajectory in the correlator (2 sightings each), {} B per embedding in the \
         search index; SQLite: {} B per stored sighting (file + WAL)",
        thousands(memory.per_live_trajectory),
        thousands(memory.per_indexed_embedding),
        thousands(bytes_per_stored)
    ));
    let notes = vec![
        format!(
            "Live state (untimed, {preload_s:.1} s to build): {} trajectories of 2 sightings each, ending in the hour \
             before the first new sighting, restored into the correlator (`Correlator::restore`) and the search index; \
             rebuilt the same for every run.",
            thousands(w.live as f64)
        ),
        format!(
            "New sightings: {EVERY_MS} ms apart in event time; {} of them a preloaded person again (whose trajectory \
             ended ≤ 25 min before, within the 30-min horizon), the rest new people; {} joined a trajectory. Every run \
             placed every sighting the same way (checked).",
            w.returning, sqlite.group.joined
        ),
        "Group commit runs as the ingest thread flushes a backlog: one `Store::seen_among` for the batch, each \
         sighting placed in arrival order, the batch stored in one transaction (`Store::record_sightings`), then \
         indexed. One message at a time is one `seen` and one transaction per sighting, as before group commit. The runs go one after the other (SQLite, then \
         PostgreSQL), so a drift of the machine's speed between them moves the ratios too."
            .into(),
        "Stores: SQLite in WAL mode with synchronous=FULL (a file in the temporary directory); PostgreSQL, a \
         throwaway cluster on 127.0.0.1 with its durable defaults (fsync, synchronous_commit and full_page_writes \
         on), over TCP, on the same disk. \"Store alone\" writes the same sightings and placements, one per \
         transaction or in the group-commit run's batches. Not included: JSON parsing, MQTT, the \
         watchlist check and live events."
            .into(),
    ];
    let row = |r: &Run| {
        json!({ "per_s": r.per_s(), "seconds": r.seconds, "commits": r.commits.len(), "mean_batch": r.placed.len() as f64 / r.commits.len().max(1) as f64, "joined": r.joined,
                "correlate": Stats::of(&r.correlate), "seen": Stats::of(&r.seen), "commit": Stats::of(&r.commits),
                "index": Stats::of(&r.index), "correlate_share": r.share(&r.correlate), "store_share": r.store_share() })
    };
    let backend_json = |b: &Backend| {
        json!({ "single": row(&b.single), "group": row(&b.group), "store_alone_single_per_s": b.store_single,
                "store_alone_group_per_s": b.store_group, "group_over_single": b.group.per_s() / b.single.per_s() })
    };
    let data = json!({
        "live_trajectories": w.live, "cameras": CAMERAS, "sightings": count, "preload_s": preload_s,
        "returning": w.returning, "floor_per_s": FLOOR_PER_S, "batch": MAX_MESSAGES,
        "sqlite": backend_json(&sqlite), "postgres": backend_json(&postgres),
        "memory": { "bytes_per_live_trajectory": memory.per_live_trajectory,
                    "bytes_per_indexed_embedding": memory.per_indexed_embedding,
                    "sqlite_bytes_per_stored_sighting": bytes_per_stored },
        "config": { "max_distance": w.cfg.max_distance, "margin": w.cfg.margin, "horizon_s": w.cfg.horizon_s,
                    "appearance_members": w.cfg.appearance_members },
    });
    Ok(Section {
        key: "ingest",
        title: format!("Aggregator ingest with {} live trajectories", thousands(w.live as f64)),
        about: "What the aggregator's ingest thread does per sighting (`ingest/worker.rs`, `ingest/batch.rs`): \
                de-duplicate (`Store::seen`, or `seen_among` for a batch), place on a trajectory (`Correlator::assign`), store, index for search \
                (`SearchIndex::insert`) — one transaction per sighting, and by group commit (one transaction per \
                batch), on SQLite and on PostgreSQL, against issue 15's floor of 5,000 sightings/s on one node."
            .into(),
        headline,
        tables: vec![table],
        notes,
        data,
        ok: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}
