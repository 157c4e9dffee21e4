//! int8 matrix products with AVX-512 VNNI: the scoring pass of exact search on
//! CPUs without AMX. One `VPDPBUSD` multiplies 64 unsigned bytes by 64 signed
//! bytes and adds each group of four products into one of 16 int32 sums: four
//! times the multiply-adds of an f32 FMA of the same width.
//!
//! Each row (a query or a gallery item) is quantized on its own scale, the
//! largest magnitude mapped to 127, so a score is `s_q · s_g · Σ q̃_d g̃_d`. The
//! integer sum is exact; what a score can differ from the f32 dot product by is
//! bounded from the rounding residuals each row reports ([`RowError`]), in
//! `eval::search`, which re-scores in f32 the few items the bound cannot decide.
//!
//! `VPDPBUSD` takes one unsigned operand: the gallery is stored as `g̃ + 128`
//! (in 0..=255), and each query's `128 · Σ q̃_d` is taken off its sums.

use rayon::prelude::*;
use std::sync::OnceLock;

/// Queries per micro-kernel (and the padding of the query rows).
pub const QUERY_STEP: usize = 8;
/// Gallery items per micro-kernel: two 16-lane vectors of int32 sums (and the
/// padding of the gallery).
pub const ITEM_STEP: usize = 32;
/// Values summed by one lane of `VPDPBUSD`.
const GROUP: usize = 4;
/// The largest quantized magnitude.
const LEVELS: f32 = 127.0;
/// Dimensions above which an int32 sum of `(g̃ + 128) · q̃` could overflow
/// (255 · 127 · 66,313 > 2³¹).
pub const LARGEST_DIM: usize = 65_536;

/// Whether this CPU has AVX-512 VNNI (with the F and BW subsets the kernel
/// uses). Asked once per process.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// What quantizing one row lost, in f64: the bound on a score's error is
/// built from these (`eval::search`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowError {
    /// ‖x‖ of the f32 row.
    pub norm: f64,
    /// ‖x̂‖ of the quantized row `x̂ = s · x̃`.
    pub quantized_norm: f64,
    /// ‖x − x̂‖.
    pub residual: f64,
}

/// One row on its own scale: the int8 values written into `out`, the scale
/// (f32, largest magnitude / 127; 0 for a zero row) and what was lost. A row
/// with a value that is not finite has a NaN norm (callers reject it). Panics
/// if VNNI is not [`available`].
fn quantize(row: &[f32], out: &mut [i8]) -> (f32, RowError) {
    assert!(
        available(),
        "int8 quantizing on a machine without AVX-512 VNNI"
    );
    assert_eq!(row.len(), out.len(), "quantized row of another length");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked the CPU features; the lengths are equal.
    unsafe {
        vnni::quantize(row, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("VNNI is x86-only")
}

fn depth_of(dim: usize) -> usize {
    dim.max(1).next_multiple_of(GROUP)
}

/// Queries in int8, row-major, each row padded with zeros to a multiple of 4
/// values and the rows with zero rows to a multiple of [`QUERY_STEP`].
pub struct Int8Rows {
    data: Vec<i8>,
    scales: Vec<f32>,
    /// `128 · Σ q̃_d` per row: what the unsigned gallery adds to each sum.
    offsets: Vec<i32>,
    depth: usize,
    /// Per real row.
    pub errors: Vec<RowError>,
}

impl Int8Rows {
    pub fn new(data: &[f32], rows: usize, dim: usize) -> Self {
        assert!(dim <= LARGEST_DIM, "int8 rows of {dim} values");
        let depth = depth_of(dim);
        let padded = rows.next_multiple_of(QUERY_STEP);
        let mut values = vec![0i8; padded * depth];
        let mut scales = vec![0f32; padded];
        let mut offsets = vec![0i32; padded];
        let mut errors = vec![RowError::default(); rows];
        values
            .par_chunks_mut(depth)
            .zip(scales.par_iter_mut())
            .zip(offsets.par_iter_mut())
            .zip(errors.par_iter_mut())
            .enumerate()
            .for_each(|(r, (((out, scale), offset), error))| {
                let (s, e) = quantize(&data[r * dim..(r + 1) * dim], &mut out[..dim]);
                *scale = s;
                *error = e;
                *offset = 128 * out.iter().map(|&v| i32::from(v)).sum::<i32>();
            });
        Int8Rows {
            data: values,
            scales,
            offsets,
            depth,
            errors,
        }
    }
}

/// Gallery items as `g̃ + 128`, in panels of [`ITEM_STEP`] items: in a panel,
/// group `d` holds values `4d..4d + 4` of each of its items (128 contiguous
/// bytes, item by item), which is what one `VPDPBUSD` pair reads. Padding items
/// are zero vectors (bytes of 128, scale 0).
pub struct PackedItems {
    data: Vec<u8>,
    scales: Vec<f32>,
    depth: usize,
    /// Per real item.
    pub errors: Vec<RowError>,
}

impl PackedItems {
    pub fn new(data: &[f32], items: usize, dim: usize) -> Self {
        assert!(dim <= LARGEST_DIM, "int8 items of {dim} values");
        let depth = depth_of(dim);
        let padded = items.next_multiple_of(ITEM_STEP);
        let mut packed = vec![128u8; padded * depth];
        let mut scales = vec![0f32; padded];
        let mut errors = vec![RowError::default(); items];
        packed
            .par_chunks_mut(ITEM_STEP * depth)
            .zip(scales.par_chunks_mut(ITEM_STEP))
            .zip(errors.par_chunks_mut(ITEM_STEP))
            .enumerate()
            .for_each(|(p, ((panel, scales), errors))| {
                let mut row = vec![0i8; depth];
                for (t, error) in errors.iter_mut().enumerate() {
                    let item = p * ITEM_STEP + t;
                    let (s, e) = quantize(&data[item * dim..(item + 1) * dim], &mut row[..dim]);
                    scales[t] = s;
                    *error = e;
                    // `v + 128` as a byte is `v`'s two's-complement byte with
                    // its top bit flipped: four values at a time.
                    for (d, group) in row.chunks_exact(GROUP).enumerate() {
                        let at = d * ITEM_STEP * GROUP + t * GROUP;
                        let bytes: [i8; GROUP] = group.try_into().expect("a group of four");
                        let word = u32::from_ne_bytes(bytes.map(|v| v as u8));
                        panel[at..at + GROUP].copy_from_slice(&(word ^ 0x8080_8080).to_ne_bytes());
                    }
                }
            });
        PackedItems {
            data: packed,
            scales,
            depth,
            errors,
        }
    }
}

/// `out = s_q s_g (q̃ · g̃)` for queries `r0..r0 + nr` against items `c0..c0 +
/// nc`, in f32: row `r` of the result at `out[r * out_stride..][..nc]`. `r0`
/// and `nr` are multiples of [`QUERY_STEP`], `c0` and `nc` of [`ITEM_STEP`],
/// inside the padded matrices. The integer sum is exact; the score is its f32
/// conversion (exact while `|q̃ · g̃| < 2²⁴`) times `fl(s_q · s_g)`, rounded.
/// Panics if VNNI is not [`available`].
#[allow(clippy::too_many_arguments)]
pub fn scores(
    rows: &Int8Rows,
    r0: usize,
    nr: usize,
    items: &PackedItems,
    c0: usize,
    nc: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    assert!(
        available(),
        "VNNI scoring on a machine without AVX-512 VNNI"
    );
    assert_eq!(rows.depth, items.depth, "int8 operands of different depths");
    assert!(
        r0.is_multiple_of(QUERY_STEP) && nr.is_multiple_of(QUERY_STEP),
        "query-misaligned scores"
    );
    assert!(
        c0.is_multiple_of(ITEM_STEP) && nc.is_multiple_of(ITEM_STEP),
        "item-misaligned scores"
    );
    assert!(r0 + nr <= rows.scales.len(), "rows past the padded matrix");
    assert!(
        c0 + nc <= items.scales.len(),
        "items past the padded matrix"
    );
    assert!(nc <= out_stride, "score rows overlap");
    assert!(
        nr == 0 || out.len() >= (nr - 1) * out_stride + nc,
        "score buffer too small"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked the CPU features; the assertions above keep
    // every read inside the padded operands and every write inside `out`.
    unsafe {
        vnni::scores(rows, r0, nr, items, c0, nc, out, out_stride)
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{Int8Rows, PackedItems, RowError, GROUP, ITEM_STEP, LEVELS, QUERY_STEP};
    use std::arch::x86_64::*;

    /// Vectors of 16 sums per item panel.
    const VECTORS: usize = ITEM_STEP / 16;

    /// [`super::quantize`]: the largest magnitude and a finiteness check, then
    /// the rounded levels (nearest, ties to even; any rounding is sound, as
    /// the residual is that of the values kept) with their f64 sums.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize(row: &[f32], out: &mut [i8]) -> (f32, RowError) {
        let chunks = row.len().div_ceil(16);
        // Lanes past the row read as zeros and are not written.
        let lanes = |c: usize| -> __mmask16 {
            let n = (row.len() - c * 16).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let load = |c: usize| _mm512_maskz_loadu_ps(lanes(c), row.as_ptr().add(c * 16));
        let mut largest = _mm512_setzero_ps();
        let mut finite = true;
        for c in 0..chunks {
            let magnitude = _mm512_abs_ps(load(c));
            largest = _mm512_max_ps(largest, magnitude);
            // Ordered compare: false for NaN, and infinity is above f32::MAX.
            let ok = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(magnitude, _mm512_set1_ps(f32::MAX));
            finite &= ok == 0xFFFF;
        }
        if !finite {
            out.fill(0);
            let unbounded = RowError {
                norm: f64::NAN,
                ..RowError::default()
            };
            return (0.0, unbounded);
        }
        let largest = _mm512_reduce_max_ps(largest);
        if largest == 0.0 {
            out.fill(0);
            return (0.0, RowError::default());
        }
        let scale = largest / LEVELS;
        let inverse = _mm512_set1_ps(LEVELS / largest);
        let scale64 = _mm512_set1_pd(f64::from(scale));
        let (bottom, top) = (_mm512_set1_ps(-LEVELS), _mm512_set1_ps(LEVELS));
        let (mut norm, mut kept_norm, mut residual) = (
            _mm512_setzero_pd(),
            _mm512_setzero_pd(),
            _mm512_setzero_pd(),
        );
        for c in 0..chunks {
            let x = load(c);
            let level = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(x, inverse),
            );
            let level = _mm512_min_ps(_mm512_max_ps(level, bottom), top);
            _mm512_mask_cvtepi32_storeu_epi8(
                out.as_mut_ptr().add(c * 16).cast(),
                lanes(c),
                _mm512_cvtps_epi32(level),
            );
            let (x_low, x_high) = halves(x);
            let (level_low, level_high) = halves(level);
            for (x, level) in [(x_low, level_low), (x_high, level_high)] {
                let kept = _mm512_mul_pd(scale64, level);
                let lost = _mm512_sub_pd(x, kept);
                norm = _mm512_fmadd_pd(x, x, norm);
                kept_norm = _mm512_fmadd_pd(kept, kept, kept_norm);
                residual = _mm512_fmadd_pd(lost, lost, residual);
            }
        }
        let total = |sums: __m512d| _mm512_reduce_add_pd(sums).sqrt();
        let error = RowError {
            norm: total(norm),
            quantized_norm: total(kept_norm),
            residual: total(residual),
        };
        (scale, error)
    }

    /// The 16 lanes of `x` as two vectors of 8 f64 (exact).
    #[target_feature(enable = "avx512f")]
    unsafe fn halves(x: __m512) -> (__m512d, __m512d) {
        let low = _mm512_castps512_ps256(x);
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
        (_mm512_cvtps_pd(low), _mm512_cvtps_pd(high))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scores(
        rows: &Int8Rows,
        r0: usize,
        nr: usize,
        items: &PackedItems,
        c0: usize,
        nc: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let depth = rows.depth;
        let groups = depth / GROUP;
        let panel_bytes = ITEM_STEP * depth;
        // Each panel (16 KiB at 512 dimensions) is sized to stay in L1 while the block's
        // queries pass it.
        for c in (0..nc).step_by(ITEM_STEP) {
            let panel = items.data.as_ptr().add((c0 + c) / ITEM_STEP * panel_bytes);
            let item_scales = items.scales.as_ptr().add(c0 + c);
            for r in (0..nr).step_by(QUERY_STEP) {
                let queries = rows.data.as_ptr().add((r0 + r) * depth);
                let mut sums = [[_mm512_setzero_si512(); VECTORS]; QUERY_STEP];
                for g in 0..groups {
                    let values: [__m512i; VECTORS] = std::array::from_fn(|v| {
                        _mm512_loadu_si512(panel.add((g * VECTORS + v) * 64).cast())
                    });
                    for (q, sums) in sums.iter_mut().enumerate() {
                        let four = queries
                            .add(q * depth + g * GROUP)
                            .cast::<i32>()
                            .read_unaligned();
                        let broadcast = _mm512_set1_epi32(four);
                        for (sum, &value) in sums.iter_mut().zip(&values) {
                            *sum = _mm512_dpbusd_epi32(*sum, value, broadcast);
                        }
                    }
                }
                for (q, sums) in sums.iter().enumerate() {
                    let row = r0 + r + q;
                    let offset = _mm512_set1_epi32(*rows.offsets.get_unchecked(row));
                    let query_scale = _mm512_set1_ps(*rows.scales.get_unchecked(row));
                    let dst = out.as_mut_ptr().add((r + q) * out_stride + c);
                    for (v, &sum) in sums.iter().enumerate() {
                        let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offset));
                        let scale =
                            _mm512_mul_ps(query_scale, _mm512_loadu_ps(item_scales.add(v * 16)));
                        _mm512_storeu_ps(dst.add(v * 16), _mm512_mul_ps(exact, scale));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_the_scaled_integer_products() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this machine: nothing to check");
            return;
        }
        // Uniform values from a xorshift (linalg sits below the crate's `rng`).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        // A dimension that is not a multiple of 4, rows and items off the steps.
        let (dim, nq, ng) = (37, 19, 70);
        let q: Vec<f32> = (0..nq * dim).map(|_| uniform()).collect();
        let g: Vec<f32> = (0..ng * dim).map(|_| 3.0 * uniform()).collect();
        let rows = Int8Rows::new(&q, nq, dim);
        let items = PackedItems::new(&g, ng, dim);
        let (pr, pc) = (
            nq.next_multiple_of(QUERY_STEP),
            ng.next_multiple_of(ITEM_STEP),
        );
        let mut out = vec![f32::NAN; pr * pc];
        scores(&rows, 0, pr, &items, 0, pc, &mut out, pc);
        let mut qi = vec![0i8; dim];
        let mut gi = vec![0i8; dim];
        for i in 0..nq {
            let (sq, eq) = quantize(&q[i * dim..(i + 1) * dim], &mut qi);
            assert_eq!(eq, rows.errors[i]);
            for j in 0..ng {
                let (sg, _) = quantize(&g[j * dim..(j + 1) * dim], &mut gi);
                let exact: i32 = qi
                    .iter()
                    .zip(&gi)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                let expected = exact as f32 * (sq * sg);
                assert_eq!(out[i * pc + j], expected, "query {i}, item {j}");
            }
        }
        // Padding items score zero.
        assert!(out[pc - 1] == 0.0 && out[(pr - 1) * pc] == 0.0);
    }

    #[test]
    fn quantizing_keeps_the_residual_it_reports() {
        let row = [0.5f32, -0.25, 0.1, 0.0, -0.5];
        let mut out = [0i8; 5];
        let (scale, error) = quantize(&row, &mut out);
        assert_eq!(out, [127, -64, 25, 0, -127]);
        let kept: Vec<f64> = out
            .iter()
            .map(|&v| f64::from(scale) * f64::from(v))
            .collect();
        let residual: f64 = row
            .iter()
            .zip(&kept)
            .map(|(&x, k)| (f64::from(x) - k).powi(2))
            .sum::<f64>()
            .sqrt();
        assert_eq!(error.residual, residual);
        assert!(error.residual > 0.0 && error.residual < 0.01);
        assert_eq!(
            quantize(&[0.0; 3], &mut [1i8; 3]),
            (0.0, RowError::default())
        );
    }
}
