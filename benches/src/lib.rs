//! sightline benchmarks. This crate has no library code: `benches/` holds criterion
//! benchmarks of hot paths in the other crates, run with
//! `cargo bench -p sightline-benches --bench <name>`:
//!
//! - `search`: the aggregator's exact, brute-force embedding search index
//!   (`sightline_aggregator::search::SearchIndex`): queries over 100k and 1M 128-d vectors on
//!   one and on all threads, and insert throughput.
