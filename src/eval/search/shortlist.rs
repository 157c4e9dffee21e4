//! Exact top-`k` search through a shortlist: an approximate scoring (bf16 on
//! AMX, int8 on AVX-512 VNNI; `approximate.rs`) scores every gallery item, a
//! running threshold keeps only the items whose score is within twice the
//! error bound of the `k`-th best, and those are scored again in f32, best
//! approximate score first, until the rest cannot reach the f32 top `k`. The
//! bound makes the shortlist provably hold the f32 top `k`, so the results are
//! those of the f32 search.

use super::approximate::ApproximateScores;
use super::{keep_best, Matrix};
use crate::linalg::functions::dot;
use crate::linalg::vectorized;
use rayon::prelude::*;

/// Queries per parallel block (their rows, at 512 dimensions 256 KiB in bf16
/// or 128 KiB in int8, stay in a core's L2 cache while the gallery streams
/// past).
const QUERY_BLOCK: usize = 256;
/// Gallery items per scoring call (a 1 MiB score buffer for a query block).
const GALLERY_BLOCK: usize = 1_024;

/// The exact top `k` of every query: `operands` score every item, each query
/// keeps a [`Shortlist`] within twice its margin, and the shortlists are
/// re-scored in f32.
pub(super) fn top_k(
    operands: &dyn ApproximateScores,
    queries: Matrix,
    gallery: Matrix,
    k: usize,
) -> Vec<Vec<(usize, f32)>> {
    let padded_items = gallery.rows.next_multiple_of(operands.item_step());
    let starts: Vec<usize> = (0..queries.rows).step_by(QUERY_BLOCK).collect();
    let blocks: Vec<Vec<Vec<(usize, f32)>>> = starts
        .par_iter()
        .map_init(
            || vec![0f32; QUERY_BLOCK * GALLERY_BLOCK],
            |scores, &start| {
                let n = QUERY_BLOCK.min(queries.rows - start);
                let padded_n = n.next_multiple_of(operands.query_step());
                let mut lists: Vec<Shortlist> = (start..start + n)
                    .map(|i| Shortlist::new(k, 2.0 * operands.margin(i)))
                    .collect();
                for offset in (0..padded_items).step_by(GALLERY_BLOCK) {
                    let width = GALLERY_BLOCK.min(padded_items - offset);
                    operands.scores(start, padded_n, offset, width, scores, width);
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
    blocks.into_iter().flatten().collect()
}

/// The items of one query whose approximate score is within `window` (twice
/// the error bound) of the `k`-th best approximate score seen so far.
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
        vectorized(
            #[inline(always)]
            || self.scan(offset, row),
        )
    }

    #[inline(always)]
    fn scan(&mut self, offset: usize, row: &[f32]) {
        const LANES: usize = 16;
        const GROUP: usize = 4 * LANES;
        const GROUPS: usize = 16;
        let mut base = offset;
        for span in row.chunks(GROUPS * GROUP) {
            // Each group's maximum: lane-wise (one vector max per 16 scores),
            // then across the lanes.
            let mut maxima = [f32::NEG_INFINITY; GROUPS];
            let groups = span.chunks_exact(GROUP);
            let full = groups.len();
            for (max, group) in maxima.iter_mut().zip(groups.clone()) {
                let mut lanes = [f32::NEG_INFINITY; LANES];
                for chunk in group.chunks_exact(LANES) {
                    for (m, &x) in lanes.iter_mut().zip(chunk) {
                        *m = if x > *m { x } else { *m };
                    }
                }
                *max = lanes
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            }
            // The maxima are scores of distinct items, so the `k`-th largest
            // is at most the `k`-th best score: a floor before any cut.
            // Only when at least `k` maxima are a window above the floor can
            // their `k`-th raise it (a count, before any selection).
            let above = f64::from(self.floor) + self.window;
            let raising = maxima[..full]
                .iter()
                .filter(|&&m| f64::from(m) > above)
                .count();
            if self.k <= raising {
                let mut top = maxima;
                let (_, kth, _) =
                    top[..full].select_nth_unstable_by(self.k - 1, |a, b| b.total_cmp(a));
                self.raise_floor(*kth);
            }
            // Most groups are skipped whole.
            for (g, group) in groups.enumerate() {
                if maxima[g] >= self.floor {
                    self.push_from(base + g * GROUP, group);
                }
            }
            self.push_from(base + full * GROUP, &span[full * GROUP..]);
            base += span.len();
        }
    }

    /// Pushes the items of `scores` (from gallery index `base`) at or above
    /// the floor: a bit mask of each 16 (one vector compare), then its set
    /// bits. A cut inside may raise the floor; items pushed below it are
    /// dropped at the next cut.
    #[inline(always)]
    fn push_from(&mut self, base: usize, scores: &[f32]) {
        const LANES: usize = 16;
        let mut chunks = scores.chunks_exact(LANES);
        for (c, chunk) in (&mut chunks).enumerate() {
            let floor = self.floor;
            let mut mask = 0u32;
            for (l, &x) in chunk.iter().enumerate() {
                mask |= u32::from(x >= floor) << l;
            }
            while mask != 0 {
                let l = mask.trailing_zeros() as usize;
                self.push(base + c * LANES + l, chunk[l]);
                mask &= mask - 1;
            }
        }
        let base = base + scores.len() - chunks.remainder().len();
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
    /// to the `k`-th best score less the window.
    fn cut(&mut self) {
        if self.items.len() < self.k {
            return;
        }
        // The order of the items does not matter (`best` and `rerank` sort).
        let (_, kth, _) = self
            .items
            .select_nth_unstable_by(self.k - 1, |a, b| b.1.total_cmp(&a.1));
        let kth = kth.1;
        self.raise_floor(kth);
        let kept = self.floor;
        self.items.retain(|x| x.1 >= kept);
    }

    /// Raises the floor to `kth` (at most the `k`-th best score) less the
    /// window, rounded down so the floor never excludes an item the bound keeps.
    fn raise_floor(&mut self, kth: f32) {
        let floor = (f64::from(kth) - self.window) as f32;
        let floor = if f64::from(floor) > f64::from(kth) - self.window {
            floor.next_down()
        } else {
            floor
        };
        self.floor = self.floor.max(floor);
    }

    /// The best `k` by the scores offered (ties by gallery order): with a window
    /// of 0 on exact f32 similarities, the exact top `k`.
    pub fn best(mut self) -> Vec<(usize, f32)> {
        self.cut();
        keep_best(&mut self.items, self.k);
        self.items
    }

    /// The shortlist scored in f32 and cut to the best `k` (ties by gallery
    /// order). The `k` best approximate scores are scored first; the `k`-th
    /// best of their f32 similarities is then a floor for the top `k`, and of
    /// the rest only items whose approximate score plus the error bound (half
    /// the window) reaches that floor are scored: any other has `k` items
    /// certainly ahead of it.
    pub fn rerank(mut self, query: &[f32], gallery: Matrix) -> Vec<(usize, f32)> {
        self.cut();
        let k = self.k.min(self.items.len());
        if k == 0 {
            return Vec::new();
        }
        if k < self.items.len() {
            self.items
                .select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        }
        let (first, rest) = self.items.split_at(k);
        let mut exact: Vec<(usize, f32)> = Vec::with_capacity(2 * k);
        exact_scores(query, gallery, first.iter().map(|x| x.0), &mut exact);
        let floor = exact.iter().fold(f32::INFINITY, |m, x| m.min(x.1));
        let floor = f64::from(floor) - self.window / 2.0;
        let reachable = rest.iter().filter(|x| f64::from(x.1) >= floor);
        exact_scores(query, gallery, reachable.map(|x| x.0), &mut exact);
        keep_best(&mut exact, self.k);
        exact
    }
}

/// Appends the f32 similarity of `query` to each gallery row of `ids`.
fn exact_scores(
    query: &[f32],
    gallery: Matrix,
    ids: impl Iterator<Item = usize>,
    out: &mut Vec<(usize, f32)>,
) {
    vectorized(
        #[inline(always)]
        || out.extend(ids.map(|j| (j, dot(query, gallery.row(j))))),
    )
}
