//! Element-wise f32 functions written so the compiler can vectorise them inside
//! [`super::vectorized`]: branch-free polynomial forms instead of calls into
//! libm (which run one element at a time). Each is `#[inline(always)]` so it
//! takes on the caller's target features.
//!
//! References: `erf` is the rational minimax form of Eigen's
//! `generic_fast_erf_float` (also XLA's and TVM's f32 erf); `exp` is Cephes'
//! `expf` (range reduction by ln 2 in two parts, degree-5 polynomial). Both are
//! checked against f64 references in this module's tests.

/// erf(x), absolute error below 4e-7 on the whole real line (a few f32 ulps); ±1 beyond |x| = 4,
/// where erf rounds to ±1 in f32.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
    p = x2 * p + -2.10102402082508e-06;
    p = x2 * p + -5.69250639462346e-05;
    p = x2 * p + -7.34990630326855e-04;
    p = x2 * p + -2.95459980854025e-03;
    p = x2 * p + -1.60960333262415e-02;
    let mut q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04;
    q = x2 * q + -1.68282697438203e-03;
    q = x2 * q + -7.37332916720468e-03;
    q = x2 * q + -1.42647390514189e-02;
    x * p / q
}

/// GELU in its exact (erf) form, BERT's `hidden_act: gelu`:
/// x · (1 + erf(x / √2)) / 2.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// e^x, relative error about 2e-7; 0 below −87.3 (where e^x leaves the normal
/// f32 range), saturating at e^88.7.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(-87.3, 88.7);
    // n = round(x / ln 2); r = x − n·ln 2, ln 2 split so n·C1 is exact.
    let n = (clamped * std::f32::consts::LOG2_E).round_ties_even();
    let r = clamped - n * 0.693359375 - n * -2.12194440e-4;
    let mut p = 1.9875691500e-4f32;
    p = p * r + 1.3981999507e-3;
    p = p * r + 8.3334519073e-3;
    p = p * r + 4.1665795894e-2;
    p = p * r + 1.6666665459e-1;
    p = p * r + 5.0000001201e-1;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        y * scale
    }
}

/// Lanes of [`dot`] and [`sum`].
const LANES: usize = 16;

/// Σ a·b with sixteen running sums (vector code), the lanes then added in a
/// fixed tree, so every call gives the same bits whatever the vector width.
/// Also the exact re-scoring of search (`eval::search`).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in a_rest.iter().zip(b_rest).enumerate() {
        lanes[l] += x * y;
    }
    pairwise_total(lanes)
}

/// Σ x in sixteen running sums, as [`dot`].
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            lanes[l] += c[l];
        }
    }
    for (l, v) in rest.iter().enumerate() {
        lanes[l] += v;
    }
    pairwise_total(lanes)
}

/// Lane sums added pairwise, halves folded onto each other: a fixed order, so
/// the same bits on every machine. `N` is a power of two.
#[inline(always)]
pub fn pairwise_total<T: Copy + std::ops::AddAssign, const N: usize>(mut lanes: [T; N]) -> T {
    debug_assert!(N.is_power_of_two());
    let mut width = N;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series (|x| ≤ 3) or its continued fraction, in f64.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
            let a = x.abs();
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
            return (1.0 - erfc).copysign(x);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_4e_7_of_the_series() {
        let mut worst = 0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            let err = (erf(x) as f64 - erf_reference(x as f64)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 4e-7, "worst absolute error {worst:e}");
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
    }

    #[test]
    fn gelu_matches_its_definition() {
        for i in -2_000..=2_000 {
            let x = i as f32 * 5e-3;
            let want = 0.5 * x as f64 * (1.0 + erf_reference(x as f64 / 2f64.sqrt()));
            assert!(
                (gelu(x) as f64 - want).abs() < 2e-7 * (1.0 + x.abs() as f64),
                "x = {x}"
            );
        }
    }

    #[test]
    fn exp_is_within_3e_7_relative() {
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            let err = ((exp(x) as f64 - want) / want).abs();
            assert!(err < 3e-7, "x = {x}: {} against {want}", exp(x));
        }
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn dot_and_sum_take_every_element() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.25).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
        assert!((dot(&a, &b) as f64 - want).abs() < 1e-4);
        let total: f64 = a.iter().map(|&x| x as f64).sum();
        assert!((sum(&a) as f64 - total).abs() < 1e-4);
    }
}
