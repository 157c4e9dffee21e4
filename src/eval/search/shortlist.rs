//! Exact top-`k` search through a bf16 shortlist: AMX tile products score every
//! gallery item in bf16 (about three times the f32 rate of the whole machine on
//! one core), a running threshold keeps only the items whose bf16 score is
//! within twice the error bound of the `k`-th best, and those few are scored
//! again in f32 and ranked. The bound makes the shortlist provably hold the
//! f32 top `k`, so the results are those of the f32 search.

use super::{keep_best, Matrix};
use crate::linalg::amx::{self, Bf16Rows, PackedColumns, BF16_UNIT, STEP};
use crate::linalg::functions::dot;
use rayon::prelude::*;

/// Queries per parallel block (their bf16 rows, 256 KiB at 512 dimensions, stay
/// in a core's L2 cache while the gallery streams past).
const QUERY_BLOCK: usize = 256;
/// Gallery items per scoring call (a 1 MiB score buffer for a query block).
const GALLERY_BLOCK: usize = 1_024;

/// The most a bf16 score can differ from the f32 dot product of the same two
/// vectors, for vectors of norms `query_norm` and `item_norm` with `dim`
/// values: each product of two bf16-rounded values is off by at most
/// `(2u + u²)|q_i g_i|` (u = 2⁻⁸), the f32 sums of the tile product and of the
/// f32 dot product each add at most `dim·2⁻²⁴·Σ|q_i g_i|`, Σ|q_i g_i| ≤ ‖q‖‖g‖
/// (Cauchy-Schwarz), and AMX flushes subnormal inputs and sums to zero (at most
/// `(dim + 1)·f32::MIN_POSITIVE` more for values below 1).
pub fn bf16_margin(query_norm: f64, item_norm: f64, dim: usize) -> f64 {
    let u = BF16_UNIT;
    let sums = 2.0 * dim as f64 * f64::from(f32::EPSILON) / 2.0;
    let subnormal =
        (dim as f64 + 1.0) * f64::from(f32::MIN_POSITIVE) * (1.0 + query_norm + item_norm);
    (2.0 * u + u * u + sums) * query_norm * item_norm + subnormal
}

/// Largest `‖q‖·‖g‖` the bf16 path accepts: beyond it an f32 sum could overflow.
const LARGEST_NORM_PRODUCT: f64 = 1e30;

/// Queries and gallery in bf16, with what the error bound needs.
pub(super) struct Bf16Operands {
    pub rows: Bf16Rows,
    pub packed: PackedColumns,
    query_norms: Vec<f64>,
    largest_item: f64,
    dim: usize,
}

impl Bf16Operands {
    /// `None` when the vectors are not finite or too large for the bound (the
    /// caller then scores in f32).
    pub fn new(queries: Matrix, gallery: Matrix) -> Option<Bf16Operands> {
        let norm = |row: &[f32]| {
            row.iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt()
        };
        let query_norms: Vec<f64> = (0..queries.rows)
            .into_par_iter()
            .map(|i| norm(queries.row(i)))
            .collect();
        let largest_item = (0..gallery.rows)
            .into_par_iter()
            .map(|j| norm(gallery.row(j)))
            .reduce(|| 0.0, f64::max);
        let largest_query = query_norms.iter().copied().fold(0.0, f64::max);
        let product = largest_query * largest_item;
        if !product.is_finite() || product > LARGEST_NORM_PRODUCT {
            return None;
        }
        let (rows, packed) = rayon::join(
            || Bf16Rows::new(queries.data, queries.rows, queries.dim),
            || PackedColumns::new(gallery.data, gallery.rows, gallery.dim),
        );
        Some(Bf16Operands {
            rows,
            packed,
            query_norms,
            largest_item,
            dim: queries.dim,
        })
    }

    /// The bound on |bf16 score − f32 dot product| for query `i` and any item.
    pub fn margin(&self, i: usize) -> f64 {
        bf16_margin(self.query_norms[i], self.largest_item, self.dim)
    }
}

/// The exact top `k` of every query, or `None` when the vectors are not finite
/// or too large for the bound (the caller then searches in f32).
pub(super) fn top_k(queries: Matrix, gallery: Matrix, k: usize) -> Option<Vec<Vec<(usize, f32)>>> {
    let operands = Bf16Operands::new(queries, gallery)?;
    let padded_items = gallery.rows.div_ceil(STEP) * STEP;
    let starts: Vec<usize> = (0..queries.rows).step_by(QUERY_BLOCK).collect();
    let blocks: Vec<Vec<Vec<(usize, f32)>>> = starts
        .par_iter()
        .map_init(
            || vec![0f32; QUERY_BLOCK * GALLERY_BLOCK],
            |scores, &start| {
                let n = QUERY_BLOCK.min(queries.rows - start);
                let padded_n = n.div_ceil(STEP) * STEP;
                let mut lists: Vec<Shortlist> = (start..start + n)
                    .map(|i| Shortlist::new(k, 2.0 * operands.margin(i)))
                    .collect();
                for offset in (0..padded_items).step_by(GALLERY_BLOCK) {
                    let width = GALLERY_BLOCK.min(padded_items - offset);
                    amx::scores(
                        &operands.rows,
                        start,
                        padded_n,
                        &operands.packed,
                        offset,
                        width,
                        scores,
                        width,
                    );
                    // Padding items (past the gallery) are never offered.
                    let real = width.min(gallery.rows - offset);
                    for (list, row) in lists.iter_mut().zip(scores.chunks_exact(width)) {
                        list.offer(offset, &row[..real]);
                    }
                }
                lists
                    .into_iter()
                    .enumerate()
                    .map(|(i, list)| list.rerank(queries.row(start + i), gallery))
                    .collect()
            },
        )
        .collect();
    Some(blocks.into_iter().flatten().collect())
}

/// The items of one query whose bf16 score is within `window` (twice the
/// error bound) of the `k`-th best bf16 score seen so far.
pub(super) struct Shortlist {
    k: usize,
    window: f64,
    items: Vec<(usize, f32)>,
    /// Items collected before the next cut.
    limit: usize,
    floor: f32,
}

impl Shortlist {
    pub fn new(k: usize, window: f64) -> Self {
        let limit = 8 * k + 64;
        Shortlist {
            k,
            window,
            items: Vec::with_capacity(limit),
            limit,
            floor: f32::NEG_INFINITY,
        }
    }

    pub fn offer(&mut self, offset: usize, row: &[f32]) {
        const LANES: usize = 16;
        let mut chunks = row.chunks_exact(LANES);
        let mut base = offset;
        for chunk in &mut chunks {
            // Branch-free maximum (vector code); most chunks are skipped whole.
            let max = chunk
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            if max >= self.floor {
                for (j, &x) in chunk.iter().enumerate() {
                    if x >= self.floor {
                        self.push(base + j, x);
                    }
                }
            }
            base += LANES;
        }
        for (j, &x) in chunks.remainder().iter().enumerate() {
            if x >= self.floor {
                self.push(base + j, x);
            }
        }
    }

    fn push(&mut self, index: usize, score: f32) {
        self.items.push((index, score));
        if self.items.len() >= self.limit {
            self.cut();
            // Many items within the window of each other (near-duplicates):
            // collect more before the next cut rather than cutting every time.
            if self.items.len() * 2 > self.limit {
                self.limit *= 2;
            }
        }
    }

    /// Drops the items that can no longer reach the top `k` and raises the floor
    /// to the `k`-th best score less the window (rounded down, so the floor
    /// never excludes an item the bound keeps).
    fn cut(&mut self) {
        if self.items.len() < self.k {
            return;
        }
        let mut scores: Vec<f32> = self.items.iter().map(|x| x.1).collect();
        let (_, kth, _) = scores.select_nth_unstable_by(self.k - 1, |a, b| b.total_cmp(a));
        let floor = (f64::from(*kth) - self.window) as f32;
        let floor = if f64::from(floor) > f64::from(*kth) - self.window {
            floor.next_down()
        } else {
            floor
        };
        self.floor = self.floor.max(floor);
        let kept = self.floor;
        self.items.retain(|x| x.1 >= kept);
    }

    /// The best `k` by the scores offered (ties by gallery order): with a window
    /// of 0 on exact f32 similarities, the exact top `k`.
    pub fn best(mut self) -> Vec<(usize, f32)> {
        self.cut();
        keep_best(&mut self.items, self.k);
        self.items
    }

    /// The shortlist scored in f32 and cut to the best `k` (ties by gallery order).
    pub fn rerank(mut self, query: &[f32], gallery: Matrix) -> Vec<(usize, f32)> {
        self.cut();
        let mut exact: Vec<(usize, f32)> = self
            .items
            .iter()
            .map(|&(j, _)| (j, dot(query, gallery.row(j))))
            .collect();
        keep_best(&mut exact, self.k);
        exact
    }
}
