//! The training step through candle's autograd: runs on any candle device (the
//! CUDA path) and is the reference the fused CPU step is tested against.

use super::{
    batch_tensors, importance, loss, optim, task_loss, PairData, Previous, StepLosses, Stepper,
    TrainError,
};
use crate::lang::{LossSpec, RegularizerSpec};
use crate::model::{Modality, Model};
use crate::rng::Rng;
use candle_core::{backprop::GradStore, Tensor, Var};

pub struct GraphStep<'a> {
    model: Model,
    previous: Option<&'a Previous<'a>>,
    anchors: Option<Vec<Tensor>>,
    regularizer: &'a [RegularizerSpec],
    loss: LossSpec,
    data: PairData<'a>,
    vars: Vec<Var>,
    optimizer: optim::Optimizer,
    grads: Option<GradStore>,
}

impl<'a> GraphStep<'a> {
    pub fn new(
        model: Model,
        stage: &super::Stage<'a>,
        previous: Option<&'a Previous<'a>>,
    ) -> Result<GraphStep<'a>, TrainError> {
        let anchors = previous.map(|p| p.model.snapshot()).transpose()?;
        let vars: Vec<_> = model.params().iter().map(|p| p.var.clone()).collect();
        let optimizer = optim::Optimizer::new(&stage.train.optimizer, vars.clone());
        Ok(GraphStep {
            model,
            previous,
            anchors,
            regularizer: stage.regularizer,
            loss: stage.train.loss.clone(),
            data: stage.data,
            vars,
            optimizer,
            grads: None,
        })
    }
}

impl Stepper for GraphStep<'_> {
    fn losses(&mut self, captions: &[u32], dropout: &mut Rng) -> Result<StepLosses, TrainError> {
        let model = &self.model;
        let device = model.device();
        let (images, texts, positives) = batch_tensors(&self.data, captions, device)?;
        let ei = model.forward(Modality::Image, &images, Some(dropout), false)?;
        let et = model.forward(Modality::Text, &texts, Some(dropout), false)?;
        let s = ei.matmul(&et.t()?)?;
        let base = task_loss(model, &self.loss, &s, &positives)?;
        let mut terms: Vec<(String, Tensor)> = Vec::new();
        // The old model's similarities, for the distillation terms (no gradient).
        let old_s = match self.previous {
            Some(p)
                if self.regularizer.iter().any(|r| {
                    matches!(
                        r,
                        RegularizerSpec::Modx { .. } | RegularizerSpec::Distill { .. }
                    )
                }) =>
            {
                let oi = p.model.forward(Modality::Image, &images, None, true)?;
                let ot = p.model.forward(Modality::Text, &texts, None, true)?;
                Some(oi.matmul(&ot.t()?)?)
            }
            _ => None,
        };
        for r in self.regularizer {
            let term = match r {
                RegularizerSpec::Ewc { lambda, on, .. } | RegularizerSpec::Mas { lambda, on } => {
                    let (method, coefficient) = match r {
                        RegularizerSpec::Ewc { .. } => (importance::Method::Fisher, lambda / 2.0),
                        _ => (importance::Method::Omega, *lambda),
                    };
                    let (Some(p), Some(anchors)) = (self.previous, &self.anchors) else {
                        continue;
                    };
                    let Some(imp) = p.importance.iter().find(|i| i.method == method) else {
                        continue;
                    };
                    importance::penalty(model, imp, anchors, *on, coefficient)?
                }
                RegularizerSpec::Modx {
                    alpha,
                    temperature,
                    correct,
                } => {
                    let Some(old) = &old_s else { continue };
                    loss::modx(&s, old, &positives, *temperature, *correct)?.affine(*alpha, 0.0)?
                }
                RegularizerSpec::Distill {
                    lambda,
                    temperature,
                } => {
                    let Some(old) = &old_s else { continue };
                    loss::distill(&s, old, *temperature)?.affine(*lambda, 0.0)?
                }
                RegularizerSpec::Replay { .. } => continue,
            };
            terms.push((r.name().to_string(), term));
        }
        let mut total = base.clone();
        for (_, term) in &terms {
            total = (total + term)?;
        }
        let mut term_values = Vec::with_capacity(terms.len());
        for (name, term) in &terms {
            term_values.push((name.clone(), term.to_scalar::<f32>()? as f64));
        }
        let values = StepLosses {
            task: base.to_scalar::<f32>()? as f64,
            terms: term_values,
            total: total.to_scalar::<f32>()? as f64,
        };
        self.grads = Some(total.backward()?);
        Ok(values)
    }

    fn gradient_norm(&mut self) -> Result<f64, TrainError> {
        let grads = self
            .grads
            .as_ref()
            .expect("losses() runs before gradient_norm()");
        Ok(optim::gradient_norm(grads, &self.vars)?)
    }

    fn update(&mut self, lr: f64, grad_scale: f64) -> Result<(), TrainError> {
        let mut grads = self.grads.take().expect("losses() runs before update()");
        if grad_scale != 1.0 {
            optim::scale_gradients(&mut grads, &self.vars, grad_scale)?;
        }
        self.optimizer.step(&grads, lr)?;
        if let Some(scale) = self.model.logit_scale() {
            // CLIP clamps the learnable scale to at most 100.
            scale.set(&scale.as_detached_tensor().clamp(f32::MIN, 100f32.ln())?)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Model, TrainError> {
        Ok(self.model)
    }
}
