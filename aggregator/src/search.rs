//! The in-memory face-embedding search index behind `POST /api/v1/search` and the watchlist.
//!
//! It holds every embedding of one model (128-d dlib face embeddings, `f32`, compared by
//! Euclidean distance; the same person is below 0.6) whose sighting is inside the retention
//! window, and answers "which sightings are within `max_distance` of this face, nearest first",
//! optionally restricted to a time window and a camera.
//!
//! # Why exact brute force
//!
//! Every query scans every vector. A million 128-d vectors are 1M × 128 × 4 B = 512 MiB, read
//! once per query: the scan is bound by memory bandwidth, not by arithmetic (AVX2 with FMA does a
//! 128-d squared distance in a few dozen cycles, far less than it takes to stream its 512 B from
//! DRAM). At the ~10–20 GB/s one socket streams, that is some 25–50 ms per query over 1M vectors
//! and a few ms over 100k, on every core it is given. That is fast enough for an operator's
//! search and for the watchlist, and it buys what an approximate index (HNSW, IVF-PQ) cannot:
//! - **recall is 1**: a search for a person, or a watchlist match, never silently misses a
//!   sighting that is within the threshold; results are reproducible and auditable;
//! - no build or training step, no tuning, no graph memory on top of the vectors;
//! - retention (deleting the oldest entries every hour) is an O(n) in-place compaction, where
//!   deletions degrade graph indexes.
//!
//! # Memory
//!
//! The vectors live in one contiguous `Vec<f32>` (`len × dim`), the metadata in parallel
//! columns. Per entry: `dim × 4` B of vector (512 B at 128-d) + 16 B sighting id + 16 B
//! trajectory id + 4 B camera index + 8 B `last_seen` (unix ms) = **556 B at 128-d**, so 1M
//! entries take about 530 MiB (plus up to as much again, transiently, while a column grows).
//! Camera names are interned once in a small table of `Arc<str>`.
//!
//! # How a query runs
//!
//! Squared L2 distances are compared against `max_distance²`; the square root is only taken for
//! the hits. Each scanning thread keeps its own bounded max-heap of the `limit` best candidates
//! (ordered by squared distance, then sighting id), and the heaps are merged at the end. Indexes
//! above [`PARALLEL_MIN_ROWS`] rows are split across `SearchQuery::threads` scoped threads. The
//! distance kernel is chosen once per process: AVX2 + FMA on x86-64 CPUs that have them, a
//! portable one (written so that LLVM vectorises it for the baseline target) everywhere else
//! (`crate::vectors`, which the correlator shares).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{Store, StoreError};
use crate::vectors::{Interner, Matrix, l2sq_portable};

/// Above this many rows a search is split across threads (when it is given more than one).
pub const PARALLEL_MIN_ROWS: usize = 2 * MIN_ROWS_PER_THREAD;

/// Fewer rows than this per thread cost more in thread start-up than they save.
const MIN_ROWS_PER_THREAD: usize = 16 * 1024;

/// A rejected insert or query. Nothing is changed when an insert fails.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error("{what}: {got} values, the {model:?} search index holds {expected}-d embeddings")]
    Dimension { what: &'static str, model: String, expected: usize, got: usize },
    #[error("{what}: value {index} is {value}, not a finite number")]
    NonFinite { what: &'static str, index: usize, value: f32 },
    #[error("max_distance: {0} is not a number >= 0")]
    MaxDistance(f32),
}

/// What to search for: hits are the entries whose `last_seen` is in `[since, until)`, seen by
/// `camera` (any camera when `None`), within `max_distance` of the query embedding; the `limit`
/// nearest of them, nearest first.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    /// `last_seen >= since`.
    pub since: Option<OffsetDateTime>,
    /// `last_seen < until`.
    pub until: Option<OffsetDateTime>,
    /// Only this camera's sightings (an unknown camera has none).
    pub camera: Option<String>,
    /// Only these sites' sightings; `None`: every site.
    pub sites: Option<Vec<String>>,
    /// Euclidean distance, inclusive; `f32::INFINITY` for no limit.
    pub max_distance: f32,
    /// At most this many hits.
    pub limit: usize,
    /// Scanning threads; 0: `std::thread::available_parallelism()`. Small indexes are scanned
    /// on the calling thread whatever this says.
    pub threads: usize,
}

impl Default for SearchQuery {
    /// Everything in the index, same-person threshold (0.6), 10 hits, every core.
    fn default() -> Self {
        SearchQuery { since: None, until: None, camera: None, sites: None, max_distance: 0.6, limit: 10, threads: 0 }
    }
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub sighting: Uuid,
    pub trajectory: Uuid,
    pub site: Arc<str>,
    pub camera: Arc<str>,
    /// At millisecond precision (floored), like the store.
    pub last_seen: OffsetDateTime,
    /// Euclidean distance to the query.
    pub distance: f32,
}

/// The exact embedding search index of one model. See the module documentation.
pub struct SearchIndex {
    model: String,
    /// `len` rows of `dim` values; the other columns are in step with it.
    vectors: Matrix,
    sightings: Vec<Uuid>,
    trajectories: Vec<Uuid>,
    /// Numbers in `camera_names` and `places`.
    cameras: Vec<u32>,
    /// Unix milliseconds.
    last_seen: Vec<i64>,
    /// Interned `site/camera` keys; never shrinks (a deployment has a bounded set of cameras).
    camera_names: Interner,
    /// (site, camera) of each interned key.
    places: Vec<(Arc<str>, Arc<str>)>,
}

impl fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchIndex")
            .field("model", &self.model)
            .field("dim", &self.dim())
            .field("len", &self.len())
            .field("cameras", &self.camera_names.len())
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// An empty index of `dim`-d embeddings of `model`.
    ///
    /// # Panics
    /// When `dim` is 0.
    pub fn new(model: &str, dim: usize) -> Self {
        assert!(dim > 0, "search index {model:?}: dimension must be positive");
        SearchIndex {
            model: model.to_owned(),
            vectors: Matrix::new(dim),
            sightings: Vec::new(),
            trajectories: Vec::new(),
            cameras: Vec::new(),
            last_seen: Vec::new(),
            camera_names: Interner::new(),
            places: Vec::new(),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn dim(&self) -> usize {
        self.vectors.dim()
    }

    pub fn len(&self) -> usize {
        self.sightings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
    }

    /// Moves every sighting of trajectory `from` to `into` (a merge after the fact); how many.
    pub fn retarget(&mut self, from: Uuid, into: Uuid) -> usize {
        let mut moved = 0;
        for t in self.trajectories.iter_mut().filter(|t| **t == from) {
            *t = into;
            moved += 1;
        }
        moved
    }

    /// Adds one sighting's embedding. `last_seen` is kept at millisecond precision (floored).
    ///
    /// # Errors
    /// [`SearchError::Dimension`] when `embedding` is not `dim` long, [`SearchError::NonFinite`]
    /// when a value is NaN or infinite; nothing is inserted then.
    pub fn insert(
        &mut self,
        sighting: Uuid,
        trajectory: Uuid,
        site: &str,
        camera: &str,
        last_seen: OffsetDateTime,
        embedding: &[f32],
    ) -> Result<(), SearchError> {
        check_vector("embedding", &self.model, self.dim(), embedding)?;
        // ids hold no `/`: the key is unambiguous
        let place = self.camera_names.intern(&format!("{site}/{camera}"));
        if place as usize == self.places.len() {
            self.places.push((site.into(), camera.into()));
        }
        self.vectors.push(embedding);
        self.sightings.push(sighting);
        self.trajectories.push(trajectory);
        self.cameras.push(place);
        self.last_seen.push(floor_ms(last_seen));
        Ok(())
    }

    /// Retention: drops the entries with `last_seen < cutoff` and returns how many. One O(n)
    /// pass compacting the rows in place (their order is kept); no reallocation.
    pub fn remove_before(&mut self, cutoff: OffsetDateTime) -> usize {
        // last_seen (whole ms) < cutoff  <=>  last_seen < ceil_ms(cutoff)
        let cutoff = ceil_ms(cutoff);
        let n = self.len();
        let SearchIndex { vectors, sightings, trajectories, cameras, last_seen, .. } = self;
        let kept = vectors.retain_rows(|i, to| {
            if last_seen[i] < cutoff {
                return false;
            }
            if to != i {
                sightings[to] = sightings[i];
                trajectories[to] = trajectories[i];
                cameras[to] = cameras[i];
                last_seen[to] = last_seen[i];
            }
            true
        });
        sightings.truncate(kept);
        trajectories.truncate(kept);
        cameras.truncate(kept);
        last_seen.truncate(kept);
        n - kept
    }

    /// The hits of `q` for the face `query`: within `q.max_distance`, ascending by distance
    /// (ties by sighting id), at most `q.limit`. Exact: every entry is compared.
    ///
    /// # Errors
    /// When `query` is not `dim` long or not finite, or `max_distance` is NaN or negative.
    pub fn search(&self, query: &[f32], q: &SearchQuery) -> Result<Vec<Hit>, SearchError> {
        self.search_with(query, q, MIN_ROWS_PER_THREAD, *SCAN)
    }

    fn search_with(
        &self,
        query: &[f32],
        q: &SearchQuery,
        min_rows_per_thread: usize,
        scan_fn: ScanFn,
    ) -> Result<Vec<Hit>, SearchError> {
        check_vector("query", &self.model, self.dim(), query)?;
        if q.max_distance.is_nan() || q.max_distance < 0.0 {
            return Err(SearchError::MaxDistance(q.max_distance));
        }
        // the interned cameras the query may see (`None`: every one)
        let sites: Option<std::collections::HashSet<&str>> =
            q.sites.as_ref().map(|sites| sites.iter().map(String::as_str).collect());
        let allowed: Option<Vec<bool>> = (q.camera.is_some() || sites.is_some()).then(|| {
            self.places
                .iter()
                .map(|(site, camera)| {
                    q.camera.as_deref().is_none_or(|c| c == &**camera)
                        && sites.as_ref().is_none_or(|sites| sites.contains(&**site))
                })
                .collect()
        });
        if allowed.as_ref().is_some_and(|a| !a.contains(&true)) {
            return Ok(Vec::new());
        }
        // last_seen (whole ms) >= since  <=>  last_seen >= ceil_ms(since); likewise for until.
        let from = q.since.map_or(i64::MIN, ceil_ms);
        let to = q.until.map_or(i64::MAX, ceil_ms);
        let n = self.len();
        if n == 0 || q.limit == 0 || from >= to {
            return Ok(Vec::new());
        }
        let scan = Scan {
            dim: self.dim(),
            vectors: self.vectors.values(),
            sightings: &self.sightings,
            cameras: &self.cameras,
            last_seen: &self.last_seen,
            query,
            allowed: allowed.as_deref(),
            from,
            to,
            max_sq: q.max_distance * q.max_distance,
            limit: q.limit,
        };

        let threads = match q.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        };
        let threads = threads.min(n / min_rows_per_thread.max(1)).max(1);
        let mut found = if threads > 1 {
            let per = n.div_ceil(threads);
            std::thread::scope(|s| {
                let scan = &scan;
                let workers: Vec<_> = (0..threads)
                    .map(|t| {
                        let rows = t * per..((t + 1) * per).min(n);
                        s.spawn(move || scan.run(scan_fn, rows))
                    })
                    .collect();
                let mut all = Vec::with_capacity(threads * q.limit.min(n));
                for w in workers {
                    all.extend(w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                }
                all
            })
        } else {
            scan.run(scan_fn, 0..n)
        };
        found.sort_unstable();
        found.truncate(q.limit);

        let mut hits: Vec<Hit> = found
            .into_iter()
            .map(|c| Hit {
                sighting: self.sightings[c.row],
                trajectory: self.trajectories[c.row],
                site: self.places[self.cameras[c.row] as usize].0.clone(),
                camera: self.places[self.cameras[c.row] as usize].1.clone(),
                last_seen: from_ms(self.last_seen[c.row]),
                distance: c.d2.sqrt(),
            })
            // max_distance² is rounded; the documented bound is on the distance itself
            .filter(|h| h.distance <= q.max_distance)
            .collect();
        // sqrt can map neighbouring squares to one distance: keep ties by sighting id
        hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.sighting.cmp(&b.sighting)));
        Ok(hits)
    }

    /// Builds the index of `model` from the store: every embedding whose sighting's `last_seen`
    /// is at or after `since` (the start of the retention window); `len()` tells how many.
    ///
    /// A stored embedding that does not fit the index (wrong dimension, non-finite value; ingestion
    /// checks both, so the database was damaged) is skipped and logged with its sighting: one bad
    /// row must not keep the aggregator from starting. Its sighting stays in the store, it is only
    /// not searchable.
    ///
    /// # Errors
    /// The store's; [`StoreError::Corrupt`] naming the first sighting when embeddings were stored
    /// but none fits (`dim` is not the model's: a configuration error, not damage).
    pub fn load(store: &dyn Store, model: &str, dim: usize, since: OffsetDateTime) -> Result<Self, StoreError> {
        /// Skipped rows logged one by one at most; the rest are counted.
        const LOGGED: usize = 10;
        let mut index = SearchIndex::new(model, dim);
        let (mut skipped, mut first) = (0usize, None);
        store.for_each_embedding(model, Some(since), None, &mut |row| {
            if let Err(e) = index.insert(row.sighting, row.trajectory, &row.site, &row.camera, row.last_seen, &row.embedding) {
                skipped += 1;
                if skipped <= LOGGED {
                    tracing::error!(sighting = %row.sighting, error = %e, "stored embedding skipped: it does not fit the search index");
                }
                first.get_or_insert_with(|| format!("sighting {}: {e}", row.sighting));
            }
        })?;
        if let Some(first) = first {
            if index.is_empty() {
                let detail =
                    format!("none of the {skipped} stored embeddings of {model} fits the index; first: {first}");
                return Err(StoreError::Corrupt { what: "embedding", detail });
            }
            tracing::error!(skipped, loaded = index.len(), "search index: damaged stored embeddings skipped");
        }
        Ok(index)
    }
}

fn check_vector(what: &'static str, model: &str, dim: usize, v: &[f32]) -> Result<(), SearchError> {
    if v.len() != dim {
        return Err(SearchError::Dimension { what, model: model.to_owned(), expected: dim, got: v.len() });
    }
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(SearchError::NonFinite { what, index, value: v[index] }),
        None => Ok(()),
    }
}

fn floor_ms(t: OffsetDateTime) -> i64 {
    t.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

fn ceil_ms(t: OffsetDateTime) -> i64 {
    let ns = t.unix_timestamp_nanos();
    (ns.div_euclid(1_000_000) + i128::from(ns.rem_euclid(1_000_000) != 0)) as i64
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("milliseconds taken from a valid OffsetDateTime")
}

// ---- scanning ------------------------------------------------------------------------------

/// A candidate hit: squared distance, then sighting id, then row (so that equal sightings
/// inserted twice still order the same way on every thread split).
#[derive(Clone, Copy, Debug)]
struct Cand {
    d2: f32,
    sighting: Uuid,
    row: usize,
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.d2.total_cmp(&other.d2).then(self.sighting.cmp(&other.sighting)).then(self.row.cmp(&other.row))
    }
}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Cand {}

/// The `limit` smallest candidates seen so far: a bounded max-heap whose top is the worst kept.
struct TopK {
    limit: usize,
    /// Squared distance a candidate must not exceed: `max_distance²`, then, once the heap is
    /// full, the worst kept one's.
    bound: f32,
    heap: BinaryHeap<Cand>,
}

impl TopK {
    fn new(limit: usize, max_sq: f32) -> Self {
        TopK { limit, bound: max_sq, heap: BinaryHeap::with_capacity(limit.min(1024)) }
    }

    /// `c.d2 <= self.bound` is checked by the caller.
    #[inline]
    fn push(&mut self, c: Cand) {
        if self.heap.len() < self.limit {
            self.heap.push(c);
        } else {
            let mut worst = self.heap.peek_mut().expect("limit > 0");
            if c >= *worst {
                return;
            }
            *worst = c;
        }
        if self.heap.len() == self.limit {
            self.bound = self.heap.peek().expect("limit > 0").d2;
        }
    }
}

/// One query's view of the index.
struct Scan<'a> {
    dim: usize,
    vectors: &'a [f32],
    sightings: &'a [Uuid],
    cameras: &'a [u32],
    last_seen: &'a [i64],
    query: &'a [f32],
    /// By interned camera: whether the query sees it (`None`: every camera).
    allowed: Option<&'a [bool]>,
    /// Window in unix ms, `[from, to)`.
    from: i64,
    to: i64,
    max_sq: f32,
    limit: usize,
}

/// Scans a range of rows into a top-k.
type ScanFn = fn(&Scan<'_>, Range<usize>, &mut TopK);

/// The scan for this CPU, chosen once.
static SCAN: LazyLock<ScanFn> = LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        return avx2::scan;
    }
    scan_portable
});

impl Scan<'_> {
    fn run(&self, scan_fn: ScanFn, rows: Range<usize>) -> Vec<Cand> {
        let mut top = TopK::new(self.limit, self.max_sq);
        scan_fn(self, rows, &mut top);
        top.heap.into_vec()
    }
}

/// The scan loop, generic over the distance kernel; inlined into each kernel's (possibly
/// `target_feature`) scan function so the kernel inlines into it.
#[inline(always)]
fn scan_rows(s: &Scan<'_>, rows: Range<usize>, top: &mut TopK, l2sq: impl Fn(&[f32], &[f32]) -> f32) {
    let dim = s.dim;
    let start = rows.start;
    let vectors = &s.vectors[rows.start * dim..rows.end * dim];
    let last_seen = &s.last_seen[rows.clone()];
    let cameras = &s.cameras[rows];
    for (i, v) in vectors.chunks_exact(dim).enumerate() {
        let t = last_seen[i];
        if t < s.from || t >= s.to {
            continue;
        }
        if let Some(allowed) = s.allowed
            && !allowed[cameras[i] as usize]
        {
            continue;
        }
        let d2 = l2sq(v, s.query);
        if d2 <= top.bound {
            top.push(Cand { d2, sighting: s.sightings[start + i], row: start + i });
        }
    }
}

fn scan_portable(s: &Scan<'_>, rows: Range<usize>, top: &mut TopK) {
    scan_rows(s, rows, top, l2sq_portable)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The scan loop with the AVX2 and FMA kernel inlined into it (both compiled for them). Only
    //! ever called after `available()` said yes.

    use std::ops::Range;

    pub(super) use crate::vectors::avx2::available;
    use crate::vectors::avx2::l2sq;

    use super::{Scan, TopK, scan_rows};

    /// [`super::ScanFn`] with the AVX2 kernel.
    pub(super) fn scan(s: &Scan<'_>, rows: Range<usize>, top: &mut TopK) {
        assert!(available());
        // SAFETY: the CPU has AVX2 and FMA (checked above; `is_x86_feature_detected` caches).
        unsafe { scan_avx2(s, rows, top) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn scan_avx2(s: &Scan<'_>, rows: Range<usize>, top: &mut TopK) {
        scan_rows(s, rows, top, |a, b| l2sq(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
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
        let mut index = SearchIndex::new(MODEL, DIM);
        for r in rows {
            index.insert(r.sighting, r.trajectory, site_of(r.camera), r.camera, r.last_seen, &r.embedding).unwrap();
        }
        index
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

    /// Every kernel this machine can run.
    fn kernels() -> Vec<(&'static str, ScanFn)> {
        let mut k: Vec<(&'static str, ScanFn)> = vec![("portable", scan_portable)];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            k.push(("avx2", avx2::scan));
        }
        k
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
                assert!(
                    (p.distance, p.sighting) <= (h.distance, h.sighting),
                    "{ctx}: hits {} and {i} out of order",
                    i - 1
                );
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

    /// The same search by a plain f32 scan with the portable kernel and a full sort: the index
    /// must agree with it exactly (ties, filters, limit), whatever the thread split.
    fn naive_f32(rows: &[Row], query: &[f32], q: &SearchQuery) -> Vec<(Uuid, f32)> {
        let max_sq = q.max_distance * q.max_distance;
        let mut all: Vec<(f32, Uuid)> = rows
            .iter()
            .filter(|r| selected(r, q))
            .map(|r| (l2sq_portable(&r.embedding, query), r.sighting))
            .filter(|(d2, _)| *d2 <= max_sq)
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all.truncate(q.limit);
        all.into_iter().map(|(d2, id)| (id, d2.sqrt())).filter(|(_, d)| *d <= q.max_distance).collect()
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
                    for (name, kernel) in kernels() {
                        let single = index.search_with(query, &q, MIN_ROWS_PER_THREAD, kernel).unwrap();
                        check_against_naive(&rows, query, &q, &single, &format!("{ctx} {name}"));
                        if name == "portable" {
                            let got: Vec<(Uuid, f32)> = single.iter().map(|h| (h.sighting, h.distance)).collect();
                            assert_eq!(got, expected, "{ctx}: portable kernel vs plain f32 scan");
                        }
                        // split across threads (forced on these small indexes): the same hits
                        for threads in [2, 3, 8] {
                            let q = SearchQuery { threads, ..q.clone() };
                            let multi = index.search_with(query, &q, 1, kernel).unwrap();
                            assert_eq!(multi, single, "{ctx} {name}: {threads} threads");
                        }
                        checked_hits += single.len();
                    }
                    assert_eq!(index.search(query, &q).unwrap().len(), expected.len(), "{ctx}: public search");
                }
            }
        }
        assert!(checked_hits > 10_000, "the data must produce hits to check: {checked_hits}");
    }

    #[test]
    fn large_indexes_are_split_across_threads_with_identical_results() {
        let mut rng = Rng(42);
        let n = PARALLEL_MIN_ROWS + 7_001;
        let rows = data(&mut rng, n, 40);
        let index = index_of(&rows);
        for query in [rows[17].embedding.clone(), rng.near(&rows[n - 3].embedding, 0.3), rng.unit(DIM)] {
            let q = SearchQuery { max_distance: 0.9, limit: 25, threads: 1, ..SearchQuery::default() };
            let single = index.search(&query, &q).unwrap();
            check_against_naive(&rows, &query, &q, &single, "single");
            for threads in [0, 2, 3, 5] {
                let multi = index.search(&query, &SearchQuery { threads, ..q.clone() }).unwrap();
                assert_eq!(multi, single, "{threads} threads");
            }
        }
    }

    #[test]
    fn ties_are_ordered_by_sighting_id() {
        let mut index = SearchIndex::new(MODEL, 4);
        let ids: Vec<Uuid> = [9u128, 3, 7, 1, 5].into_iter().map(Uuid::from_u128).collect();
        for id in &ids {
            index.insert(*id, Uuid::nil(), "riverside", "gate", T0, &[0.5, 0.0, 0.0, 0.0]).unwrap();
        }
        index.insert(Uuid::from_u128(2), Uuid::nil(), "riverside", "gate", T0, &[0.1, 0.0, 0.0, 0.0]).unwrap();
        let q = SearchQuery { limit: 4, ..SearchQuery::default() };
        let hits = index.search(&[0.0; 4], &q).unwrap();
        let got: Vec<(u128, f32)> = hits.iter().map(|h| (h.sighting.as_u128(), h.distance)).collect();
        assert_eq!(got, [(2, 0.1), (1, 0.5), (3, 0.5), (5, 0.5)]);
    }

    #[test]
    fn remove_before_drops_expired_entries_and_keeps_the_rest_searchable() {
        let mut rng = Rng(3);
        let rows = data(&mut rng, 2000, 10);
        let mut index = index_of(&rows);
        let cutoff = T0 + Duration::minutes(25) + Duration::microseconds(500);
        let kept: Vec<Row> = rows.into_iter().filter(|r| r.last_seen >= cutoff).collect();
        let removed = index.remove_before(cutoff);
        assert_eq!(removed, 2000 - kept.len());
        assert!(removed > 500 && !kept.is_empty(), "{removed}");
        assert_eq!(index.len(), kept.len());
        // rows kept in order, with their own metadata and vectors
        for (i, r) in kept.iter().enumerate() {
            assert_eq!(index.sightings[i], r.sighting);
            assert_eq!(index.trajectories[i], r.trajectory);
            assert_eq!(&*index.places[index.cameras[i] as usize].1, r.camera);
            assert_eq!(index.last_seen[i], floor_ms(r.last_seen));
            assert_eq!(index.vectors.row(i), &r.embedding[..]);
        }
        assert_eq!(index.vectors.values().len(), kept.len() * DIM);
        let q = SearchQuery { max_distance: f32::INFINITY, limit: usize::MAX, ..SearchQuery::default() };
        let query = kept[0].embedding.clone();
        let hits = index.search(&query, &q).unwrap();
        assert_eq!(hits.len(), kept.len());
        check_against_naive(
            &kept,
            &query,
            &SearchQuery { limit: 100, max_distance: 0.7, ..q.clone() },
            &index.search(&query, &SearchQuery { limit: 100, max_distance: 0.7, ..q }).unwrap(),
            "after remove_before",
        );
        // nothing more to remove at the same cutoff; everything at a later one
        assert_eq!(index.remove_before(cutoff), 0);
        let n = index.len();
        assert_eq!(index.remove_before(T0 + Duration::hours(2)), n);
        assert!(index.is_empty() && index.vectors.values().is_empty());
        assert_eq!(index.search(&query, &SearchQuery::default()).unwrap(), []);
        // and it takes new entries again
        index.insert(Uuid::from_u128(1), Uuid::from_u128(2), "riverside", "gate", T0, &query).unwrap();
        assert_eq!(index.search(&query, &SearchQuery::default()).unwrap().len(), 1);
    }

    #[test]
    fn time_windows_are_half_open_at_millisecond_precision() {
        let mut index = SearchIndex::new(MODEL, 2);
        let at = |ms: i64| T0 + Duration::milliseconds(ms);
        for ms in 0..5 {
            index
                .insert(Uuid::from_u128(ms as u128 + 1), Uuid::nil(), "riverside", "gate", at(ms), &[0.0, 0.0])
                .unwrap();
        }
        // a sub-millisecond last_seen is floored, like the store does
        index
            .insert(
                Uuid::from_u128(100),
                Uuid::nil(),
                "riverside",
                "gate",
                at(7) + Duration::microseconds(900),
                &[0.0, 0.0],
            )
            .unwrap();
        let ids = |since: Option<OffsetDateTime>, until: Option<OffsetDateTime>| -> Vec<u128> {
            let q = SearchQuery { since, until, limit: 100, ..SearchQuery::default() };
            let mut v: Vec<u128> =
                index.search(&[0.0, 0.0], &q).unwrap().iter().map(|h| h.sighting.as_u128()).collect();
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
        assert_eq!(index.search(&[0.0, 0.0], &q).unwrap()[0].last_seen, at(7));
    }

    #[test]
    fn bad_inserts_are_rejected_and_change_nothing() {
        let mut index = SearchIndex::new(MODEL, 4);
        index.insert(Uuid::from_u128(1), Uuid::nil(), "riverside", "gate", T0, &[0.0; 4]).unwrap();
        let insert = |index: &mut SearchIndex, v: &[f32]| {
            index.insert(Uuid::from_u128(2), Uuid::nil(), "riverside", "hall", T0, v)
        };
        assert_eq!(
            insert(&mut index, &[0.0; 3]),
            Err(SearchError::Dimension { what: "embedding", model: MODEL.into(), expected: 4, got: 3 })
        );
        assert!(matches!(insert(&mut index, &[0.0; 5]), Err(SearchError::Dimension { got: 5, .. })));
        assert!(matches!(insert(&mut index, &[]), Err(SearchError::Dimension { got: 0, .. })));
        assert_eq!(
            insert(&mut index, &[0.0, 1.0, f32::INFINITY, 0.0]),
            Err(SearchError::NonFinite { what: "embedding", index: 2, value: f32::INFINITY })
        );
        assert!(matches!(insert(&mut index, &[f32::NAN, 0.0, 0.0, 0.0]), Err(SearchError::NonFinite { index: 0, .. })));
        assert!(matches!(
            insert(&mut index, &[0.0, 0.0, 0.0, f32::NEG_INFINITY]),
            Err(SearchError::NonFinite { index: 3, .. })
        ));
        let e = insert(&mut index, &[0.0; 3]).unwrap_err().to_string();
        assert!(e.contains("embedding") && e.contains("3 values") && e.contains("4-d"), "{e}");
        assert_eq!(index.len(), 1);
        assert_eq!(index.vectors.values().len(), 4);
        assert_eq!((index.trajectories.len(), index.cameras.len(), index.last_seen.len()), (1, 1, 1));
        assert_eq!(index.camera_names.len(), 1, "a rejected insert interns no camera");
    }

    #[test]
    fn a_merge_moves_the_indexed_sightings_to_the_survivor() {
        let mut index = SearchIndex::new(MODEL, 4);
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        for (i, t) in [a, b, a, c].into_iter().enumerate() {
            index.insert(Uuid::from_u128(100 + i as u128), t, "s", "cam", T0, &[1.0, 0.0, 0.0, i as f32]).unwrap();
        }
        assert_eq!(index.retarget(a, b), 2);
        assert_eq!(index.trajectories, [b, b, b, c]);
        assert_eq!(index.retarget(a, b), 0, "nothing left on the merged id");
    }

    #[test]
    fn bad_queries_are_errors() {
        let mut index = SearchIndex::new(MODEL, DIM);
        index.insert(Uuid::from_u128(1), Uuid::nil(), "riverside", "gate", T0, &[0.1; DIM]).unwrap();
        let q = SearchQuery::default();
        assert_eq!(
            index.search(&[0.1; 127], &q),
            Err(SearchError::Dimension { what: "query", model: MODEL.into(), expected: DIM, got: 127 })
        );
        assert!(matches!(index.search(&[0.1; 129], &q), Err(SearchError::Dimension { got: 129, .. })));
        let mut nan = vec![0.1; DIM];
        nan[5] = f32::NAN;
        assert!(matches!(index.search(&nan, &q), Err(SearchError::NonFinite { what: "query", index: 5, .. })));
        for bad in [f32::NAN, -0.1] {
            let q = SearchQuery { max_distance: bad, ..SearchQuery::default() };
            assert!(matches!(index.search(&[0.1; DIM], &q), Err(SearchError::MaxDistance(_))), "{bad}");
        }
        // a wrong-size query is an error even on an empty index
        assert!(SearchIndex::new(MODEL, DIM).search(&[0.0; 3], &q).is_err());
        // and the good query still works
        assert_eq!(index.search(&[0.1; DIM], &q).unwrap().len(), 1);
    }

    #[test]
    fn empty_results() {
        let mut index = SearchIndex::new(MODEL, 2);
        assert!(index.is_empty());
        assert_eq!(index.search(&[0.0, 0.0], &SearchQuery::default()).unwrap(), []);
        index.insert(Uuid::from_u128(1), Uuid::nil(), "riverside", "gate", T0, &[0.0, 1.0]).unwrap();
        assert_eq!(index.search(&[0.0, 0.0], &SearchQuery { limit: 0, ..SearchQuery::default() }).unwrap(), []);
        // distance 1 > 0.6
        assert_eq!(index.search(&[0.0, 0.0], &SearchQuery::default()).unwrap(), []);
        let hit = index.search(&[0.0, 0.0], &SearchQuery { max_distance: 1.0, ..SearchQuery::default() }).unwrap();
        assert_eq!(hit.len(), 1, "max_distance is inclusive");
        assert_eq!((index.model(), index.dim(), index.len()), (MODEL, 2, 1));
    }

    #[test]
    fn load_builds_the_index_from_the_store() {
        use crate::store::SqliteStore;
        use sightline_contract::{BestShot, Sighting};

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.sqlite")).unwrap();
        let mut rng = Rng(11);
        let sighting = |rng: &mut Rng, camera: &str, last: OffsetDateTime, model: &str| Sighting {
            id: Uuid::now_v7(),
            site: "riverside".into(),
            camera: camera.into(),
            track: 1,
            first_seen: last - Duration::seconds(2),
            last_seen: last,
            best: BestShot {
                ts: last,
                bbox: [1.0, 2.0, 30.0, 40.0],
                landmarks: [[0.0; 2]; 5],
                det_score: 0.9,
                quality: 0.5,
            },
            frame_size: [640, 360],
            ground: None,
            model: model.into(),
            embedding: rng.unit(DIM),
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
            let hits = index.search(&s.embedding, &q).unwrap();
            assert_eq!(hits.len(), 1);
            let h = &hits[0];
            assert_eq!(
                (h.sighting, h.trajectory, &*h.camera, h.last_seen),
                (s.id, *trajectory, &*s.camera, s.last_seen)
            );
        }
        let q = SearchQuery { limit: 100, max_distance: f32::INFINITY, ..SearchQuery::default() };
        let found = index.search(&stored[0].0.embedding, &q).unwrap();
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
        let found = index.search(&stored[10].0.embedding, &q).unwrap();
        assert!(found.iter().all(|h| h.sighting != nan.id && h.sighting != short.id));
        assert_eq!(found.len(), 15);
    }
}
