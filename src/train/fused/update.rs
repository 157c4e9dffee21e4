//! The parameter-sized passes of a step: weight penalties (EWC, MAS), the global
//! gradient norm, and the optimizer update fused with gradient clipping, each one
//! pass over memory, split across the thread pool in fixed chunks so results do
//! not depend on the number of threads.

use super::net::Grads;
use crate::lang::OptimizerSpec;
use crate::linalg::functions::pairwise_total;
use crate::linalg::vectorized;
use crate::train::optim::UpdateRule;
use rayon::prelude::*;

/// Elements per parallel chunk: large enough to amortise scheduling, small
/// enough to share the biggest layer (2M weights) between threads.
const CHUNK: usize = 1 << 15;

/// Sixteen running f64 sums, element `i` going to sum `i % 16`, added up in a
/// fixed order: the same result on any machine and thread count, and sixteen
/// independent additions the compiler vectorises as two AVX-512 registers (one
/// running sum would wait on the previous addition's latency for every
/// element; eight, one register, still waited on it).
#[derive(Default)]
struct LaneSums([f64; LANES]);

const LANES: usize = 16;

impl LaneSums {
    #[inline(always)]
    fn total(&self) -> f64 {
        pairwise_total(self.0)
    }
}

/// `coefficient · Σ Ω (θ − θ*)²` over the parameters with an importance
/// (`omega[i]`); adds its gradient `2 · coefficient · Ω (θ − θ*)` to `grads`.
/// Returns the (weighted) value. One parallel loop over every parameter's
/// chunks: a loop per parameter woke the thread pool eight times a pass. Each
/// chunk's sum of squares after the update is kept in `grads.chunk_squares`, so
/// [`gradient_norm`] does not read these gradients again (the same sums, so the
/// same bits, as it would compute).
pub fn penalty(
    theta: &[Vec<f32>],
    anchor: &[Vec<f32>],
    omega: &[Option<Vec<f32>>],
    coefficient: f64,
    grads: &mut Grads,
) -> f64 {
    let c = coefficient as f32;
    for (i, o) in omega.iter().enumerate() {
        if o.is_some() {
            grads.buffer(i); // zeroed if no loss term wrote it
        }
    }
    let mut work = Vec::new();
    let mut chunk_counts = Vec::new();
    for (i, g) in grads.values.iter_mut().enumerate() {
        let Some(o) = &omega[i] else { continue };
        chunk_counts.push((i, g.len().div_ceil(CHUNK)));
        work.extend(
            g.chunks_mut(CHUNK)
                .zip(theta[i].chunks(CHUNK))
                .zip(anchor[i].chunks(CHUNK))
                .zip(o.chunks(CHUNK)),
        );
    }
    let parts: Vec<(f64, f64)> = work
        .into_par_iter()
        .map(|(((g, t), a), o)| {
            vectorized(
                #[inline(always)]
                || penalty_chunk(g, t, a, o, c),
            )
        })
        .collect();
    let mut squares = parts.iter().map(|&(_, square)| square);
    for (i, chunks) in chunk_counts {
        grads.chunk_squares[i] = Some(squares.by_ref().take(chunks).collect());
    }
    parts.iter().map(|&(value, _)| value).sum::<f64>() * coefficient
}

/// One chunk of [`penalty`]: adds `2c·Ω(θ − θ*)` to `g`; returns `Σ Ω(θ − θ*)²`
/// and the new `Σ g²`, the latter lane for lane as [`sum_of_squares`] sums it.
/// Always inlined, so that it is compiled inside [`vectorized`]'s AVX-512
/// function (a closure body the compiler kept apart ran in SSE2).
#[inline(always)]
fn penalty_chunk(g: &mut [f32], t: &[f32], a: &[f32], o: &[f32], c: f32) -> (f64, f64) {
    let mut sums = LaneSums::default();
    let mut squares = LaneSums::default();
    let mut g_lanes = g.chunks_exact_mut(LANES);
    let (t_lanes, a_lanes, o_lanes) = (
        t.chunks_exact(LANES),
        a.chunks_exact(LANES),
        o.chunks_exact(LANES),
    );
    let (t_rest, a_rest, o_rest) = (
        t_lanes.remainder(),
        a_lanes.remainder(),
        o_lanes.remainder(),
    );
    let mut one = |sums: &mut LaneSums, lane: usize, g: &mut f32, t: f32, a: f32, o: f32| {
        let diff = t - a;
        sums.0[lane] += (o * diff * diff) as f64;
        *g += 2.0 * c * o * diff;
        squares.0[lane] += (*g as f64) * (*g as f64);
    };
    for (((g, t), a), o) in (&mut g_lanes).zip(t_lanes).zip(a_lanes).zip(o_lanes) {
        for l in 0..LANES {
            one(&mut sums, l, &mut g[l], t[l], a[l], o[l]);
        }
    }
    for (l, g) in g_lanes.into_remainder().iter_mut().enumerate() {
        one(&mut sums, l, g, t_rest[l], a_rest[l], o_rest[l]);
    }
    (sums.total(), squares.total())
}

/// `Σ x²` of one chunk in [`LaneSums`] (always inlined: see [`penalty_chunk`]).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // the measured, vectorised form
fn sum_of_squares(c: &[f32]) -> f64 {
    let mut sums = LaneSums::default();
    let lanes = c.chunks_exact(LANES);
    let rest = lanes.remainder();
    // Indexed, not zipped: the zipped form was not vectorised.
    for v in lanes {
        for l in 0..LANES {
            sums.0[l] += (v[l] as f64) * (v[l] as f64);
        }
    }
    for (sum, &x) in sums.0.iter_mut().zip(rest) {
        *sum += (x as f64) * (x as f64);
    }
    sums.total()
}

/// A chunk's share of the gradient norm: already summed by a penalty, or to sum.
enum Squares<'a> {
    Known(f64),
    Chunk(&'a [f32]),
}

/// The global L2 norm of every gradient written this step.
pub fn gradient_norm(grads: &Grads) -> f64 {
    let mut parts: Vec<Squares> = Vec::new();
    for ((g, &touched), known) in grads
        .values
        .iter()
        .zip(&grads.touched)
        .zip(&grads.chunk_squares)
    {
        match (touched, known) {
            (false, _) => {}
            (true, Some(known)) => parts.extend(known.iter().map(|&s| Squares::Known(s))),
            (true, None) => parts.extend(g.chunks(CHUNK).map(Squares::Chunk)),
        }
    }
    let parts: Vec<f64> = parts
        .into_par_iter()
        .map(|part| match part {
            Squares::Known(s) => s,
            Squares::Chunk(c) => vectorized(
                #[inline(always)]
                || sum_of_squares(c),
            ),
        })
        .collect();
    parts.iter().sum::<f64>().sqrt()
}

/// Optimizer state: first and second moments (SGD: the velocity in `first`).
/// The update rule is `optim`'s, applied in place.
pub struct OptimizerState {
    spec: OptimizerSpec,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
    /// Whether parameter i has had an update (SGD's velocity starts at g).
    started: Vec<bool>,
    steps: u64,
}

impl OptimizerState {
    pub fn new(spec: &OptimizerSpec, sizes: impl Iterator<Item = usize>) -> Self {
        let sizes: Vec<usize> = sizes.collect();
        let second = match spec {
            OptimizerSpec::Adamw { .. } => sizes.iter().map(|&n| vec![0.0; n]).collect(),
            OptimizerSpec::Sgd { .. } => Vec::new(),
        };
        OptimizerState {
            spec: spec.clone(),
            first: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            second,
            started: vec![false; sizes.len()],
            steps: 0,
        }
    }

    /// One update at learning rate `lr` with every gradient multiplied by
    /// `grad_scale` (clipping) on the fly. Parameters without a gradient this
    /// step are left alone, as candle's optimizers do.
    pub fn step(&mut self, values: &mut [Vec<f32>], grads: &Grads, lr: f64, grad_scale: f64) {
        self.steps += 1;
        let rule = UpdateRule::at(&self.spec, self.steps, lr);
        let scale = grad_scale as f32;
        // Every touched parameter's chunks in one parallel loop (see `penalty`).
        let touched = |i: &usize| grads.touched[*i];
        match rule {
            UpdateRule::Adamw(c) => {
                let rule = c.in_f32();
                let mut work = Vec::new();
                for (i, ((theta, m), v)) in values
                    .iter_mut()
                    .zip(&mut self.first)
                    .zip(&mut self.second)
                    .enumerate()
                    .filter(|(i, _)| touched(i))
                {
                    work.extend(
                        theta
                            .chunks_mut(CHUNK)
                            .zip(m.chunks_mut(CHUNK))
                            .zip(v.chunks_mut(CHUNK))
                            .zip(grads.values[i].chunks(CHUNK)),
                    );
                }
                work.into_par_iter().for_each(|(((th, m), v), g)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for (((th, m), v), g) in th.iter_mut().zip(m).zip(v).zip(g) {
                                rule.apply(th, m, v, g * scale);
                            }
                        },
                    )
                });
            }
            UpdateRule::Sgd(c) => {
                let rule = c.in_f32();
                let mut work = Vec::new();
                for (i, (theta, b)) in values
                    .iter_mut()
                    .zip(&mut self.first)
                    .enumerate()
                    .filter(|(i, _)| touched(i))
                {
                    let first_update = !self.started[i];
                    work.extend(
                        theta
                            .chunks_mut(CHUNK)
                            .zip(b.chunks_mut(CHUNK))
                            .zip(grads.values[i].chunks(CHUNK))
                            .map(|((th, b), g)| (th, b, g, first_update)),
                    );
                }
                work.into_par_iter().for_each(|(th, b, g, first_update)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for ((th, b), g) in th.iter_mut().zip(b).zip(g) {
                                rule.apply(th, b, g * scale, first_update);
                            }
                        },
                    )
                });
            }
        }
        for (i, started) in self.started.iter_mut().enumerate() {
            *started |= grads.touched[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The squares a penalty keeps give the gradient norm the same bits as
    /// reading the gradients again, on sizes with partial chunks and lanes.
    #[test]
    fn a_penalty_s_kept_squares_give_the_same_norm_bits() {
        let sizes = [2 * CHUNK + 37, 100, CHUNK, 7];
        let mut rng = Rng::derive(9, &["norm"]);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        let theta: Vec<Vec<f32>> = sizes.iter().map(|&n| draw(n)).collect();
        let anchor: Vec<Vec<f32>> = sizes.iter().map(|&n| draw(n)).collect();
        // The third parameter is not penalised; the fourth has no loss gradient.
        let omega: Vec<Option<Vec<f32>>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (i != 2).then(|| draw(n).iter().map(|x| x.abs()).collect()))
            .collect();
        let mut grads = Grads {
            values: sizes.iter().map(|&n| draw(n)).collect(),
            touched: vec![true, true, true, false],
            chunk_squares: vec![None; sizes.len()],
        };
        let value = penalty(&theta, &anchor, &omega, 0.7, &mut grads);
        assert!(value > 0.0);
        assert!(grads.chunk_squares[0]
            .as_ref()
            .is_some_and(|s| s.len() == 3));
        assert!(grads.chunk_squares[2].is_none() && grads.touched[3]);
        let kept = gradient_norm(&grads);
        grads.chunk_squares.fill(None);
        let read = gradient_norm(&grads);
        assert_eq!(kept.to_bits(), read.to_bits());
        let reference: f64 = grads
            .values
            .iter()
            .flatten()
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt();
        assert!((kept - reference).abs() <= 1e-12 * reference);
        // Writing a gradient through `buffer` forgets its kept squares.
        grads.chunk_squares[0] = Some(vec![0.0; 3]);
        grads.buffer(0)[0] += 1.0;
        assert!(grads.chunk_squares[0].is_none());
    }
}
