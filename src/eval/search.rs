//! Exact search by cosine over L2-normalised embeddings.
//!
//! Similarities are computed in blocks of queries (matrix products), so memory
//! is bounded by a block of rows (`rows.rs`) whatever the number of queries. Ties in
//! similarity are broken by gallery order: of two equally similar items the
//! earlier one ranks first, which makes every rank deterministic.

use crate::linalg::{amx, int8, matmul_on, Threads, View};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

mod approximate;
mod rows;
mod shortlist;
pub use approximate::{bf16_margin, int8_margin};
pub use rows::{for_each_row, Row};
use shortlist::Shortlist;

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

/// Calls `f(query index, f32 similarities to every gallery item)` for every
/// query, block by block (see [`for_each_row`], whose f32 rows these are).
pub fn for_each_similarity_row<F>(queries: Matrix, gallery: Matrix, f: F)
where
    F: Fn(usize, &[f32]) + Sync,
{
    for_each_row(queries, gallery, Scoring::F32, |i, row| {
        if let Row::Exact(s) = row {
            f(i, s)
        }
    });
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

/// Rows `start..start + n` of `m` as a matrix-product operand.
fn query_rows(m: Matrix<'_>, start: usize, n: usize) -> View<'_> {
    View::Plain(&m.data[start * m.dim..(start + n) * m.dim], n, m.dim)
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

/// Gallery items per block of [`top_k_search`]: a block's similarities for
/// [`QUERY_BLOCK`] queries (1 MiB) stay in a core's L2 cache between the matrix
/// product that writes them and the scan that reads them.
pub const GALLERY_BLOCK: usize = 256;
/// Queries per block of [`top_k_search`] (fewer when there are not enough to
/// give every thread a block). The matrix product packs each gallery block once
/// per query block, so this many queries share a packing: with 64 queries and
/// 4,096 items (before 2026-12-07) the search multiplied at 140 GFLOP/s where
/// `gemm` reaches 224 on one product of the same machine.
/// Chosen by measurement on 2 cores of an AVX-512 Xeon (PERFORMANCE.md).
pub const QUERY_BLOCK: usize = 1_024;

/// How [`top_k_search`] scores the gallery. Both give the exact top `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// Every similarity an f32 matrix product (AVX-512 or AVX2 `gemm`).
    F32,
    /// bf16 tile products on Intel AMX pick a shortlist that provably holds the
    /// top `k` ([`bf16_margin`]); the shortlist is re-scored in f32.
    Bf16Shortlist,
    /// int8 products on AVX-512 VNNI pick the shortlist ([`int8_margin`]);
    /// it is re-scored in f32.
    Int8Shortlist,
}

impl Scoring {
    /// The fastest exact scoring this machine has.
    pub fn best() -> Scoring {
        if amx::available() {
            Scoring::Bf16Shortlist
        } else if int8::available() {
            Scoring::Int8Shortlist
        } else {
            Scoring::F32
        }
    }

    /// The fastest exact scoring this machine has for whole rows (ranks, not
    /// only a top `k`). A rank needs every item whose score is within the
    /// bound of the best correct item's f32 similarity scored in f32, and when
    /// that item ranks low the band lies in the bulk of the scores: at int8's
    /// bound it held so many items that the precomp-scale study's evaluation
    /// took 291 s against 13.5 s in f32 (PERFORMANCE.md). So f32 where there is
    /// no AMX.
    pub fn best_for_ranks() -> Scoring {
        if amx::available() {
            Scoring::Bf16Shortlist
        } else {
            Scoring::F32
        }
    }

    /// Whether this machine can run the scoring (f32 runs everywhere).
    pub fn available(self) -> bool {
        match self {
            Scoring::F32 => true,
            Scoring::Bf16Shortlist => amx::available(),
            Scoring::Int8Shortlist => int8::available(),
        }
    }
}

/// Exact top-`k` search for every query with the machine's best [`Scoring`].
/// Results: (gallery index, f32 similarity), most similar first, ties by
/// gallery order.
pub fn top_k_search(queries: Matrix, gallery: Matrix, k: usize) -> Vec<Vec<(usize, f32)>> {
    top_k_search_with(queries, gallery, k, Scoring::best())
}

/// [`top_k_search`] with the given scoring; an approximate scoring falls back
/// to f32 where this machine lacks it or the vectors are too large for its
/// error bound.
pub fn top_k_search_with(
    queries: Matrix,
    gallery: Matrix,
    k: usize,
    scoring: Scoring,
) -> Vec<Vec<(usize, f32)>> {
    if k == 0 || gallery.rows == 0 {
        return vec![Vec::new(); queries.rows];
    }
    match approximate::operands(scoring, queries, gallery) {
        Some(operands) => shortlist::top_k(operands.as_ref(), queries, gallery, k),
        None => top_k_search_f32(queries, gallery, k),
    }
}

/// [`top_k_search`] in f32: blocks of queries run in parallel, each sweeping the gallery in blocks (a single-threaded matrix product into a
/// buffer the thread reuses) and keeping a running top `k` per query, so memory
/// is `QUERY_BLOCK x GALLERY_BLOCK` similarities per thread whatever the sizes.
fn top_k_search_f32(queries: Matrix, gallery: Matrix, k: usize) -> Vec<Vec<(usize, f32)>> {
    let per_thread = queries.rows.div_ceil(rayon::current_num_threads().max(1));
    let query_block = QUERY_BLOCK.min(per_thread.next_multiple_of(16)).max(1);
    let starts: Vec<usize> = (0..queries.rows).step_by(query_block).collect();
    let blocks: Vec<Vec<Vec<(usize, f32)>>> = starts
        .par_iter()
        .map_init(
            || vec![0f32; query_block * GALLERY_BLOCK],
            |s, &start| {
                let n = query_block.min(queries.rows - start);
                let q = query_rows(queries, start, n);
                let mut tops: Vec<Shortlist> = (0..n).map(|_| Shortlist::new(k, 0.0)).collect();
                for offset in (0..gallery.rows).step_by(GALLERY_BLOCK) {
                    let width = GALLERY_BLOCK.min(gallery.rows - offset);
                    let block = &gallery.data[offset * gallery.dim..(offset + width) * gallery.dim];
                    let g = View::Transposed(block, width, gallery.dim);
                    matmul_on(&mut s[..n * width], q, g, false, Threads::One);
                    for (top, row) in tops.iter_mut().zip(s.chunks_exact(width)) {
                        top.offer(offset, row);
                    }
                }
                tops.into_iter().map(Shortlist::best).collect()
            },
        )
        .collect();
    blocks.into_iter().flatten().collect()
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
        let cpu = top_k_search(qm, gm, 10);
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
        let found = top_k_search(qm, gm, 10);
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

    const SCORINGS: [Scoring; 3] = [Scoring::F32, Scoring::Bf16Shortlist, Scoring::Int8Shortlist];

    /// Brute force: every dot product in f64, sorted (ties by gallery order).
    fn brute_force(q: Matrix, g: Matrix, k: usize) -> Vec<Vec<usize>> {
        (0..q.rows)
            .map(|i| {
                let mut all: Vec<(usize, f64)> = (0..g.rows)
                    .map(|j| {
                        let s = q
                            .row(i)
                            .iter()
                            .zip(g.row(j))
                            .map(|(a, b)| f64::from(*a) * f64::from(*b));
                        (j, s.sum())
                    })
                    .collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                all[..k.min(all.len())].iter().map(|x| x.0).collect()
            })
            .collect()
    }

    fn ids(found: &[Vec<(usize, f32)>]) -> Vec<Vec<usize>> {
        found
            .iter()
            .map(|r| r.iter().map(|x| x.0).collect())
            .collect()
    }

    #[test]
    fn both_scorings_find_the_exact_top_k() {
        if !amx::available() || !int8::available() {
            eprintln!("this machine lacks AMX or VNNI: those scorings fall back to f32");
        }
        // Unnormalised vectors (the bound scales with the norms), sizes that are
        // not multiples of the tile shapes, gallery over several blocks.
        let mut rng = crate::rng::Rng::derive(5, &["bf16 shortlist"]);
        let dim = 50;
        let q: Vec<f32> = (0..77 * dim).map(|_| 3.0 * rng.normal() as f32).collect();
        let g: Vec<f32> = (0..3_001 * dim)
            .map(|_| 0.5 * rng.normal() as f32)
            .collect();
        let (qm, gm) = (Matrix::new(&q, dim), Matrix::new(&g, dim));
        let truth = brute_force(qm, gm, 10);
        for scoring in SCORINGS {
            let found = top_k_search_with(qm, gm, 10, scoring);
            assert_eq!(ids(&found), truth, "{scoring:?}");
            for (i, row) in found.iter().enumerate() {
                for &(j, s) in row {
                    let direct: f32 = qm.row(i).iter().zip(gm.row(j)).map(|(a, b)| a * b).sum();
                    assert!(
                        (s - direct).abs() < 1e-4,
                        "{scoring:?}: {s} against {direct}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_shortlist_keeps_exact_ties_and_near_duplicates() {
        // 2,000 copies of one item (exact ties: the earliest copies win), near
        // duplicates inside the bf16 error bound, and distinct items; values are
        // multiples of 1/8, so every dot product is exact in any order.
        let dim = 40;
        let mut rng = crate::rng::Rng::derive(6, &["near duplicates"]);
        let grid = |x: f64| ((x * 8.0).round() / 8.0) as f32;
        let base: Vec<f32> = (0..dim).map(|_| grid(rng.normal())).collect();
        let mut g = Vec::new();
        for j in 0..5_000 {
            for (v, &b) in base.iter().enumerate() {
                g.push(match j % 5 {
                    0 | 1 => b,
                    2 => b + if v == j % dim { 0.125 } else { 0.0 },
                    _ => grid(rng.normal()),
                });
            }
        }
        let q: Vec<f32> = (0..40 * dim)
            .map(|_| grid(rng.normal()))
            .chain(base.clone())
            .collect();
        let (qm, gm) = (Matrix::new(&q, dim), Matrix::new(&g, dim));
        let truth = brute_force(qm, gm, 25);
        for scoring in SCORINGS {
            assert_eq!(
                ids(&top_k_search_with(qm, gm, 25, scoring)),
                truth,
                "{scoring:?}"
            );
        }
    }

    #[test]
    fn both_scorings_give_the_same_ranks_and_top_k() {
        // Captions as queries with one correct image each, and images with five
        // correct captions; near-duplicate items make many close calls.
        let mut rng = crate::rng::Rng::derive(8, &["rows"]);
        let dim = 48;
        let images: Vec<f32> = (0..700 * dim).map(|_| rng.normal() as f32).collect();
        let mut captions = Vec::new();
        for c in 0..3_500 {
            for v in 0..dim {
                let noise = if c % 7 == 0 { 1e-3 } else { 0.8 };
                captions.push(images[(c / 5) * dim + v] + noise * rng.normal() as f32);
            }
        }
        let (im, cap) = (Matrix::new(&images, dim), Matrix::new(&captions, dim));
        for (queries, gallery, correct) in [
            (
                cap,
                im,
                (|i: usize, j: usize| i / 5 == j) as fn(usize, usize) -> bool,
            ),
            (im, cap, |i: usize, j: usize| j / 5 == i),
        ] {
            let collect = |scoring| {
                let out = std::sync::Mutex::new(vec![(0usize, Vec::new()); queries.rows]);
                for_each_row(queries, gallery, scoring, |i, row| {
                    let rank = row.first_correct_rank(|j| correct(i, j)).unwrap();
                    out.lock().unwrap()[i] = (rank, row.top_k(7));
                });
                out.into_inner().unwrap()
            };
            let f32_rows = collect(Scoring::F32);
            assert_eq!(collect(Scoring::Bf16Shortlist), f32_rows);
            assert_eq!(collect(Scoring::Int8Shortlist), f32_rows);
            // And the f32 rows against the slice functions on direct dot products.
            for (i, (rank, top)) in f32_rows.iter().enumerate().step_by(97) {
                let row: Vec<f32> = (0..gallery.rows)
                    .map(|j| {
                        queries
                            .row(i)
                            .iter()
                            .zip(gallery.row(j))
                            .map(|(a, b)| a * b)
                            .sum()
                    })
                    .collect();
                assert_eq!(first_correct_rank(&row, |j| correct(i, j)), Some(*rank));
                assert_eq!(&top_k(&row, 7), top);
            }
        }
    }

    #[test]
    fn the_bf16_margin_bounds_the_observed_error() {
        if !amx::available() {
            eprintln!("no AMX on this machine: nothing to measure");
            return;
        }
        let mut rng = crate::rng::Rng::derive(7, &["bf16 margin"]);
        let dim = 512;
        let q: Vec<f32> = (0..32 * dim).map(|_| rng.normal() as f32).collect();
        let g: Vec<f32> = (0..1_024 * dim)
            .map(|_| 2.0 * rng.normal() as f32)
            .collect();
        let rows = amx::Bf16Rows::new(&q, 32, dim);
        let columns = amx::PackedColumns::new(&g, 1_024, dim);
        let mut out = vec![0f32; 32 * 1_024];
        amx::scores(&rows, 0, 32, &columns, 0, 1_024, &mut out, 1_024);
        let (qm, gm) = (Matrix::new(&q, dim), Matrix::new(&g, dim));
        let norm = |r: &[f32]| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        check_margin(qm, gm, &out, |i, j| {
            bf16_margin(norm(qm.row(i)), norm(gm.row(j)), dim)
        });
    }

    /// Asserts every score of `out` (queries × items, row-major) is within its
    /// margin of the exact dot product, and that the bound is a worst case, not
    /// a gross overestimate of the errors seen.
    fn check_margin(q: Matrix, g: Matrix, out: &[f32], margin: impl Fn(usize, usize) -> f64) {
        let mut worst_share = 0f64;
        for i in 0..q.rows {
            for j in 0..g.rows {
                let exact: f64 = q
                    .row(i)
                    .iter()
                    .zip(g.row(j))
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let error = (f64::from(out[i * g.rows + j]) - exact).abs();
                let margin = margin(i, j);
                assert!(error <= margin, "error {error} over the margin {margin}");
                worst_share = worst_share.max(error / margin);
            }
        }
        assert!(worst_share > 0.01, "bound {worst_share} of the worst error");
    }

    #[test]
    fn the_int8_margin_bounds_the_observed_error() {
        if !int8::available() {
            eprintln!("no AVX-512 VNNI on this machine: nothing to measure");
            return;
        }
        let mut rng = crate::rng::Rng::derive(10, &["int8 margin"]);
        let dim = 512;
        let q: Vec<f32> = (0..32 * dim).map(|_| rng.normal() as f32).collect();
        // Items of different scales, and one with a single large value (a
        // coarse scale for the rest of its values).
        let mut g: Vec<f32> = (0..1_024 * dim)
            .map(|i| (1 + i / dim % 3) as f32 * rng.normal() as f32)
            .collect();
        g[5 * dim] = 40.0;
        let rows = int8::Int8Rows::new(&q, 32, dim);
        let items = int8::PackedItems::new(&g, 1_024, dim);
        let mut out = vec![0f32; 32 * 1_024];
        int8::scores(&rows, 0, 32, &items, 0, 1_024, &mut out, 1_024);
        let (qm, gm) = (Matrix::new(&q, dim), Matrix::new(&g, dim));
        check_margin(qm, gm, &out, |i, j| {
            int8_margin(rows.errors[i], items.errors[j], dim)
        });
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
        });
        assert_eq!(*seen.lock().unwrap(), 2500);
    }
}
