//! `search`: `SearchIndex` (8-bit scan + exact `f32` re-rank) against faiss-cpu `IndexFlatL2`
//! (exact) and `IndexScalarQuantizer` SQ8 (approximate) on the same vectors and queries, in the
//! same run, at 1M and 10M vectors (`--quick`: 100k).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sightline_aggregator::search::{Hit, SearchIndex, SearchQuery};
use sightline_aggregator::store::{PostgresStore, SightingPlacement, SqliteStore, Store};
use sightline_benches::VectorFile;
use sightline_contract::testing;
use sightline_tests::pg::PgCluster;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::util::{DIM, Rng, Section, Stats, Table, ms, python, ratio, status_kib, thousands, venv_python};

const MODEL: &str = "dlib-resnet-v1";
const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const K: usize = 10;
const THRESHOLD: f32 = 0.6;
const WARMUP: usize = 3;
/// Rows generated and indexed per block (the generator's memory is this, not the whole set).
const BLOCK: usize = 1 << 16;
/// At most this many sightings are stored in PostgreSQL to measure its load rate.
const PG_LOAD_ROWS: usize = 200_000;
/// The floors.
const MEMORY_FLOOR: f64 = 160.0;
const FLAT_FLOOR: f64 = 2.0;
const SQ8_FLOOR: f64 = 1.5;

pub struct Opts<'a> {
    pub quick: bool,
    pub seed: u64,
    /// Index sizes; empty: the default ones.
    pub vectors: &'a [usize],
    pub venv: &'a Path,
    pub repo: &'a Path,
}

/// dlib-like vectors, generated block by block into `file` and `index`: people (a random unit
/// direction each) seen 1–8 times, every sighting moved by noise of norm 0.1–0.3 (same person:
/// ~0.1–0.5 apart; different people: ~1.4). Returns the RSS growth of the index in bytes.
fn generate(rng: &mut Rng, n: usize, file: &mut VectorFile, index: &mut SearchIndex) -> Result<f64> {
    let cameras: Vec<String> = (0..16).map(|c| format!("cam-{c:02}")).collect();
    let mut block = vec![0f32; BLOCK * DIM];
    let mut centre = [0f32; DIM];
    let mut left = 0;
    let rss_before = status_kib("self", "VmRSS");
    let mut rss_generator = 0.0;
    let mut row = 0;
    while row < n {
        let rows = BLOCK.min(n - row);
        for out in block[..rows * DIM].chunks_exact_mut(DIM) {
            if left == 0 {
                rng.unit(&mut centre);
                left = 1 + rng.below(8);
            }
            let by = 0.1 + 0.2 * rng.unit_f64() as f32;
            rng.near(&centre, by, out);
            left -= 1;
        }
        file.append(&block[..rows * DIM])?;
        for (i, v) in block[..rows * DIM].chunks_exact(DIM).enumerate() {
            let r = row + i;
            let seen = T0 + time::Duration::milliseconds(r as i64);
            index.insert(Uuid::from_u128(r as u128 + 1), "bench", &cameras[r % 16], seen, v)?;
        }
        if row == 0 {
            // the block buffer and the file's write buffer are resident from here on
            rss_generator = status_kib("self", "VmRSS") - rss_before - (rows * index.entry_bytes()) as f64 / 1024.0;
        }
        row += rows;
    }
    Ok((status_kib("self", "VmRSS") - rss_before - rss_generator.max(0.0)) * 1024.0)
}

/// Half the queries near an indexed sighting (noise 0.2: a new photo of a known person), half
/// random directions (nobody: the pure scan), interleaved.
fn queries(rng: &mut Rng, file: &VectorFile, count: usize) -> Result<Vec<f32>> {
    let mut q = vec![0f32; count * DIM];
    for (i, out) in q.chunks_exact_mut(DIM).enumerate() {
        if i % 2 == 0 {
            let r = rng.below(file.rows());
            rng.near(&file.row(r)?, 0.2, out);
        } else {
            rng.unit(out);
        }
    }
    Ok(q)
}

struct Run {
    variant: &'static str,
    threads: usize,
    latencies: Vec<Duration>,
    hits: Vec<Vec<Hit>>,
    reranked: usize,
}

fn run_rust(
    index: &SearchIndex,
    exact: &VectorFile,
    queries: &[f32],
    variant: &'static str,
    threads: usize,
) -> Result<Run> {
    let max_distance = if variant == "knn" { f32::INFINITY } else { THRESHOLD };
    let q = SearchQuery { max_distance, limit: K, threads, ..SearchQuery::default() };
    for query in queries.chunks_exact(DIM).take(WARMUP) {
        std::hint::black_box(index.search(query, &q, exact)?);
    }
    let mut run = Run { variant, threads, latencies: Vec::new(), hits: Vec::new(), reranked: 0 };
    for query in queries.chunks_exact(DIM) {
        let t = Instant::now();
        let found = index.search(query, &q, exact)?;
        run.latencies.push(t.elapsed());
        run.reranked += found.reranked;
        run.hits.push(found.hits);
    }
    Ok(run)
}

/// Adds `other`'s per-query faiss latencies to `into`'s, kind by kind and thread count by thread count.
fn pool_latencies(into: &mut Value, other: &Value) {
    let Some(kinds) = into["kinds"].as_object_mut() else { return };
    for (kind, k) in kinds.iter_mut() {
        let Some(runs) = k["runs"].as_array_mut() else { continue };
        for run in runs {
            let more = other["kinds"][kind.as_str()]["runs"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["threads"] == run["threads"]))
                .and_then(|r| r["latencies_ms"].as_array());
            if let (Some(lat), Some(more)) = (run["latencies_ms"].as_array_mut(), more) {
                lat.extend(more.iter().cloned());
            }
        }
    }
}

/// Per query: the rows (0-based) faiss returned, and their squared distances.
type Answers = (Vec<Vec<i64>>, Vec<Vec<f32>>);

/// The [`Answers`] of faiss' index `kind`.
fn faiss_answers(faiss: &Value, kind: &str) -> Option<Answers> {
    let k = &faiss["kinds"][kind];
    Some((serde_json::from_value(k["ids"].clone()).ok()?, serde_json::from_value(k["d2"].clone()).ok()?))
}

/// Recall@K of `ids` against the exact `hits` (ties at the K-th distance allowed), and of the
/// exact hits within the threshold.
fn recall(hits: &[Vec<Hit>], thr_hits: &[Vec<Hit>], ids: &[Vec<i64>], d2: &[Vec<f32>]) -> (f64, (usize, usize)) {
    let (mut found, mut want, mut thr_found, mut thr_want) = (0usize, 0usize, 0usize, 0usize);
    for (qi, exact) in hits.iter().enumerate() {
        let theirs: HashSet<i64> = ids[qi].iter().copied().collect();
        let kth = exact.last().map_or(f32::INFINITY, |h| h.distance);
        want += exact.len();
        // at the K-th distance, another row of the same distance (a tie) counts
        let tie = |h: &Hit| {
            h.distance >= kth * (1.0 - 1e-5)
                && d2[qi].iter().any(|d| (d.max(0.0).sqrt() - h.distance).abs() <= 1e-5 * (1.0 + h.distance))
        };
        found += exact.iter().filter(|h| theirs.contains(&(h.sighting.as_u128() as i64 - 1)) || tie(h)).count();
        for h in &thr_hits[qi] {
            thr_want += 1;
            thr_found += usize::from(theirs.contains(&(h.sighting.as_u128() as i64 - 1)));
        }
    }
    (found as f64 / want.max(1) as f64, (thr_found, thr_want))
}

/// The first `rows` vectors of `file` stored in `store` (sightings 1 ms apart, 16 cameras,
/// batches of 256 as ingest stores them), then the index loaded from it as a start does:
/// entries per second of the load.
fn load_rate(store: &dyn Store, file: &VectorFile, rows: usize) -> Result<f64> {
    for c in 0..16 {
        store.put_camera("bench", &format!("cam-{c:02}"), None)?;
    }
    for start in (0..rows).step_by(256) {
        let sightings = (start..(start + 256).min(rows))
            .map(|r| {
                Ok(testing::sighting()
                    .id(Uuid::from_u128(r as u128 + 1))
                    .site("bench")
                    .camera(format!("cam-{:02}", r % 16))
                    .at(T0 + time::Duration::milliseconds(r as i64))
                    .embedding(file.row(r)?)
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        let placements: Vec<SightingPlacement> = sightings
            .iter()
            .map(|s| SightingPlacement { sighting: s, trajectory: s.id, distance: None, received_at: s.last_seen })
            .collect();
        store.record_batch(&placements, &[])?;
    }
    let t = Instant::now();
    let index = SearchIndex::load(store, MODEL, DIM, T0 - time::Duration::hours(1))?;
    let seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(index.len() == rows, "loaded {} of {rows}", index.len());
    Ok(rows as f64 / seconds)
}

/// [`load_rate`] on SQLite (`rows`) and on PostgreSQL (at most [`PG_LOAD_ROWS`]: its inserts are
/// slower), each in a throwaway store.
fn load_rates(file: &VectorFile, rows: usize) -> Result<(f64, f64)> {
    let dir = tempfile::Builder::new().prefix("sightline-bench-load-").tempdir()?;
    eprintln!("search: storing {rows} sightings in SQLite to load them back");
    let sqlite = load_rate(&SqliteStore::open(&dir.path().join("load.sqlite"))?, file, rows)?;
    let pg_rows = rows.min(PG_LOAD_ROWS);
    eprintln!("search: storing {pg_rows} sightings in PostgreSQL to load them back");
    let cluster = Arc::new(PgCluster::start()?);
    let db = cluster.database();
    let postgres = load_rate(&PostgresStore::open(&db.target)?, file, pg_rows)?;
    Ok((sqlite, postgres))
}

/// One size: build, measure both sides, compare. Its rows of the tables, its headlines.
struct Size {
    n: usize,
    bytes_per_entry: f64,
    build_s: f64,
    /// Entries dropped per second by retention, and how long the index was held for it.
    retention: (f64, f64),
    /// Entries loaded per second from SQLite and from PostgreSQL (at the first size only).
    load_per_s: Option<(f64, f64)>,
    rows: Vec<Value>,
    headline: Vec<String>,
    ok: bool,
    notes: Vec<String>,
}

fn one_size(o: &Opts, rng: &mut Rng, n: usize, queries_n: usize, cores: usize, load: bool) -> Result<Size> {
    let dir = tempfile::Builder::new().prefix("sightline-bench-search-").tempdir()?;
    eprintln!("search: generating and indexing {n} vectors");
    let mut file = VectorFile::create(&dir.path().join("vectors.f32"), DIM)?;
    let mut index = SearchIndex::new(MODEL, DIM);
    let t = Instant::now();
    let grown = generate(rng, n, &mut file, &mut index)?;
    let build_s = t.elapsed().as_secs_f64();
    let bytes_per_entry = grown / n as f64;
    let queries = queries(rng, &file, queries_n)?;
    let mut qfile = VectorFile::create(&dir.path().join("queries.f32"), DIM)?;
    qfile.append(&queries)?;
    let meta = json!({
        "dim": DIM, "n": n, "nq": queries_n, "dtype": "float32, little-endian, row-major",
        "vectors": "vectors.f32", "queries": "queries.f32", "k": K, "warmup": WARMUP,
    });
    std::fs::write(dir.path().join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;

    let mut notes = Vec::new();
    let py = venv_python(o.venv);
    if py.is_none() {
        notes.push(format!("faiss NOT measured: no venv at {} (run `bash benches/setup.sh`)", o.venv.display()));
    }
    // the peer, on the same files, while this process only waits: once before sightline's runs
    // and once after, its latencies pooled, so that both sides see the host in the same state
    let faiss_once = |when: &str| -> Result<Option<Value>> {
        let Some(py) = &py else { return Ok(None) };
        eprintln!("search: faiss flat and sq8 over {n} ({cores} and 1 thread(s)), {when}");
        let out = dir.path().join(format!("faiss-{when}.json"));
        python(
            py,
            &o.repo.join("benches/faiss_search.py"),
            &[
                dir.path().join("meta.json").to_str().context("temp path")?,
                out.to_str().context("temp path")?,
                &format!("{cores},1"),
                "flat,sq8",
            ],
        )?;
        Ok(Some(serde_json::from_slice(&std::fs::read(&out)?)?))
    };
    let before = faiss_once("before")?;
    let mut runs = Vec::new();
    for threads in [cores, 1] {
        for variant in ["knn", "threshold"] {
            eprintln!("search: sightline {variant} over {n}, {threads} thread(s), {queries_n} queries");
            runs.push(run_rust(&index, &file, &queries, variant, threads)?);
        }
    }
    let faiss = match (before, faiss_once("after")?) {
        (Some(mut f), Some(after)) => {
            pool_latencies(&mut f, &after);
            Some(f)
        }
        _ => None,
    };

    let mut ok = true;
    let identical = runs[0].hits == runs[2].hits && runs[1].hits == runs[3].hits;
    if !identical {
        ok = false;
        notes.push(format!("FAILED at {n}: sightline's results differ between 1 and {cores} threads"));
    }
    let flat = faiss.as_ref().and_then(|f| faiss_answers(f, "flat"));
    let sq8 = faiss.as_ref().and_then(|f| faiss_answers(f, "sq8"));
    let ours_vs_flat = flat.as_ref().map(|(ids, d2)| recall(&runs[0].hits, &runs[1].hits, ids, d2));
    let sq8_vs_exact = sq8.as_ref().map(|(ids, d2)| recall(&runs[0].hits, &runs[1].hits, ids, d2));
    // every faiss-flat neighbour clearly within the threshold is one of ours
    let mut flat_within = (0usize, 0usize);
    if let Some((ids, d2)) = &flat {
        for (qi, hits) in runs[1].hits.iter().enumerate() {
            let ours: HashSet<i64> = hits.iter().map(|h| h.sighting.as_u128() as i64 - 1).collect();
            for (row, d) in ids[qi].iter().zip(&d2[qi]) {
                if d.max(0.0).sqrt() <= THRESHOLD * (1.0 - 1e-4) {
                    flat_within.1 += 1;
                    flat_within.0 += usize::from(ours.contains(row));
                }
            }
        }
        if ours_vs_flat.is_some_and(|(r, _)| r < 1.0) || flat_within.0 < flat_within.1 {
            ok = false;
            notes.push(format!(
                "FAILED at {n}: sightline disagrees with faiss IndexFlatL2: recall@10 {:?}, threshold {}/{}",
                ours_vs_flat.map(|r| r.0),
                flat_within.0,
                flat_within.1
            ));
        }
    }

    let faiss_run = |kind: &str, threads: usize| -> Option<Stats> {
        let runs = faiss.as_ref()?["kinds"][kind]["runs"].as_array()?.clone();
        let run = runs.into_iter().find(|r| r["threads"].as_u64() == Some(threads as u64))?;
        let lat: Vec<f64> = serde_json::from_value(run["latencies_ms"].clone()).ok()?;
        Some(Stats::of_ms(&lat))
    };
    let mut rows = Vec::new();
    for r in &runs {
        let s = Stats::of(&r.latencies);
        let (flat_s, sq8_s) = (faiss_run("flat", r.threads), faiss_run("sq8", r.threads));
        let vs = |f: &Option<Stats>| f.as_ref().map_or(f64::NAN, |f| f.p50_ms / s.p50_ms);
        rows.push(json!({
            "n": n, "variant": r.variant, "threads": r.threads, "sightline": s, "faiss_flat": flat_s,
            "faiss_sq8": sq8_s, "ratio_flat": vs(&flat_s), "ratio_sq8": vs(&sq8_s),
            "hits": r.hits.iter().map(Vec::len).sum::<usize>(),
            "reranked_per_query": r.reranked as f64 / r.latencies.len().max(1) as f64,
        }));
    }

    let mut headline = Vec::new();
    let met = |x: bool| if x { "floor met" } else { "FLOOR MISSED" };
    headline.push(format!(
        "Search index memory at {}: **{:.1} B per indexed sighting** (RSS growth per entry; {} B of columns; an `f32` index: 556 B; floor ≤ {MEMORY_FLOOR} B: {})",
        thousands(n as f64),
        bytes_per_entry,
        index.entry_bytes(),
        met(bytes_per_entry <= MEMORY_FLOOR)
    ));
    if faiss.is_some() {
        let knn: Vec<&Value> = rows.iter().filter(|r| r["variant"] == "knn").collect();
        let cell = |key: &str, floor: f64| -> String {
            knn.iter()
                .map(|r| {
                    let x = r[key].as_f64().unwrap_or(f64::NAN);
                    format!("{} thread(s) **{}** ({})", r["threads"], ratio(x), met(x >= floor))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        headline.push(format!(
            "Search over {} at equal threads, faiss p50 / sightline p50 (top-10): vs `IndexFlatL2` {} (floor ≥ {FLAT_FLOOR}×); vs SQ8 {} (floor ≥ {SQ8_FLOOR}×)",
            thousands(n as f64),
            cell("ratio_flat", FLAT_FLOOR),
            cell("ratio_sq8", SQ8_FLOOR),
        ));
        headline.push(format!(
            "Exactness at {}: sightline's top-10 vs faiss `IndexFlatL2` recall **{:.4}**, {}/{} flat neighbours within {THRESHOLD} found; faiss SQ8's recall@10 against the exact answer {:.4}, within {THRESHOLD} {}/{}",
            thousands(n as f64),
            ours_vs_flat.map_or(f64::NAN, |r| r.0),
            flat_within.0,
            flat_within.1,
            sq8_vs_exact.map_or(f64::NAN, |r| r.0),
            sq8_vs_exact.map_or(0, |r| r.1.0),
            sq8_vs_exact.map_or(0, |r| r.1.1),
        ));
    }
    // retention: the oldest tenth (entries are 1 ms apart in insertion order), under the lock a
    // search and ingest wait for
    let t = Instant::now();
    let removed = index.remove_before(T0 + time::Duration::milliseconds((n / 10) as i64));
    let held = t.elapsed().as_secs_f64();
    anyhow::ensure!(removed == n / 10, "retention removed {removed}, not {}", n / 10);
    let retention = (removed as f64 / held, held);
    let load_per_s = if load { Some(load_rates(&file, n)?) } else { None };
    headline.push(format!(
        "Start-up and retention at {}: {} entries/s loaded from SQLite, {} from PostgreSQL (beside ingest; searches wait for it); retention drops {} entries/s ({} ms for a tenth of the index, the time ingest and searches wait)",
        thousands(n as f64),
        load_per_s.map_or("–".into(), |r| thousands(r.0)),
        load_per_s.map_or("–".into(), |r| thousands(r.1)),
        thousands(retention.0),
        ms(held * 1e3),
    ));
    let flat_add = faiss.as_ref().and_then(|f| f["kinds"]["flat"]["add_s"].as_f64());
    let sq8_add = faiss.as_ref().and_then(|f| f["kinds"]["sq8"]["add_s"].as_f64());
    notes.push(format!(
        "{}: build {build_s:.1} s for sightline (generation, the vector file and the index), {} s faiss flat add, {} s faiss SQ8 train + add",
        thousands(n as f64),
        flat_add.map_or("–".into(), |s| format!("{s:.1}")),
        sq8_add.map_or("–".into(), |s| format!("{s:.1}")),
    ));
    Ok(Size { n, bytes_per_entry, build_s, retention, load_per_s, rows, headline, ok, notes })
}

pub fn run(o: &Opts) -> Result<Section> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // fewer queries on the largest sizes: faiss takes up to a second each there
    let queries = |n: usize| {
        if n > 2_000_000 {
            60
        } else if n > 200_000 {
            200
        } else {
            100
        }
    };
    let sizes: Vec<(usize, usize)> = match (o.vectors, o.quick) {
        ([], true) => vec![(100_000, 100)],
        ([], false) => vec![(1_000_000, 200), (10_000_000, 60)],
        (sizes, _) => sizes.iter().map(|&n| (n, queries(n))).collect(),
    };
    let mut rng = Rng(o.seed);
    let mut all = Vec::new();
    for (i, &(n, nq)) in sizes.iter().enumerate() {
        all.push(one_size(o, &mut rng, n, nq, cores, i == 0)?);
    }

    let mut table = Table::new(
        &format!(
            "{DIM}-d float32 vectors, queries one at a time (half near a known person, half random), limit {K}; latency \
             per query in ms. faiss runs every query once before sightline's runs and once after; its columns pool both. \
             Ratio = faiss p50 / sightline p50 (> 1: sightline faster). Re-ranked: entries whose `f32` vectors \
             sightline read (from a file, as from its store) per query."
        ),
        &[
            "vectors",
            "variant",
            "threads",
            "sightline p50",
            "p95",
            "re-ranked",
            "flat p50",
            "flat / sightline",
            "SQ8 p50",
            "SQ8 / sightline",
        ],
    );
    for s in &all {
        for r in &s.rows {
            let p50 = |side: &str| r[side]["p50_ms"].as_f64().map_or("–".to_string(), ms);
            table.row(vec![
                thousands(s.n as f64),
                match r["variant"].as_str() {
                    Some("knn") => "top-10 k-NN".into(),
                    _ => format!("top-10 within {THRESHOLD}"),
                },
                r["threads"].to_string(),
                p50("sightline"),
                r["sightline"]["p95_ms"].as_f64().map_or("–".into(), ms),
                format!("{:.1}", r["reranked_per_query"].as_f64().unwrap_or(f64::NAN)),
                p50("faiss_flat"),
                ratio(r["ratio_flat"].as_f64().unwrap_or(f64::NAN)),
                p50("faiss_sq8"),
                ratio(r["ratio_sq8"].as_f64().unwrap_or(f64::NAN)),
            ]);
        }
    }
    let mut notes: Vec<String> = all.iter().flat_map(|s| s.notes.clone()).collect();
    notes.push(
        "faiss parallelises a search over the queries of one call; with one query per call more threads only add \
         OpenMP overhead, while sightline splits one query's scan across threads. Both sides run each query separately, \
         as an operator's search or a watchlist check does."
            .into(),
    );
    notes.push(
        "SQ8 is approximate (its recall is reported); sightline's answer is exact: its 8-bit scan bounds every \
         distance and the candidates are re-ranked from the f32 vectors, read with `pread` from a file the bench \
         wrote (the aggregator reads them from its store). The vectors are dlib-like: unit norm, people seen 1–8 \
         times with noise 0.1–0.3."
            .into(),
    );
    let data = json!({
        "dim": DIM, "k": K, "threshold": THRESHOLD, "cores": cores, "seed": o.seed,
        "sizes": all.iter().map(|s| json!({
            "n": s.n, "bytes_per_entry": s.bytes_per_entry, "build_s": s.build_s, "rows": s.rows,
            "retention_per_s": s.retention.0, "retention_held_s": s.retention.1,
            "load_per_s": s.load_per_s.map(|r| json!({"sqlite": r.0, "postgres": r.1})),
        })).collect::<Vec<_>>(),
    });
    Ok(Section {
        key: "search",
        title: format!(
            "Search: SearchIndex vs faiss-cpu IndexFlatL2 and SQ8 over {}",
            sizes.iter().map(|s| thousands(s.0 as f64)).collect::<Vec<_>>().join(" and ")
        ),
        about: "Exact search of the aggregator (`sightline_aggregator::search::SearchIndex`: an 8-bit scan bounding \
                every distance, then an exact f32 re-rank of the candidates) against `faiss.IndexFlatL2` (exact, \
                f32) and `faiss.IndexScalarQuantizer` QT_8bit (approximate, 8 bits) on the same vectors and queries."
            .into(),
        headline: all.iter().flat_map(|s| s.headline.clone()).collect(),
        tables: vec![table],
        notes,
        data,
        ok: all.iter().all(|s| s.ok),
        seconds: started.elapsed().as_secs_f64(),
    })
}
