//! One query's compressed scan: the rows that may be hits, each with bounds of its distance,
//! split across threads.
//!
//! A row is a candidate while the lower bound of its distance is within reach: `max_distance`,
//! and, once `limit` rows have been seen, the `limit`-th smallest *upper* bound so far (those
//! rows are at least as near, so nothing farther can be among the `limit` nearest). Both are
//! widened by the relative rounding of the `f32` distance the re-rank uses ([`rho`]), so that a
//! row the re-rank would keep is never left out.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::ops::Range;

use super::block::{BLOCK_ROWS, Block};
use crate::vectors::{Bounds, CoarseQuery};

/// Relative error of an `f32` squared distance of `dim`-d vectors (an upper bound of it, with a
/// wide margin: the kernels are measured within 1e-5 up to 1000-d).
pub(super) fn rho(dim: usize) -> f64 {
    1e-4f64.max(dim as f64 * 2f64.powi(-20))
}

/// One query's view of the index.
pub(super) struct Scan<'a> {
    pub blocks: &'a [Block],
    pub dim: usize,
    pub query: &'a CoarseQuery,
    /// By interned camera: whether the query sees it (`None`: every camera).
    pub allowed: Option<&'a [bool]>,
    /// Window in unix ms, `[from, to)`.
    pub from: i64,
    pub to: i64,
    /// Entries left out (gone from the store when an earlier round re-ranked them), by [`key`].
    pub excluded: &'a HashSet<usize>,
    /// `max_distance²` as the re-rank compares it (`f32`).
    pub max_sq: f32,
    pub limit: usize,
}

/// An entry's number during one query: its block's and its row's in the block.
pub(super) fn key(block: usize, row: usize) -> usize {
    block * BLOCK_ROWS + row
}

/// The block and row of a [`key`].
pub(super) fn place(key: usize) -> (usize, usize) {
    (key / BLOCK_ROWS, key % BLOCK_ROWS)
}

/// An entry that may be a hit.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub key: usize,
    pub bounds: Bounds,
}

/// An `f64` ordered by `total_cmp`, for the heap of upper bounds.
#[derive(Clone, Copy, PartialEq)]
struct Ord64(f64);
impl Eq for Ord64 {}
impl PartialOrd for Ord64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ord64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The `limit` smallest upper bounds seen, and the reach they allow.
struct Reach {
    limit: usize,
    /// Beyond this no row can be a hit (`max_distance`, widened).
    max: f64,
    /// From an upper bound to the reach it allows: `√((1 + ρ) / (1 - ρ))`.
    widen: f64,
    top: BinaryHeap<Ord64>,
}

impl Reach {
    fn new(s: &Scan<'_>) -> Self {
        let rho = rho(s.dim);
        Reach {
            limit: s.limit,
            max: (f64::from(s.max_sq) / (1.0 - rho)).sqrt(),
            widen: ((1.0 + rho) / (1.0 - rho)).sqrt(),
            top: BinaryHeap::with_capacity(s.limit.min(1024)),
        }
    }

    fn push(&mut self, hi: f64) {
        if self.top.len() < self.limit {
            self.top.push(Ord64(hi));
        } else if let Some(mut worst) = self.top.peek_mut()
            && hi < worst.0
        {
            *worst = Ord64(hi);
        }
    }

    fn now(&self) -> f64 {
        match self.top.peek() {
            Some(worst) if self.top.len() >= self.limit => self.max.min(worst.0 * self.widen),
            _ => self.max,
        }
    }
}

impl Scan<'_> {
    /// The candidates over every block in the window, on up to `threads` threads (each given at
    /// least `min_rows_per_thread` rows of those blocks).
    pub fn run(&self, threads: usize, min_rows_per_thread: usize) -> Vec<Candidate> {
        // (block, its rows) in the window, and where each starts in a numbering of their rows
        let blocks: Vec<usize> =
            (0..self.blocks.len()).filter(|&b| self.blocks[b].overlaps(self.from, self.to)).collect();
        let n: usize = blocks.iter().map(|&b| self.blocks[b].len()).sum();
        let threads = threads.min(n / min_rows_per_thread.max(1)).max(1);
        let per = n.div_ceil(threads).max(1);
        let share = |t: usize| self.share(&blocks, t * per..((t + 1) * per).min(n));
        let parts: Vec<(Vec<Candidate>, Reach)> = if threads > 1 {
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads).map(|t| s.spawn(move || self.rows(&share(t)))).collect();
                workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
            })
        } else {
            vec![self.rows(&share(0))]
        };
        // the reach over all threads' upper bounds
        let mut reach = Reach::new(self);
        for (_, r) in &parts {
            r.top.iter().for_each(|hi| reach.push(hi.0));
        }
        let reach = reach.now();
        parts.into_iter().flat_map(|(c, _)| c).filter(|c| c.bounds.lo <= reach).collect()
    }

    /// The (block, rows) pieces of rows `range` of `blocks` numbered one after the other.
    fn share(&self, blocks: &[usize], range: Range<usize>) -> Vec<(usize, Range<usize>)> {
        let mut out = Vec::new();
        let mut start = 0;
        for &b in blocks {
            let len = self.blocks[b].len();
            let (lo, hi) = (range.start.max(start), range.end.min(start + len));
            if lo < hi {
                out.push((b, lo - start..hi - start));
            }
            start += len;
        }
        out
    }

    fn rows(&self, pieces: &[(usize, Range<usize>)]) -> (Vec<Candidate>, Reach) {
        let mut reach = Reach::new(self);
        let mut found = Vec::new();
        let mut prune_at = 4096;
        for (b, rows) in pieces {
            let block = &self.blocks[*b];
            let pre = |i: usize| {
                let t = block.last_seen[i];
                t >= self.from && t < self.to && self.allowed.is_none_or(|a| a[block.cameras[i] as usize])
            };
            block.codes.scan(self.query, rows.clone(), reach.now(), pre, |row, bounds| {
                let key = key(*b, row);
                if self.excluded.contains(&key) {
                    return reach.now();
                }
                found.push(Candidate { key, bounds });
                reach.push(bounds.hi);
                let now = reach.now();
                if found.len() >= prune_at {
                    found.retain(|c| c.bounds.lo <= now);
                    prune_at = (2 * found.len()).max(4096);
                }
                now
            });
        }
        (found, reach)
    }
}
