//! Optimizers (AdamW as in PyTorch, SGD with momentum), learning-rate schedules
//! and gradient clipping by global norm. The update rule is defined once here
//! ([`UpdateRule`]) for both engines. Written here rather than taken from
//! candle-nn: its SGD has no momentum, and its AdamW hides its moments.

use crate::lang::{LrSchedule, OptimizerSpec};
use candle_core::{backprop::GradStore, Result, Tensor, Var};

/// The coefficients of one AdamW update, computed once per step in
/// [`UpdateRule::at`] for both engines: the graph step applies them with tensor
/// ops, the fused step element by element in f32 ([`AdamwStep::apply`]).
///
/// AdamW as in PyTorch: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, then
/// `θ ← θ·decay − lr · (m/c₁) / (√(v/c₂) + ε)` with the bias corrections
/// `cᵢ = 1 − βᵢᵗ` and the decoupled weight decay `decay = 1 − lr·wd`. The
/// corrections are held as reciprocals (computed in f64), so the update
/// multiplies: two divisions less per element in the fused step's
/// parameter-sized pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamwStep<F = f64> {
    pub beta1: F,
    pub beta2: F,
    pub one_minus_beta1: F,
    pub one_minus_beta2: F,
    pub inverse_bias_correction1: F,
    pub inverse_bias_correction2: F,
    pub decay: F,
    pub lr: F,
    pub eps: F,
}

/// The coefficients of one SGD update, as in PyTorch: `g ← g + wd·θ`, the
/// velocity `b ← μb + g` (`b ← g` at a parameter's first update, or without
/// momentum), then `θ ← θ − lr·b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep<F = f64> {
    pub momentum: F,
    pub weight_decay: F,
    pub lr: F,
}

/// The update rule of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpdateRule {
    Adamw(AdamwStep),
    Sgd(SgdStep),
}

impl UpdateRule {
    /// The rule of update number `step` (1-based) at learning rate `lr`.
    pub fn at(spec: &OptimizerSpec, step: u64, lr: f64) -> UpdateRule {
        match *spec {
            OptimizerSpec::Adamw {
                weight_decay,
                beta1,
                beta2,
                eps,
                ..
            } => {
                let t = step as i32;
                UpdateRule::Adamw(AdamwStep {
                    beta1,
                    beta2,
                    one_minus_beta1: 1.0 - beta1,
                    one_minus_beta2: 1.0 - beta2,
                    inverse_bias_correction1: 1.0 / (1.0 - beta1.powi(t)),
                    inverse_bias_correction2: 1.0 / (1.0 - beta2.powi(t)),
                    decay: 1.0 - lr * weight_decay,
                    lr,
                    eps,
                })
            }
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                ..
            } => UpdateRule::Sgd(SgdStep {
                momentum,
                weight_decay,
                lr,
            }),
        }
    }
}

impl AdamwStep {
    /// The coefficients rounded to f32, for in-place loops over parameter buffers.
    pub fn in_f32(&self) -> AdamwStep<f32> {
        let f = |x: f64| x as f32;
        AdamwStep {
            beta1: f(self.beta1),
            beta2: f(self.beta2),
            one_minus_beta1: f(self.one_minus_beta1),
            one_minus_beta2: f(self.one_minus_beta2),
            inverse_bias_correction1: f(self.inverse_bias_correction1),
            inverse_bias_correction2: f(self.inverse_bias_correction2),
            decay: f(self.decay),
            lr: f(self.lr),
            eps: f(self.eps),
        }
    }
}

impl AdamwStep<f32> {
    /// Updates one parameter `theta` and its moments `m`, `v` with gradient `g`.
    #[inline(always)]
    pub fn apply(&self, theta: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        *m = self.beta1 * *m + self.one_minus_beta1 * g;
        *v = self.beta2 * *v + self.one_minus_beta2 * g * g;
        let m_hat = *m * self.inverse_bias_correction1;
        let v_hat = *v * self.inverse_bias_correction2;
        *theta = *theta * self.decay - self.lr * (m_hat / (v_hat.sqrt() + self.eps));
    }
}

impl SgdStep {
    /// The coefficients rounded to f32, for in-place loops over parameter buffers.
    pub fn in_f32(&self) -> SgdStep<f32> {
        SgdStep {
            momentum: self.momentum as f32,
            weight_decay: self.weight_decay as f32,
            lr: self.lr as f32,
        }
    }
}

impl SgdStep<f32> {
    /// Updates one parameter `theta` and its `velocity` with gradient `g`;
    /// `first_update`: the parameter has no velocity yet.
    #[inline(always)]
    pub fn apply(&self, theta: &mut f32, velocity: &mut f32, g: f32, first_update: bool) {
        let g = g + self.weight_decay * *theta;
        *velocity = if self.momentum > 0.0 && !first_update {
            self.momentum * *velocity + g
        } else {
            g
        };
        *theta -= self.lr * *velocity;
    }
}

/// CLIP and Mod-X clamp the learnable logit scale (the log of the inverse
/// temperature) to `[0, ln 100]`; both engines apply this after every update.
pub fn clamp_logit_scale(value: f32) -> f32 {
    value.clamp(0.0, 100f32.ln())
}

/// The graph step's optimizer: [`UpdateRule`] as tensor ops on candle
/// variables, with per-parameter state (SGD: the velocity in `first`).
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
        let rule = UpdateRule::at(&self.spec, self.steps, lr);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let theta = var.as_detached_tensor();
            match rule {
                UpdateRule::Adamw(c) => {
                    let m = match &self.first[i] {
                        Some(m) => ((m * c.beta1)? + (g * c.one_minus_beta1)?)?,
                        None => (g * c.one_minus_beta1)?,
                    };
                    let v = match &self.second[i] {
                        Some(v) => ((v * c.beta2)? + (g.sqr()? * c.one_minus_beta2)?)?,
                        None => (g.sqr()? * c.one_minus_beta2)?,
                    };
                    let m_hat = (&m * c.inverse_bias_correction1)?;
                    let v_hat = (&v * c.inverse_bias_correction2)?;
                    let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
                    var.set(&((&theta * c.decay)? - (update * c.lr)?)?)?;
                    self.first[i] = Some(m);
                    self.second[i] = Some(v);
                }
                UpdateRule::Sgd(c) => {
                    let g = if c.weight_decay > 0.0 {
                        (g + (&theta * c.weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    let velocity = match &self.first[i] {
                        Some(b) if c.momentum > 0.0 => ((b * c.momentum)? + &g)?,
                        _ => g,
                    };
                    var.set(&(&theta - (&velocity * c.lr)?)?)?;
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

#[cfg(test)]
mod clamp_tests {
    use super::clamp_logit_scale;

    #[test]
    fn the_logit_scale_stays_within_zero_and_ln_100() {
        // Below 0 the temperature would exceed 1: CLIP and Mod-X clamp there too.
        assert_eq!(clamp_logit_scale(-0.5), 0.0);
        assert_eq!(clamp_logit_scale(9.0), 100f32.ln());
        assert_eq!(clamp_logit_scale(2.0), 2.0);
    }
}
