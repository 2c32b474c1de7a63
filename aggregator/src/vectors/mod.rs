//! Face embeddings in memory: the squared Euclidean distance kernels, an 8-bit copy of a matrix
//! that rules out the rows far from a query exactly while reading a quarter of the bytes
//! ([`Coarse`]), and the column store both the search index and the correlator keep their vectors
//! in: one contiguous row-major [`Matrix`] compacted in place ([`Matrix::retain_rows`]) with the
//! metadata in parallel columns, and names (cameras, models) interned once ([`Interner`]).
//!
//! Nothing here knows what a row is: the callers keep their own metadata columns and move them in
//! step with the matrix.

mod coarse;
mod distance;
mod interner;
mod matrix;

pub use coarse::{Coarse, CoarseQuery};
#[cfg(target_arch = "x86_64")]
pub use distance::avx2;
pub use distance::{l2sq_lanes, l2sq_lanes_within, l2sq_portable};
pub use interner::Interner;
pub use matrix::Matrix;
