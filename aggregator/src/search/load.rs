//! Building the index from the store while ingest goes on.
//!
//! At start the index is empty and *loading*: searches are refused ([`super::SearchError::Loading`]:
//! never a silently partial answer), and what ingest (or a cluster node's follower) inserts in
//! the meantime is held aside with its sighting ids. The loader reads the store's embeddings
//! into blocks of its own, outside the index's lock, and adds each full block under the write
//! lock in one short step, leaving out the sightings held aside (the two can meet: a sighting
//! stored as the load began). When the store has no more, the ones held aside are added and
//! searches are answered.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Instant;

use time::OffsetDateTime;
use uuid::Uuid;

use super::block::Block;
use super::{SearchIndex, check_vector, floor_ms};
use crate::store::{Store, StoreError};
use crate::vectors::Interner;

/// Inserts held aside while the index loads.
#[derive(Default)]
pub(super) struct Pending {
    entries: Vec<PendingEntry>,
    ids: HashSet<Uuid>,
}

struct PendingEntry {
    sighting: Uuid,
    site: String,
    camera: String,
    last_seen: OffsetDateTime,
    embedding: Vec<f32>,
}

impl Pending {
    pub fn push(&mut self, sighting: Uuid, site: &str, camera: &str, last_seen: OffsetDateTime, embedding: &[f32]) {
        if self.ids.insert(sighting) {
            self.entries.push(PendingEntry {
                sighting,
                site: site.to_owned(),
                camera: camera.to_owned(),
                last_seen,
                embedding: embedding.to_vec(),
            });
        }
    }
}

/// What a load did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadReport {
    /// Entries read from the store and indexed.
    pub loaded: usize,
    /// Stored embeddings that do not fit (damaged rows), left out.
    pub skipped: usize,
    pub seconds: f64,
}

/// A block being filled by the loader, with its own camera numbers.
struct Filling {
    block: Block,
    names: Interner,
    places: Vec<(String, String)>,
}

impl SearchIndex {
    /// Empties the index and marks it loading: see the module documentation.
    pub fn begin_load(&mut self) {
        *self = SearchIndex::new(&self.model, self.dim);
        self.pending = Some(Pending::default());
    }

    /// Whether a load is under way (searches are refused).
    pub fn loading(&self) -> bool {
        self.pending.is_some()
    }

    /// Why the load failed, when it did (searches are refused).
    pub fn unavailable(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Adds a block the loader filled, less the sightings held aside.
    fn add_loaded(&mut self, f: Filling) {
        let Filling { mut block, places, .. } = f;
        // the loader's camera numbers to the index's
        let to: Vec<u32> = places.iter().map(|(site, camera)| self.intern(site, camera)).collect();
        block.cameras.iter_mut().for_each(|c| *c = to[*c as usize]);
        // a copy without the sightings held aside, only when the block has one (rarely)
        let aside = self.pending.as_ref().map(|p| &p.ids);
        let out = if block.sightings.iter().any(|s| aside.is_some_and(|ids| ids.contains(s))) {
            let mut out = Block::new(self.dim);
            for i in (0..block.len()).filter(|&i| aside.is_none_or(|ids| !ids.contains(&block.sightings[i]))) {
                out.push_coded(&block, i);
            }
            out
        } else {
            block
        };
        self.len += out.len();
        // before the block that takes new entries, if any
        let at = self.blocks.len().saturating_sub(usize::from(self.blocks.last().is_some_and(|b| !b.is_full())));
        self.blocks.insert(at, out);
    }

    /// Ends a load: the inserts held aside are added; searches are answered again.
    fn finish_load(&mut self) {
        for e in self.pending.take().map(|p| p.entries).unwrap_or_default() {
            // checked when they were held aside
            let _ = self.insert(e.sighting, &e.site, &e.camera, e.last_seen, &e.embedding);
        }
    }

    /// Loads `index` (of `model`, `dim`: [`SearchIndex::begin_load`] called) from the store:
    /// every embedding whose sighting's `last_seen` is at or after `since` (the start of the
    /// retention window), without holding the index's lock but to add each block, then
    /// ends the load.
    ///
    /// A stored embedding that does not fit the index (wrong dimension, non-finite value;
    /// ingestion checks both, so the database was damaged) is skipped and logged with its
    /// sighting: one bad row must not keep the aggregator from answering. Its sighting stays in
    /// the store, it is only not searchable.
    ///
    /// # Errors
    /// The store's; [`StoreError::Corrupt`] naming the first sighting when embeddings were
    /// stored but none fits (`dim` is not the model's: a configuration error, not damage). The
    /// index stops loading in every case; after an error it refuses searches
    /// ([`super::SearchError::Unavailable`]).
    pub fn load_into(
        index: &RwLock<SearchIndex>,
        store: &dyn Store,
        since: OffsetDateTime,
    ) -> Result<LoadReport, StoreError> {
        /// Skipped rows logged one by one at most; the rest are counted.
        const LOGGED: usize = 10;
        let started = Instant::now();
        let (model, dim) = {
            let index = index.read().unwrap();
            (index.model.clone(), index.dim)
        };
        let new_filling = || Filling { block: Block::new(dim), names: Interner::new(), places: Vec::new() };
        let mut filling = new_filling();
        let (mut loaded, mut skipped, mut first) = (0usize, 0usize, None);
        let read = store.for_each_embedding(&model, Some(since), None, &mut |row| {
            if let Err(e) = check_vector("embedding", &model, dim, &row.embedding) {
                skipped += 1;
                if skipped <= LOGGED {
                    tracing::error!(sighting = %row.sighting, error = %e, "stored embedding skipped: it does not fit the search index");
                }
                first.get_or_insert_with(|| format!("sighting {}: {e}", row.sighting));
                return;
            }
            let camera = filling.names.intern(&format!("{}/{}", row.site, row.camera));
            if camera as usize == filling.places.len() {
                filling.places.push((row.site.clone(), row.camera.clone()));
            }
            filling.block.push(row.sighting, camera, floor_ms(row.last_seen), &row.embedding);
            loaded += 1;
            if filling.block.is_full() {
                index.write().unwrap().add_loaded(std::mem::replace(&mut filling, new_filling()));
            }
        });
        let result = match (read, first) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(first)) if loaded == 0 => {
                let detail =
                    format!("none of the {skipped} stored embeddings of {model} fits the index; first: {first}");
                Err(StoreError::Corrupt { what: "embedding", detail })
            }
            (Ok(_), first) => {
                if first.is_some() {
                    tracing::error!(skipped, loaded, "search index: damaged stored embeddings skipped");
                }
                Ok(LoadReport { loaded, skipped, seconds: started.elapsed().as_secs_f64() })
            }
        };
        let mut index = index.write().unwrap();
        if filling.block.len() > 0 {
            index.add_loaded(filling);
        }
        index.finish_load();
        // what was not read cannot be answered for: the index refuses searches then
        index.failed = result.as_ref().err().map(ToString::to_string);
        result
    }

    /// [`Self::load_into`] a new index, on the calling thread.
    ///
    /// # Errors
    /// As [`Self::load_into`].
    pub fn load(store: &dyn Store, model: &str, dim: usize, since: OffsetDateTime) -> Result<Self, StoreError> {
        let mut index = SearchIndex::new(model, dim);
        index.begin_load();
        let index = RwLock::new(index);
        Self::load_into(&index, store, since)?;
        Ok(index.into_inner().unwrap())
    }
}
