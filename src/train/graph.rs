//! The training step through candle's autograd: runs on any candle device (the
//! CUDA path) and is the reference the fused CPU step is tested against.

use super::importance::{self, Importance};
use super::steps::{StepLosses, Stepper};
use super::tensors::{batch_tensors, task_loss};
use super::terms::{required, DistillTerm, LossKind, LossTerm, LossTerms, ModxTerm};
use super::{loss, optim, TrainError};
use crate::data::PairData;
use crate::lang::LossSpec;
use crate::model::{Modality, Model};
use crate::rng::Rng;
use candle_core::{backprop::GradStore, Tensor, Var};

pub struct GraphStep<'a> {
    model: Model,
    terms: Vec<LossTerm<&'a Importance>>,
    /// The previous model, when a term reads its similarities.
    old_model: Option<&'a Model>,
    /// The previous model's parameters, when a term penalises moving from them.
    anchors: Option<Vec<Tensor>>,
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
        terms: LossTerms<'a>,
    ) -> Result<GraphStep<'a>, TrainError> {
        let anchors = terms.anchor_model.map(Model::snapshot).transpose()?;
        let vars: Vec<_> = model.params().iter().map(|p| p.var.clone()).collect();
        let optimizer = optim::Optimizer::new(&stage.train.optimizer, vars.clone());
        Ok(GraphStep {
            model,
            terms: terms.terms,
            old_model: terms.old_model,
            anchors,
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
        // The old model's similarities, for the distillation terms (no gradient).
        let old_s = match self.old_model {
            Some(old) => {
                let oi = old.forward(Modality::Image, &images, None, true)?;
                let ot = old.forward(Modality::Text, &texts, None, true)?;
                Some(oi.matmul(&ot.t()?)?)
            }
            None => None,
        };
        let mut terms: Vec<(String, Tensor)> = Vec::with_capacity(self.terms.len());
        for term in &self.terms {
            let value = match &term.kind {
                LossKind::WeightPenalty {
                    coefficient,
                    on,
                    importance,
                } => {
                    let anchors =
                        required(&self.anchors, term.name, "the previous model's parameters")?;
                    importance::penalty(model, importance, anchors, *on, *coefficient)?
                }
                LossKind::Modx(ModxTerm {
                    alpha,
                    temperature,
                    correct,
                }) => {
                    let old = required(&old_s, term.name, "the previous model's similarities")?;
                    loss::modx(&s, old, *temperature, *correct)?.affine(*alpha, 0.0)?
                }
                LossKind::Distill(DistillTerm {
                    lambda,
                    temperature,
                }) => {
                    let old = required(&old_s, term.name, "the previous model's similarities")?;
                    loss::distill(&s, old, *temperature)?.affine(*lambda, 0.0)?
                }
            };
            terms.push((term.name.to_string(), value));
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
            .ok_or(TrainError::NoGradients("gradient norm"))?;
        Ok(optim::gradient_norm(grads, &self.vars)?)
    }

    fn update(&mut self, lr: f64, grad_scale: f64) -> Result<(), TrainError> {
        let mut grads = self.grads.take().ok_or(TrainError::NoGradients("update"))?;
        if grad_scale != 1.0 {
            optim::scale_gradients(&mut grads, &self.vars, grad_scale)?;
        }
        self.optimizer.step(&grads, lr)?;
        if let Some(scale) = self.model.logit_scale() {
            let value = scale.as_detached_tensor();
            let clamped: Vec<f32> = value
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(optim::clamp_logit_scale)
                .collect();
            scale.set(&Tensor::from_vec(clamped, value.shape(), value.device())?)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Model, TrainError> {
        Ok(self.model)
    }
}
