//! `ingest`: what the aggregator's ingest thread does per sighting (`ingest/worker.rs`,
//! `Ingest::handle` + `place`), with many trajectories live, against the store insert alone.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use sightline_aggregator::correlate::{CorrelationConfig, Correlator, Observation};
use sightline_aggregator::search::SearchIndex;
use sightline_aggregator::site::{CameraPlace, SiteConfig, SiteModel};
use sightline_aggregator::store::{SqliteStore, Store};
use sightline_contract::{BestShot, Sighting, testing};
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

pub struct Opts {
    pub quick: bool,
    pub seed: u64,
    /// New sightings timed; `None`: 5,000 (quick: 2,000). Correlation is linear in the live
    /// trajectories: at 100k live a sighting takes tens of ms, 20,000 of them many minutes.
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

/// Per-sighting timings of the ingest path.
#[derive(Default)]
struct Split {
    seen: Vec<Duration>,
    correlate: Vec<Duration>,
    record: Vec<Duration>,
    index: Vec<Duration>,
    total: Vec<Duration>,
}

fn sum(v: &[Duration]) -> f64 {
    v.iter().map(Duration::as_secs_f64).sum()
}

pub fn run(o: &Opts) -> Result<Section> {
    let started = Instant::now();
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
    let cfg = CorrelationConfig::default();
    let mut correlator = Correlator::new(cfg.clone(), site)?;
    let mut index = SearchIndex::new(MODEL, DIM);

    // --- preload: `live` people, each seen by two cameras in the last hour ---------------------
    eprintln!("ingest: preloading {live} live trajectories (2 sightings each) into the correlator and the index");
    let t = Instant::now();
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
    // replayed in event-time order, as `service::run` does from the store; the resident memory
    // each one adds is measured
    preload.sort_by_key(|(s, _)| s.first_seen);
    let rss_before = status_kib("self", "VmRSS");
    for (s, traj) in &preload {
        correlator.restore(Observation::from_sighting(s), *traj);
    }
    let rss_correlator = status_kib("self", "VmRSS");
    for (s, traj) in &preload {
        index.insert(s.id, *traj, &s.site, &s.camera, s.last_seen, &s.embedding)?;
    }
    let rss_index = status_kib("self", "VmRSS");
    let bytes_per_trajectory = (rss_correlator - rss_before) * 1024.0 / live as f64;
    let bytes_per_indexed = (rss_index - rss_correlator) * 1024.0 / preload.len() as f64;
    drop(preload);
    let preload_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(correlator.live() == live, "correlator holds {} trajectories, not {live}", correlator.live());

    // --- the new sightings: half a known person again, half somebody new -----------------------
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
    drop(faces);

    // --- the ingest path, timed per step --------------------------------------------------------
    let dir = tempfile::Builder::new().prefix("sightline-bench-ingest-").tempdir()?;
    let store = SqliteStore::open(&dir.path().join("aggregator.sqlite"))?;
    for c in 0..CAMERAS {
        store.put_camera(SITE, &cam_id(c), Some(position(c)))?;
    }
    eprintln!(
        "ingest: {count} sightings through seen + assign + record_sighting + index insert ({live} live trajectories)"
    );
    let mut split = Split::default();
    let mut placed = Vec::with_capacity(count);
    let (mut joined, mut started_new) = (0, 0);
    for s in &new {
        let now = s.last_seen + time::Duration::milliseconds(300);
        let t0 = Instant::now();
        let seen = store.seen(s.id)?;
        let t1 = Instant::now();
        anyhow::ensure!(!seen, "sighting {} already stored", s.id);
        let a = correlator.assign(Observation::from_sighting(s));
        let t2 = Instant::now();
        let stored = store.record_sighting(s, a.trajectory, a.distance, now)?;
        let t3 = Instant::now();
        anyhow::ensure!(stored, "sighting {} not stored", s.id);
        index.insert(s.id, a.trajectory, &s.site, &s.camera, s.last_seen, &s.embedding)?;
        let t4 = Instant::now();
        split.seen.push(t1 - t0);
        split.correlate.push(t2 - t1);
        split.record.push(t3 - t2);
        split.index.push(t4 - t3);
        split.total.push(t4 - t0);
        if a.new {
            started_new += 1;
        } else {
            joined += 1;
        }
        placed.push((a.trajectory, a.distance));
    }
    let live_after = correlator.live();
    drop(store);
    // the file and its write-ahead log, per stored sighting (16 camera rows and the schema included)
    let file_bytes: u64 = ["aggregator.sqlite", "aggregator.sqlite-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    let bytes_per_stored = file_bytes as f64 / count as f64;

    // --- floor: the store insert alone, same sightings, fresh store -----------------------------
    eprintln!("ingest: floor: record_sighting alone into a fresh store");
    let floor_store = SqliteStore::open(&dir.path().join("floor.sqlite"))?;
    for c in 0..CAMERAS {
        floor_store.put_camera(SITE, &cam_id(c), Some(position(c)))?;
    }
    let mut floor = Vec::with_capacity(count);
    for (s, (traj, d)) in new.iter().zip(&placed) {
        let now = s.last_seen + time::Duration::milliseconds(300);
        let t = Instant::now();
        floor_store.record_sighting(s, *traj, *d, now)?;
        floor.push(t.elapsed());
    }

    // --- report ---------------------------------------------------------------------------------
    let total = Stats::of(&split.total);
    let floor_stats = Stats::of(&floor);
    let correlate = Stats::of(&split.correlate);
    let store_steps: Vec<Duration> = split.seen.iter().zip(&split.record).map(|(a, b)| *a + *b).collect();
    let store_stats = Stats::of(&store_steps);
    let index_stats = Stats::of(&split.index);
    let all = sum(&split.total);
    let share = |v: &[Duration]| sum(v) / all;
    let correlate_share = share(&split.correlate);
    let rate_ratio = total.per_s / floor_stats.per_s;

    let mut table = Table::new(
        &format!(
            "{} new sightings ingested one after the other with {} live trajectories ({} cameras); ms per sighting.",
            thousands(count as f64),
            thousands(live as f64),
            CAMERAS
        ),
        &["path", "sightings/s", "p50", "p95", "p99", "share of ingest time"],
    );
    let mut row = |name: &str, s: &Stats, share: Option<f64>| {
        table.row(vec![
            name.into(),
            thousands(s.per_s),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            share.map_or("–".into(), |x| format!("{:.1} %", 100.0 * x)),
        ])
    };
    row("**ingest** (seen + assign + record_sighting + index insert)", &total, Some(1.0));
    row("… correlate (`Correlator::assign`)", &correlate, Some(correlate_share));
    row("… store (`seen` + `record_sighting`)", &store_stats, Some(share(&store_steps)));
    row("… search index insert", &index_stats, Some(share(&split.index)));
    row("floor: `record_sighting` alone, fresh store", &floor_stats, None);

    let headline = vec![
        format!(
            "Aggregator ingest with {} live trajectories: **{} sightings/s** (p50 {} ms, p99 {} ms); \
             store-insert floor {} sightings/s: ingest / floor = **{}**",
            thousands(live as f64),
            thousands(total.per_s),
            ms(total.p50_ms),
            ms(total.p99_ms),
            thousands(floor_stats.per_s),
            ratio(rate_ratio)
        ),
        format!(
            "Correlation costs {:.1} % of the ingest time; the store {:.1} %",
            100.0 * correlate_share,
            100.0 * share(&store_steps)
        ),
        format!(
            "Memory: {} B resident per live trajectory in the correlator (2 sightings each), {} B per embedding in the \
             search index; SQLite: {} B per stored sighting (file + WAL)",
            thousands(bytes_per_trajectory),
            thousands(bytes_per_indexed),
            thousands(bytes_per_stored)
        ),
    ];
    let notes = vec![
        format!(
            "Preload (untimed, {preload_s:.1} s): {} trajectories of 2 sightings each, ending in the hour before the first new \
             sighting, restored into the correlator (`Correlator::restore`) and the search index.",
            thousands(live as f64)
        ),
        format!(
            "New sightings: {EVERY_MS} ms apart in event time; {returning} of them a preloaded person again (whose \
             trajectory ended ≤ 25 min before, within the 30-min horizon), the rest new people. \
             Result: {joined} joined a trajectory, {started_new} started one; {} trajectories live at the end.",
            live_after
        ),
        "The SQLite store (WAL, synchronous=FULL: one fsync per sighting) starts empty in both the ingest run and the \
         floor, so they are comparable; preloading it with the trajectories' sightings one transaction at a time would \
         take minutes. Not included: JSON parsing, MQTT, the watchlist check and live events."
            .into(),
    ];
    let data = json!({
        "live_trajectories": live, "cameras": CAMERAS, "sightings": count, "preload_s": preload_s,
        "returning": returning, "joined": joined, "started": started_new, "live_after": live_after,
        "ingest": total, "correlate": correlate, "store": store_stats, "index": index_stats,
        "floor_store_only": floor_stats, "correlate_share": correlate_share, "ratio_to_floor": rate_ratio,
        "memory": { "bytes_per_live_trajectory": bytes_per_trajectory, "bytes_per_indexed_embedding": bytes_per_indexed,
                    "sqlite_bytes_per_stored_sighting": bytes_per_stored },
        "config": { "max_distance": cfg.max_distance, "margin": cfg.margin, "horizon_s": cfg.horizon_s, "appearance_members": cfg.appearance_members },
    });
    Ok(Section {
        key: "ingest",
        title: format!("Aggregator ingest with {} live trajectories", thousands(live as f64)),
        about: "What the aggregator's ingest thread does per sighting (`ingest/worker.rs`, `Ingest::place`): \
                de-duplicate (`Store::seen`), place on a trajectory (`Correlator::assign`), store \
                (`SqliteStore::record_sighting`), index for search (`SearchIndex::insert`) — against the floor of the \
                store insert alone."
            .into(),
        headline,
        tables: vec![table],
        notes,
        data,
        ok: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}
