//! [`Compact`]: embeddings kept in 8 bits with a 16-bit per-row scale and nothing else (130 B per
//! 128-d row, a quarter of `f32`), scanned for exact bounds of every row's distance to a query.
//!
//! Row values are `x ≈ scale · k` with `k` in `[-127, 127]` stored as `k + 128` (a byte), and
//! `scale` is `max |x| / 127` rounded *up* to a `bfloat16` (the top 16 bits of an `f32`), so no
//! value is clipped and each is within `scale · (1/2 + 2⁻¹⁵)` of its code. A row's error is then
//! at most `scale · (1/2 + 2⁻¹⁵) · √dim`: a bound from the scale alone, so nothing else is stored.
//!
//! The query is quantised as [`super::Coarse`] does (`[-63, 63]`, its own error bound), so that
//! `|q' - c'|` comes from an exact integer dot product (AVX2 `vpmaddubsw`), and the triangle
//! inequality gives `|q' - c'| - e_q - e_c ≤ |q - c| ≤ |q' - c'| + e_q + e_c`. The few floating
//! point operations around it are in `f64` with a slack far above their rounding. The bounds are
//! of the exact real distance; a caller comparing `f32` distances adds its own rounding.

use std::ops::Range;

use super::coarse::{CoarseQuery, ROW_MAX, codes, dot_portable};

#[cfg(target_arch = "x86_64")]
mod x86;

/// `|x / scale - k|` is at most this for every value: half a step, plus the rounding of
/// `x · (1 / scale)` (a few ulps of at most 127).
const HALF_STEP: f64 = 0.5 + 1.0 / 32768.0;
/// Relative slack on `|q' - c'|²`, far above the rounding of its `f64` evaluation.
const SLACK: f64 = 1e-12;

/// Rows of `dim` values in 8 bits and a `bfloat16` scale each. See the module documentation.
#[derive(Clone, Debug)]
pub struct Compact {
    dim: usize,
    /// `k + 128` per value, row after row.
    codes: Vec<u8>,
    /// The top 16 bits of each row's `f32` scale.
    scale: Vec<u16>,
}

/// Bounds of the Euclidean distance from a query to a row: `lo <= |q - x| <= hi`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub lo: f64,
    pub hi: f64,
}

/// `max |x| / ROW_MAX` rounded up to a `bfloat16`; 0 for a zero row.
fn row_scale(x: &[f32]) -> u16 {
    let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let bits = (m / ROW_MAX).to_bits();
    let up = if bits & 0xffff == 0 { bits } else { (bits & 0xffff_0000) + 0x1_0000 };
    (up >> 16) as u16
}

fn scale_of(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

impl Compact {
    pub fn new(dim: usize) -> Self {
        Compact::with_capacity(dim, 0)
    }

    /// Room for `rows` rows without reallocating.
    pub fn with_capacity(dim: usize, rows: usize) -> Self {
        Compact { dim, codes: Vec::with_capacity(dim * rows), scale: Vec::with_capacity(rows) }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.scale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }

    /// Bytes kept per row of `dim` values.
    pub fn row_bytes(dim: usize) -> usize {
        dim + std::mem::size_of::<u16>()
    }

    /// Appends a row. Its values must be finite (the bounds say nothing otherwise).
    ///
    /// # Panics
    /// When `row` is not `dim` long.
    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.dim, "row length");
        debug_assert!(row.iter().all(|v| v.is_finite()), "finite rows only");
        let scale = row_scale(row);
        self.codes.extend(codes(row, scale_of(scale), ROW_MAX).map(|k| (k + 128) as u8));
        self.scale.push(scale);
    }

    /// Appends row `i` of `other` (of the same dimension) as it is coded there.
    pub fn push_row_of(&mut self, other: &Compact, i: usize) {
        assert_eq!(other.dim, self.dim, "row length");
        self.codes.extend_from_slice(&other.codes[i * self.dim..(i + 1) * self.dim]);
        self.scale.push(other.scale[i]);
    }

    /// The row as stored, decoded (`scale · k`).
    #[cfg(test)]
    pub fn decoded(&self, i: usize) -> Vec<f32> {
        let s = scale_of(self.scale[i]);
        self.codes[i * self.dim..(i + 1) * self.dim].iter().map(|&c| s * (f32::from(c) - 128.0)).collect()
    }

    /// Keeps the rows for which `keep(row, to)` is true, in order, in place, as
    /// [`super::Matrix::retain_rows`] does; how many are left. No reallocation.
    pub fn retain_rows(&mut self, mut keep: impl FnMut(usize, usize) -> bool) -> usize {
        let dim = self.dim;
        let mut kept = 0;
        for i in 0..self.len() {
            if !keep(i, kept) {
                continue;
            }
            if kept != i {
                self.codes.copy_within(i * dim..(i + 1) * dim, kept * dim);
                self.scale[kept] = self.scale[i];
            }
            kept += 1;
        }
        self.codes.truncate(kept * dim);
        self.scale.truncate(kept);
        kept
    }

    /// `q` quantised for [`Self::scan`]; `q` must be finite and `dim` long.
    #[cfg(test)]
    pub fn query(&self, q: &[f32]) -> CoarseQuery {
        assert_eq!(q.len(), self.dim, "query length");
        CoarseQuery::new(q)
    }

    /// For each row of `rows`, in order, that `pre` accepts and whose distance to the query may
    /// be at most `reach`: `reach = hit(row, bounds)`. Every row within `reach` (as it is when the
    /// row is reached) is passed to `hit`; most rows farther than it are not.
    pub fn scan(
        &self,
        q: &CoarseQuery,
        rows: Range<usize>,
        reach: f64,
        mut pre: impl FnMut(usize) -> bool,
        mut hit: impl FnMut(usize, Bounds) -> f64,
    ) {
        assert_eq!(q.codes.len(), self.dim, "query length");
        assert!(rows.end <= self.len(), "rows {rows:?} of {}", self.len());
        #[cfg(target_arch = "x86_64")]
        if x86::scan(self, q, rows.clone(), reach, &mut pre, &mut hit) {
            return;
        }
        self.scan_rows(q, rows, reach, pre, hit)
    }

    /// The per-query constants of the bounds.
    fn frame(&self, q: &CoarseQuery) -> Frame {
        let sq = f64::from(q.scale);
        Frame {
            sq,
            qq: sq * sq * f64::from(q.norm),
            q_err: f64::from(q.err),
            sum: q.sum,
            row_err: HALF_STEP * (self.dim as f64).sqrt(),
        }
    }

    /// [`Self::scan`] one row at a time, portable.
    fn scan_rows(
        &self,
        q: &CoarseQuery,
        rows: Range<usize>,
        mut reach: f64,
        mut pre: impl FnMut(usize) -> bool,
        mut hit: impl FnMut(usize, Bounds) -> f64,
    ) {
        let dim = self.dim;
        let frame = self.frame(q);
        let codes = &self.codes[rows.start * dim..rows.end * dim];
        for (i, code) in rows.clone().zip(codes.chunks_exact(dim)) {
            if !pre(i) {
                continue;
            }
            let (dot, norm) = dot_norm_portable(code, &q.codes);
            if let Some(b) = frame.bounds(dot, norm, self.scale[i], reach) {
                reach = hit(i, b);
            }
        }
    }
}

/// What the bounds of every row share for one query.
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// The query's scale, `|q'|²`, error bound and `Σ k_q`.
    sq: f64,
    qq: f64,
    q_err: f64,
    sum: i32,
    /// A row's error bound per unit of its scale.
    row_err: f64,
}

impl Frame {
    /// The bounds of a row's distance from its `Σ (k + 128) k_q` and `Σ k²`, unless it is
    /// surely farther than `reach`.
    #[inline(always)]
    fn bounds(&self, dot: i32, norm: i32, scale: u16, reach: f64) -> Option<Bounds> {
        // less 128 Σ k_q: the codes' dot product, exact
        let k = f64::from(dot - 128 * self.sum);
        let s = f64::from(scale_of(scale));
        let cc = s * s * f64::from(norm);
        let d2 = self.qq + cc - 2.0 * (self.sq * s) * k;
        let slack = SLACK * (self.qq + cc);
        let err = self.q_err + s * self.row_err;
        let r = reach + err;
        if d2 - slack > r * r {
            return None;
        }
        let lo = ((d2 - slack).max(0.0).sqrt() - err).max(0.0);
        let hi = (d2 + slack).max(0.0).sqrt() + err;
        Some(Bounds { lo, hi })
    }
}

/// `(Σ a_i b_i, Σ (a_i - 128)²)`.
fn dot_norm_portable(a: &[u8], b: &[i8]) -> (i32, i32) {
    (dot_portable(a, b), a.iter().map(|&x| (i32::from(x) - 128).pow(2)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{l2sq_portable, test_rng as rng};

    #[test]
    fn the_portable_sums_are_exact() {
        let mut r = rng(5);
        for len in [0, 1, 31, 32, 33, 128, 131] {
            // codes 1..=255 (k in [-127, 127]), query codes in [-63, 63]
            let a: Vec<u8> = (0..len).map(|_| (128.0 + r() * 127.0).round() as u8).collect();
            let b: Vec<i8> = (0..len).map(|_| (r() * 63.9) as i8).collect();
            let exact = dot_norm_portable(&a, &b);
            let dot: i64 = a.iter().zip(&b).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
            let norm: i64 = a.iter().map(|&x| (i64::from(x) - 128).pow(2)).sum();
            assert_eq!((i64::from(exact.0), i64::from(exact.1)), (dot, norm), "{len}");
        }
    }

    #[test]
    fn scales_are_rounded_up_and_nothing_is_clipped() {
        for m in [1e-30f32, 1e-3, 0.3, 1.0, 7.77, 3e30] {
            let s = scale_of(row_scale(&[m, -m / 3.0]));
            assert!(s >= m / ROW_MAX && s <= m / ROW_MAX * (1.0 + 1.0 / 128.0), "{m}: {s}");
        }
        assert_eq!(row_scale(&[0.0; 4]), 0);
        let mut c = Compact::new(3);
        c.push(&[0.0; 3]);
        c.push(&[1.0, -0.5, 0.25]);
        assert_eq!(c.decoded(0), [0.0; 3]);
        let d = c.decoded(1);
        assert!((d[0] - 1.0).abs() < 0.01 && (d[1] + 0.5).abs() < 0.01 && (d[2] - 0.25).abs() < 0.01, "{d:?}");
        assert_eq!(Compact::row_bytes(3), 5);
    }

    #[test]
    fn bounds_hold_the_exact_distance() {
        // rows at every distance around the query, at several magnitudes, a zero row, one huge
        // value among small ones (a coarse scale), and rows equal to the query
        let mut r = rng(17);
        for dim in [1, 7, 64, 128, 130] {
            for magnitude in [1e-20f32, 1e-3, 1.0, 1e15] {
                let mut c = Compact::new(dim);
                let mut rows = Vec::new();
                let q: Vec<f32> = (0..dim).map(|_| r() * magnitude).collect();
                for i in 0..300 {
                    let mut row: Vec<f32> = q.iter().map(|x| x + r() * magnitude * (i as f32 / 150.0)).collect();
                    match i % 50 {
                        3 => row.iter_mut().for_each(|v| *v = 0.0),
                        4 => row[0] = magnitude * 1e3,
                        5 => row.clone_from(&q),
                        _ => {}
                    }
                    c.push(&row);
                    rows.push(row);
                }
                let query = c.query(&q);
                let mut seen = Vec::new();
                c.scan(
                    &query,
                    0..c.len(),
                    f64::INFINITY,
                    |_| true,
                    |i, b| {
                        let exact: f64 =
                            rows[i].iter().zip(&q).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
                        let exact = exact.sqrt();
                        assert!(b.lo <= exact && exact <= b.hi, "dim {dim} x{magnitude} row {i}: {exact} not in {b:?}");
                        if i % 50 != 4 {
                            let width = 0.2 * f64::from(magnitude) * (dim as f64).sqrt();
                            assert!(b.hi - b.lo <= width, "dim {dim} x{magnitude} row {i}: {b:?} wider than {width}");
                        }
                        seen.push(i);
                        f64::INFINITY
                    },
                );
                assert_eq!(seen, (0..300).collect::<Vec<_>>(), "an infinite reach passes every row");
                // a finite reach: every row within it is passed
                let reach = 0.5 * f64::from(magnitude) * (dim as f64).sqrt() / 3.0;
                let mut passed = Vec::new();
                c.scan(
                    &query,
                    10..300,
                    reach,
                    |i| i % 9 != 0,
                    |i, _| {
                        passed.push(i);
                        reach
                    },
                );
                for (i, row) in rows.iter().enumerate() {
                    let d = f64::from(l2sq_portable(row, &q)).sqrt();
                    if (10..300).contains(&i) && i % 9 != 0 && d <= reach * (1.0 - 1e-6) {
                        assert!(passed.contains(&i), "dim {dim} x{magnitude}: row {i} at {d} <= {reach} not passed");
                    }
                    if !(10..300).contains(&i) || i % 9 == 0 {
                        assert!(!passed.contains(&i), "row {i} was not to be scanned");
                    }
                }
            }
        }
    }

    #[test]
    fn the_fastest_scan_passes_what_the_portable_one_does() {
        let mut r = rng(23);
        for dim in [32, 128] {
            let mut c = Compact::new(dim);
            for i in 0..203 {
                let row: Vec<f32> = (0..dim).map(|_| r() * (1.0 + i as f32 / 50.0)).collect();
                c.push(&row);
            }
            let query: Vec<f32> = (0..dim).map(|_| r()).collect();
            let q = c.query(&query);
            for reach in [f64::INFINITY, 0.8 * (dim as f64).sqrt(), 0.0] {
                let (mut fast, mut portable) = (Vec::new(), Vec::new());
                let pre = |i: usize| i % 7 != 3;
                c.scan(&q, 1..203, reach, pre, |i, b| {
                    fast.push((i, b));
                    reach
                });
                c.scan_rows(&q, 1..203, reach, pre, |i, b| {
                    portable.push((i, b));
                    reach
                });
                assert_eq!(fast, portable, "dim {dim}, reach {reach}");
                if reach.is_infinite() {
                    assert_eq!(fast.len(), 202 - 29, "every row but those `pre` refused");
                }
            }
        }
    }

    #[test]
    fn a_shrinking_reach_rules_out_the_rest() {
        let mut c = Compact::new(2);
        for x in [5.0f32, 1.0, 4.0, 0.5, 3.0] {
            c.push(&[x, 0.0]);
        }
        let q = c.query(&[0.0, 0.0]);
        let mut passed = Vec::new();
        // the hit callback tightens the reach to the best upper bound so far
        let mut best = f64::INFINITY;
        c.scan(
            &q,
            0..5,
            f64::INFINITY,
            |_| true,
            |i, b| {
                passed.push(i);
                best = best.min(b.hi);
                best
            },
        );
        assert_eq!(passed, [0, 1, 3], "4.0 and 3.0 are beyond the 1.0 seen before them");
    }

    #[test]
    fn rows_are_compacted_in_place() {
        let mut c = Compact::new(2);
        for x in 0..6 {
            c.push(&[x as f32, 1.0]);
        }
        let kept = c.retain_rows(|i, _| i % 2 == 1);
        assert_eq!((kept, c.len()), (3, 3));
        for (i, x) in [1.0f32, 3.0, 5.0].into_iter().enumerate() {
            let d = c.decoded(i);
            assert!((d[0] - x).abs() < 0.05 && (d[1] - 1.0).abs() < 0.05, "{i}: {d:?}");
        }
    }
}
