//! The arithmetic of the fused CPU step besides the matrix products (those are
//! [`crate::linalg`]'s): activations with their derivatives, and the row-wise L2
//! normalisation forward and backward.
//!
//! Each loop runs inside [`vectorized`], compiled for AVX-512 where the CPU has
//! it (the crate targets baseline x86-64), with the same results at any width.

use crate::lang::Activation;
use crate::linalg::vectorized;
pub use crate::linalg::{matmul, View};

/// Adds `bias` to every row of the row-major `x` (rows x bias.len()).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    vectorized(
        #[inline(always)]
        || {
            for row in x.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        },
    )
}

/// Column sums of the row-major `x` written to (or added to) `out`.
pub fn column_sums(out: &mut [f32], x: &[f32], accumulate: bool) {
    if !accumulate {
        out.fill(0.0);
    }
    vectorized(
        #[inline(always)]
        || {
            for row in x.chunks_exact(out.len()) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
        },
    )
}

const SQRT_2: f64 = std::f64::consts::SQRT_2;
/// 1/sqrt(2π), the standard normal density at 0.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `out = act(z)` and `slope = act'(z)`, both multiplied by the dropout mask
/// `keep_scale` (0 or 1/keep per element) when given.
pub fn activate(
    activation: Activation,
    z: &[f32],
    out: &mut [f32],
    slope: &mut [f32],
    mask: Option<&[f32]>,
) {
    if let (Activation::Relu, None) = (activation, mask) {
        // The common case on its own, so that it vectorises.
        return vectorized(
            #[inline(always)]
            || {
                for ((&x, o), s) in z.iter().zip(out.iter_mut()).zip(slope.iter_mut()) {
                    let positive = x > 0.0;
                    *o = if positive { x } else { 0.0 };
                    *s = if positive { 1.0 } else { 0.0 };
                }
            },
        );
    }
    for i in 0..z.len() {
        let x = z[i];
        let (value, derivative) = match activation {
            Activation::Relu => {
                if x > 0.0 {
                    (x, 1.0)
                } else {
                    (0.0, 0.0)
                }
            }
            Activation::Gelu => {
                let xd = x as f64;
                let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(xd / SQRT_2));
                let pdf = INV_SQRT_2PI * (-0.5 * xd * xd).exp();
                ((xd * cdf) as f32, (cdf + xd * pdf) as f32)
            }
            Activation::Tanh => {
                let t = x.tanh();
                (t, 1.0 - t * t)
            }
        };
        let m = mask.map_or(1.0, |m| m[i]);
        out[i] = value * m;
        slope[i] = derivative * m;
    }
}

/// Norms below this are clamped, as in candle's `l2_normalize` (`model::l2_normalize`).
const MIN_NORM: f32 = 1e-12;

/// Normalises each row of `y` (rows x dim) in place; returns the row norms
/// (after clamping) in `norms`.
pub fn normalize_rows(y: &mut [f32], dim: usize, norms: &mut Vec<f32>) {
    norms.clear();
    vectorized(
        #[inline(always)]
        || {
            for row in y.chunks_exact_mut(dim) {
                let sq: f32 = row.iter().map(|v| v * v).sum();
                let norm = sq.sqrt().max(MIN_NORM);
                for v in row.iter_mut() {
                    *v /= norm;
                }
                norms.push(norm);
            }
        },
    )
}

/// Backward of [`normalize_rows`]: turns the gradient with respect to the
/// normalised rows `e` into the gradient with respect to the raw rows, in place.
/// d/dy (y/‖y‖) applied to g is (g − e⟨g, e⟩)/‖y‖; a clamped norm is a constant.
pub fn normalize_rows_backward(grad: &mut [f32], e: &[f32], norms: &[f32]) {
    let dim = e.len() / norms.len().max(1);
    vectorized(
        #[inline(always)]
        || normalize_rows_backward_in(grad, e, norms, dim),
    )
}

#[inline(always)]
fn normalize_rows_backward_in(grad: &mut [f32], e: &[f32], norms: &[f32], dim: usize) {
    for ((g, e), &norm) in grad
        .chunks_exact_mut(dim)
        .zip(e.chunks_exact(dim))
        .zip(norms)
    {
        let clamped = norm <= MIN_NORM;
        let dot: f32 = if clamped {
            0.0
        } else {
            g.iter().zip(e).map(|(a, b)| a * b).sum()
        };
        for (gv, ev) in g.iter_mut().zip(e) {
            *gv = (*gv - ev * dot) / norm;
        }
    }
}

/// Σ a_i b_i.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
