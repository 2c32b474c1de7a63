//! sightline benchmarks. This crate has no library code: `benches/` holds criterion
//! benchmarks of hot paths in the other crates, run with
//! `cargo bench -p sightline-benches --bench <name>`:
//!
//! - `search`: the aggregator's exact embedding search index
//!   (`sightline_aggregator::search::SearchIndex`): queries over 100k and 1M 128-d vectors on
//!   one and on all threads (the re-rank reading a [`VectorFile`]), and insert throughput.
//! - `hot_paths`: YuNet decoding + NMS on real outputs, alignment, embedding preprocessing,
//!   the edge tracker with 10–200 tracks, sighting JSON, the correlator against 1k and 10k live
//!   trajectories, and the whole face pipeline on one frame for reference.
//!
//! The binary `sightline-bench` (`src/bin/sightline-bench/`) is the end-to-end benchmark
//! report: sightline against its floors and peers (faiss, the store alone, …) in one run,
//! written to `benches/results/`. See `benches/README.md`.

/// SplitMix64, seeded: the same test data on every run, for every benchmark.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in [0, 1).
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// A random direction of norm 1 (a dlib embedding's norm is about that).
    pub fn unit(&mut self, out: &mut [f32]) {
        out.iter_mut().for_each(|x| *x = self.f32());
        let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.iter_mut().for_each(|x| *x /= norm);
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit_f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit_f64()).cos()
    }

    /// `base` moved by a random direction of norm `by`: a noisy sighting of the same face.
    pub fn near(&mut self, base: &[f32], by: f32, out: &mut [f32]) {
        self.unit(out);
        out.iter_mut().zip(base).for_each(|(o, b)| *o = b + by * *o);
    }
}

/// The `f32` embeddings of rows `0..` written one after the other to a file (little-endian), the
/// sighting of row `i` being `Uuid::from_u128(i + 1)`: what a search's re-rank reads, as the
/// aggregator reads them from its store, outside the process's memory.
pub struct VectorFile {
    file: std::fs::File,
    dim: usize,
    rows: usize,
}

impl VectorFile {
    /// A new, empty file of `dim`-d rows at `path` (which must not exist).
    pub fn create(path: &std::path::Path, dim: usize) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(VectorFile { file, dim, rows: 0 })
    }

    /// Appends rows.
    pub fn append(&mut self, rows: &[f32]) -> std::io::Result<()> {
        use std::io::Write;
        let bytes: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.file.write_all(&bytes)?;
        self.rows += rows.len() / self.dim;
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> std::io::Result<Vec<f32>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; self.dim * 4];
        self.file.read_exact_at(&mut bytes, (i * self.dim * 4) as u64)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

impl sightline_aggregator::search::Exact for VectorFile {
    fn exact(
        &self,
        _model: &str,
        sightings: &[uuid::Uuid],
    ) -> Result<Vec<sightline_aggregator::search::ExactEntry>, sightline_aggregator::store::StoreError> {
        let mut ids: Vec<uuid::Uuid> = sightings.to_vec();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter(|id| (1..=self.rows as u128).contains(&id.as_u128()))
            .map(|sighting| {
                let embedding = self.row(sighting.as_u128() as usize - 1).map_err(|e| {
                    sightline_aggregator::store::StoreError::Corrupt { what: "vector file", detail: e.to_string() }
                })?;
                Ok(sightline_aggregator::search::ExactEntry { sighting, trajectory: uuid::Uuid::nil(), embedding })
            })
            .collect()
    }
}
