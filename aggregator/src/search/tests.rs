//! The index against plain `f32` scans: exact on ordinary and adversarial data, whatever the
//! thread split; the store as the truth for what is gone and where a sighting is now.

use super::*;
use crate::store::Store;
use time::Duration;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const DIM: usize = 128;
const MODEL: &str = "dlib-resnet-v1";
const CAMERAS: [&str; 3] = ["gate", "hall", "dock"];

/// SplitMix64: a seeded, dependency-free generator, good enough for test data.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        normalised((0..dim).map(|_| self.f32()).collect())
    }
    /// `v` moved by noise of about `scale` in norm, renormalised.
    fn near(&mut self, v: &[f32], scale: f32) -> Vec<f32> {
        let noise = self.unit(v.len());
        normalised(v.iter().zip(noise).map(|(x, e)| x + scale * e).collect())
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

struct Row {
    sighting: Uuid,
    trajectory: Uuid,
    camera: &'static str,
    last_seen: OffsetDateTime,
    embedding: Vec<f32>,
}

/// `n` rows around `people` faces (so that thresholds like 0.6 have hits), one in seven an
/// exact copy of an earlier embedding (ties), `last_seen` over an hour in whole ms, shuffled.
fn data(rng: &mut Rng, n: usize, people: usize) -> Vec<Row> {
    let faces: Vec<Vec<f32>> = (0..people.max(1)).map(|_| rng.unit(DIM)).collect();
    let mut rows: Vec<Row> = Vec::with_capacity(n);
    for i in 0..n {
        let embedding = if i % 7 == 6 {
            rows[rng.below(i)].embedding.clone()
        } else {
            let face = &faces[rng.below(faces.len())];
            let scale = [0.1, 0.3, 0.5][rng.below(3)];
            rng.near(face, scale)
        };
        rows.push(Row {
            sighting: Uuid::from_u128(u128::from(rng.next_u64()) << 64 | i as u128),
            trajectory: Uuid::from_u128(rng.below(50) as u128 + 1),
            camera: CAMERAS[rng.below(CAMERAS.len())],
            last_seen: T0 + Duration::milliseconds(rng.below(3_600_000) as i64),
            embedding,
        });
    }
    rows
}

fn index_of(rows: &[Row]) -> SearchIndex {
    let mut index = SearchIndex::new(MODEL, rows.first().map_or(DIM, |r| r.embedding.len()));
    for r in rows {
        index.insert(r.sighting, site_of(r.camera), r.camera, r.last_seen, &r.embedding).unwrap();
    }
    index
}

/// The `f32` embeddings a store would hold.
#[derive(Default)]
struct Memory(HashMap<Uuid, ExactEntry>);

impl Memory {
    fn of(rows: &[Row]) -> Self {
        let mut m = Memory::default();
        for r in rows {
            m.put(r.sighting, r.trajectory, &r.embedding);
        }
        m
    }

    fn put(&mut self, sighting: Uuid, trajectory: Uuid, embedding: &[f32]) {
        self.0.insert(sighting, ExactEntry { sighting, trajectory, embedding: embedding.to_vec() });
    }
}

impl Exact for Memory {
    fn exact(&self, _model: &str, sightings: &[Uuid]) -> Result<Vec<ExactEntry>, StoreError> {
        let unique: HashSet<&Uuid> = sightings.iter().collect();
        Ok(unique.into_iter().filter_map(|id| self.0.get(id).cloned()).collect())
    }
}

/// `index.search` with `exact`, the hits.
fn hits(index: &SearchIndex, query: &[f32], q: &SearchQuery, exact: &Memory) -> Vec<Hit> {
    index.search(query, q, exact).unwrap().hits
}

/// The site of a generated row's camera: `gate` is riverside's, the others the harbour's.
fn site_of(camera: &str) -> &'static str {
    if camera == "gate" { "riverside" } else { "harbour" }
}

fn selected(r: &Row, q: &SearchQuery) -> bool {
    q.since.is_none_or(|s| r.last_seen >= s)
        && q.until.is_none_or(|u| r.last_seen < u)
        && q.camera.as_deref().is_none_or(|c| c == r.camera)
        && q.sites.as_ref().is_none_or(|sites| sites.iter().any(|s| s == site_of(r.camera)))
}

fn dist64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>().sqrt()
}

/// Checks `got` against a naive f64 scan of `rows`: the right rows (any f32/f64 rounding
/// ambiguity allowed only within `EPS` of the cut-offs), distances, metadata and order.
fn check_against_naive(rows: &[Row], query: &[f32], q: &SearchQuery, got: &[Hit], ctx: &str) {
    const EPS: f64 = 1e-5;
    let max = f64::from(q.max_distance);
    let by_id: HashMap<Uuid, &Row> = rows.iter().map(|r| (r.sighting, r)).collect();
    let mut naive: Vec<(f64, Uuid)> = rows
        .iter()
        .filter(|r| selected(r, q))
        .map(|r| (dist64(&r.embedding, query), r.sighting))
        .filter(|(d, _)| *d <= max + EPS)
        .collect();
    naive.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));

    assert!(got.len() <= q.limit, "{ctx}: {} hits > limit", got.len());
    let sure = naive.iter().filter(|(d, _)| *d <= max - EPS).count();
    assert!(
        got.len() >= sure.min(q.limit) && got.len() <= naive.len().min(q.limit),
        "{ctx}: {} hits, naive scan has {sure}..={} within {max}",
        got.len(),
        naive.len()
    );
    let mut seen = std::collections::HashSet::new();
    for (i, h) in got.iter().enumerate() {
        assert!(seen.insert(h.sighting), "{ctx}: {} twice", h.sighting);
        let r = by_id[&h.sighting];
        assert!(selected(r, q), "{ctx}: hit {i} is outside the window or camera");
        let d = dist64(&r.embedding, query);
        assert!((f64::from(h.distance) - d).abs() <= EPS * (1.0 + d), "{ctx}: hit {i}: {} vs {d}", h.distance);
        assert!(h.distance <= q.max_distance, "{ctx}: hit {i} beyond max_distance");
        assert_eq!((h.trajectory, &*h.camera, h.last_seen), (r.trajectory, r.camera, r.last_seen), "{ctx}");
        if i > 0 {
            let p = &got[i - 1];
            assert!((p.distance, p.sighting) <= (h.distance, h.sighting), "{ctx}: hits {} and {i} out of order", i - 1);
        }
    }
    // nothing nearer than the last hit (or within max_distance, when fewer than limit) is missing
    let cut = if got.len() == q.limit { f64::from(got[got.len() - 1].distance) } else { max };
    for (d, id) in &naive {
        if *d < cut - EPS {
            assert!(seen.contains(id), "{ctx}: {id} at {d} is missing");
        }
    }
}

/// The same search by a plain f32 scan with the re-rank's kernel and a full sort: the index
/// must agree with it exactly (ties, filters, limit), whatever the thread split.
fn naive_f32(rows: &[Row], query: &[f32], q: &SearchQuery) -> Vec<(Uuid, f32)> {
    let max_sq = q.max_distance * q.max_distance;
    let mut all: Vec<(f32, Uuid)> = rows
        .iter()
        .filter(|r| selected(r, q))
        .map(|r| (exact::l2sq(&r.embedding, query), r.sighting))
        .filter(|(d2, _)| *d2 <= max_sq)
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.truncate(q.limit);
    let mut hits: Vec<(Uuid, f32)> =
        all.into_iter().map(|(d2, id)| (id, d2.sqrt())).filter(|(_, d)| *d <= q.max_distance).collect();
    // as documented: by distance, ties by sighting id
    hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    hits
}

/// `got == expected`, or a panic naming the first difference.
fn same(got: &[(Uuid, f32)], expected: &[(Uuid, f32)], ctx: &str) {
    if let Some(i) = (0..got.len().max(expected.len())).find(|&i| got.get(i) != expected.get(i)) {
        panic!(
            "{ctx}: {} hits, {} expected; first difference at {i}: {:?} vs {:?}",
            got.len(),
            expected.len(),
            got.get(i),
            expected.get(i)
        );
    }
}

fn queries(rows: &[Row]) -> Vec<SearchQuery> {
    let mut out = Vec::new();
    for limit in [1, 3, 10, 1000] {
        for max_distance in [0.0, 0.3, 0.6, 1.0, f32::INFINITY] {
            out.push(SearchQuery { max_distance, limit, threads: 1, ..SearchQuery::default() });
        }
    }
    let base = SearchQuery { max_distance: 0.8, limit: 20, threads: 1, ..SearchQuery::default() };
    let mid = rows.get(rows.len() / 2).map_or(T0, |r| r.last_seen);
    for (since, until) in [
        (Some(T0 + Duration::minutes(10)), Some(T0 + Duration::minutes(40))),
        (Some(mid), None),
        (None, Some(mid)),
        (Some(mid), Some(mid + Duration::milliseconds(1))),
        (Some(mid), Some(mid)),
        (Some(T0 + Duration::minutes(30)), Some(T0 + Duration::minutes(20))),
    ] {
        out.push(SearchQuery { since, until, ..base.clone() });
    }
    for sites in [vec!["harbour"], vec!["riverside", "harbour"], vec!["nowhere"], vec![]] {
        let sites: Vec<String> = sites.into_iter().map(str::to_owned).collect();
        out.push(SearchQuery { sites: Some(sites.clone()), ..base.clone() });
        out.push(SearchQuery { sites: Some(sites), camera: Some("gate".into()), ..base.clone() });
    }
    for camera in ["gate", "dock", "nowhere"] {
        out.push(SearchQuery { camera: Some(camera.into()), ..base.clone() });
        out.push(SearchQuery {
            camera: Some(camera.into()),
            since: Some(T0 + Duration::minutes(15)),
            until: Some(T0 + Duration::minutes(45)),
            ..base.clone()
        });
    }
    out
}

#[test]
fn search_is_exact_against_a_naive_scan() {
    let mut rng = Rng(0x5eed);
    let mut checked_hits = 0;
    for n in [0, 1, 7, 300, 5000] {
        let rows = data(&mut rng, n, 12);
        let index = index_of(&rows);
        let exact = Memory::of(&rows);
        assert_eq!(index.len(), n);
        // near an indexed face, an exact copy of one (distance 0), and a random direction
        let mut probes = vec![rng.unit(DIM)];
        if n > 0 {
            probes.push(rows[rng.below(n)].embedding.clone());
            let near = rng.below(n);
            probes.push(rng.near(&rows[near].embedding, 0.2));
        }
        for query in &probes {
            for q in queries(&rows) {
                let ctx = format!("n={n} {q:?}");
                let expected = naive_f32(&rows, query, &q);
                let single = hits(&index, query, &q, &exact);
                check_against_naive(&rows, query, &q, &single, &ctx);
                let got: Vec<(Uuid, f32)> = single.iter().map(|h| (h.sighting, h.distance)).collect();
                same(&got, &expected, &format!("{ctx}: vs plain f32 scan"));
                // split across threads (forced on these small indexes): the same hits
                for threads in [2, 3, 8] {
                    let q = SearchQuery { threads, ..q.clone() };
                    let multi = index.search_with(query, &q, &exact, 1).unwrap();
                    assert_eq!(multi.hits, single, "{ctx}: {threads} threads");
                }
                checked_hits += single.len();
            }
        }
    }
    assert!(checked_hits > 5_000, "the data must produce hits to check: {checked_hits}");
}

#[test]
fn large_indexes_are_split_across_threads_with_identical_results() {
    let mut rng = Rng(42);
    let n = PARALLEL_MIN_ROWS + 7_001;
    let rows = data(&mut rng, n, 40);
    let index = index_of(&rows);
    let exact = Memory::of(&rows);
    for query in [rows[17].embedding.clone(), rng.near(&rows[n - 3].embedding, 0.3), rng.unit(DIM)] {
        let q = SearchQuery { max_distance: 0.9, limit: 25, threads: 1, ..SearchQuery::default() };
        let single = hits(&index, &query, &q, &exact);
        check_against_naive(&rows, &query, &q, &single, "single");
        for threads in [0, 2, 3, 5] {
            let multi = hits(&index, &query, &SearchQuery { threads, ..q.clone() }, &exact);
            assert_eq!(multi, single, "{threads} threads");
        }
    }
}

#[test]
fn ties_are_ordered_by_sighting_id() {
    let mut index = SearchIndex::new(MODEL, 4);
    let mut exact = Memory::default();
    let ids: Vec<Uuid> = [9u128, 3, 7, 1, 5].into_iter().map(Uuid::from_u128).collect();
    for id in &ids {
        index.insert(*id, "riverside", "gate", T0, &[0.5, 0.0, 0.0, 0.0]).unwrap();
        exact.put(*id, Uuid::nil(), &[0.5, 0.0, 0.0, 0.0]);
    }
    index.insert(Uuid::from_u128(2), "riverside", "gate", T0, &[0.1, 0.0, 0.0, 0.0]).unwrap();
    exact.put(Uuid::from_u128(2), Uuid::nil(), &[0.1, 0.0, 0.0, 0.0]);
    let q = SearchQuery { limit: 4, ..SearchQuery::default() };
    let found = hits(&index, &[0.0; 4], &q, &exact);
    let got: Vec<(u128, f32)> = found.iter().map(|h| (h.sighting.as_u128(), h.distance)).collect();
    assert_eq!(got, [(2, 0.1), (1, 0.5), (3, 0.5), (5, 0.5)]);
}

#[test]
fn remove_before_drops_expired_entries_and_keeps_the_rest_searchable() {
    let mut rng = Rng(3);
    let rows = data(&mut rng, 2000, 10);
    let mut index = index_of(&rows);
    let cutoff = T0 + Duration::minutes(25) + Duration::microseconds(500);
    let kept: Vec<Row> = rows.into_iter().filter(|r| r.last_seen >= cutoff).collect();
    let exact = Memory::of(&kept);
    let removed = index.remove_before(cutoff);
    assert_eq!(removed, 2000 - kept.len());
    assert!(removed > 500 && !kept.is_empty(), "{removed}");
    assert_eq!(index.len(), kept.len());
    // rows kept in order, with their own metadata and codes
    for (i, r) in kept.iter().enumerate() {
        let b = &index.blocks[0];
        assert_eq!(b.sightings[i], r.sighting);
        assert_eq!(&*index.places[b.cameras[i] as usize].1, r.camera);
        assert_eq!(b.last_seen[i], floor_ms(r.last_seen));
        let off = dist64(&b.codes.decoded(i), &r.embedding);
        assert!(off < 0.02, "row {i}: codes {off} off their embedding");
    }
    let q = SearchQuery { max_distance: f32::INFINITY, limit: usize::MAX, ..SearchQuery::default() };
    let query = kept[0].embedding.clone();
    assert_eq!(hits(&index, &query, &q, &exact).len(), kept.len());
    let q = SearchQuery { limit: 100, max_distance: 0.7, ..q };
    check_against_naive(&kept, &query, &q, &hits(&index, &query, &q, &exact), "after remove_before");
    // nothing more to remove at the same cutoff; everything at a later one
    assert_eq!(index.remove_before(cutoff), 0);
    let n = index.len();
    assert_eq!(index.remove_before(T0 + Duration::hours(2)), n);
    assert!(index.is_empty() && index.blocks.iter().all(|b| b.len() == 0));
    assert_eq!(hits(&index, &query, &SearchQuery::default(), &exact), []);
    // and it takes new entries again
    index.insert(kept[0].sighting, "riverside", "gate", T0, &query).unwrap();
    assert_eq!(hits(&index, &query, &SearchQuery::default(), &exact).len(), 1);
}

#[test]
fn retention_drops_whole_blocks_and_windows_skip_them() {
    // three and a half blocks of 4-d entries, each block's a millisecond apart and 2 minutes
    // after the block before, a few late ones among the newest: the cutoff drops two blocks
    // whole and cuts through the third
    let n = 3 * block::BLOCK_ROWS + block::BLOCK_ROWS / 2;
    let mut index = SearchIndex::new(MODEL, 4);
    let mut exact = Memory::default();
    let at = |i: usize| {
        let late = i % 1000 == 999 && i / block::BLOCK_ROWS == 3;
        T0 + Duration::minutes(if late { 0 } else { 2 * (i / block::BLOCK_ROWS) as i64 })
            + Duration::milliseconds((i % block::BLOCK_ROWS) as i64)
    };
    for i in 0..n {
        let id = Uuid::from_u128(i as u128 + 1);
        let e = [1.0, (i % 97) as f32 / 97.0, 0.0, 0.0];
        index.insert(id, "riverside", "gate", at(i), &e).unwrap();
        exact.put(id, Uuid::nil(), &e);
    }
    assert_eq!((index.len(), index.blocks.len()), (n, 4));
    // a window around the second block finds what is there
    let q = SearchQuery {
        since: Some(T0 + Duration::minutes(2)),
        until: Some(T0 + Duration::minutes(4)),
        max_distance: f32::INFINITY,
        limit: usize::MAX,
        ..SearchQuery::default()
    };
    let hits = hits(&index, &[1.0, 0.0, 0.0, 0.0], &q, &exact);
    assert_eq!(hits.len(), block::BLOCK_ROWS);
    // cut at 4 min + 100 ms: blocks 0 and 1 go whole, block 2 keeps all but 100, the last keeps
    // all but its late entries
    let cutoff = T0 + Duration::minutes(4) + Duration::milliseconds(100);
    let late = (0..n).filter(|&i| at(i) < cutoff && i >= 3 * block::BLOCK_ROWS).count();
    assert!(late > 20, "{late}");
    let removed = index.remove_before(cutoff);
    assert_eq!(removed, 2 * block::BLOCK_ROWS + 100 + late);
    assert_eq!(index.blocks.len(), 2);
    assert_eq!(index.len(), n - removed);
    assert_eq!(index.blocks[0].first, floor_ms(cutoff));
    // and the rest is searchable, exactly
    let all = SearchQuery { max_distance: f32::INFINITY, limit: usize::MAX, ..SearchQuery::default() };
    assert_eq!(self::hits(&index, &[1.0, 0.0, 0.0, 0.0], &all, &exact).len(), index.len());
}

#[test]
fn searches_wait_for_the_load_and_what_ingest_adds_meanwhile_is_indexed_once() {
    use crate::store::{SightingPlacement, SqliteStore};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.sqlite")).unwrap();
    let mut rng = Rng(31);
    let stored: Vec<sightline_contract::Sighting> = (0..300)
        .map(|i| {
            sightline_contract::testing::sighting()
                .site("riverside")
                .camera(CAMERAS[i % 3])
                .at(T0 + Duration::seconds(i as i64))
                .embedding(rng.unit(DIM))
                .build()
        })
        .collect();
    let placements: Vec<SightingPlacement> = stored
        .iter()
        .map(|s| SightingPlacement { sighting: s, trajectory: s.id, distance: None, received_at: s.last_seen })
        .collect();
    store.record_batch(&placements, &[]).unwrap();

    let mut index = SearchIndex::new(MODEL, DIM);
    index.begin_load();
    // ingest, while the index loads: a sighting the store already had (stored as the load
    // began) and a new one (stored now too)
    let new = sightline_contract::testing::sighting()
        .site("riverside")
        .camera("gate")
        .at(T0)
        .embedding(rng.unit(DIM))
        .build();
    store.record_sighting(&new, new.id, None, T0).unwrap();
    for s in [&stored[7], &new] {
        index.insert(s.id, &s.site, &s.camera, s.last_seen, &s.embedding).unwrap();
    }
    let q = SearchQuery { max_distance: f32::INFINITY, limit: usize::MAX, ..SearchQuery::default() };
    assert!(matches!(index.search(&new.embedding, &q, &store), Err(SearchError::Loading { loaded: 0 })));
    let index = std::sync::RwLock::new(index);
    let report = SearchIndex::load_into(&index, &store, T0 - Duration::hours(1)).unwrap();
    let index = index.into_inner().unwrap();
    assert_eq!((report.loaded, report.skipped, index.loading()), (301, 0, false));
    assert_eq!(index.len(), 301, "each sighting once");
    let found = index.search(&new.embedding, &q, &store).unwrap().hits;
    assert_eq!(found.len(), 301);
    assert_eq!(found.iter().map(|h| h.sighting).collect::<HashSet<_>>().len(), 301);
    assert_eq!(found[0].sighting, new.id);
}

#[test]
fn entries_gone_from_the_store_are_not_hits_and_do_not_hide_others() {
    // the store purged the nearest entries (retention) before the index: the k nearest that are
    // left are found, by a second scan that leaves the gone ones out
    let mut rng = Rng(21);
    let rows = data(&mut rng, 3000, 6);
    let index = index_of(&rows);
    let query = rows[10].embedding.clone();
    let q = SearchQuery { max_distance: f32::INFINITY, limit: 5, threads: 1, ..SearchQuery::default() };
    let first = index.search(&query, &q, &Memory::of(&rows)).unwrap();
    assert_eq!(first.rounds, 1);
    let gone: HashSet<Uuid> = first.hits.iter().map(|h| h.sighting).collect();
    let left: Vec<Row> = rows.into_iter().filter(|r| !gone.contains(&r.sighting)).collect();
    let found = index.search(&query, &q, &Memory::of(&left)).unwrap();
    assert!(found.rounds >= 2, "{found:?}");
    let got: Vec<(Uuid, f32)> = found.hits.iter().map(|h| (h.sighting, h.distance)).collect();
    assert_eq!(got, naive_f32(&left, &query, &q));
    assert_eq!(got.len(), 5);
}

#[test]
fn retention_during_searches_never_gives_an_answer_of_neither_state() {
    // the store purges first, the index follows (as `retention.rs` does); searches run all the
    // while on other threads: each answer is the exact one before the purge or after it
    struct Shared(std::sync::RwLock<Memory>);
    impl Exact for Shared {
        fn exact(&self, model: &str, sightings: &[Uuid]) -> Result<Vec<ExactEntry>, StoreError> {
            self.0.read().unwrap().exact(model, sightings)
        }
    }
    let mut rng = Rng(77);
    let rows = data(&mut rng, 6000, 30);
    let cutoff = T0 + Duration::minutes(30);
    let kept: Vec<Row> =
        rows.iter().filter(|r| r.last_seen >= cutoff).map(|r| Row { embedding: r.embedding.clone(), ..*r }).collect();
    let queries: Vec<Vec<f32>> = (0..6).map(|i| rng.near(&rows[i * 800].embedding, 0.3)).collect();
    let q = SearchQuery { max_distance: 0.9, limit: 7, threads: 1, ..SearchQuery::default() };
    let before: Vec<Vec<(Uuid, f32)>> = queries.iter().map(|e| naive_f32(&rows, e, &q)).collect();
    let after: Vec<Vec<(Uuid, f32)>> = queries.iter().map(|e| naive_f32(&kept, e, &q)).collect();
    assert_ne!(before, after, "the purge must change some answers");
    let index = std::sync::RwLock::new(index_of(&rows));
    let store = Shared(std::sync::RwLock::new(Memory::of(&rows)));
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (done, runs) = (AtomicBool::new(false), AtomicUsize::new(0));
    // waits until the searchers have answered `n` queries in all (a searcher that failed stops)
    let answered = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while runs.load(Ordering::SeqCst) < n {
            if std::time::Instant::now() > deadline {
                done.store(true, Ordering::SeqCst);
                panic!("the searchers stopped answering");
            }
            std::thread::yield_now();
        }
    };
    std::thread::scope(|s| {
        let searchers: Vec<_> = (0..2)
            .map(|t| {
                let (index, store, done, runs) = (&index, &store, &done, &runs);
                let (queries, q, before, after) = (&queries, &q, &before, &after);
                s.spawn(move || {
                    let mut i = t;
                    while !done.load(Ordering::SeqCst) {
                        let k = i % queries.len();
                        let found = index.read().unwrap().search(&queries[k], q, store).unwrap();
                        let got: Vec<(Uuid, f32)> = found.hits.iter().map(|h| (h.sighting, h.distance)).collect();
                        assert!(got == before[k] || got == after[k], "query {k}: an answer of neither state");
                        runs.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                })
            })
            .collect();
        // searches before the purge, between the store's and the index's, and after both
        answered(30);
        store.0.write().unwrap().0.retain(|id, _| kept.iter().any(|r| r.sighting == *id));
        let purged = runs.load(Ordering::SeqCst);
        answered(purged + 30);
        index.write().unwrap().remove_before(cutoff);
        let removed = runs.load(Ordering::SeqCst);
        answered(removed + 30);
        done.store(true, Ordering::SeqCst);
        searchers.into_iter().for_each(|h| h.join().unwrap());
    });
    // and once both are done, the answers are the new ones
    for (i, e) in queries.iter().enumerate() {
        let got: Vec<(Uuid, f32)> = index
            .read()
            .unwrap()
            .search(e, &q, &store)
            .unwrap()
            .hits
            .iter()
            .map(|h| (h.sighting, h.distance))
            .collect();
        assert_eq!(got, after[i]);
    }
}

#[test]
fn trajectories_come_from_the_store() {
    // a merge after the fact moved the sighting: the hit says where it is now
    let mut index = SearchIndex::new(MODEL, 4);
    let (s, before, after) = (Uuid::from_u128(1), Uuid::from_u128(10), Uuid::from_u128(20));
    index.insert(s, "riverside", "gate", T0, &[1.0, 0.0, 0.0, 0.0]).unwrap();
    let mut exact = Memory::default();
    exact.put(s, before, &[1.0, 0.0, 0.0, 0.0]);
    let q = SearchQuery::default();
    assert_eq!(hits(&index, &[1.0, 0.0, 0.0, 0.0], &q, &exact)[0].trajectory, before);
    exact.put(s, after, &[1.0, 0.0, 0.0, 0.0]);
    assert_eq!(hits(&index, &[1.0, 0.0, 0.0, 0.0], &q, &exact)[0].trajectory, after);
}

#[test]
fn exact_on_adversarial_data() {
    // Ties, entries exactly at the threshold, one coordinate dominating (a coarse scale), tiny
    // and huge magnitudes, zero vectors, the query itself: every search equals a plain f32 scan.
    let mut rng = Rng(0xad5e);
    let mut checked = 0;
    for (case, magnitude) in [1e-12f32, 1e-3, 1.0, 1e3, 1e15].into_iter().enumerate() {
        let dim = [1, 3, 8, 128, 131][case];
        let base: Vec<f32> = (0..dim).map(|_| rng.f32() * magnitude).collect();
        let mut rows: Vec<Row> = Vec::new();
        for i in 0..1500 {
            let mut e: Vec<f32> = match i % 6 {
                // a tie with an earlier row
                0 if i > 0 => rows[rng.below(i)].embedding.clone(),
                // one coordinate far larger than the rest
                1 => {
                    let mut e: Vec<f32> = base.iter().map(|x| x + rng.f32() * magnitude * 0.01).collect();
                    e[rng.below(dim)] += magnitude * 50.0 * rng.f32();
                    e
                }
                2 => vec![0.0; dim],
                // on a sphere around the query (many at one distance)
                3 => {
                    let dir = rng.unit(dim);
                    base.iter().zip(dir).map(|(x, d)| x + d * magnitude * 0.6).collect()
                }
                _ => base.iter().map(|x| x + rng.f32() * magnitude * (i % 7) as f32 * 0.2).collect(),
            };
            if i % 97 == 0 {
                e.clone_from(&base);
            }
            rows.push(Row {
                sighting: Uuid::from_u128(rng.below(1 << 20) as u128 * 4096 + i as u128),
                trajectory: Uuid::from_u128(i as u128 % 9),
                camera: CAMERAS[i % 3],
                last_seen: T0 + Duration::milliseconds(i as i64),
                embedding: e,
            });
        }
        let index = index_of(&rows);
        let exact = Memory::of(&rows);
        // thresholds exactly at some rows' f32 distances
        let at: Vec<f32> = rows.iter().step_by(211).map(|r| exact::l2sq(&r.embedding, &base).sqrt()).collect();
        for max_distance in at.into_iter().chain([0.0, magnitude * 0.6, f32::INFINITY]) {
            for limit in [1, 2, 7, 40, 5000] {
                let q = SearchQuery { max_distance, limit, threads: 1, ..SearchQuery::default() };
                let expected = naive_f32(&rows, &base, &q);
                let got: Vec<(Uuid, f32)> =
                    hits(&index, &base, &q, &exact).iter().map(|h| (h.sighting, h.distance)).collect();
                same(&got, &expected, &format!("x{magnitude} dim {dim} {q:?}"));
                let multi = index.search_with(&base, &SearchQuery { threads: 3, ..q.clone() }, &exact, 1).unwrap();
                same(&multi.hits.iter().map(|h| (h.sighting, h.distance)).collect::<Vec<_>>(), &expected, "3 threads");
                checked += got.len();
            }
        }
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn the_reranked_are_few() {
    // dlib-like data: the candidates read from the store are the hits and a thin band around them
    let mut rng = Rng(8);
    let rows = data(&mut rng, 20_000, 2000);
    let index = index_of(&rows);
    let exact = Memory::of(&rows);
    let (mut reranked, mut hit) = (0, 0);
    for i in 0..20 {
        let query = rng.near(&rows[i * 997].embedding, 0.2);
        let found = index.search(&query, &SearchQuery { limit: 50, ..SearchQuery::default() }, &exact).unwrap();
        reranked += found.reranked;
        hit += found.hits.len();
    }
    assert!(hit > 20, "{hit}");
    assert!(reranked < 3 * hit + 200, "{reranked} re-ranked for {hit} hits");
}

#[test]
fn time_windows_are_half_open_at_millisecond_precision() {
    let mut index = SearchIndex::new(MODEL, 2);
    let mut exact = Memory::default();
    let at = |ms: i64| T0 + Duration::milliseconds(ms);
    for ms in 0..5 {
        index.insert(Uuid::from_u128(ms as u128 + 1), "riverside", "gate", at(ms), &[0.0, 0.0]).unwrap();
        exact.put(Uuid::from_u128(ms as u128 + 1), Uuid::nil(), &[0.0, 0.0]);
    }
    // a sub-millisecond last_seen is floored, like the store does
    index.insert(Uuid::from_u128(100), "riverside", "gate", at(7) + Duration::microseconds(900), &[0.0, 0.0]).unwrap();
    exact.put(Uuid::from_u128(100), Uuid::nil(), &[0.0, 0.0]);
    let ids = |since: Option<OffsetDateTime>, until: Option<OffsetDateTime>| -> Vec<u128> {
        let q = SearchQuery { since, until, limit: 100, ..SearchQuery::default() };
        let mut v: Vec<u128> = hits(&index, &[0.0, 0.0], &q, &exact).iter().map(|h| h.sighting.as_u128()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(Some(at(1)), Some(at(3))), [2, 3]);
    assert_eq!(ids(Some(at(1) + Duration::microseconds(1)), Some(at(3) + Duration::microseconds(1))), [3, 4]);
    assert_eq!(ids(Some(at(4)), None), [5, 100]);
    assert_eq!(ids(None, Some(at(1))), [1]);
    assert_eq!(ids(Some(at(7)), Some(at(8))), [100]);
    assert_eq!(ids(Some(at(3)), Some(at(3))), Vec::<u128>::new());
    let q = SearchQuery { since: Some(at(7)), ..SearchQuery::default() };
    assert_eq!(hits(&index, &[0.0, 0.0], &q, &exact)[0].last_seen, at(7));
}

#[test]
fn bad_inserts_are_rejected_and_change_nothing() {
    let mut index = SearchIndex::new(MODEL, 4);
    index.insert(Uuid::from_u128(1), "riverside", "gate", T0, &[0.0; 4]).unwrap();
    let insert = |index: &mut SearchIndex, v: &[f32]| index.insert(Uuid::from_u128(2), "riverside", "hall", T0, v);
    assert!(matches!(
        insert(&mut index, &[0.0; 3]),
        Err(SearchError::Dimension { what: "embedding", expected: 4, got: 3, .. })
    ));
    assert!(matches!(insert(&mut index, &[0.0; 5]), Err(SearchError::Dimension { got: 5, .. })));
    assert!(matches!(insert(&mut index, &[]), Err(SearchError::Dimension { got: 0, .. })));
    assert!(matches!(
        insert(&mut index, &[0.0, 1.0, f32::INFINITY, 0.0]),
        Err(SearchError::NonFinite { what: "embedding", index: 2, value: f32::INFINITY })
    ));
    assert!(matches!(insert(&mut index, &[f32::NAN, 0.0, 0.0, 0.0]), Err(SearchError::NonFinite { index: 0, .. })));
    assert!(matches!(
        insert(&mut index, &[0.0, 0.0, 0.0, f32::NEG_INFINITY]),
        Err(SearchError::NonFinite { index: 3, .. })
    ));
    let e = insert(&mut index, &[0.0; 3]).unwrap_err().to_string();
    assert!(e.contains("embedding") && e.contains("3 values") && e.contains("4-d"), "{e}");
    assert_eq!(index.len(), 1);
    let b = &index.blocks[0];
    assert_eq!((index.blocks.len(), b.codes.len(), b.cameras.len(), b.last_seen.len()), (1, 1, 1, 1));
    assert_eq!(index.camera_names.len(), 1, "a rejected insert interns no camera");
    assert_eq!(index.entry_bytes(), 4 + 2 + 16 + 4 + 8);
    assert_eq!(SearchIndex::new(MODEL, DIM).entry_bytes(), 158);
}

#[test]
fn bad_queries_are_errors() {
    let mut index = SearchIndex::new(MODEL, DIM);
    let mut exact = Memory::default();
    index.insert(Uuid::from_u128(1), "riverside", "gate", T0, &[0.1; DIM]).unwrap();
    exact.put(Uuid::from_u128(1), Uuid::nil(), &[0.1; DIM]);
    let q = SearchQuery::default();
    assert!(matches!(
        index.search(&[0.1; 127], &q, &exact),
        Err(SearchError::Dimension { what: "query", expected: DIM, got: 127, .. })
    ));
    assert!(matches!(index.search(&[0.1; 129], &q, &exact), Err(SearchError::Dimension { got: 129, .. })));
    let mut nan = vec![0.1; DIM];
    nan[5] = f32::NAN;
    assert!(matches!(index.search(&nan, &q, &exact), Err(SearchError::NonFinite { what: "query", index: 5, .. })));
    for bad in [f32::NAN, -0.1] {
        let q = SearchQuery { max_distance: bad, ..SearchQuery::default() };
        assert!(matches!(index.search(&[0.1; DIM], &q, &exact), Err(SearchError::MaxDistance(_))), "{bad}");
    }
    // a wrong-size query is an error even on an empty index
    assert!(SearchIndex::new(MODEL, DIM).search(&[0.0; 3], &q, &exact).is_err());
    // and the good query still works
    assert_eq!(hits(&index, &[0.1; DIM], &q, &exact).len(), 1);
}

#[test]
fn empty_results() {
    let mut index = SearchIndex::new(MODEL, 2);
    let mut exact = Memory::default();
    assert!(index.is_empty());
    assert_eq!(hits(&index, &[0.0, 0.0], &SearchQuery::default(), &exact), []);
    index.insert(Uuid::from_u128(1), "riverside", "gate", T0, &[0.0, 1.0]).unwrap();
    exact.put(Uuid::from_u128(1), Uuid::nil(), &[0.0, 1.0]);
    assert_eq!(hits(&index, &[0.0, 0.0], &SearchQuery { limit: 0, ..SearchQuery::default() }, &exact), []);
    // distance 1 > 0.6
    assert_eq!(hits(&index, &[0.0, 0.0], &SearchQuery::default(), &exact), []);
    let hit = hits(&index, &[0.0, 0.0], &SearchQuery { max_distance: 1.0, ..SearchQuery::default() }, &exact);
    assert_eq!(hit.len(), 1, "max_distance is inclusive");
    assert_eq!((index.model(), index.dim(), index.len()), (MODEL, 2, 1));
}

#[test]
fn load_builds_the_index_from_the_store() {
    use crate::store::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.sqlite")).unwrap();
    let mut rng = Rng(11);
    let sighting = |rng: &mut Rng, camera: &str, last: OffsetDateTime, model: &str| {
        sightline_contract::testing::sighting()
            .site("riverside")
            .camera(camera)
            .first_seen(last - Duration::seconds(2))
            .last_seen(last)
            .model(model)
            .embedding(rng.unit(DIM))
            .build()
    };
    let mut stored = Vec::new();
    for i in 0..20 {
        let s = sighting(&mut rng, CAMERAS[i % 3], T0 + Duration::minutes(i as i64), MODEL);
        let trajectory = Uuid::from_u128(i as u128 % 4 + 1);
        assert!(store.record_sighting(&s, trajectory, None, T0 + Duration::hours(1)).unwrap());
        stored.push((s, trajectory));
    }
    let other = sighting(&mut rng, "gate", T0 + Duration::minutes(30), "another-model");
    store.record_sighting(&other, Uuid::from_u128(99), None, T0 + Duration::hours(1)).unwrap();

    let since = T0 + Duration::minutes(5);
    let index = SearchIndex::load(&store, MODEL, DIM, since).unwrap();
    assert_eq!((index.model(), index.dim(), index.len()), (MODEL, DIM, 15));
    for (s, trajectory) in &stored[5..] {
        let q = SearchQuery { limit: 1, max_distance: 1e-3, ..SearchQuery::default() };
        let hits = index.search(&s.embedding, &q, &store).unwrap().hits;
        assert_eq!(hits.len(), 1);
        let h = &hits[0];
        assert_eq!((h.sighting, h.trajectory, &*h.camera, h.last_seen), (s.id, *trajectory, &*s.camera, s.last_seen));
    }
    let q = SearchQuery { limit: 100, max_distance: f32::INFINITY, ..SearchQuery::default() };
    let found = index.search(&stored[0].0.embedding, &q, &store).unwrap().hits;
    assert!(found.iter().all(|h| h.sighting != stored[0].0.id && h.sighting != other.id));

    // a dimension that is not the stored embeddings' fits none of them: an error naming one
    let e = SearchIndex::load(&store, MODEL, 64, since).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { what: "embedding", .. }), "{e}");
    assert!(e.to_string().contains(&stored[5].0.id.to_string()), "{e}");

    // one damaged row (a NaN, a short vector) is skipped; the others are still searchable
    let mut nan = sighting(&mut rng, "gate", T0 + Duration::minutes(40), MODEL);
    nan.embedding[3] = f32::NAN;
    let mut short = sighting(&mut rng, "gate", T0 + Duration::minutes(41), MODEL);
    short.embedding.truncate(DIM - 1);
    for bad in [&nan, &short] {
        assert!(store.record_sighting(bad, Uuid::from_u128(98), None, T0 + Duration::hours(1)).unwrap());
    }
    let index = SearchIndex::load(&store, MODEL, DIM, since).unwrap();
    assert_eq!(index.len(), 15);
    let found = index.search(&stored[10].0.embedding, &q, &store).unwrap().hits;
    assert!(found.iter().all(|h| h.sighting != nan.id && h.sighting != short.id));
    assert_eq!(found.len(), 15);
}
