//! The full-precision side of a search: where the `f32` embeddings of the index's candidates are
//! read from (the store, not memory), and the distance they are ranked by.

use uuid::Uuid;

use crate::store::{Store, StoreError};
use crate::vectors::l2sq_portable;

/// The `f32` embedding of one indexed sighting and the trajectory it is in now.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactEntry {
    pub sighting: Uuid,
    pub trajectory: Uuid,
    pub embedding: Vec<f32>,
}

/// Where a search reads its candidates' `f32` embeddings: the store in the aggregator.
pub trait Exact {
    /// The embeddings of `model` of those of `sightings` that exist, each once, in any order. A
    /// sighting that is gone (retention) or of another model is left out.
    fn exact(&self, model: &str, sightings: &[Uuid]) -> Result<Vec<ExactEntry>, StoreError>;
}

/// Sightings read from the store per call (one round trip each to PostgreSQL).
const FETCH: usize = 512;

impl<S: Store + ?Sized> Exact for S {
    fn exact(&self, model: &str, sightings: &[Uuid]) -> Result<Vec<ExactEntry>, StoreError> {
        let mut out = Vec::with_capacity(sightings.len());
        for ids in sightings.chunks(FETCH) {
            out.extend(self.sightings(ids)?.into_iter().filter(|s| s.sighting.model == model).map(|s| ExactEntry {
                sighting: s.sighting.id,
                trajectory: s.trajectory,
                embedding: s.sighting.embedding,
            }));
        }
        Ok(out)
    }
}

/// The squared Euclidean distance hits are ranked and cut at `max_distance` by: AVX2 + FMA on
/// x86-64 CPUs that have them, the portable kernel elsewhere (both sum in the same order).
pub(super) fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::vectors::avx2::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above)
        return unsafe { crate::vectors::avx2::l2sq(a, b) };
    }
    l2sq_portable(a, b)
}
