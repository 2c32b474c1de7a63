//! A block of the index: up to [`BLOCK_ROWS`] entries in columns, with the span of their
//! `last_seen`. Retention drops whole blocks whose entries have all expired and compacts only the
//! blocks it cuts through; a query skips the blocks outside its time window.

use uuid::Uuid;

use crate::vectors::Compact;

/// Entries per block: 64 Ki, ~10 MB at 128-d. Its columns are allocated once, at this capacity
/// (pages are only resident once written), so a block never reallocates.
pub(super) const BLOCK_ROWS: usize = 1 << 16;

pub(super) struct Block {
    pub codes: Compact,
    pub sightings: Vec<Uuid>,
    /// Numbers in the index's interned cameras.
    pub cameras: Vec<u32>,
    /// Unix milliseconds.
    pub last_seen: Vec<i64>,
    /// The smallest and largest `last_seen` (`i64::MAX`, `i64::MIN` when empty).
    pub first: i64,
    pub last: i64,
}

impl Block {
    pub fn new(dim: usize) -> Self {
        Block {
            codes: Compact::with_capacity(dim, BLOCK_ROWS),
            sightings: Vec::with_capacity(BLOCK_ROWS),
            cameras: Vec::with_capacity(BLOCK_ROWS),
            last_seen: Vec::with_capacity(BLOCK_ROWS),
            first: i64::MAX,
            last: i64::MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.sightings.len()
    }

    pub fn is_full(&self) -> bool {
        self.len() >= BLOCK_ROWS
    }

    /// Appends an entry (the embedding already checked).
    pub fn push(&mut self, sighting: Uuid, camera: u32, last_seen: i64, embedding: &[f32]) {
        debug_assert!(!self.is_full());
        self.codes.push(embedding);
        self.sightings.push(sighting);
        self.cameras.push(camera);
        self.last_seen.push(last_seen);
        self.first = self.first.min(last_seen);
        self.last = self.last.max(last_seen);
    }

    /// Appends entry `i` of `other` as it is there.
    pub fn push_coded(&mut self, other: &Block, i: usize) {
        debug_assert!(!self.is_full());
        self.codes.push_row_of(&other.codes, i);
        self.sightings.push(other.sightings[i]);
        self.cameras.push(other.cameras[i]);
        let t = other.last_seen[i];
        self.last_seen.push(t);
        self.first = self.first.min(t);
        self.last = self.last.max(t);
    }

    /// Whether an entry may have `last_seen` in `[from, to)`.
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.len() > 0 && self.last >= from && self.first < to
    }

    /// Drops the entries with `last_seen < cutoff` (unix ms), in place, keeping the order; how many.
    pub fn remove_before(&mut self, cutoff: i64) -> usize {
        let n = self.len();
        if self.first >= cutoff {
            return 0;
        }
        let Block { codes, sightings, cameras, last_seen, .. } = self;
        let kept = codes.retain_rows(|i, to| {
            if last_seen[i] < cutoff {
                return false;
            }
            if to != i {
                sightings[to] = sightings[i];
                cameras[to] = cameras[i];
                last_seen[to] = last_seen[i];
            }
            true
        });
        sightings.truncate(kept);
        cameras.truncate(kept);
        last_seen.truncate(kept);
        self.first = last_seen.iter().copied().min().unwrap_or(i64::MAX);
        self.last = last_seen.iter().copied().max().unwrap_or(i64::MIN);
        n - kept
    }
}
