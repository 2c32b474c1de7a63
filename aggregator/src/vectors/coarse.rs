//! [`Coarse`]: a copy of a matrix's rows in 8 bits, each row with a bound of its rounding error,
//! to rule out the rows far from a query while reading a quarter of the bytes.
//!
//! Ruling a row out is exact, not approximate: a row is dropped only when the triangle
//! inequality proves it farther than the limit, `|q - c| >= |q' - c'| - |q - q'| - |c - c'|`,
//! where `q'` and `c'` are the quantised query and row and the two error terms are bounded when
//! they are quantised. `|q' - c'|` comes from an integer dot product, exact; only its scaling is
//! in floating point, with a slack far above its rounding. The rows that pass still go through
//! the exact `f32` comparison, so a caller's answers are those of a full scan.
//!
//! Rows are quantised symmetrically, `c ≈ scale · k` with `k` in `[-127, 127]` stored as
//! `k + 128` (a byte), the query in `[-63, 63]`: the AVX2 kernel multiplies unsigned row bytes by
//! signed query bytes in pairs (`vpmaddubsw`) and `2 · 255 · 63` cannot saturate its 16 bits.

/// Query codes lie in `[-QUERY_MAX, QUERY_MAX]`.
const QUERY_MAX: f32 = 63.0;
/// Row codes lie in `[-ROW_MAX, ROW_MAX]`, stored shifted by 128.
pub(super) const ROW_MAX: f32 = 127.0;
/// Relative slack on the limit: above the `f32` rounding of the exact comparison that follows.
const SLACK: f32 = 1e-3;

/// The quantised rows of a [`super::Matrix`], kept in step with it by the caller.
#[derive(Clone, Debug)]
pub struct Coarse {
    dim: usize,
    /// `k + 128` per value, row after row.
    codes: Vec<u8>,
    /// Per row: `scale`, `Σ k²` and the bound of `|c - scale · k|`.
    scale: Vec<f32>,
    norm: Vec<i32>,
    err: Vec<f32>,
}

/// A query quantised for [`Coarse::rows_maybe_within`].
pub struct CoarseQuery {
    pub(super) codes: Vec<i8>,
    pub(super) scale: f32,
    /// `Σ k²` and `Σ k`.
    pub(super) norm: i32,
    pub(super) sum: i32,
    /// A bound of `|q - scale · k|`.
    pub(super) err: f32,
}

impl CoarseQuery {
    /// `q` quantised; `q` must be finite for `err` to bound anything.
    pub fn new(q: &[f32]) -> Self {
        let (scale, codes) = quantise(q, QUERY_MAX);
        let codes: Vec<i8> = codes.map(|k| k as i8).collect();
        let norm = codes.iter().map(|&k| i32::from(k) * i32::from(k)).sum();
        let sum = codes.iter().map(|&k| i32::from(k)).sum();
        let err = error_bound(q, scale, codes.iter().map(|&k| i32::from(k)));
        CoarseQuery { codes, scale, norm, sum, err }
    }
}

/// `Σ (x - scale · k)²` in `f64`, rounded up to an `f32` bound of its square root; infinite when
/// `x` is not finite (such a row or query is never ruled out).
fn error_bound(x: &[f32], scale: f32, k: impl Iterator<Item = i32>) -> f32 {
    let sq: f64 = x.iter().zip(k).map(|(&x, k)| (f64::from(x) - f64::from(scale) * f64::from(k)).powi(2)).sum();
    let e = sq.sqrt() * (1.0 + 1e-9) + 1e-30;
    if e.is_finite() { e as f32 * (1.0 + 1e-6) } else { f32::INFINITY }
}

/// `max |x|`, the scale that maps it to `max`, and the codes.
pub(super) fn quantise(x: &[f32], max: f32) -> (f32, impl Iterator<Item = i32> + '_) {
    let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if m > 0.0 && m.is_finite() { m / max } else { 0.0 };
    (scale, codes(x, scale, max))
}

/// The codes of `x` at `scale` (at least `max |x| / max`): `x / scale` rounded, in `[-max, max]`.
pub(super) fn codes(x: &[f32], scale: f32, max: f32) -> impl Iterator<Item = i32> + '_ {
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    x.iter().map(move |&v| (v * inv).round().clamp(-max, max) as i32)
}

impl Coarse {
    pub fn new(dim: usize) -> Self {
        Coarse { dim, codes: Vec::new(), scale: Vec::new(), norm: Vec::new(), err: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.scale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }

    /// Appends a row of zeros.
    pub fn push_zeros(&mut self) {
        self.codes.resize(self.codes.len() + self.dim, 128);
        self.scale.push(0.0);
        self.norm.push(0);
        self.err.push(0.0);
    }

    /// Sets row `i` to the quantised `row`.
    pub fn set(&mut self, i: usize, row: &[f32]) {
        assert_eq!(row.len(), self.dim, "row length");
        let (scale, codes) = quantise(row, ROW_MAX);
        let mut norm = 0i32;
        for (dst, k) in self.codes[i * self.dim..(i + 1) * self.dim].iter_mut().zip(codes) {
            *dst = (k + 128) as u8;
            norm += k * k;
        }
        self.scale[i] = scale;
        self.norm[i] = norm;
        let codes = &self.codes[i * self.dim..(i + 1) * self.dim];
        self.err[i] = error_bound(row, scale, codes.iter().map(|&c| i32::from(c) - 128));
    }

    /// Moves row `from` to `to` (`to <= from`), as [`super::Matrix::retain_rows`] does.
    pub fn move_row(&mut self, from: usize, to: usize) {
        if from != to {
            self.codes.copy_within(from * self.dim..(from + 1) * self.dim, to * self.dim);
            self.scale[to] = self.scale[from];
            self.norm[to] = self.norm[from];
            self.err[to] = self.err[from];
        }
    }

    /// Keeps the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        self.codes.truncate(rows * self.dim);
        self.scale.truncate(rows);
        self.norm.truncate(rows);
        self.err.truncate(rows);
    }

    pub fn query(&self, q: &[f32]) -> CoarseQuery {
        assert_eq!(q.len(), self.dim, "query length");
        CoarseQuery::new(q)
    }

    /// Calls `hit(i)` for every row `i` for which `pre(i)` holds and that may lie within `limit`
    /// of the query (Euclidean distance), in row order: every row that does is among them.
    pub fn rows_maybe_within(
        &self,
        q: &CoarseQuery,
        limit: f32,
        pre: impl FnMut(usize) -> bool,
        hit: impl FnMut(usize),
    ) {
        assert_eq!(q.codes.len(), self.dim, "query length");
        #[cfg(target_arch = "x86_64")]
        if super::distance::avx2::available() {
            // SAFETY: the CPU has AVX2 (checked above)
            unsafe { self.scan_avx2(q, limit, pre, hit) };
            return;
        }
        self.scan(q, limit, pre, hit, dot_portable)
    }

    /// [`Self::scan`] with the AVX2 kernel inlined.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn scan_avx2(&self, q: &CoarseQuery, limit: f32, pre: impl FnMut(usize) -> bool, hit: impl FnMut(usize)) {
        self.scan(q, limit, pre, hit, |a, b| avx2_dot(a, b))
    }

    #[inline(always)]
    fn scan(
        &self,
        q: &CoarseQuery,
        limit: f32,
        mut pre: impl FnMut(usize) -> bool,
        mut hit: impl FnMut(usize),
        dot: impl Fn(&[u8], &[i8]) -> i32,
    ) {
        let dim = self.dim;
        let qq = q.scale * q.scale * q.norm as f32;
        let limit = limit * (1.0 + SLACK);
        for i in 0..self.len() {
            if !pre(i) {
                continue;
            }
            // Σ (k_row + 128) k_query, exact; less 128 Σ k_query: the codes' own dot product
            let k = dot(&self.codes[i * dim..(i + 1) * dim], &q.codes) - 128 * q.sum;
            let s = self.scale[i];
            let cc = s * s * self.norm[i] as f32;
            let d2 = qq + cc - 2.0 * (q.scale * s) * k as f32;
            let reach = limit + q.err + self.err[i];
            // the f32 evaluation of `d2` is off by far less than this second slack; a NaN (a
            // row or query that is not finite) keeps the row
            let bound = reach * reach + 1e-5 * (qq + cc);
            if d2.partial_cmp(&bound) != Some(std::cmp::Ordering::Greater) {
                hit(i);
            }
        }
    }
}

pub(super) fn dot_portable(a: &[u8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

/// [`dot_portable`] with AVX2: 32 byte pairs per `vpmaddubsw` (no saturation: query codes are
/// at most 63 in magnitude), widened to 32 bits with `vpmaddwd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn avx2_dot(a: &[u8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let blocks = n / 32;
    for j in 0..blocks {
        // SAFETY: 32 bytes are readable at offset 32 j of both (j < n / 32); unaligned loads
        let (x, y) = unsafe {
            (_mm256_loadu_si256(a.as_ptr().add(32 * j).cast()), _mm256_loadu_si256(b.as_ptr().add(32 * j).cast()))
        };
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones));
    }
    let h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
    let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b01_00_11_10>(h));
    let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b00_00_00_01>(h));
    _mm_cvtsi128_si32(h) + dot_portable(&a[32 * blocks..n], &b[32 * blocks..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{l2sq_portable, test_rng as rng};

    #[test]
    fn dot_kernels_are_exact() {
        let mut r = rng(3);
        for len in [0, 1, 31, 32, 33, 128, 131] {
            let a: Vec<u8> = (0..len).map(|_| ((r() + 1.0) * 127.9) as u8).collect();
            let b: Vec<i8> = (0..len).map(|_| (r() * 63.9) as i8).collect();
            let exact: i64 = a.iter().zip(&b).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
            assert_eq!(i64::from(dot_portable(&a, &b)), exact, "{len}");
            #[cfg(target_arch = "x86_64")]
            if crate::vectors::avx2::available() {
                // SAFETY: the CPU has AVX2 (checked above)
                assert_eq!(i64::from(unsafe { avx2_dot(&a, &b) }), exact, "{len}");
            }
        }
    }

    #[test]
    fn never_rules_out_a_row_within_the_limit() {
        // rows at every distance around the limit from the query, at several magnitudes (the
        // bound scales with them), some with a huge or non-finite value
        let mut r = rng(11);
        for dim in [1, 7, 128, 130] {
            for magnitude in [1e-3f32, 1.0, 40.0] {
                let mut coarse = Coarse::new(dim);
                let mut rows = Vec::new();
                let q: Vec<f32> = (0..dim).map(|_| r() * magnitude).collect();
                for i in 0..400 {
                    let dir: Vec<f32> = (0..dim).map(|_| r()).collect();
                    let n = l2sq_portable(&dir, &vec![0.0; dim]).sqrt();
                    let at = magnitude * (0.2 + 1.2 * i as f32 / 400.0);
                    let mut row: Vec<f32> = q.iter().zip(&dir).map(|(q, d)| q + d / n * at).collect();
                    if i % 97 == 5 {
                        row[0] = f32::INFINITY;
                    }
                    coarse.push_zeros();
                    coarse.set(i, &row);
                    rows.push(row);
                }
                let limit = 0.6 * magnitude;
                let query = coarse.query(&q);
                let mut hits = Vec::new();
                coarse.rows_maybe_within(&query, limit, |i| i % 50 != 49, |i| hits.push(i));
                let mut ruled_out = 0;
                for (i, row) in rows.iter().enumerate() {
                    let d2 = l2sq_portable(row, &q);
                    let within = d2 <= limit * limit;
                    if i % 50 == 49 {
                        assert!(!hits.contains(&i), "pre said no");
                    } else if within {
                        assert!(hits.contains(&i), "dim {dim} x{magnitude}: row {i} at {} dropped", d2.sqrt());
                    } else if !hits.contains(&i) {
                        ruled_out += 1;
                    }
                }
                assert!(hits.windows(2).all(|w| w[0] < w[1]), "in row order");
                if dim >= 7 {
                    assert!(ruled_out > 100, "dim {dim} x{magnitude}: only {ruled_out} ruled out");
                }
            }
        }
    }

    #[test]
    fn rows_move_and_truncate_in_step() {
        let mut c = Coarse::new(3);
        for (i, v) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]].iter().enumerate() {
            c.push_zeros();
            c.set(i, v);
        }
        c.move_row(2, 0);
        c.truncate(1);
        assert_eq!(c.len(), 1);
        let mut hits = Vec::new();
        c.rows_maybe_within(&c.query(&[0.0, 0.0, 1.0]), 0.1, |_| true, |i| hits.push(i));
        assert_eq!(hits, [0]);
        c.rows_maybe_within(&c.query(&[1.0, 0.0, 0.0]), 0.1, |_| true, |i| hits.push(i));
        assert_eq!(hits, [0], "the row at 0 is the old row 2");
    }
}
