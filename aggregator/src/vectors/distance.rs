//! Squared Euclidean distance kernels.
//!
//! Two families, each kept exactly as its users' results were measured and recorded with:
//! - [`l2sq_portable`] and [`avx2::l2sq`]: the scan kernels of the search index. AVX2 + FMA on
//!   x86-64 CPUs that have them (chosen once per process, see [`avx2::available`]), a portable
//!   one (written so that LLVM vectorises it for the baseline target) everywhere else; both sum
//!   in the same order;
//! - [`l2sq_lanes`] and [`l2sq_lanes_within`]: the correlator's comparisons of a sighting with a
//!   trajectory's members. Another summation order: the correlator's decisions at the thresholds
//!   depend on it, so it is not swapped for the scan kernels.

/// Squared Euclidean distance, portable. Four independent 8-lane accumulators (one per 8-value
/// chunk of each 32-value block, then the remaining 8-value chunks into the first) keep the
/// additions out of one dependency chain, and lane-wise arithmetic on `[f32; 8]` is what LLVM
/// vectorises without reassociating anything. The lanes are then summed in the same order as
/// the AVX2 kernel does.
#[inline(always)]
pub fn l2sq_portable(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[inline(always)]
    fn lanes(acc: &mut [f32; 8], x: &[f32], y: &[f32]) {
        let (x, y): (&[f32; 8], &[f32; 8]) = (x.try_into().unwrap(), y.try_into().unwrap());
        for k in 0..8 {
            let d = x[k] - y[k];
            acc[k] += d * d;
        }
    }
    let mut acc = [[0f32; 8]; 4];
    let (blocks_a, blocks_b) = (a.chunks_exact(32), b.chunks_exact(32));
    let (rest_a, rest_b) = (blocks_a.remainder(), blocks_b.remainder());
    for (x, y) in blocks_a.zip(blocks_b) {
        for (j, (x, y)) in x.chunks_exact(8).zip(y.chunks_exact(8)).enumerate() {
            lanes(&mut acc[j], x, y);
        }
    }
    let (chunks_a, chunks_b) = (rest_a.chunks_exact(8), rest_b.chunks_exact(8));
    let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        lanes(&mut acc[0], x, y);
    }
    let mut tail = 0f32;
    for (x, y) in tail_a.iter().zip(tail_b) {
        let d = x - y;
        tail += d * d;
    }
    let mut sum = [0f32; 8];
    for k in 0..8 {
        sum[k] = (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]);
    }
    reduce8(sum) + tail
}

/// `((s0+s4) + (s2+s6)) + ((s1+s5) + (s3+s7))`: the order of the AVX2 horizontal sum.
#[inline(always)]
fn reduce8(s: [f32; 8]) -> f32 {
    let h = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    (h[0] + h[2]) + (h[1] + h[3])
}

/// Squared Euclidean distance; eight independent accumulators so the loop vectorises.
#[inline]
pub fn l2sq_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`l2sq_lanes`], giving up (`None`) as soon as a block of 32 dimensions takes the sum above
/// `limit2`; `None` too when the lengths differ or the vectors are empty.
#[inline]
pub fn l2sq_lanes_within(a: &[f32], b: &[f32], limit2: f32) -> Option<f32> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let mut sum = 0.0f32;
    for (x, y) in a.chunks(32).zip(b.chunks(32)) {
        sum += l2sq_lanes(x, y);
        if sum > limit2 {
            return None;
        }
    }
    Some(sum)
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    //! The scan kernel with AVX2 and FMA: four 256-bit accumulators, `vfmadd` of the
    //! differences. Only ever called after `available()` said yes; a caller's scan loop gets it
    //! inlined by running in a `#[target_feature(enable = "avx2,fma")]` function of its own.

    use std::arch::x86_64::*;

    /// Whether this CPU has AVX2 and FMA (`is_x86_feature_detected` caches the answer).
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    #[target_feature(enable = "avx")]
    #[inline]
    fn load(x: &[f32]) -> __m256 {
        assert!(x.len() >= 8);
        // SAFETY: 8 values are readable at `x` (checked above); unaligned loads are fine.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }

    /// Squared Euclidean distance of two equally long slices.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (`available()`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let (blocks_a, blocks_b) = (a.chunks_exact(32), b.chunks_exact(32));
        let (rest_a, rest_b) = (blocks_a.remainder(), blocks_b.remainder());
        for (x, y) in blocks_a.zip(blocks_b) {
            for (j, acc) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(load(&x[8 * j..]), load(&y[8 * j..]));
                *acc = _mm256_fmadd_ps(d, d, *acc);
            }
        }
        let (chunks_a, chunks_b) = (rest_a.chunks_exact(8), rest_b.chunks_exact(8));
        let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
        for (x, y) in chunks_a.zip(chunks_b) {
            let d = _mm256_sub_ps(load(x), load(y));
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
        }
        let mut tail = 0f32;
        for (x, y) in tail_a.iter().zip(tail_b) {
            let d = x - y;
            tail += d * d;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        // (s0+s4, s1+s5, s2+s6, s3+s7), then (h0+h2, h1+h3), then their sum
        let h = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps::<0b01>(h, h));
        _mm_cvtss_f32(h) + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this machine can run, by name.
    fn kernels() -> Vec<&'static str> {
        let mut k = vec!["portable"];
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            k.push("avx2");
        }
        k
    }

    #[test]
    fn kernels_compute_squared_distances() {
        let a = [0f32; 131];
        let b: Vec<f32> = (0..131).map(|i| (i % 5) as f32).collect();
        let exact: f32 = b.iter().map(|x| x * x).sum();
        for name in kernels() {
            let d = match name {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: listed by kernels() only when the CPU has AVX2 and FMA
                "avx2" => unsafe { avx2::l2sq(&a, &b) },
                _ => l2sq_portable(&a, &b),
            };
            assert_eq!(d, exact, "{name}");
        }
        assert_eq!(l2sq_portable(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(l2sq_portable(&[3.0], &[-1.0]), 16.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_equals_the_portable_one() {
        if !avx2::available() {
            eprintln!("no AVX2+FMA on this CPU: skipped");
            return;
        }
        // SplitMix64, uniform in [-1, 1): the same values as the search index's tests draw
        let mut state = 7u64;
        let mut f32 = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for dim in (1..=160).chain([256, 512, 1000]) {
            for scale in [1e-3f32, 1.0, 1e3] {
                let a: Vec<f32> = (0..dim).map(|_| f32() * scale).collect();
                let b: Vec<f32> = (0..dim).map(|_| f32() * scale).collect();
                let portable = l2sq_portable(&a, &b);
                // SAFETY: the CPU has AVX2 and FMA (checked above)
                let fast = unsafe { avx2::l2sq(&a, &b) };
                let exact = a.iter().zip(&b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>();
                assert!((fast - portable).abs() <= 1e-4 * portable.abs(), "dim {dim}: {fast} vs {portable}");
                assert!((f64::from(fast) - exact).abs() <= 1e-5 * exact, "dim {dim}: {fast} vs {exact}");
            }
        }
    }

    #[test]
    fn lanes_kernel_matches_naive() {
        let a: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..128).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((l2sq_lanes(&a, &b) - naive).abs() < 1e-3);
        assert_eq!(l2sq_lanes_within(&a, &b, naive * 0.5), None);
        assert!((l2sq_lanes_within(&a, &b, naive * 2.0).unwrap() - naive).abs() < 1e-3);
        assert!(
            (l2sq_lanes(&a[..13], &b[..13])
                - a[..13].iter().zip(&b[..13]).map(|(x, y)| (x - y) * (x - y)).sum::<f32>())
            .abs()
                < 1e-4
        );
    }
}
