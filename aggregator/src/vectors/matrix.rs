//! A matrix of embeddings: rows of `dim` values in one contiguous `Vec<f32>`.
//!
//! Scans read it front to back (memory bandwidth is what bounds them), and retention removes
//! rows with one O(n) in-place compaction that keeps their order and never reallocates. The row
//! count is kept apart from the values, so a matrix of 0-d rows still counts its rows.

/// Rows of `dim` `f32` values, row `i` at `[i * dim, (i + 1) * dim)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrix {
    dim: usize,
    rows: usize,
    values: Vec<f32>,
}

impl Matrix {
    /// An empty matrix of `dim`-long rows.
    pub fn new(dim: usize) -> Self {
        Matrix { dim, rows: 0, values: Vec::new() }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Every value, row after row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends a row.
    ///
    /// # Panics
    /// When `row` is not `dim` long.
    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.dim, "row length");
        self.values.extend_from_slice(row);
        self.rows += 1;
    }

    /// Appends a row of zeros.
    pub fn push_zeros(&mut self) {
        self.values.resize((self.rows + 1) * self.dim, 0.0);
        self.rows += 1;
    }

    /// Keeps the rows for which `keep(row, to)` is true, in order, in place, and returns how many
    /// are left. `to` is where the row goes if it is kept (`to <= row`): the caller moves its own
    /// columns there in the same call. One O(n) pass; no reallocation.
    pub fn retain_rows(&mut self, mut keep: impl FnMut(usize, usize) -> bool) -> usize {
        let dim = self.dim;
        let mut kept = 0;
        for i in 0..self.rows {
            if !keep(i, kept) {
                continue;
            }
            if kept != i {
                self.values.copy_within(i * dim..(i + 1) * dim, kept * dim);
            }
            kept += 1;
        }
        self.values.truncate(kept * dim);
        self.rows = kept;
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_kept_in_order_and_compacted_in_place() {
        let mut m = Matrix::new(2);
        for i in 0..5 {
            m.push(&[i as f32, -(i as f32)]);
        }
        m.push_zeros();
        assert_eq!((m.len(), m.dim(), m.row(5)), (6, 2, &[0.0, 0.0][..]));
        m.row_mut(5)[1] = 7.0;
        let capacity = m.values.capacity();
        let mut moves = Vec::new();
        let left = m.retain_rows(|i, to| {
            let keep = i % 2 == 1;
            if keep {
                moves.push((i, to));
            }
            keep
        });
        assert_eq!(left, 3);
        assert_eq!(moves, [(1, 0), (3, 1), (5, 2)]);
        assert_eq!(m.values(), &[1.0, -1.0, 3.0, -3.0, 0.0, 7.0]);
        assert_eq!(m.values.capacity(), capacity, "no reallocation");
        assert_eq!(m.retain_rows(|_, _| false), 0);
        assert!(m.is_empty() && m.values().is_empty());
    }

    #[test]
    fn rows_of_no_values_are_counted() {
        let mut m = Matrix::new(0);
        m.push_zeros();
        m.push(&[]);
        assert_eq!((m.len(), m.row(1)), (2, &[][..]));
        assert_eq!(m.retain_rows(|i, _| i == 1), 1);
        assert_eq!(m.len(), 1);
    }
}
