//! Exact search by cosine over L2-normalised embeddings.
//!
//! Similarities are computed in blocks of queries (matrix products), so memory
//! is bounded by `BLOCK x gallery` whatever the number of queries. Ties in
//! similarity are broken by gallery order: of two equally similar items the
//! earlier one ranks first, which makes every rank deterministic.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Queries per block.
pub const BLOCK: usize = 1024;

/// A row-major matrix of embeddings.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub rows: usize,
    pub dim: usize,
    pub data: &'a [f32],
}

impl<'a> Matrix<'a> {
    pub fn new(data: &'a [f32], dim: usize) -> Self {
        Matrix {
            rows: data.len().checked_div(dim).unwrap_or(0),
            dim,
            data,
        }
    }
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Calls `f(query index, similarities to every gallery item)` for every query,
/// block by block (blocks in parallel).
pub fn for_each_similarity_row<F>(queries: Matrix, gallery: Matrix, f: F) -> candle_core::Result<()>
where
    F: Fn(usize, &[f32]) + Sync,
{
    if queries.rows == 0 || gallery.rows == 0 {
        return Ok(());
    }
    let g = Tensor::from_slice(gallery.data, (gallery.rows, gallery.dim), &Device::Cpu)?;
    let gt = g.t()?.contiguous()?;
    let blocks: Vec<usize> = (0..queries.rows).step_by(BLOCK).collect();
    blocks
        .par_iter()
        .try_for_each(|&start| -> candle_core::Result<()> {
            let n = BLOCK.min(queries.rows - start);
            let q = Tensor::from_slice(
                &queries.data[start * queries.dim..(start + n) * queries.dim],
                (n, queries.dim),
                &Device::Cpu,
            )?;
            let s = q.matmul(&gt)?.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..n {
                f(start + i, &s[i * gallery.rows..(i + 1) * gallery.rows]);
            }
            Ok(())
        })
}

/// The 1-based rank of the best-ranked correct item in a similarity row, with
/// ties broken by gallery order; `None` if no item is correct.
pub fn first_correct_rank(similarities: &[f32], correct: impl Fn(usize) -> bool) -> Option<usize> {
    // The best correct item: highest similarity, earliest on ties.
    let mut best: Option<(f32, usize)> = None;
    for (j, &s) in similarities.iter().enumerate() {
        if correct(j) && best.is_none_or(|(b, _)| s > b) {
            best = Some((s, j));
        }
    }
    let (s_star, j_star) = best?;
    let ahead = similarities
        .iter()
        .enumerate()
        .filter(|&(j, &s)| s > s_star || (s == s_star && j < j_star))
        .count();
    Some(ahead + 1)
}

/// Indices of the `k` most similar items, most similar first (ties: gallery order).
pub fn top_k(similarities: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..similarities.len()).collect();
    let order = |a: &usize, b: &usize| similarities[*b].total_cmp(&similarities[*a]).then(a.cmp(b));
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_break_ties_by_gallery_order() {
        let s = [0.5, 0.9, 0.9, 0.1];
        assert_eq!(first_correct_rank(&s, |j| j == 2), Some(2)); // item 1 ties and comes first
        assert_eq!(first_correct_rank(&s, |j| j == 1), Some(1));
        assert_eq!(first_correct_rank(&s, |j| j == 1 || j == 2), Some(1));
        assert_eq!(first_correct_rank(&s, |j| j == 3), Some(4));
        assert_eq!(first_correct_rank(&s, |_| false), None);
        assert_eq!(top_k(&s, 3), vec![1, 2, 0]);
    }

    #[test]
    fn blocked_rows_match_direct_dot_products() {
        let q: Vec<f32> = (0..2500 * 3)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let g: Vec<f32> = (0..40 * 3)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let (qm, gm) = (Matrix::new(&q, 3), Matrix::new(&g, 3));
        let seen = std::sync::Mutex::new(0usize);
        for_each_similarity_row(qm, gm, |i, row| {
            for (j, s) in row.iter().enumerate() {
                let direct: f32 = qm.row(i).iter().zip(gm.row(j)).map(|(a, b)| a * b).sum();
                assert!((s - direct).abs() < 1e-5);
            }
            *seen.lock().unwrap() += 1;
        })
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), 2500);
    }
}
