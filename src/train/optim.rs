//! Optimizers (AdamW as in PyTorch, SGD with momentum), learning-rate schedules
//! and gradient clipping by global norm. Written here rather than taken from
//! candle-nn: its SGD has no momentum, and its AdamW hides its moments.

use crate::lang::{LrSchedule, OptimizerSpec};
use candle_core::{backprop::GradStore, Result, Tensor, Var};

/// Per-parameter optimizer state, updated in place.
pub struct Optimizer {
    spec: OptimizerSpec,
    vars: Vec<Var>,
    first: Vec<Option<Tensor>>,
    second: Vec<Option<Tensor>>,
    steps: u64,
}

impl Optimizer {
    pub fn new(spec: &OptimizerSpec, vars: Vec<Var>) -> Self {
        let n = vars.len();
        Optimizer {
            spec: spec.clone(),
            vars,
            first: vec![None; n],
            second: vec![None; n],
            steps: 0,
        }
    }

    /// One update with learning rate `lr`. Variables without a gradient are skipped.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let theta = var.as_detached_tensor();
            match self.spec {
                OptimizerSpec::Adamw {
                    weight_decay,
                    beta1,
                    beta2,
                    eps,
                    ..
                } => {
                    let m = match &self.first[i] {
                        Some(m) => ((m * beta1)? + (g * (1.0 - beta1))?)?,
                        None => (g * (1.0 - beta1))?,
                    };
                    let v = match &self.second[i] {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    };
                    let m_hat = (&m / (1.0 - beta1.powi(t)))?;
                    let v_hat = (&v / (1.0 - beta2.powi(t)))?;
                    // Decoupled weight decay: θ ← θ(1 − lr·wd) − lr·m̂/(√v̂ + ε).
                    let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
                    let next = ((&theta * (1.0 - lr * weight_decay))? - (update * lr)?)?;
                    var.set(&next)?;
                    self.first[i] = Some(m);
                    self.second[i] = Some(v);
                }
                OptimizerSpec::Sgd {
                    momentum,
                    weight_decay,
                    ..
                } => {
                    let g = if weight_decay > 0.0 {
                        (g + (&theta * weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    let velocity = match &self.first[i] {
                        Some(b) if momentum > 0.0 => ((b * momentum)? + &g)?,
                        _ => g,
                    };
                    var.set(&(&theta - (&velocity * lr)?)?)?;
                    self.first[i] = Some(velocity);
                }
            }
        }
        Ok(())
    }
}

/// The global L2 norm of all gradients.
pub fn gradient_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    Ok(total.sqrt())
}

/// The factor that brings a gradient of global norm `norm` to at most `max_norm`.
pub fn clip_factor(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max) if norm > max => max / (norm + 1e-6),
        _ => 1.0,
    }
}

/// Multiplies every gradient by `factor`.
pub fn scale_gradients(grads: &mut GradStore, vars: &[Var], factor: f64) -> Result<()> {
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let scaled = (g * factor)?;
            grads.insert(v.as_tensor(), scaled);
        }
    }
    Ok(())
}

/// The optimizer's configured learning rate (before any schedule).
pub fn base_lr(spec: &OptimizerSpec) -> f64 {
    match spec {
        OptimizerSpec::Adamw { lr, .. } | OptimizerSpec::Sgd { lr, .. } => *lr,
    }
}

/// The learning rate at `step` (0-based) of `total` steps, `steps_per_epoch` a epoch.
pub fn learning_rate(
    schedule: &LrSchedule,
    base: f64,
    step: usize,
    total: usize,
    steps_per_epoch: usize,
) -> f64 {
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Step { every, gamma } => {
            let epoch = step / steps_per_epoch.max(1);
            base * gamma.powi((epoch / (*every as usize).max(1)) as i32)
        }
        LrSchedule::Cosine { warmup } => {
            let warm = (warmup * total as f64).round() as usize;
            if step < warm {
                base * (step + 1) as f64 / warm as f64
            } else {
                let span = (total - warm).max(1) as f64;
                let progress = (step - warm) as f64 / span;
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let c = LrSchedule::Cosine { warmup: 0.1 };
        assert!((learning_rate(&c, 1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&c, 1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&c, 1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!(learning_rate(&c, 1.0, 99, 100, 10) < 0.01);
        let s = LrSchedule::Step {
            every: 2,
            gamma: 0.5,
        };
        assert_eq!(learning_rate(&s, 1.0, 19, 100, 10), 1.0);
        assert_eq!(learning_rate(&s, 1.0, 20, 100, 10), 0.5);
        assert_eq!(learning_rate(&s, 1.0, 45, 100, 10), 0.25);
    }
}
