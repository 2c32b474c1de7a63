//! `SearchIndex::search` over 100k and 1M random unit-norm-ish 128-d vectors (limit 10,
//! max_distance 0.6, on all threads and on one; the re-rank reads a file), and insert throughput.
//!
//! `cargo bench -p sightline-benches --bench search`. Throughput is reported in `f32` bytes of
//! vectors searched per second (n × 128 × 4 B per query); vectors/s = n / time.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sightline_aggregator::search::{SearchIndex, SearchQuery};
use sightline_benches::{Rng, VectorFile};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const DIM: usize = 128;
const MODEL: &str = "dlib-resnet-v1";
const T0: OffsetDateTime = datetime!(2026-11-23 08:00 UTC);
const CAMERAS: [&str; 4] = ["gate", "hall", "dock", "yard"];

/// `n` random unit vectors, flat.
fn vectors(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n * DIM];
    v.chunks_exact_mut(DIM).for_each(|row| rng.unit(row));
    v
}

fn fill(index: &mut SearchIndex, vectors: &[f32], first: usize) {
    for (i, v) in vectors.chunks_exact(DIM).enumerate() {
        let i = first + i;
        let last_seen = T0 + time::Duration::milliseconds(i as i64);
        index.insert(Uuid::from_u128(i as u128 + 1), "bench", CAMERAS[i % 4], last_seen, v).unwrap();
    }
}

fn search(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (n, label) in [(100_000, "100k"), (1_000_000, "1M")] {
        let mut index = SearchIndex::new(MODEL, DIM);
        let rows = vectors(&mut rng, n);
        fill(&mut index, &rows, 0);
        let dir = tempfile::tempdir().unwrap();
        let mut exact = VectorFile::create(&dir.path().join("vectors.f32"), DIM).unwrap();
        exact.append(&rows).unwrap();
        // a random direction (no hits: the pure scan), and a face near an indexed one (hits to rank)
        let mut random = vec![0f32; DIM];
        rng.unit(&mut random);
        let near = near(&mut rng, &rows[4242 * DIM..4243 * DIM]);
        drop(rows);

        let mut group = c.benchmark_group(format!("search/{label}"));
        group.throughput(Throughput::Bytes((n * DIM * 4) as u64));
        if n >= 1_000_000 {
            group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
        } else {
            group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        }
        for (name, t) in [(format!("threads={threads}"), 0), ("threads=1".to_owned(), 1)] {
            let q = SearchQuery { max_distance: 0.6, limit: 10, threads: t, ..SearchQuery::default() };
            for (probe, v) in [("random", &random), ("near", &near)] {
                group.bench_with_input(BenchmarkId::new(&name, probe), v, |b, v| {
                    b.iter(|| black_box(index.search(black_box(v), &q, &exact).unwrap()))
                });
            }
        }
        group.finish();
    }
}

/// `base` moved by noise of norm 0.2.
fn near(rng: &mut Rng, base: &[f32]) -> Vec<f32> {
    let mut noise = vec![0f32; DIM];
    rng.unit(&mut noise);
    base.iter().zip(&noise).map(|(b, e)| b + 0.2 * e).collect()
}

fn insert(c: &mut Criterion) {
    let mut rng = Rng(7);
    const BATCH: usize = 10_000;
    let batch = vectors(&mut rng, BATCH);
    let mut group = c.benchmark_group("insert");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30).measurement_time(Duration::from_secs(3));
    group.bench_function("10k into an empty index", |b| {
        b.iter_batched(
            || SearchIndex::new(MODEL, DIM),
            |mut index| {
                fill(&mut index, black_box(&batch), 0);
                index
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, search, insert);
criterion_main!(benches);
