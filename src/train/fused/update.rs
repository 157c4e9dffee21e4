//! The parameter-sized passes of a step: weight penalties (EWC, MAS), the global
//! gradient norm, and the optimizer update fused with gradient clipping, each one
//! pass over memory, split across the thread pool in fixed chunks so results do
//! not depend on the number of threads.

use super::net::Grads;
use crate::lang::OptimizerSpec;
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
        let scale = grad_scale as f32;
        for (i, theta) in values.iter_mut().enumerate() {
            if !grads.touched[i] {
                continue;
            }
            let g = &grads.values[i];
            let first_step = !self.started[i];
            self.started[i] = true;
            match self.spec {
                OptimizerSpec::Adamw {
                    weight_decay,
                    beta1,
                    beta2,
                    eps,
                    ..
                } => {
                    let t = self.steps as i32;
                    let (b1, b2) = (beta1 as f32, beta2 as f32);
                    let (c1, c2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
                    let correction1 = (1.0 - beta1.powi(t)) as f32;
                    let correction2 = (1.0 - beta2.powi(t)) as f32;
                    let decay = (1.0 - lr * weight_decay) as f32;
                    let (lr, eps) = (lr as f32, eps as f32);
                    theta
                        .par_chunks_mut(CHUNK)
                        .zip(self.first[i].par_chunks_mut(CHUNK))
                        .zip(self.second[i].par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(((th, m), v), g)| {
                            for k in 0..th.len() {
                                let gk = g[k] * scale;
                                m[k] = b1 * m[k] + c1 * gk;
                                v[k] = b2 * v[k] + c2 * gk * gk;
                                let m_hat = m[k] / correction1;
                                let v_hat = v[k] / correction2;
                                // Decoupled weight decay: θ ← θ(1 − lr·wd) − lr·m̂/(√v̂ + ε).
                                th[k] = th[k] * decay - lr * (m_hat / (v_hat.sqrt() + eps));
                            }
                        });
                }
                OptimizerSpec::Sgd {
                    momentum,
                    weight_decay,
                    ..
                } => {
                    let (mu, wd, lr) = (momentum as f32, weight_decay as f32, lr as f32);
                    theta
                        .par_chunks_mut(CHUNK)
                        .zip(self.first[i].par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|((th, b), g)| {
                            for k in 0..th.len() {
                                let gk = g[k] * scale + wd * th[k];
                                b[k] = if mu > 0.0 && !first_step {
                                    mu * b[k] + gk
                                } else {
                                    gk
                                };
                                th[k] -= lr * b[k];
                            }
                        });
                }
            }
        }
    }
}
