//! Every query's similarities to the whole gallery, for what needs more than a
//! top `k`: the rank of the first correct item (Recall@K, median and mean rank)
//! and the top `k`'s tasks. With an approximate scoring (bf16 on AMX, int8 on
//! AVX-512 VNNI) the rows are scores each within a proven margin of the f32 dot
//! product; an item is scored again in f32 only when its score is within that
//! margin of the figure it is compared with, so ranks and top `k` are those of
//! the f32 scores.

use super::approximate::{self, ApproximateScores};
use super::shortlist::Shortlist;
use super::{first_correct_rank, matmul_on, query_rows, top_k, Matrix, Scoring, Threads, View};
use crate::linalg::functions::dot;
use rayon::prelude::*;

/// Similarities held per thread at once (32 MiB): a block of queries against
/// the whole gallery, so a large gallery gets fewer queries per block.
const FLOATS_PER_BLOCK: usize = 8 << 20;

/// Gallery items per scoring call (at 512 dimensions, 1 MiB of bf16 tiles or
/// 512 KiB of int8 panels).
const GALLERY_CHUNK: usize = 1_024;

/// Queries per block for a gallery of `items`: a multiple of `step` (the
/// scoring's query step; 32 for f32), between one step and 1,024.
fn block_rows(items: usize, step: usize) -> usize {
    let rows = FLOATS_PER_BLOCK / items.max(1);
    (rows / step * step).clamp(step, 1_024)
}

/// One query's similarities to every gallery item.
pub enum Row<'a> {
    /// f32 dot products (a matrix product).
    Exact(&'a [f32]),
    /// Approximate scores, each within `margin` of the f32 dot product of
    /// `query` and the gallery row.
    Approximate {
        scores: &'a [f32],
        margin: f64,
        query: &'a [f32],
        gallery: Matrix<'a>,
    },
}

impl Row<'_> {
    /// Gallery items in the row.
    pub fn len(&self) -> usize {
        match self {
            Row::Exact(s) => s.len(),
            Row::Approximate { scores, .. } => scores.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 1-based rank of the best-ranked correct item, ties broken by gallery
    /// order; `None` if no item is correct.
    pub fn first_correct_rank(&self, correct: impl Fn(usize) -> bool) -> Option<usize> {
        let (scores, margin, query, gallery) = match *self {
            Row::Exact(s) => return first_correct_rank(s, correct),
            Row::Approximate {
                scores,
                margin,
                query,
                gallery,
            } => (scores, margin, query, gallery),
        };
        let exact = |j: usize| dot(query, gallery.row(j));
        // The best correct item in f32: highest similarity, earliest on ties.
        let mut best: Option<(f32, usize)> = None;
        for j in (0..scores.len()).filter(|&j| correct(j)) {
            let s = exact(j);
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, j));
            }
        }
        let (s_star, j_star) = best?;
        // An item whose approximate score is more than the margin above (below) the
        // best correct similarity is certainly ahead of it (behind it); only
        // the items in between are compared in f32.
        let (above, below) = (f64::from(s_star) + margin, f64::from(s_star) - margin);
        let mut ahead = 0;
        for (j, &b) in scores.iter().enumerate() {
            let b = f64::from(b);
            if b > above {
                ahead += 1;
            } else if b >= below {
                let s = exact(j);
                if s > s_star || (s == s_star && j < j_star) {
                    ahead += 1;
                }
            }
        }
        Some(ahead + 1)
    }

    /// Indices of the `k` most similar items (f32), most similar first, ties
    /// by gallery order.
    pub fn top_k(&self, k: usize) -> Vec<usize> {
        match *self {
            Row::Exact(s) => top_k(s, k),
            Row::Approximate { .. } if k == 0 => Vec::new(),
            Row::Approximate {
                scores,
                margin,
                query,
                gallery,
            } => {
                let mut list = Shortlist::new(k, 2.0 * margin);
                list.offer(0, scores);
                list.rerank(query, gallery)
                    .into_iter()
                    .map(|(j, _)| j)
                    .collect()
            }
        }
    }
}

/// Calls `f(query index, row)` for every query, blocks of queries in parallel
/// (one thread per block's product), with the given scoring (an approximate
/// one falls back to f32 where this machine lacks it or the vectors are too
/// large for its bound).
pub fn for_each_row<F>(queries: Matrix, gallery: Matrix, scoring: Scoring, f: F)
where
    F: Fn(usize, Row) + Sync,
{
    if queries.rows == 0 || gallery.rows == 0 {
        return;
    }
    match approximate::operands(scoring, queries, gallery) {
        Some(operands) => approximate_rows(operands.as_ref(), queries, gallery, &f),
        None => {
            let block = block_rows(gallery.rows, 32);
            let starts: Vec<usize> = (0..queries.rows).step_by(block).collect();
            let gallery_t = View::Transposed(gallery.data, gallery.rows, gallery.dim);
            starts.par_iter().for_each(|&start| {
                let n = block.min(queries.rows - start);
                let mut s = vec![0f32; n * gallery.rows];
                matmul_on(
                    &mut s,
                    query_rows(queries, start, n),
                    gallery_t,
                    false,
                    Threads::One,
                );
                for (i, row) in s.chunks_exact(gallery.rows).enumerate() {
                    f(start + i, Row::Exact(row));
                }
            });
        }
    }
}

/// [`for_each_row`] with approximate rows from `operands`.
fn approximate_rows<F>(operands: &dyn ApproximateScores, queries: Matrix, gallery: Matrix, f: &F)
where
    F: Fn(usize, Row) + Sync,
{
    let block = block_rows(gallery.rows, operands.query_step());
    let starts: Vec<usize> = (0..queries.rows).step_by(block).collect();
    let padded_items = gallery.rows.next_multiple_of(operands.item_step());
    starts.par_iter().for_each(|&start| {
        let n = block.min(queries.rows - start);
        let padded_n = n.next_multiple_of(operands.query_step());
        let mut scores = vec![0f32; padded_n * padded_items];
        // The gallery in chunks, so each chunk stays in cache while every query
        // of the block passes it.
        for offset in (0..padded_items).step_by(GALLERY_CHUNK) {
            let width = GALLERY_CHUNK.min(padded_items - offset);
            operands.scores(
                start,
                padded_n,
                offset,
                width,
                &mut scores[offset..],
                padded_items,
            );
        }
        for (i, row) in scores.chunks_exact(padded_items).take(n).enumerate() {
            let row = Row::Approximate {
                scores: &row[..gallery.rows],
                margin: operands.margin(start + i),
                query: queries.row(start + i),
                gallery,
            };
            f(start + i, row);
        }
    });
}
