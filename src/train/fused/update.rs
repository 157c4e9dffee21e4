//! The parameter-sized passes of a step: weight penalties (EWC, MAS), the global
//! gradient norm, and the optimizer update fused with gradient clipping, each one
//! pass over memory, split across the thread pool in fixed chunks so results do
//! not depend on the number of threads.

use super::net::Grads;
use crate::lang::OptimizerSpec;
use crate::train::optim::UpdateRule;
use rayon::prelude::*;

/// Elements per parallel chunk: large enough to amortise scheduling, small
/// enough to share the biggest layer (2M weights) between threads.
const CHUNK: usize = 1 << 15;

/// `coefficient · Σ Ω (θ − θ*)²` over parameter `i`; adds its gradient
/// `2 · coefficient · Ω (θ − θ*)` to `grads`. Returns the (weighted) value.
pub fn penalty(
    theta: &[f32],
    anchor: &[f32],
    omega: &[f32],
    coefficient: f64,
    grad: &mut [f32],
) -> f64 {
    let c = coefficient as f32;
    grad.par_chunks_mut(CHUNK)
        .zip(theta.par_chunks(CHUNK))
        .zip(anchor.par_chunks(CHUNK))
        .zip(omega.par_chunks(CHUNK))
        .map(|(((g, t), a), o)| {
            let mut sum = 0f64;
            for i in 0..g.len() {
                let diff = t[i] - a[i];
                sum += (o[i] * diff * diff) as f64;
                g[i] += 2.0 * c * o[i] * diff;
            }
            sum
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum::<f64>()
        * coefficient
}

/// The global L2 norm of every gradient written this step.
pub fn gradient_norm(grads: &Grads) -> f64 {
    let mut total = 0f64;
    for (g, &touched) in grads.values.iter().zip(&grads.touched) {
        if !touched {
            continue;
        }
        let parts: Vec<f64> = g
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum())
            .collect();
        total += parts.iter().sum::<f64>();
    }
    total.sqrt()
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
        for (i, theta) in values.iter_mut().enumerate() {
            if !grads.touched[i] {
                continue;
            }
            let g = &grads.values[i];
            let first_update = !self.started[i];
            self.started[i] = true;
            match rule {
                UpdateRule::Adamw(c) => {
                    let rule = c.in_f32();
                    theta
                        .par_chunks_mut(CHUNK)
                        .zip(self.first[i].par_chunks_mut(CHUNK))
                        .zip(self.second[i].par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(((th, m), v), g)| {
                            for k in 0..th.len() {
                                rule.apply(&mut th[k], &mut m[k], &mut v[k], g[k] * scale);
                            }
                        });
                }
                UpdateRule::Sgd(c) => {
                    let rule = c.in_f32();
                    theta
                        .par_chunks_mut(CHUNK)
                        .zip(self.first[i].par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|((th, b), g)| {
                            for k in 0..th.len() {
                                rule.apply(&mut th[k], &mut b[k], g[k] * scale, first_update);
                            }
                        });
                }
            }
        }
    }
}
