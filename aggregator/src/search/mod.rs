//! The face-embedding search index behind `POST /api/v1/search`.
//!
//! It indexes every embedding of one model (128-d dlib face embeddings, `f32`, compared by
//! Euclidean distance; the same person is below 0.6) whose sighting is inside the retention
//! window, and answers "which sightings are within `max_distance` of this face, nearest first",
//! optionally restricted to a time window, sites and a camera. The answer is exactly an `f32`
//! brute-force scan's, from 8-bit copies in memory (why and how: `docs/adr/0017`):
//! 1. **scan** (`scan.rs`): every entry's distance *bounds* from its 8-bit copy
//!    ([`crate::vectors::Compact`]); an entry is a candidate unless its lower bound is beyond
//!    `max_distance` or beyond the `limit`-th smallest upper bound seen;
//! 2. **re-rank**: the candidates' `f32` embeddings read from the store ([`Exact`]), their
//!    distances computed with the `f32` kernel a full scan uses, the `limit` nearest kept. An
//!    entry the store no longer has is not a hit; if it had narrowed the scan's reach, the scan
//!    runs again without it. A hit's trajectory is the store's.
//!
//! Entries are kept in blocks (`block.rs`): retention drops whole blocks and compacts only those
//! the cutoff cuts through; a query skips the blocks outside its window. At start the index loads
//! beside ingest and refuses searches until it is done (`load.rs`).
//!
//! # Memory
//!
//! Per entry at 128-d: 128 B of codes + 2 B scale + 16 B sighting id + 4 B camera index + 8 B
//! `last_seen` (unix ms) = **158 B** (an `f32` index needs 556 B). Camera names are interned
//! once in a small table of `Arc<str>`.
//!
//! # Threads
//!
//! Indexes above [`PARALLEL_MIN_ROWS`] rows are scanned on `SearchQuery::threads` scoped
//! threads, each keeping its own reach; the candidates are cut with the reach of all of them.

mod block;
mod exact;
mod load;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

pub use exact::{Exact, ExactEntry};
pub use load::LoadReport;

use crate::store::StoreError;
use crate::vectors::{CoarseQuery, Compact, Interner};
use block::Block;
use load::Pending;
use scan::Scan;

/// Above this many rows a search is split across threads (when it is given more than one).
pub const PARALLEL_MIN_ROWS: usize = 2 * MIN_ROWS_PER_THREAD;

/// Fewer rows than this per thread cost more in thread start-up than they save.
const MIN_ROWS_PER_THREAD: usize = 32 * 1024;

/// A rejected insert or query. Nothing is changed when an insert fails.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{what}: {got} values, the {model:?} search index holds {expected}-d embeddings")]
    Dimension { what: &'static str, model: String, expected: usize, got: usize },
    #[error("{what}: value {index} is {value}, not a finite number")]
    NonFinite { what: &'static str, index: usize, value: f32 },
    #[error("max_distance: {0} is not a number >= 0")]
    MaxDistance(f32),
    /// The index is being built from the store; it answers when that is done.
    #[error("the search index is loading ({loaded} entries so far): try again shortly")]
    Loading { loaded: usize },
    /// The index could not be built from the store: it answers nothing until a restart.
    #[error("the search index could not be loaded from the store ({0}); see the aggregator's log")]
    Unavailable(String),
    /// Reading the candidates' embeddings failed.
    #[error("reading the candidates' embeddings: {0}")]
    Exact(#[from] StoreError),
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

/// The answer to a query, with what it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub hits: Vec<Hit>,
    /// Entries whose `f32` embeddings were read and compared.
    pub reranked: usize,
    /// Scans run: more than one when entries gone from the store had narrowed the first.
    pub rounds: usize,
}

/// The exact embedding search index of one model. See the module documentation.
pub struct SearchIndex {
    model: String,
    dim: usize,
    /// The entries, in blocks; the last one takes new entries until it is full.
    blocks: Vec<Block>,
    len: usize,
    /// Interned `site/camera` keys; never shrinks (a deployment has a bounded set of cameras).
    camera_names: Interner,
    /// (site, camera) of each interned key.
    places: Vec<(Arc<str>, Arc<str>)>,
    /// While loading: the inserts held aside (`load.rs`).
    pending: Option<Pending>,
    /// Why loading failed, when it did.
    failed: Option<String>,
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

/// A candidate re-ranked: squared `f32` distance, sighting id, key (`scan::key`).
type Ranked = (f32, Uuid, usize);

impl SearchIndex {
    /// An empty index of `dim`-d embeddings of `model`.
    ///
    /// # Panics
    /// When `dim` is 0.
    pub fn new(model: &str, dim: usize) -> Self {
        assert!(dim > 0, "search index {model:?}: dimension must be positive");
        SearchIndex {
            model: model.to_owned(),
            dim,
            blocks: Vec::new(),
            len: 0,
            camera_names: Interner::new(),
            places: Vec::new(),
            pending: None,
            failed: None,
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held per entry, not counting the interned camera names.
    pub fn entry_bytes(&self) -> usize {
        Compact::row_bytes(self.dim)
            + std::mem::size_of::<Uuid>()
            + std::mem::size_of::<u32>()
            + std::mem::size_of::<i64>()
    }

    /// Adds one sighting's embedding. `last_seen` is kept at millisecond precision (floored).
    ///
    /// # Errors
    /// [`SearchError::Dimension`] when `embedding` is not `dim` long, [`SearchError::NonFinite`]
    /// when a value is NaN or infinite; nothing is inserted then.
    pub fn insert(
        &mut self,
        sighting: Uuid,
        site: &str,
        camera: &str,
        last_seen: OffsetDateTime,
        embedding: &[f32],
    ) -> Result<(), SearchError> {
        check_vector("embedding", &self.model, self.dim(), embedding)?;
        if let Some(pending) = &mut self.pending {
            pending.push(sighting, site, camera, last_seen, embedding);
            return Ok(());
        }
        let place = self.intern(site, camera);
        if self.blocks.last().is_none_or(Block::is_full) {
            self.blocks.push(Block::new(self.dim));
        }
        let block = self.blocks.last_mut().expect("a block with room was just ensured");
        block.push(sighting, place, floor_ms(last_seen), embedding);
        self.len += 1;
        Ok(())
    }

    /// The number of `site/camera`.
    fn intern(&mut self, site: &str, camera: &str) -> u32 {
        // ids hold no `/`: the key is unambiguous
        let place = self.camera_names.intern(&format!("{site}/{camera}"));
        if place as usize == self.places.len() {
            self.places.push((site.into(), camera.into()));
        }
        place
    }

    /// Retention: drops the entries with `last_seen < cutoff` and returns how many. Blocks whose
    /// entries have all expired go whole; only the blocks the cutoff cuts through are compacted
    /// (in place, keeping their order).
    pub fn remove_before(&mut self, cutoff: OffsetDateTime) -> usize {
        // last_seen (whole ms) < cutoff  <=>  last_seen < ceil_ms(cutoff)
        let cutoff = ceil_ms(cutoff);
        let before = self.len;
        let last = self.blocks.len().saturating_sub(1);
        let mut i = 0;
        self.blocks.retain_mut(|b| {
            let open = i == last;
            i += 1;
            b.remove_before(cutoff);
            // the last block takes new entries: kept even when empty
            open || b.len() > 0
        });
        self.len = self.blocks.iter().map(Block::len).sum();
        before - self.len
    }

    /// The hits of `q` for the face `query`: within `q.max_distance`, ascending by distance
    /// (ties by sighting id), at most `q.limit`; the `f32` embeddings of the candidates are read
    /// from `exact`. Exact: every entry is compared, the hits are those of an `f32` scan of
    /// what `exact` holds.
    ///
    /// # Errors
    /// When `query` is not `dim` long or not finite, or `max_distance` is NaN or negative; what
    /// `exact` fails with.
    pub fn search<E: Exact + ?Sized>(&self, query: &[f32], q: &SearchQuery, exact: &E) -> Result<Found, SearchError> {
        self.search_with(query, q, exact, MIN_ROWS_PER_THREAD)
    }

    fn search_with<E: Exact + ?Sized>(
        &self,
        query: &[f32],
        q: &SearchQuery,
        exact: &E,
        min_rows_per_thread: usize,
    ) -> Result<Found, SearchError> {
        check_vector("query", &self.model, self.dim(), query)?;
        if q.max_distance.is_nan() || q.max_distance < 0.0 {
            return Err(SearchError::MaxDistance(q.max_distance));
        }
        if self.loading() {
            return Err(SearchError::Loading { loaded: self.len });
        }
        if let Some(why) = &self.failed {
            return Err(SearchError::Unavailable(why.clone()));
        }
        let mut found = Found { hits: Vec::new(), reranked: 0, rounds: 0 };
        // the interned cameras the query may see (`None`: every one)
        let sites: Option<HashSet<&str>> = q.sites.as_ref().map(|sites| sites.iter().map(String::as_str).collect());
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
            return Ok(found);
        }
        // last_seen (whole ms) >= since  <=>  last_seen >= ceil_ms(since); likewise for until.
        let from = q.since.map_or(i64::MIN, ceil_ms);
        let to = q.until.map_or(i64::MAX, ceil_ms);
        if self.is_empty() || q.limit == 0 || from >= to {
            return Ok(found);
        }
        let threads = match q.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        };
        let coarse = CoarseQuery::new(query);
        let max_sq = q.max_distance * q.max_distance;
        let mut excluded = HashSet::new();
        loop {
            found.rounds += 1;
            let scan = Scan {
                blocks: &self.blocks,
                dim: self.dim,
                query: &coarse,
                allowed: allowed.as_deref(),
                from,
                to,
                excluded: &excluded,
                max_sq,
                limit: q.limit,
            };
            let candidates = scan.run(threads, min_rows_per_thread);
            let entry = |key: usize| {
                let (b, row) = scan::place(key);
                (&self.blocks[b], row)
            };
            let ids: Vec<Uuid> = candidates.iter().map(|c| entry(c.key)).map(|(b, row)| b.sightings[row]).collect();
            let stored: HashMap<Uuid, ExactEntry> =
                exact.exact(&self.model, &ids)?.into_iter().map(|e| (e.sighting, e)).collect();
            found.reranked += stored.len();
            let mut ranked: Vec<Ranked> = Vec::with_capacity(candidates.len());
            let mut gone = false;
            for (c, id) in candidates.iter().zip(&ids) {
                match stored.get(id).filter(|e| e.embedding.len() == self.dim()) {
                    Some(e) => {
                        let d2 = exact::l2sq(&e.embedding, query);
                        if d2 <= max_sq {
                            ranked.push((d2, e.sighting, c.key));
                        }
                    }
                    None => gone |= excluded.insert(c.key),
                }
            }
            // an entry gone from the store may have narrowed the reach: scan again without it
            if gone {
                continue;
            }
            ranked.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            // a sighting indexed twice is one hit
            ranked.dedup_by_key(|r| r.1);
            ranked.truncate(q.limit);
            found.hits = ranked
                .into_iter()
                .map(|(d2, sighting, key)| {
                    let (b, row) = entry(key);
                    let (site, camera) = &self.places[b.cameras[row] as usize];
                    Hit {
                        sighting,
                        trajectory: stored[&sighting].trajectory,
                        site: site.clone(),
                        camera: camera.clone(),
                        last_seen: from_ms(b.last_seen[row]),
                        distance: d2.sqrt(),
                    }
                })
                // max_distance² is rounded; the documented bound is on the distance itself
                .filter(|h| h.distance <= q.max_distance)
                .collect();
            // sqrt can map neighbouring squares to one distance: keep ties by sighting id
            found.hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.sighting.cmp(&b.sighting)));
            return Ok(found);
        }
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
