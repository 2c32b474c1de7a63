//! [`Compact`]'s scan four rows at a time on x86-64: the integer sums with AVX-512 VNNI
//! (`vpdpbusd`) where the CPU has it, else with AVX2 (`vpmaddubsw`, `vpmaddwd`); the four rows'
//! reach test in `f64` lanes; only the rows that may be within reach go on to the caller's
//! filter and to [`Frame::bounds`], the same exact bounds the portable scan computes.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{Bounds, CoarseQuery, Compact, Frame, SLACK, dot_norm_portable, scale_of};

/// Rows read ahead of the scan (software prefetch): the hardware's stream prefetcher alone
/// leaves the scan waiting on memory once the codes no longer fit in the caches.
const PREFETCH: usize = 32;

/// Whether this CPU has AVX2 and the 256-bit forms of AVX-512 VNNI.
pub(super) fn vnni_available() -> bool {
    crate::vectors::avx2::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// [`Compact::scan`] with the best kernel this CPU has; false (nothing scanned) when it has
/// neither or the rows are not a whole number of 32-byte blocks.
pub(super) fn scan(
    c: &Compact,
    q: &CoarseQuery,
    rows: Range<usize>,
    reach: f64,
    pre: &mut impl FnMut(usize) -> bool,
    hit: &mut impl FnMut(usize, Bounds) -> f64,
) -> bool {
    if !c.dim.is_multiple_of(32) {
        return false;
    }
    if vnni_available() {
        // SAFETY: the CPU has AVX2, AVX-512 F, VL, BW and VNNI (checked above)
        unsafe { scan_vnni(c, q, rows, reach, pre, hit) };
        return true;
    }
    if crate::vectors::avx2::available() {
        // SAFETY: the CPU has AVX2 (checked above)
        unsafe { scan_avx2(c, q, rows, reach, pre, hit) };
        return true;
    }
    false
}

#[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
fn scan_vnni(
    c: &Compact,
    q: &CoarseQuery,
    rows: Range<usize>,
    reach: f64,
    pre: &mut impl FnMut(usize) -> bool,
    hit: &mut impl FnMut(usize, Bounds) -> f64,
) {
    // SAFETY: the CPU has AVX2 (this function's features)
    unsafe { blocks(c, q, rows, reach, pre, hit, |d, n, x, y| step_vnni(d, n, x, y)) }
}

#[target_feature(enable = "avx2")]
fn scan_avx2(
    c: &Compact,
    q: &CoarseQuery,
    rows: Range<usize>,
    reach: f64,
    pre: &mut impl FnMut(usize) -> bool,
    hit: &mut impl FnMut(usize, Bounds) -> f64,
) {
    // SAFETY: the CPU has AVX2 (this function's features)
    unsafe { blocks(c, q, rows, reach, pre, hit, |d, n, x, y| step_avx2(d, n, x, y)) }
}

/// Adds 32 values' `Σ (k + 128) k_q` and `Σ k²` to the lanes of `dot` and `norm`, from a row's
/// bytes `x` and the query's `y`, with `vpdpbusd`.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
#[inline]
fn step_vnni(dot: __m256i, norm: __m256i, x: __m256i, y: __m256i) -> (__m256i, __m256i) {
    let k = _mm256_abs_epi8(_mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN)));
    (_mm256_dpbusd_epi32(dot, x, y), _mm256_dpbusd_epi32(norm, k, k))
}

/// [`step_vnni`] with AVX2. `vpmaddubsw` cannot saturate: query codes are at most 63 in
/// magnitude, `|k|` at most 127.
#[target_feature(enable = "avx2")]
#[inline]
fn step_avx2(dot: __m256i, norm: __m256i, x: __m256i, y: __m256i) -> (__m256i, __m256i) {
    let ones = _mm256_set1_epi16(1);
    let k = _mm256_abs_epi8(_mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN)));
    (
        _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones)),
        _mm256_add_epi32(norm, _mm256_madd_epi16(_mm256_maddubs_epi16(k, k), ones)),
    )
}

/// [`Compact::scan`] four rows at a time: their sums by `step` (which adds 32 values'
/// `Σ (k + 128) k_q` and `Σ k²` to the 8 lanes of its `dot` and `norm`, from a row's bytes and the
/// query's), their reach test in lanes, then the caller's filter and [`Frame::bounds`] for the
/// rows that pass; the last rows (fewer than four) one by one.
///
/// # Safety
/// The CPU must have AVX2; `c.dim` must be a multiple of 32.
#[inline(always)]
unsafe fn blocks(
    c: &Compact,
    q: &CoarseQuery,
    rows: Range<usize>,
    mut reach: f64,
    pre: &mut impl FnMut(usize) -> bool,
    hit: &mut impl FnMut(usize, Bounds) -> f64,
    step: impl Fn(__m256i, __m256i, __m256i, __m256i) -> (__m256i, __m256i),
) {
    let dim = c.dim;
    assert!(dim.is_multiple_of(32) && q.codes.len() == dim && rows.end <= c.len());
    let frame = c.frame(q);
    let mut i = rows.start;
    while i + 4 <= rows.end {
        // the rows PREFETCH ahead, a cache line at a time (past the end: a no-op, never a fault)
        let ahead = c.codes.as_ptr().wrapping_add((i + PREFETCH) * dim);
        for line in (0..4 * dim).step_by(64) {
            // SAFETY: a prefetch reads nothing and faults on no address
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
        }
        let codes = &c.codes[i * dim..(i + 4) * dim];
        // SAFETY: AVX2 (the caller's); 4 rows of `dim` bytes, `dim` a multiple of 32 (asserted)
        let (dots, norms) = unsafe { sums4(codes, dim, &q.codes, &step) };
        // SAFETY: as above; 4 scales
        let maybe = unsafe { maybe_within(dots, norms, &c.scale[i..i + 4], &frame, reach) };
        if maybe != 0 {
            let (mut d, mut n) = ([0i32; 4], [0i32; 4]);
            // SAFETY: 16 bytes written to each
            unsafe {
                _mm_storeu_si128(d.as_mut_ptr().cast(), dots);
                _mm_storeu_si128(n.as_mut_ptr().cast(), norms);
            }
            for lane in 0..4 {
                let row = i + lane;
                if maybe & (1 << lane) != 0
                    && pre(row)
                    && let Some(b) = frame.bounds(d[lane], n[lane], c.scale[row], reach)
                {
                    reach = hit(row, b);
                }
            }
        }
        i += 4;
    }
    // the last rows one by one
    for row in i..rows.end {
        if pre(row) {
            let (dot, norm) = dot_norm_portable(&c.codes[row * dim..(row + 1) * dim], &q.codes);
            if let Some(b) = frame.bounds(dot, norm, c.scale[row], reach) {
                reach = hit(row, b);
            }
        }
    }
}

/// The sums of four rows (`codes`: 4 × `dim` bytes), `(dots, norms)` in 4 lanes each.
///
/// # Safety
/// AVX2; `dim` a multiple of 32, `codes` 4 `dim` long, `q` `dim` long.
#[inline(always)]
unsafe fn sums4(
    codes: &[u8],
    dim: usize,
    q: &[i8],
    step: &impl Fn(__m256i, __m256i, __m256i, __m256i) -> (__m256i, __m256i),
) -> (__m128i, __m128i) {
    debug_assert!(codes.len() == 4 * dim && q.len() == dim && dim.is_multiple_of(32));
    // SAFETY: AVX2 (the caller's); every load is within `codes` and `q` (the caller's sizes)
    unsafe {
        let mut d = [_mm256_setzero_si256(); 4];
        let mut n = [_mm256_setzero_si256(); 4];
        for j in (0..dim).step_by(32) {
            let y = _mm256_loadu_si256(q.as_ptr().add(j).cast());
            for r in 0..4 {
                let x = _mm256_loadu_si256(codes.as_ptr().add(r * dim + j).cast());
                (d[r], n[r]) = step(d[r], n[r], x, y);
            }
        }
        (sum4(d), sum4(n))
    }
}

/// The 8 lanes of each of four vectors summed: one lane each.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn sum4(v: [__m256i; 4]) -> __m128i {
    // SAFETY: AVX2 (the caller's)
    unsafe {
        // per 128-bit half: (v0 01, v0 23, v1 01, v1 23), then (v0, v1, v2, v3) of that half
        let t = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
        _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t))
    }
}

/// A bit per row (of four) that may be within `reach`: the reach test of [`Frame::bounds`] in
/// `f64` lanes (the same operations; a NaN keeps the row).
///
/// # Safety
/// AVX2; `scales` 4 long.
#[inline(always)]
unsafe fn maybe_within(dots: __m128i, norms: __m128i, scales: &[u16], f: &Frame, reach: f64) -> i32 {
    debug_assert_eq!(scales.len(), 4);
    debug_assert_eq!(f32::from_bits(1 << 16), scale_of(1));
    // SAFETY: AVX2 (the caller's); 8 bytes read from `scales` (4 long)
    unsafe {
        let k = _mm256_cvtepi32_pd(_mm_sub_epi32(dots, _mm_set1_epi32(128 * f.sum)));
        let norm = _mm256_cvtepi32_pd(norms);
        // scale_of: the 16 bits are the top of an f32
        let bits = _mm_slli_epi32::<16>(_mm_cvtepu16_epi32(_mm_loadl_epi64(scales.as_ptr().cast())));
        let s = _mm256_cvtps_pd(_mm_castsi128_ps(bits));
        let qq = _mm256_set1_pd(f.qq);
        let cc = _mm256_mul_pd(_mm256_mul_pd(s, s), norm);
        let two_sq_s = _mm256_mul_pd(_mm256_set1_pd(2.0), _mm256_mul_pd(_mm256_set1_pd(f.sq), s));
        let d2 = _mm256_sub_pd(_mm256_add_pd(qq, cc), _mm256_mul_pd(two_sq_s, k));
        let slack = _mm256_mul_pd(_mm256_set1_pd(SLACK), _mm256_add_pd(qq, cc));
        let err = _mm256_add_pd(_mm256_set1_pd(f.q_err), _mm256_mul_pd(s, _mm256_set1_pd(f.row_err)));
        let r = _mm256_add_pd(_mm256_set1_pd(reach), err);
        // not (d2 - slack > r²), true when unordered
        _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NGT_UQ>(_mm256_sub_pd(d2, slack), _mm256_mul_pd(r, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every x86 kernel this CPU has, over 4 rows of `dim` random codes and a query.
    #[test]
    fn four_row_sums_are_exact() {
        let mut seed = 9u64;
        let mut r = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for dim in [32, 64, 128, 256] {
            // codes 1..=255 (k in [-127, 127]), query codes in [-63, 63]
            let codes: Vec<u8> = (0..4 * dim).map(|_| 1 + (r() % 255) as u8).collect();
            let q: Vec<i8> = (0..dim).map(|_| (r() % 127) as i8 - 63).collect();
            let expected: Vec<(i32, i32)> = codes.chunks_exact(dim).map(|row| dot_norm_portable(row, &q)).collect();
            let check = |(dots, norms): (__m128i, __m128i), kernel: &str| {
                let (mut d, mut n) = ([0i32; 4], [0i32; 4]);
                // SAFETY: 16 bytes written to each
                unsafe {
                    _mm_storeu_si128(d.as_mut_ptr().cast(), dots);
                    _mm_storeu_si128(n.as_mut_ptr().cast(), norms);
                }
                let got: Vec<(i32, i32)> = d.into_iter().zip(n).collect();
                assert_eq!(got, expected, "{kernel}, dim {dim}");
            };
            if crate::vectors::avx2::available() {
                // SAFETY: the CPU has AVX2 (checked above)
                check(unsafe { sums4_avx2(&codes, dim, &q) }, "avx2");
            }
            if vnni_available() {
                // SAFETY: the CPU has VNNI (checked above)
                check(unsafe { sums4_vnni(&codes, dim, &q) }, "vnni");
            }
        }
    }

    #[target_feature(enable = "avx2")]
    fn sums4_avx2(codes: &[u8], dim: usize, q: &[i8]) -> (__m128i, __m128i) {
        // SAFETY: AVX2 (this function's); the sizes the test made
        unsafe { sums4(codes, dim, q, &|d, n, x, y| step_avx2(d, n, x, y)) }
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
    fn sums4_vnni(codes: &[u8], dim: usize, q: &[i8]) -> (__m128i, __m128i) {
        // SAFETY: AVX2 (this function's); the sizes the test made
        unsafe { sums4(codes, dim, q, &|d, n, x, y| step_vnni(d, n, x, y)) }
    }
}
