//! Face embeddings in memory: the squared Euclidean distance kernels, an 8-bit copy of a matrix
//! that rules out the rows far from a query exactly while reading a quarter of the bytes
//! ([`Coarse`], the correlator's), 8-bit rows kept *instead of* `f32` ones with exact bounds of
//! their distances to a query ([`Compact`], the search index's), the correlator's `f32` rows in
//! one contiguous row-major [`Matrix`] compacted in place ([`Matrix::retain_rows`]), and names
//! (cameras, models) interned once ([`Interner`]). Callers keep their metadata in parallel
//! columns.
//!
//! Nothing here knows what a row is: the callers move their own columns in step with the rows.

mod coarse;
mod compact;
mod distance;
mod interner;
mod matrix;

pub use coarse::{Coarse, CoarseQuery};
pub use compact::{Bounds, Compact};
#[cfg(target_arch = "x86_64")]
pub use distance::avx2;
pub use distance::{l2sq_lanes, l2sq_lanes_within, l2sq_portable};
pub use interner::Interner;
pub use matrix::Matrix;

/// xorshift in [-1, 1): the vectors' tests' data.
#[cfg(test)]
fn test_rng(mut seed: u64) -> impl FnMut() -> f32 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}
