//! `search`: `SearchIndex` (exact brute force) against faiss-cpu `IndexFlatL2` on the same
//! vectors and queries, in the same run.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sightline_aggregator::search::{Hit, SearchIndex, SearchQuery};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::util::{DIM, Rng, Section, Stats, Table, ms, python, ratio, thousands, venv_python};

const MODEL: &str = "dlib-resnet-v1";
const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const QUERIES: usize = 200;
const K: usize = 10;
const THRESHOLD: f32 = 0.6;
const WARMUP: usize = 3;

pub struct Opts<'a> {
    pub quick: bool,
    pub seed: u64,
    pub venv: &'a Path,
    pub repo: &'a Path,
}

/// `n` dlib-like vectors: people (a random unit direction each) seen 1–8 times, every sighting
/// moved by noise of norm 0.1–0.3 (same person: ~0.1–0.5 apart; different people: ~1.4).
/// Returns the flat vectors and each row's person.
fn people(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut v = vec![0f32; n * DIM];
    let mut person = Vec::with_capacity(n);
    let mut centre = [0f32; DIM];
    let mut p = 0u32;
    let mut row = 0;
    while row < n {
        rng.unit(&mut centre);
        let seen = 1 + rng.below(8);
        for _ in 0..seen.min(n - row) {
            let by = 0.1 + 0.2 * rng.unit_f64() as f32;
            rng.near(&centre, by, &mut v[row * DIM..(row + 1) * DIM]);
            person.push(p);
            row += 1;
        }
        p += 1;
    }
    (v, person)
}

/// Half the queries near an indexed sighting (noise 0.2: a new photo of a known person), half
/// random directions (nobody: the pure scan), interleaved.
fn queries(rng: &mut Rng, vectors: &[f32]) -> Vec<f32> {
    let n = vectors.len() / DIM;
    let mut q = vec![0f32; QUERIES * DIM];
    for (i, out) in q.chunks_exact_mut(DIM).enumerate() {
        if i % 2 == 0 {
            let r = rng.below(n);
            rng.near(&vectors[r * DIM..(r + 1) * DIM], 0.2, out);
        } else {
            rng.unit(out);
        }
    }
    q
}

fn write_f32(path: &Path, v: &[f32]) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for x in v {
        w.write_all(&x.to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}

struct Run {
    variant: &'static str,
    threads: usize,
    latencies: Vec<Duration>,
    hits: Vec<Vec<Hit>>,
}

fn run_rust(index: &SearchIndex, queries: &[f32], variant: &'static str, threads: usize) -> Result<Run> {
    let max_distance = if variant == "knn" { f32::INFINITY } else { THRESHOLD };
    let q = SearchQuery { max_distance, limit: K, threads, ..SearchQuery::default() };
    for query in queries.chunks_exact(DIM).take(WARMUP) {
        std::hint::black_box(index.search(query, &q)?);
    }
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut hits = Vec::with_capacity(QUERIES);
    for query in queries.chunks_exact(DIM) {
        let t = Instant::now();
        let h = index.search(query, &q)?;
        latencies.push(t.elapsed());
        hits.push(h);
    }
    Ok(Run { variant, threads, latencies, hits })
}

/// Adds `other`'s per-query faiss latencies to `into`'s, thread count by thread count.
fn pool_latencies(into: &mut Value, other: &Value) {
    let Some(runs) = into["runs"].as_array_mut() else { return };
    for run in runs {
        let more = other["runs"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["threads"] == run["threads"]))
            .and_then(|r| r["latencies_ms"].as_array());
        if let (Some(lat), Some(more)) = (run["latencies_ms"].as_array_mut(), more) {
            lat.extend(more.iter().cloned());
        }
    }
}

pub fn run(o: &Opts) -> Result<Section> {
    let started = Instant::now();
    let n = if o.quick { 100_000 } else { 1_000_000 };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("search: generating {n} vectors and {QUERIES} queries (seed {:#x})", o.seed);
    let mut rng = Rng(o.seed);
    let (vectors, person) = people(&mut rng, n);
    let queries = queries(&mut rng, &vectors);

    let dir = tempfile::Builder::new().prefix("sightline-bench-search-").tempdir()?;
    write_f32(&dir.path().join("vectors.f32"), &vectors)?;
    write_f32(&dir.path().join("queries.f32"), &queries)?;
    let meta = json!({
        "dim": DIM, "n": n, "nq": QUERIES, "dtype": "float32, little-endian, row-major",
        "vectors": "vectors.f32", "queries": "queries.f32", "k": K, "warmup": WARMUP,
    });
    std::fs::write(dir.path().join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;

    eprintln!("search: building SearchIndex ({n} inserts)");
    let cameras: Vec<String> = (0..16).map(|c| format!("cam-{c:02}")).collect();
    let t = Instant::now();
    let mut index = SearchIndex::new(MODEL, DIM);
    for (i, v) in vectors.chunks_exact(DIM).enumerate() {
        let seen = T0 + time::Duration::milliseconds(i as i64);
        index.insert(
            Uuid::from_u128(i as u128 + 1),
            Uuid::from_u128(person[i] as u128 + 1),
            "bench",
            &cameras[i % 16],
            seen,
            v,
        )?;
    }
    let build_s = t.elapsed().as_secs_f64();
    drop(vectors);
    drop(person);

    // the peer, on the same files, while this process only waits: once before sightline's runs
    // and once after, its latencies pooled, so that both sides see the host in the same state
    let mut notes = Vec::new();
    let py = venv_python(o.venv);
    if py.is_none() {
        notes.push(format!("faiss NOT measured: no venv at {} (run `bash benches/setup.sh`)", o.venv.display()));
    }
    let faiss_once = |when: &str| -> Result<Option<Value>> {
        let Some(py) = &py else { return Ok(None) };
        eprintln!("search: faiss IndexFlatL2 ({cores} and 1 thread(s)), {when}");
        let out = dir.path().join(format!("faiss-{when}.json"));
        python(
            py,
            &o.repo.join("benches/faiss_search.py"),
            &[
                dir.path().join("meta.json").to_str().context("temp path")?,
                out.to_str().context("temp path")?,
                &format!("{cores},1"),
            ],
        )?;
        Ok(Some(serde_json::from_slice(&std::fs::read(&out)?)?))
    };
    let before = faiss_once("before")?;

    let mut runs = Vec::new();
    for threads in [cores, 1] {
        for variant in ["knn", "threshold"] {
            eprintln!("search: sightline {variant}, {threads} thread(s), {QUERIES} queries");
            runs.push(run_rust(&index, &queries, variant, threads)?);
        }
    }

    let faiss = match (before, faiss_once("after")?) {
        (Some(mut f), Some(after)) => {
            pool_latencies(&mut f, &after);
            Some(f)
        }
        _ => None,
    };

    // --- agreement: sightline's k-NN top-10 vs faiss's (ties at the 10th distance allowed) ----
    let mut ok = true;
    let knn_all = &runs[0];
    let knn_one = &runs[2];
    let same_on_one_thread = knn_all.hits == knn_one.hits && runs[1].hits == runs[3].hits;
    if !same_on_one_thread {
        ok = false;
        notes.push("FAILED: sightline's results differ between 1 and all threads".into());
    }
    let (mut recall, mut thr_agree) = (None, None);
    if let Some(f) = &faiss {
        let ids: Vec<Vec<i64>> = serde_json::from_value(f["ids"].clone())?;
        let d2: Vec<Vec<f32>> = serde_json::from_value(f["d2"].clone())?;
        let (mut found, mut want) = (0usize, 0usize);
        let (mut thr_found, mut thr_want) = (0usize, 0usize);
        for (qi, hits) in knn_all.hits.iter().enumerate() {
            let faiss_ids: HashSet<i64> = ids[qi].iter().copied().collect();
            let kth = d2[qi].last().copied().unwrap_or(f32::INFINITY).max(0.0).sqrt();
            want += K;
            found += hits
                .iter()
                .filter(|h| {
                    let row = h.sighting.as_u128() as i64 - 1;
                    faiss_ids.contains(&row) || h.distance <= kth * (1.0 + 1e-4) + 1e-6
                })
                .count()
                .min(K);
            // with the threshold: every faiss neighbour clearly within 0.6 is a sightline hit
            let thr_rows: HashSet<i64> = runs[1].hits[qi].iter().map(|h| h.sighting.as_u128() as i64 - 1).collect();
            for (row, d) in ids[qi].iter().zip(&d2[qi]) {
                if d.max(0.0).sqrt() <= THRESHOLD * (1.0 - 1e-4) {
                    thr_want += 1;
                    thr_found += usize::from(thr_rows.contains(row));
                }
            }
        }
        let r = found as f64 / want as f64;
        recall = Some(r);
        thr_agree = Some((thr_found, thr_want));
        if r < 1.0 || thr_found < thr_want {
            ok = false;
            notes.push(format!(
                "FAILED: sightline disagrees with faiss: recall@10 {r:.4}, threshold hits {thr_found}/{thr_want}"
            ));
        }
    }

    // --- tables --------------------------------------------------------------------------------
    let faiss_run = |threads: usize| -> Option<Stats> {
        let f = faiss.as_ref()?;
        let run = f["runs"].as_array()?.iter().find(|r| r["threads"].as_u64() == Some(threads as u64))?;
        let lat: Vec<f64> = serde_json::from_value(run["latencies_ms"].clone()).ok()?;
        Some(Stats::of_ms(&lat))
    };
    let mut table = Table::new(
        &format!(
            "{} × {DIM}-d float32 vectors, {QUERIES} queries one at a time (half near a known person, half random), \
             limit {K}; latency per query in ms. faiss runs every query once before sightline's runs and once after; its \
             columns pool both. Ratio = faiss p50 / sightline p50 (> 1: sightline faster).",
            thousands(n as f64)
        ),
        &[
            "variant",
            "threads",
            "sightline p50",
            "p95",
            "p99",
            "QPS",
            "faiss p50",
            "p95",
            "p99",
            "QPS",
            "faiss/sightline (p50)",
        ],
    );
    let mut rows_json = Vec::new();
    for r in &runs {
        let s = Stats::of(&r.latencies);
        let f = faiss_run(r.threads);
        let rt = f.as_ref().map_or(f64::NAN, |f| f.p50_ms / s.p50_ms);
        let label = match r.variant {
            "knn" => "top-10 k-NN (no threshold)".to_string(),
            _ => format!("top-10 within {THRESHOLD}"),
        };
        let fcell = |x: Option<f64>| x.map_or("–".to_string(), ms);
        table.row(vec![
            label,
            r.threads.to_string(),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            format!("{:.1}", s.per_s),
            fcell(f.as_ref().map(|f| f.p50_ms)),
            fcell(f.as_ref().map(|f| f.p95_ms)),
            fcell(f.as_ref().map(|f| f.p99_ms)),
            f.as_ref().map_or("–".into(), |f| format!("{:.1}", f.per_s)),
            ratio(rt),
        ]);
        rows_json.push(json!({
            "variant": r.variant, "threads": r.threads, "sightline": s, "faiss": f, "ratio_p50": rt,
            "hits": r.hits.iter().map(Vec::len).sum::<usize>(),
        }));
    }

    let mut extra = Table::new("Build and batch (context, not the floor)", &["what", "sightline", "faiss"]);
    let faiss_add = faiss.as_ref().and_then(|f| f["add_s"].as_f64());
    extra.row(vec![
        format!("index build ({} vectors)", thousands(n as f64)),
        format!("{:.2} s", build_s),
        faiss_add.map_or("–".into(), |s| format!("{s:.2} s")),
    ]);
    if let Some(batches) = faiss.as_ref().and_then(|f| f["batch"].as_array()) {
        for b in batches {
            let (t, s) = (b["threads"].as_u64().unwrap_or(0), b["seconds"].as_f64().unwrap_or(f64::NAN));
            extra.row(vec![
                format!(
                    "{QUERIES} queries in one call, {t} thread(s) (faiss batches with BLAS; sightline has no batch API)"
                ),
                "–".into(),
                format!("{:.1} QPS ({} per query)", QUERIES as f64 / s, ms(s * 1e3 / QUERIES as f64)),
            ]);
        }
    }

    // the verdict: each side at its fastest thread setting for one query (sightline's default
    // is every core; faiss's OpenMP makes a single query slower on more threads)
    let mut headline = Vec::new();
    let knn: Vec<&Value> = rows_json.iter().filter(|r| r["variant"] == "knn").collect();
    let p50 = |r: &Value, side: &str| r[side]["p50_ms"].as_f64().unwrap_or(f64::INFINITY);
    let best = |side: &str| knn.iter().copied().min_by(|a, b| p50(a, side).total_cmp(&p50(b, side)));
    match (best("sightline"), best("faiss")) {
        (Some(ours), Some(theirs)) if p50(theirs, "faiss").is_finite() => {
            let rt = p50(theirs, "faiss") / p50(ours, "sightline");
            headline.push(format!(
                "Search over {} embeddings, each side at its fastest thread setting for one query: sightline p50 {} ms ({} threads) vs faiss \
                 `IndexFlatL2` {} ms ({} thread(s)) = **{}** (floor: ≥ 1.00×, no slower than faiss) — {}",
                thousands(n as f64),
                ms(p50(ours, "sightline")),
                ours["threads"],
                ms(p50(theirs, "faiss")),
                theirs["threads"],
                ratio(rt),
                if rt >= 1.0 { "floor met" } else { "FLOOR MISSED" }
            ));
            let same: Vec<String> = knn
                .iter()
                .map(|r| format!("{} thread(s) {}", r["threads"], ratio(r["ratio_p50"].as_f64().unwrap_or(f64::NAN))))
                .collect();
            headline.push(format!(
                "Search at equal thread counts, faiss p50 / sightline p50: {}; on one thread both scan at memory speed \
                 ({} MB of vectors per query), so they are close there",
                same.join(", "),
                n * DIM * 4 / 1_000_000
            ));
        }
        _ => headline.push("Search vs faiss: not measured (no faiss)".into()),
    }
    match recall {
        Some(r) => headline.push(format!(
            "Agreement with faiss: recall@10 of sightline vs faiss = **{r:.4}** (ties at the 10th distance allowed); \
             threshold variant: {}/{} faiss neighbours within {THRESHOLD} found",
            thr_agree.map_or(0, |t| t.0),
            thr_agree.map_or(0, |t| t.1)
        )),
        None => headline.push("Agreement with faiss: not checked (faiss not measured)".into()),
    }
    notes.push(
        "faiss parallelises a search over the queries of one call; with one query per call more threads only add \
         OpenMP overhead, while sightline splits one query's scan across threads. Both sides run each query separately, \
         as an operator's search or a watchlist check does."
            .into(),
    );
    notes.push(format!(
        "{WARMUP} warm-up queries per configuration on both sides; timings are wall clock around one search call \
         (Python: `index.search(q[None], 10)`; its call overhead is a few µs). The index is resident in RAM on both sides."
    ));

    let data = json!({
        "n": n, "dim": DIM, "queries": QUERIES, "k": K, "threshold": THRESHOLD, "cores": cores, "seed": o.seed,
        "build_s": build_s, "faiss_add_s": faiss_add, "rows": rows_json, "recall_at_10": recall,
        "threshold_agreement": thr_agree.map(|(f, w)| json!({"found": f, "faiss_within": w})),
        "identical_across_threads": same_on_one_thread,
        "faiss_batch": faiss.as_ref().map(|f| f["batch"].clone()),
        "faiss_version": faiss.as_ref().map(|f| f["faiss_version"].clone()),
    });
    Ok(Section {
        key: "search",
        title: format!("Search: SearchIndex vs faiss-cpu IndexFlatL2 over {} embeddings", thousands(n as f64)),
        about: "Exact brute-force search of the aggregator (`sightline_aggregator::search::SearchIndex`, \
                AVX2 scan) against `faiss.IndexFlatL2` — the exact-search peer an integrator would reach for — \
                on the same random dlib-like 128-d vectors and the same queries, written to one file and read by both."
            .into(),
        headline,
        tables: vec![table, extra],
        notes,
        data,
        ok,
        seconds: started.elapsed().as_secs_f64(),
    })
}
