//! Approximate scorings that pick a shortlist for exact search: bf16 tile
//! products on Intel AMX and int8 products on AVX-512 VNNI. Each reports, per
//! query, a proven bound on how far any of its scores can be from the f32 dot
//! product the shortlist is re-scored with, so the search stays exact.

use super::{Matrix, Scoring};
use crate::linalg::amx::{self, Bf16Rows, PackedColumns, BF16_UNIT};
use crate::linalg::int8::{self, Int8Rows, PackedItems, RowError};
use rayon::prelude::*;

/// Largest `‖q‖·‖g‖` an approximate scoring accepts: beyond it an f32 sum could
/// overflow.
const LARGEST_NORM_PRODUCT: f64 = 1e30;

/// f32's unit roundoff.
const F32_UNIT: f64 = f32::EPSILON as f64 / 2.0;

/// The most the f32 dot product of two vectors of `dim` values and norms
/// `query_norm`, `item_norm` can differ from the exact one, summed in any
/// order: `γ_dim Σ|q_i g_i|` with `γ_n = nu / (1 − nu)` and Σ|q_i g_i| ≤
/// ‖q‖‖g‖ (Cauchy-Schwarz), plus `(dim + 1)·f32::MIN_POSITIVE` per unit of
/// norm for products and sums that underflow.
fn f32_dot_error(query_norm: f64, item_norm: f64, dim: usize) -> f64 {
    let nu = dim as f64 * F32_UNIT;
    let subnormal =
        (dim as f64 + 1.0) * f64::from(f32::MIN_POSITIVE) * (1.0 + query_norm + item_norm);
    nu / (1.0 - nu) * query_norm * item_norm + subnormal
}

/// The most a bf16 score can differ from the f32 dot product of the same two
/// vectors, for vectors of norms `query_norm` and `item_norm` with `dim`
/// values: each product of two bf16-rounded values is off by at most
/// `(2u + u²)|q_i g_i|` (u = 2⁻⁸), the f32 sum of the tile product adds at
/// most `dim·2⁻²⁴·Σ|q_i g_i|`, Σ|q_i g_i| ≤ ‖q‖‖g‖ (Cauchy-Schwarz), AMX
/// flushes subnormal inputs and sums to zero (at most `(dim + 1)·
/// f32::MIN_POSITIVE` more for values below 1), and the f32 dot product adds
/// its own rounding ([`f32_dot_error`]).
pub fn bf16_margin(query_norm: f64, item_norm: f64, dim: usize) -> f64 {
    let u = BF16_UNIT;
    let tile_sum = dim as f64 * F32_UNIT;
    let flushed =
        (dim as f64 + 1.0) * f64::from(f32::MIN_POSITIVE) * (1.0 + query_norm + item_norm);
    (2.0 * u + u * u + tile_sum) * query_norm * item_norm
        + flushed
        + f32_dot_error(query_norm, item_norm, dim)
}

/// The most an int8 score `ŝ = fl(fl(q̃·g̃) · fl(s_q s_g))` can differ from the
/// f32 dot product of the rows it quantizes, given what quantizing each lost
/// (`items` holds the largest norms and residual over the gallery):
/// - `q̂·ĝ − q·g = q̂·(ĝ − g) + (q̂ − q)·g`, at most `‖q̂‖‖ĝ − g‖ + ‖q̂ − q‖‖g‖`
///   (Cauchy-Schwarz);
/// - the integer sum is exact; its f32 conversion, the scale product and the
///   final product each round once: `(1 + u)³ − 1 ≤ 3.001u` of `|q̂·ĝ| ≤
///   ‖q̂‖‖ĝ‖`, plus `2⁻¹⁵⁰` per unit of `|q̃·g̃| ≤ 127²·dim` where a product
///   is subnormal;
/// - the f32 dot product's own rounding ([`f32_dot_error`]).
pub fn int8_margin(query: RowError, items: RowError, dim: usize) -> f64 {
    let quantization = query.quantized_norm * items.residual + query.residual * items.norm;
    let rounding = 3.001 * F32_UNIT * query.quantized_norm * items.quantized_norm;
    let subnormal = (127.0 * 127.0 * dim as f64 + 1.0) * 2f64.powi(-150);
    // f64 sums of the norms carry relative errors near 1e-16: 1e-9 covers them.
    (quantization + rounding + f32_dot_error(query.norm, items.norm, dim)) * (1.0 + 1e-9)
        + subnormal
}

/// A scoring pass over padded operands, with its per-query error bound.
pub(super) trait ApproximateScores: Sync {
    /// Query rows are padded to a multiple of this (and blocks start on one).
    fn query_step(&self) -> usize;
    /// Gallery items are padded to a multiple of this.
    fn item_step(&self) -> usize;
    /// The bound on |approximate score − f32 dot product| for query `i` and
    /// any item.
    fn margin(&self, i: usize) -> f64;
    /// Scores of queries `r0..r0 + nr` against items `c0..c0 + nc` (multiples
    /// of the steps) into `out`, row `r` at `out[r * out_stride..][..nc]`; one
    /// thread.
    #[allow(clippy::too_many_arguments)]
    fn scores(
        &self,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        out: &mut [f32],
        out_stride: usize,
    );
}

/// The operands of `scoring` where this machine runs it and the vectors are
/// finite and small enough for its bound; `None` otherwise (the caller then
/// scores in f32).
pub(super) fn operands<'a>(
    scoring: Scoring,
    queries: Matrix,
    gallery: Matrix,
) -> Option<Box<dyn ApproximateScores + 'a>> {
    match scoring {
        Scoring::F32 => None,
        Scoring::Bf16Shortlist if amx::available() => {
            Bf16Operands::new(queries, gallery).map(|o| Box::new(o) as Box<dyn ApproximateScores>)
        }
        Scoring::Int8Shortlist if int8::available() && gallery.dim <= int8::LARGEST_DIM => {
            Int8Operands::new(queries, gallery).map(|o| Box::new(o) as Box<dyn ApproximateScores>)
        }
        Scoring::Bf16Shortlist | Scoring::Int8Shortlist => None,
    }
}

fn norm(row: &[f32]) -> f64 {
    row.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Queries and gallery in bf16, with what the error bound needs.
struct Bf16Operands {
    rows: Bf16Rows,
    packed: PackedColumns,
    query_norms: Vec<f64>,
    largest_item: f64,
    dim: usize,
}

impl Bf16Operands {
    fn new(queries: Matrix, gallery: Matrix) -> Option<Bf16Operands> {
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
}

impl ApproximateScores for Bf16Operands {
    fn query_step(&self) -> usize {
        amx::STEP
    }
    fn item_step(&self) -> usize {
        amx::STEP
    }
    fn margin(&self, i: usize) -> f64 {
        bf16_margin(self.query_norms[i], self.largest_item, self.dim)
    }
    fn scores(
        &self,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        amx::scores(&self.rows, r0, nr, &self.packed, c0, nc, out, out_stride);
    }
}

/// Queries and gallery in int8, with the gallery's largest norms and residual
/// for the error bound.
struct Int8Operands {
    rows: Int8Rows,
    packed: PackedItems,
    items: RowError,
    dim: usize,
}

impl Int8Operands {
    fn new(queries: Matrix, gallery: Matrix) -> Option<Int8Operands> {
        let (rows, packed) = rayon::join(
            || Int8Rows::new(queries.data, queries.rows, queries.dim),
            || PackedItems::new(gallery.data, gallery.rows, gallery.dim),
        );
        let largest = |errors: &[RowError]| {
            errors.iter().fold(RowError::default(), |m, e| RowError {
                norm: m.norm.max(e.norm),
                quantized_norm: m.quantized_norm.max(e.quantized_norm),
                residual: m.residual.max(e.residual),
            })
        };
        let (query, items) = (largest(&rows.errors), largest(&packed.errors));
        // A NaN anywhere makes its row's sums NaN, which `max` would skip.
        let finite = |errors: &[RowError]| errors.iter().all(|e| e.norm.is_finite());
        let product = query.norm * items.norm;
        if !finite(&rows.errors) || !finite(&packed.errors) || product > LARGEST_NORM_PRODUCT {
            return None;
        }
        Some(Int8Operands {
            rows,
            packed,
            items,
            dim: queries.dim,
        })
    }
}

impl ApproximateScores for Int8Operands {
    fn query_step(&self) -> usize {
        int8::QUERY_STEP
    }
    fn item_step(&self) -> usize {
        int8::ITEM_STEP
    }
    fn margin(&self, i: usize) -> f64 {
        int8_margin(self.rows.errors[i], self.items, self.dim)
    }
    fn scores(
        &self,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        int8::scores(&self.rows, r0, nr, &self.packed, c0, nc, out, out_stride);
    }
}
