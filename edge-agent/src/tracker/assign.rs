//! Optimal assignment: the Hungarian algorithm (shortest augmenting paths with potentials) on a
//! dense cost matrix, and the gated form the tracker associates with. [`hungarian`] is public:
//! the tests' simulator uses it for the identity matching of its IDF1 metric.

/// Optimal assignment on a `rows × cols` matrix whose entries are `Some(cost)`
/// (finite, >= 0) for feasible pairs and `None` for infeasible ones. Returns the
/// matched `(row, col)` pairs: as many feasible pairs as possible, and among such
/// matchings one of least total cost. Hungarian algorithm (shortest augmenting
/// paths with potentials), O(min² · max).
pub(super) fn assign(rows: usize, cols: usize, cost: impl Fn(usize, usize) -> Option<f64>) -> Vec<(usize, usize)> {
    let transpose = rows > cols;
    let (n, m) = if transpose { (cols, rows) } else { (rows, cols) };
    let mut a = vec![None; n * m];
    for i in 0..n {
        for j in 0..m {
            let c = if transpose { cost(j, i) } else { cost(i, j) };
            debug_assert!(c.is_none_or(|c| c.is_finite() && c >= 0.0), "bad cost {c:?}");
            a[i * m + j] = c;
        }
    }
    // An infeasible pair costs more than any full set of feasible pairs can, so the
    // optimum uses as few of them as possible; they are dropped afterwards.
    let max = a.iter().flatten().fold(0.0_f64, |acc, &c| acc.max(c));
    let infeasible = max * n as f64 + 1.0;
    let dense: Vec<f64> = a.iter().map(|c| c.unwrap_or(infeasible)).collect();

    hungarian(&dense, n, m)
        .into_iter()
        .enumerate()
        .filter(|&(i, j)| a[i * m + j].is_some())
        .map(|(i, j)| if transpose { (j, i) } else { (i, j) })
        .collect()
}

/// Minimum-cost assignment of every row of the dense row-major `n × m` matrix
/// `a` (`n <= m`) to a distinct column; returns each row's column. (Also the identity matching
/// of the IDF1 metric in the tests' simulator.)
pub fn hungarian(a: &[f64], n: usize, m: usize) -> Vec<usize> {
    debug_assert!(n <= m && a.len() == n * m);
    // 1-based potentials; column 0 is a virtual start column. `p[j]` is the row
    // (1-based, 0 = none) assigned to column j, `way[j]` the previous column on the
    // augmenting path.
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0_usize; m + 1];
    let mut way = vec![0_usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = a[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut row_to_col = vec![0; n];
    for j in 1..=m {
        if p[j] != 0 {
            row_to_col[p[j] - 1] = j - 1;
        }
    }
    row_to_col
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers (Knuth's MMIX LCG), no RNG crate.
    struct Lcg(u64);
    impl Lcg {
        /// Uniform in [0, 1).
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn total(m: &[Vec<Option<f64>>], pairs: &[(usize, usize)]) -> f64 {
        pairs.iter().map(|&(r, c)| m[r][c].unwrap()).sum()
    }

    fn solve(m: &[Vec<Option<f64>>]) -> Vec<(usize, usize)> {
        let cols = m.first().map_or(0, Vec::len);
        let mut pairs = assign(m.len(), cols, |r, c| m[r][c]);
        pairs.sort();
        pairs
    }

    /// Best (most pairs, then least cost) over all matchings, by exhaustive search.
    fn brute_force(m: &[Vec<Option<f64>>], row: usize, used: &mut [bool]) -> (usize, f64) {
        if row == m.len() {
            return (0, 0.0);
        }
        let mut best = brute_force(m, row + 1, used); // row left unmatched
        for c in 0..used.len() {
            if let (false, Some(cost)) = (used[c], m[row][c]) {
                used[c] = true;
                let (n, s) = brute_force(m, row + 1, used);
                used[c] = false;
                let cand = (n + 1, s + cost);
                if cand.0 > best.0 || (cand.0 == best.0 && cand.1 < best.1) {
                    best = cand;
                }
            }
        }
        best
    }

    #[test]
    fn assignment_known_matrices() {
        let s = |v: &[f64]| v.iter().map(|&c| Some(c)).collect::<Vec<_>>();
        // Square: the greedy row minima (1, 0) collide; the optimum is 1 + 2 + 2.
        let m = vec![s(&[4.0, 1.0, 3.0]), s(&[2.0, 0.0, 5.0]), s(&[3.0, 2.0, 2.0])];
        let p = solve(&m);
        assert_eq!(p, vec![(0, 1), (1, 0), (2, 2)]);
        assert_eq!(total(&m, &p), 5.0);
        // Wide: two rows, three columns.
        let m = vec![s(&[0.9, 0.1, 0.5]), s(&[0.2, 0.15, 0.9])];
        assert_eq!(solve(&m), vec![(0, 1), (1, 0)]);
        // Tall: three rows, two columns; one row stays unmatched.
        let m = vec![s(&[0.9, 0.8]), s(&[0.1, 0.7]), s(&[0.3, 0.2])];
        assert_eq!(solve(&m), vec![(1, 0), (2, 1)]);
        // Infeasible pairs are never returned; the cheap (0,0) would strand row 1.
        let m = vec![vec![Some(0.1), Some(0.3)], vec![Some(0.2), None]];
        assert_eq!(solve(&m), vec![(0, 1), (1, 0)]);
        // A row with no feasible pair stays unmatched.
        let m = vec![vec![None, None], vec![Some(0.5), Some(0.4)]];
        assert_eq!(solve(&m), vec![(1, 1)]);
        assert!(solve(&[vec![None]]).is_empty());
        assert!(assign(0, 3, |_, _| Some(1.0)).is_empty());
        assert!(assign(3, 0, |_, _| Some(1.0)).is_empty());
    }

    #[test]
    fn assignment_matches_brute_force_on_random_matrices() {
        let mut rng = Lcg(42);
        for case in 0..500 {
            let rows = 1 + (rng.next() * 6.0) as usize;
            let cols = 1 + (rng.next() * 6.0) as usize;
            let infeasible = rng.next() * 0.6;
            let m: Vec<Vec<Option<f64>>> = (0..rows)
                .map(|_| {
                    (0..cols).map(|_| if rng.next() < infeasible { None } else { Some(rng.next() * 2.0) }).collect()
                })
                .collect();
            let p = solve(&m);
            let mut rows_seen = vec![false; rows];
            let mut cols_seen = vec![false; cols];
            for &(r, c) in &p {
                assert!(m[r][c].is_some(), "case {case}: infeasible pair returned");
                assert!(!rows_seen[r] && !cols_seen[c], "case {case}: not a matching");
                rows_seen[r] = true;
                cols_seen[c] = true;
            }
            let (n, cost) = brute_force(&m, 0, &mut vec![false; cols]);
            assert_eq!(p.len(), n, "case {case}: cardinality, {m:?}");
            assert!((total(&m, &p) - cost).abs() < 1e-9, "case {case}: cost {} vs {cost}", total(&m, &p));
        }
    }

    /// The simulator's random numbers (`sightline_tests::sim::Rng`, SplitMix64), so the test
    /// below draws the same tables as it did in `tests/correlation.rs`.
    struct SimRng(u64);
    impl SimRng {
        fn new(seed: u64) -> Self {
            Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }
        fn below(&mut self, n: usize) -> usize {
            ((self.unit() * n as f64) as usize).min(n - 1)
        }
        fn chance(&mut self, p: f64) -> bool {
            self.unit() < p
        }
    }

    /// Largest total weight of a one-to-one matching of rows to columns (weights >= 0) with
    /// [`hungarian`], as the tests' simulator computes it (`sightline_tests::sim::max_weight_matching`).
    fn max_weight_matching(w: &[Vec<i64>]) -> i64 {
        if w.is_empty() || w[0].is_empty() {
            return 0;
        }
        let (n, m) = (w.len(), w[0].len());
        // the solver minimises cost with rows <= columns: transpose if needed, negate
        let (rows, cols) = (n.min(m), n.max(m));
        let weight = |r: usize, c: usize| if n <= m { w[r][c] } else { w[c][r] };
        let cost: Vec<f64> = (0..rows).flat_map(|r| (0..cols).map(move |c| -(weight(r, c) as f64))).collect();
        let assignment = hungarian(&cost, rows, cols);
        assignment.iter().enumerate().map(|(r, &c)| weight(r, c)).sum()
    }

    /// The Hungarian matching equals brute force over all permutations on small random tables.
    #[test]
    fn hungarian_matches_brute_force() {
        fn brute(w: &[Vec<i64>]) -> i64 {
            fn go(w: &[Vec<i64>], row: usize, used: &mut Vec<bool>) -> i64 {
                if row == w.len() {
                    return 0;
                }
                let mut best = go(w, row + 1, used); // row unmatched
                for j in 0..used.len() {
                    if !used[j] {
                        used[j] = true;
                        best = best.max(w[row][j] + go(w, row + 1, used));
                        used[j] = false;
                    }
                }
                best
            }
            go(w, 0, &mut vec![false; w[0].len()])
        }
        let mut rng = SimRng::new(99);
        for _ in 0..300 {
            let (n, m) = (1 + rng.below(6), 1 + rng.below(6));
            let w: Vec<Vec<i64>> = (0..n)
                .map(|_| (0..m).map(|_| if rng.chance(0.4) { 0 } else { rng.below(20) as i64 }).collect())
                .collect();
            assert_eq!(max_weight_matching(&w), brute(&w), "{w:?}");
        }
    }
}
