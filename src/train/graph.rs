//! The training step through candle's autograd: runs on any candle device (the
//! CUDA path) and is the reference the fused CPU step is tested against.

use super::batches::Batch;
use super::importance::{self, Importance};
use super::steps::{StepLosses, Stepper};
use super::tensors::{batch_tensors, pseudo_text_loss, task_loss, PseudoScores};
use super::terms::{
    required, DistillTerm, LossKind, LossTerm, LossTerms, ModxTerm, PseudoTextTerm,
};
use super::{loss, optim, TrainError};
use crate::data::{PairData, PseudoTexts};
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
    /// The dataset's pseudo negative texts, when a term scores them.
    pseudo_texts: Option<&'a PseudoTexts>,
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
            pseudo_texts: terms.pseudo_texts,
            loss: stage.train.loss.clone(),
            data: stage.data,
            vars,
            optimizer,
            grads: None,
        })
    }
}

/// The batch's pseudo texts through the text branch, scored against the images.
fn pseudo_scores(
    texts: &PseudoTexts,
    batch: &Batch,
    image_embeddings: &Tensor,
    dropout: &mut Rng,
    model: &Model,
) -> Result<PseudoScores, TrainError> {
    let (b, p) = (batch.captions.len(), batch.negatives.len());
    let mut features = Vec::with_capacity(p * texts.dim);
    let mut owner = vec![0f32; b * p];
    for (k, &(row, text)) in batch.negatives.iter().enumerate() {
        features.extend_from_slice(texts.feature(text));
        owner[row as usize * p + k] = 1.0;
    }
    let device = model.device();
    let x = Tensor::from_vec(features, (p, texts.dim), device)?;
    let ep = model.forward(Modality::Text, &x, Some(dropout), false)?;
    Ok(PseudoScores {
        q: image_embeddings.matmul(&ep.t()?)?,
        owner: Tensor::from_vec(owner, (b, p), device)?,
    })
}

impl Stepper for GraphStep<'_> {
    fn losses(&mut self, batch: &Batch, dropout: &mut Rng) -> Result<StepLosses, TrainError> {
        let model = &self.model;
        let device = model.device();
        let (images, texts, positives) = batch_tensors(&self.data, &batch.captions, device)?;
        let ei = model.forward(Modality::Image, &images, Some(dropout), false)?;
        let et = model.forward(Modality::Text, &texts, Some(dropout), false)?;
        let s = ei.matmul(&et.t()?)?;
        // The pseudo texts through the text branch, after the captions (the
        // dropout masks are drawn in this order by both engines).
        let pseudo = match self.pseudo_texts {
            Some(texts) if !batch.negatives.is_empty() => {
                Some(pseudo_scores(texts, batch, &ei, dropout, model)?)
            }
            _ => None,
        };
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
                LossKind::PseudoText(PseudoTextTerm { weight }) => match &pseudo {
                    Some(p) => pseudo_text_loss(model, &self.loss, &s, &positives, p)?
                        .affine(*weight, 0.0)?,
                    // No replayed pair in this batch (or none with pseudo texts).
                    None => base.zeros_like()?,
                },
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
