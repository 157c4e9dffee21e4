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
            let q = rows_tensor(queries, start, n, &Device::Cpu)?;
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

/// Rows `start..start + n` of `m` as an (n x dim) tensor on `device`.
fn rows_tensor(m: Matrix, start: usize, n: usize, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_slice(
        &m.data[start * m.dim..(start + n) * m.dim],
        (n, m.dim),
        device,
    )
}

/// The gallery in blocks of `block` items, each transposed (dim x items) on
/// `device`, ready to multiply a block of queries by.
fn transposed_blocks(
    gallery: Matrix,
    block: usize,
    device: &Device,
) -> candle_core::Result<Vec<Tensor>> {
    (0..gallery.rows)
        .step_by(block)
        .map(|start| {
            let n = block.min(gallery.rows - start);
            rows_tensor(gallery, start, n, device)?.t()?.contiguous()
        })
        .collect()
}

/// Keeps the `k` best of `candidates`: most similar first, ties by gallery order.
fn keep_best(candidates: &mut Vec<(usize, f32)>, k: usize) {
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    candidates.truncate(k);
}

/// Gallery items per block of [`top_k_search`].
pub const GALLERY_BLOCK: usize = 16_384;
/// Queries per block of [`top_k_search`].
pub const QUERY_BLOCK: usize = 256;

/// Exact top-`k` search for every query: blocks of queries run in parallel, each
/// sweeping the gallery in blocks and keeping a running top `k`, so memory is
/// `QUERY_BLOCK x GALLERY_BLOCK` similarities per thread whatever the sizes.
/// Results: (gallery index, similarity), most similar first, ties by gallery order.
pub fn top_k_search(
    queries: Matrix,
    gallery: Matrix,
    k: usize,
) -> candle_core::Result<Vec<Vec<(usize, f32)>>> {
    let gallery_blocks = transposed_blocks(gallery, GALLERY_BLOCK, &Device::Cpu)?;
    let starts: Vec<usize> = (0..queries.rows).step_by(QUERY_BLOCK).collect();
    let blocks: Vec<Vec<Vec<(usize, f32)>>> = starts
        .par_iter()
        .map(|&start| -> candle_core::Result<Vec<Vec<(usize, f32)>>> {
            let n = QUERY_BLOCK.min(queries.rows - start);
            let q = rows_tensor(queries, start, n, &Device::Cpu)?;
            let mut best: Vec<Vec<(usize, f32)>> = vec![Vec::with_capacity(2 * k); n];
            for (b, g) in gallery_blocks.iter().enumerate() {
                let offset = b * GALLERY_BLOCK;
                let s = q.matmul(g)?;
                let width = s.dim(1)?;
                let s = s.flatten_all()?.to_vec1::<f32>()?;
                for (i, kept) in best.iter_mut().enumerate() {
                    let row = &s[i * width..(i + 1) * width];
                    // Only items that can enter the running top k are considered.
                    let floor = if kept.len() >= k {
                        kept[k - 1].1
                    } else {
                        f32::NEG_INFINITY
                    };
                    for j in top_k(row, k) {
                        if row[j] >= floor {
                            kept.push((offset + j, row[j]));
                        }
                    }
                    keep_best(kept, k);
                }
            }
            Ok(best)
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(blocks.into_iter().flatten().collect())
}

/// Gallery items per block of [`top_k_search_on`]: candle's CUDA sort holds a row
/// in shared memory (4 bytes an item, 48 KiB by default), so 8,192 at most.
pub const DEVICE_GALLERY_BLOCK: usize = 8_192;
/// Queries per block of [`top_k_search_on`].
pub const DEVICE_QUERY_BLOCK: usize = 2_048;

/// Exact top-`k` search on a candle device (a GPU): the similarities of a block
/// of queries against a block of the gallery are computed and sorted on the
/// device, and only each block's `k` best (index, similarity) come back to be
/// merged. The same results as [`top_k_search`] except where equal similarities
/// straddle a block's `k`-th place (the device sort is not stable).
pub fn top_k_search_on(
    queries: Matrix,
    gallery: Matrix,
    k: usize,
    device: &Device,
) -> candle_core::Result<Vec<Vec<(usize, f32)>>> {
    let gallery_blocks = transposed_blocks(gallery, DEVICE_GALLERY_BLOCK, device)?;
    let mut out = Vec::with_capacity(queries.rows);
    for start in (0..queries.rows).step_by(DEVICE_QUERY_BLOCK) {
        let n = DEVICE_QUERY_BLOCK.min(queries.rows - start);
        let q = rows_tensor(queries, start, n, device)?;
        let mut candidates: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n];
        for (b, g) in gallery_blocks.iter().enumerate() {
            let offset = b * DEVICE_GALLERY_BLOCK;
            let s = q.matmul(g)?;
            let kept = k.min(s.dim(1)?);
            let order = s
                .arg_sort_last_dim(false)?
                .narrow(1, 0, kept)?
                .contiguous()?;
            let values = s.gather(&order, 1)?.to_vec2::<f32>()?;
            let order = order.to_vec2::<u32>()?;
            for (i, (ids, sims)) in order.iter().zip(&values).enumerate() {
                candidates[i].extend(
                    ids.iter()
                        .map(|&j| offset + j as usize)
                        .zip(sims.iter().copied()),
                );
            }
        }
        for mut c in candidates {
            keep_best(&mut c, k);
            out.push(c);
        }
    }
    Ok(out)
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
    fn device_search_matches_the_cpu_search() {
        // Random vectors (no ties), over more than one gallery block; the CPU device
        // runs the same candle ops a GPU does.
        let mut rng = crate::rng::Rng::derive(3, &["device search"]);
        let q: Vec<f32> = (0..300 * 16).map(|_| rng.normal() as f32).collect();
        let g: Vec<f32> = (0..20_000 * 16).map(|_| rng.normal() as f32).collect();
        let (qm, gm) = (Matrix::new(&q, 16), Matrix::new(&g, 16));
        let cpu = top_k_search(qm, gm, 10).unwrap();
        let device = top_k_search_on(qm, gm, 10, &Device::Cpu).unwrap();
        assert_eq!(cpu.len(), device.len());
        for (a, b) in cpu.iter().zip(&device) {
            assert_eq!(
                a.iter().map(|x| x.0).collect::<Vec<_>>(),
                b.iter().map(|x| x.0).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn blocked_top_k_matches_a_full_sort_with_ties() {
        // Values on a coarse grid make many exact ties.
        let q: Vec<f32> = (0..300 * 4)
            .map(|i| ((i * 7 % 5) as f32 - 2.0) / 2.0)
            .collect();
        let g: Vec<f32> = (0..40_000 * 4)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 3.0)
            .collect();
        let (qm, gm) = (Matrix::new(&q, 4), Matrix::new(&g, 4));
        let found = top_k_search(qm, gm, 10).unwrap();
        for (i, got) in found.iter().enumerate().step_by(37) {
            let mut all: Vec<(usize, f32)> = (0..gm.rows)
                .map(|j| (j, qm.row(i).iter().zip(gm.row(j)).map(|(a, b)| a * b).sum()))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            assert_eq!(
                got.iter().map(|x| x.0).collect::<Vec<_>>(),
                all[..10].iter().map(|x| x.0).collect::<Vec<_>>()
            );
        }
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
