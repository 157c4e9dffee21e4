//! The fused CPU training step: the same losses, penalties and optimizers as
//! the candle-autograd step (`train::graph`), with the backward pass written out
//! by hand over flat buffers that live across steps. On the CPU this removes
//! what dominates candle's step at these sizes: a fresh allocation and a full
//! memory pass per elementwise operation, and ten passes for each AdamW update.
//! Gradients agree with candle's to float rounding (`tests/train_grad.rs`).

mod kernels;
mod losses;
mod net;
mod old_embeddings;
mod update;

use super::batches::Batch;
use super::importance::{self, Importance};
use super::steps::{StepLosses, Stepper};
use super::terms::{
    required, DistillTerm, LossKind, LossTerm, LossTerms, ModxTerm, PseudoTextTerm,
};
use super::{optim, TrainError};
use crate::data::{PairData, PseudoTexts};
use crate::lang::{Coverage, LossSpec};
use crate::model::{Modality, Model};
use crate::rng::Rng;
use kernels::View;
use losses::{Positives, PseudoScores};
use net::{Grads, Net, Tape};
use old_embeddings::OldEmbeddings;
use update::OptimizerState;

/// A weight penalty's importance laid out like the net's parameters (None: the
/// parameter is not penalised).
type PenaltyWeights = Vec<Option<Vec<f32>>>;

pub struct FusedStep<'a> {
    model: Model,
    net: Net,
    /// The previous model, when a term reads its similarities.
    old: Option<Net>,
    /// Its embeddings of the rows seen so far, when the stage is small enough
    /// to keep them ([`old_embeddings::fits`]).
    old_embeddings: Option<OldEmbeddings>,
    /// The previous model's parameters, when a term penalises moving from them.
    anchors: Option<Vec<Vec<f32>>>,
    terms: Vec<LossTerm<PenaltyWeights>>,
    loss: LossSpec,
    data: PairData<'a>,
    /// The dataset's pseudo negative texts, when a term scores them.
    pseudo_texts: Option<&'a PseudoTexts>,
    /// The batch's pseudo texts through the text branch.
    pseudo_tape: Tape,
    /// Each row with pseudo texts and its range of them; their scores and ∂/∂score.
    pseudo_rows: Vec<(usize, std::ops::Range<usize>)>,
    pseudo_scores: Vec<f32>,
    d_pseudo_scores: Vec<f32>,
    d_pseudo: Vec<f32>,
    grads: Grads,
    optimizer: OptimizerState,
    tapes: [Tape; 2],
    old_tapes: [Tape; 2],
    positives: Vec<bool>,
    similarity: Vec<f32>,
    old_similarity: Vec<f32>,
    d_similarity: Vec<f32>,
    d_image: Vec<f32>,
    d_text: Vec<f32>,
}

impl<'a> FusedStep<'a> {
    /// `model` is the stage's starting point (already a copy of the previous
    /// model's, or freshly initialised).
    pub fn new(
        model: Model,
        stage: &super::Stage<'a>,
        terms: LossTerms<'a>,
    ) -> Result<FusedStep<'a>, TrainError> {
        let net = Net::from_model(&model)?;
        let old = terms.old_model.map(Net::from_model).transpose()?;
        let anchors = match terms.anchor_model {
            Some(m) => Some(Net::from_model(m)?.values),
            None => None,
        };
        let fused_terms = terms
            .terms
            .iter()
            .map(|t| t.try_map_importance(|importance, on| penalised(&net, importance, on)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let stage_rows = stage.tasks.iter().map(|t| t.len()).sum::<usize>()
            + stage.past.iter().map(|(_, rows)| rows.len()).sum::<usize>();
        let old_embeddings = old
            .as_ref()
            .map(|old| old.output_dim(Modality::Image))
            .filter(|&dim| old_embeddings::fits(stage_rows, dim))
            .map(|dim| OldEmbeddings::new(&stage.data, dim));
        let grads = Grads::for_net(&net);
        let optimizer =
            OptimizerState::new(&stage.train.optimizer, net.values.iter().map(Vec::len));
        Ok(FusedStep {
            model,
            net,
            old,
            old_embeddings,
            anchors,
            terms: fused_terms,
            loss: stage.train.loss.clone(),
            data: stage.data,
            pseudo_texts: terms.pseudo_texts,
            pseudo_tape: Tape::default(),
            pseudo_rows: Vec::new(),
            pseudo_scores: Vec::new(),
            d_pseudo_scores: Vec::new(),
            d_pseudo: Vec::new(),
            grads,
            optimizer,
            tapes: Default::default(),
            old_tapes: Default::default(),
            positives: Vec::new(),
            similarity: Vec::new(),
            old_similarity: Vec::new(),
            d_similarity: Vec::new(),
            d_image: Vec::new(),
            d_text: Vec::new(),
        })
    }

    /// Fills the feature buffers of `tapes` with a batch of caption rows and
    /// their images, and the positives mask.
    fn gather(&mut self, captions: &[u32]) {
        let d = &self.data;
        let b = captions.len();
        let images = self.tapes[0].features(b, d.image_dim);
        for (k, &c) in captions.iter().enumerate() {
            images[k * d.image_dim..(k + 1) * d.image_dim]
                .copy_from_slice(d.image(d.caption_image[c as usize]));
        }
        let texts = self.tapes[1].features(b, d.text_dim);
        for (k, &c) in captions.iter().enumerate() {
            texts[k * d.text_dim..(k + 1) * d.text_dim].copy_from_slice(d.caption(c));
        }
        self.positives.clear();
        for &i in captions {
            let image_i = d.caption_image[i as usize];
            self.positives.extend(
                captions
                    .iter()
                    .map(|&j| d.caption_image[j as usize] == image_i),
            );
        }
    }
}

impl FusedStep<'_> {
    /// The batch's pseudo texts through the text branch (after the captions: both
    /// engines draw dropout masks in this order) and their scores against their
    /// rows' images. Leaves `pseudo_rows` empty when the batch has none.
    fn score_pseudo_texts(&mut self, batch: &Batch, dropout: &mut Rng) {
        self.pseudo_rows.clear();
        let Some(texts) = self.pseudo_texts.filter(|_| !batch.negatives.is_empty()) else {
            return;
        };
        self.pseudo_rows.extend(batch.negatives_by_row());
        let p = batch.negatives.len();
        let features = self.pseudo_tape.features(p, texts.dim);
        for (k, &(_, text)) in batch.negatives.iter().enumerate() {
            features[k * texts.dim..(k + 1) * texts.dim].copy_from_slice(texts.feature(text));
        }
        self.net
            .forward(Modality::Text, &mut self.pseudo_tape, Some(dropout));
        let images = &self.tapes[0].embeddings;
        let pseudo = &self.pseudo_tape.embeddings;
        let dim = pseudo.len() / p;
        self.pseudo_scores.clear();
        self.pseudo_scores
            .extend(batch.negatives.iter().enumerate().map(|(k, &(row, _))| {
                let r = row as usize;
                kernels::dot(
                    &images[r * dim..(r + 1) * dim],
                    &pseudo[k * dim..(k + 1) * dim],
                )
            }));
        self.d_pseudo_scores.clear();
        self.d_pseudo_scores.resize(p, 0.0);
    }

    /// Adds the pseudo texts' share of the gradient to `d_image` (before the image
    /// branch's backward pass) and runs their backward pass through the text branch.
    fn pseudo_backward(&mut self, batch: &Batch) {
        if self.pseudo_rows.is_empty() {
            return;
        }
        let images = &self.tapes[0].embeddings;
        let pseudo = &self.pseudo_tape.embeddings;
        let p = batch.negatives.len();
        let dim = pseudo.len() / p;
        self.d_pseudo.clear();
        self.d_pseudo.resize(p * dim, 0.0);
        for (k, &(row, _)) in batch.negatives.iter().enumerate() {
            let r = row as usize;
            let g = self.d_pseudo_scores[k];
            for j in 0..dim {
                self.d_image[r * dim + j] += g * pseudo[k * dim + j];
                self.d_pseudo[k * dim + j] = g * images[r * dim + j];
            }
        }
        self.net.backward(
            Modality::Text,
            &mut self.pseudo_tape,
            &self.d_pseudo,
            &mut self.grads,
        );
    }
}

/// The importance of `imp` laid out like `net`'s parameters, for the parameters
/// coverage `on` penalises (by name: a checkpoint comes back in file order).
fn penalised(net: &Net, imp: &Importance, on: Coverage) -> candle_core::Result<PenaltyWeights> {
    net.names()
        .iter()
        .zip(&net.groups)
        .enumerate()
        .map(|(i, (name, &group))| {
            if !importance::covers(on, group) {
                return Ok(None);
            }
            match imp.tensors.iter().find(|(n, _)| n == name) {
                Some((_, t)) => Ok(Some(net.in_layout(i, &t.flatten_all()?.to_vec1::<f32>()?))),
                None => Ok(None),
            }
        })
        .collect()
}

/// InfoNCE's inverse temperature: `exp(logit_scale)` when it is learned, else 1/τ.
fn infonce_scale(net: &Net, temperature: f64) -> f64 {
    match net.logit_scale {
        Some(i) => (net.values[i][0]).exp() as f64,
        None => 1.0 / temperature,
    }
}

/// `S = A · Bᵀ` for two row-major (b x dim) embedding matrices.
fn similarity(out: &mut Vec<f32>, a: &[f32], b_rows: &[f32], b: usize) {
    let dim = a.len() / b.max(1);
    out.resize(b * b, 0.0);
    kernels::matmul(
        out,
        View::Plain(a, b, dim),
        View::Transposed(b_rows, b, dim),
        false,
    );
}

impl Stepper for FusedStep<'_> {
    fn losses(&mut self, batch: &Batch, dropout: &mut Rng) -> Result<StepLosses, TrainError> {
        self.gather(&batch.captions);
        let b = batch.captions.len();
        self.net
            .forward(Modality::Image, &mut self.tapes[0], Some(dropout));
        self.net
            .forward(Modality::Text, &mut self.tapes[1], Some(dropout));
        self.score_pseudo_texts(batch, dropout);
        let [image_tape, text_tape] = &mut self.tapes;
        similarity(
            &mut self.similarity,
            &image_tape.embeddings,
            &text_tape.embeddings,
            b,
        );
        self.grads.clear();
        self.d_similarity.clear();
        self.d_similarity.resize(b * b, 0.0);
        let pos = Positives {
            b,
            mask: &self.positives,
        };
        let task = match &self.loss {
            LossSpec::Triplet {
                margin,
                negatives,
                reduction,
            } => losses::triplet(
                &self.similarity,
                &pos,
                *margin,
                *negatives,
                *reduction,
                1.0,
                &mut self.d_similarity,
            ),
            LossSpec::Infonce { temperature, .. } => {
                let learnable = self.net.logit_scale;
                let scale = infonce_scale(&self.net, *temperature);
                let (value, d_scale) =
                    losses::infonce(&self.similarity, &pos, scale, 1.0, &mut self.d_similarity);
                if let Some(i) = learnable {
                    // scale = exp(logit_scale): ∂/∂logit_scale = scale · ∂/∂scale.
                    self.grads.buffer(i)[0] += (d_scale * scale) as f32;
                }
                value
            }
        };
        if let Some(old) = &self.old {
            match &mut self.old_embeddings {
                Some(stored) => {
                    // The old tapes' embeddings hold the batch's, as a forward
                    // pass would have left them.
                    let [oi, ot] = &mut self.old_tapes;
                    let (images, texts) = (&mut oi.embeddings, &mut ot.embeddings);
                    stored.batch(old, &self.data, &batch.captions, images, texts);
                }
                None => {
                    for (k, tape) in self.old_tapes.iter_mut().enumerate() {
                        let source = &self.tapes[k].inputs[0];
                        tape.features(b, source.len() / b.max(1))
                            .copy_from_slice(source);
                    }
                    old.forward(Modality::Image, &mut self.old_tapes[0], None);
                    old.forward(Modality::Text, &mut self.old_tapes[1], None);
                }
            }
            let [oi, ot] = &self.old_tapes;
            similarity(&mut self.old_similarity, &oi.embeddings, &ot.embeddings, b);
        }
        // Distillation terms add their gradient to ∂/∂S before the backward
        // pass; weight penalties add theirs to the parameters' after it.
        let mut values = Vec::with_capacity(self.terms.len());
        for term in &self.terms {
            let value = match term.kind {
                LossKind::WeightPenalty { .. } => 0.0, // after the backward pass, below
                LossKind::Modx(ModxTerm {
                    alpha,
                    temperature,
                    correct,
                }) => {
                    required(&self.old, term.name, "the previous model's similarities")?;
                    losses::modx(
                        &self.similarity,
                        &self.old_similarity,
                        &pos,
                        temperature,
                        correct,
                        alpha,
                        &mut self.d_similarity,
                    )
                }
                LossKind::Distill(DistillTerm {
                    lambda,
                    temperature,
                }) => {
                    required(&self.old, term.name, "the previous model's similarities")?;
                    losses::distill(
                        &self.similarity,
                        &self.old_similarity,
                        b,
                        temperature,
                        lambda,
                        &mut self.d_similarity,
                    )
                }
                LossKind::PseudoText(PseudoTextTerm { weight }) => {
                    let pseudo = PseudoScores {
                        rows: &self.pseudo_rows,
                        q: &self.pseudo_scores,
                    };
                    match &self.loss {
                        LossSpec::Triplet {
                            margin,
                            negatives,
                            reduction,
                        } => losses::pseudo_text_triplet(
                            &self.similarity,
                            b,
                            &pseudo,
                            *margin,
                            *negatives,
                            *reduction,
                            weight,
                            &mut self.d_similarity,
                            &mut self.d_pseudo_scores,
                        ),
                        LossSpec::Infonce { temperature, .. } => {
                            let learnable = self.net.logit_scale;
                            let scale = infonce_scale(&self.net, *temperature);
                            let (value, d_scale) = losses::pseudo_text_infonce(
                                &self.similarity,
                                &pos,
                                &pseudo,
                                scale,
                                weight,
                                &mut self.d_similarity,
                                &mut self.d_pseudo_scores,
                            );
                            if let Some(i) = learnable {
                                self.grads.buffer(i)[0] += (d_scale * scale) as f32;
                            }
                            value
                        }
                    }
                }
            };
            values.push((term.name.to_string(), value));
        }
        // Backward through S = Eᵢ Eₜᵀ, then through each branch.
        let [image_tape, text_tape] = &mut self.tapes;
        let dim = image_tape.embeddings.len() / b.max(1);
        self.d_image.resize(b * dim, 0.0);
        self.d_text.resize(b * dim, 0.0);
        kernels::matmul(
            &mut self.d_image,
            View::Plain(&self.d_similarity, b, b),
            View::Plain(&text_tape.embeddings, b, dim),
            false,
        );
        kernels::matmul(
            &mut self.d_text,
            View::Transposed(&self.d_similarity, b, b),
            View::Plain(&image_tape.embeddings, b, dim),
            false,
        );
        self.pseudo_backward(batch);
        let [image_tape, text_tape] = &mut self.tapes;
        self.net
            .backward(Modality::Image, image_tape, &self.d_image, &mut self.grads);
        self.net
            .backward(Modality::Text, text_tape, &self.d_text, &mut self.grads);
        for (term, (_, value)) in self.terms.iter().zip(values.iter_mut()) {
            match &term.kind {
                LossKind::WeightPenalty {
                    coefficient,
                    importance,
                    ..
                } => {
                    let anchors =
                        required(&self.anchors, term.name, "the previous model's parameters")?;
                    *value += update::penalty(
                        &self.net.values,
                        anchors,
                        importance,
                        *coefficient,
                        &mut self.grads,
                    );
                }
                LossKind::Modx(_) | LossKind::Distill(_) | LossKind::PseudoText(_) => {} // before the backward pass
            }
        }
        let total = task + values.iter().map(|(_, v)| v).sum::<f64>();
        Ok(StepLosses {
            task,
            terms: values,
            total,
        })
    }

    fn gradient_norm(&mut self) -> Result<f64, TrainError> {
        Ok(update::gradient_norm(&self.grads))
    }

    fn update(&mut self, lr: f64, grad_scale: f64) -> Result<(), TrainError> {
        self.optimizer
            .step(&mut self.net.values, &self.grads, lr, grad_scale);
        if let Some(i) = self.net.logit_scale {
            let v = &mut self.net.values[i][0];
            *v = optim::clamp_logit_scale(*v);
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Model, TrainError> {
        self.net
            .write_to(&self.model)
            .map_err(|e| TrainError::Tensor(candle_core::Error::Msg(e)))?;
        Ok(self.model)
    }
}
