//! A stage's regularizers turned, once, into the terms the engines compute.
//!
//! Both the fused CPU step and the candle graph step consume [`LossTerms`] and
//! match on [`LossKind`] exhaustively, so a new loss term that one engine does
//! not compute is a compile error, and every coefficient (EWC's λ/2 included) is
//! decided here and only here. A term whose input is missing (no previous model,
//! no importance estimate of its method) fails the stage loudly: it is never
//! dropped. Replay changes the batches rather than the loss: it is a
//! [`BatchTerm`], which the epoch loop applies. Pseudo text replay is both: a
//! batch term draws each replayed image's pseudo texts, a loss term scores them.

use super::batches::ReplayMemory;
use super::importance::{Importance, Method};
use super::{Previous, Stage, TrainError};
use crate::data::PseudoTexts;
use crate::lang::{Coverage, RegularizerSpec};
use crate::model::Model;

/// One term added to the task loss, under the regularizer's name (as the
/// training log records it). `I` is the importance estimate as an engine holds
/// it: `&Importance` as resolved, flat buffers in the fused step.
pub struct LossTerm<I> {
    pub name: &'static str,
    pub kind: LossKind<I>,
}

/// The loss terms, each with exactly the coefficients it enters the loss with.
/// Formulas: `docs/methods.md`.
pub enum LossKind<I> {
    /// `coefficient · Σ Ω (θ − θ*)²` over the parameters `on` covers: Ω the
    /// importance, θ* the previous model's parameters (EWC: λ/2 with the Fisher;
    /// MAS: λ with omega).
    WeightPenalty {
        coefficient: f64,
        on: Coverage,
        importance: I,
    },
    Modx(ModxTerm),
    Distill(DistillTerm),
    PseudoText(PseudoTextTerm),
}

/// Mod-X: `alpha` times the (with `correct`: only where the previous model ranks
/// a positive first) row and column KL to the previous model's similarities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModxTerm {
    pub alpha: f64,
    pub temperature: f64,
    pub correct: bool,
}

/// Multimodal knowledge distillation: `lambda` times the mean row and column KL
/// to the previous model's similarities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillTerm {
    pub lambda: f64,
    pub temperature: f64,
}

/// Pseudo text replay: `weight` times the loss the batch's pseudo negative texts
/// add (InfoNCE: the rows' extra columns; triplet: extra hinge terms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PseudoTextTerm {
    pub weight: f64,
}

/// What a loss term reads besides the batch and the model being trained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Needs {
    /// The previous model's similarity matrix on the same batch (no gradient).
    old_similarities: bool,
    /// The previous model's parameters, the point a penalty pulls towards.
    anchors: bool,
}

impl<I> LossKind<I> {
    fn needs(&self) -> Needs {
        match self {
            LossKind::WeightPenalty { .. } => Needs {
                anchors: true,
                old_similarities: false,
            },
            LossKind::Modx(_) | LossKind::Distill(_) => Needs {
                anchors: false,
                old_similarities: true,
            },
            LossKind::PseudoText(_) => Needs::default(),
        }
    }
}

impl<I> LossTerm<I> {
    /// The same term with its importance estimate converted (an engine's layout).
    pub fn try_map_importance<J, E>(
        &self,
        convert: impl FnOnce(&I, Coverage) -> Result<J, E>,
    ) -> Result<LossTerm<J>, E> {
        let kind = match &self.kind {
            LossKind::WeightPenalty {
                coefficient,
                on,
                importance,
            } => LossKind::WeightPenalty {
                coefficient: *coefficient,
                on: *on,
                importance: convert(importance, *on)?,
            },
            LossKind::Modx(term) => LossKind::Modx(*term),
            LossKind::Distill(term) => LossKind::Distill(*term),
            LossKind::PseudoText(term) => LossKind::PseudoText(*term),
        };
        Ok(LossTerm {
            name: self.name,
            kind,
        })
    }
}

/// The loss terms of a stage, in the order of its regularizer list, and the
/// previous model for the inputs they share.
pub struct LossTerms<'a> {
    pub terms: Vec<LossTerm<&'a Importance>>,
    /// The previous model, exactly when a term reads its similarities on the batch.
    pub old_model: Option<&'a Model>,
    /// The previous model, exactly when a term pulls the parameters towards its own.
    pub anchor_model: Option<&'a Model>,
    /// The dataset's pseudo negative texts, exactly when a term scores them.
    pub pseudo_texts: Option<&'a PseudoTexts>,
}

/// A term that changes what a step trains on rather than its loss.
pub enum BatchTerm<'a> {
    /// Adds `per_batch` pairs drawn from the memory of past tasks to every batch.
    Replay {
        memory: ReplayMemory,
        per_batch: usize,
    },
    /// Gives every replayed pair `per_image` of its image's pseudo texts (fewer
    /// when the generator made fewer), drawn without repetition.
    PseudoText {
        texts: &'a PseudoTexts,
        per_image: usize,
    },
}

/// Every term of a stage.
pub struct Terms<'a> {
    pub loss: LossTerms<'a>,
    pub batch: Vec<BatchTerm<'a>>,
}

const NO_PREVIOUS: &str = "the previous stage's model";

/// A term's input that the stage does not have.
fn missing(term: &RegularizerSpec, input: impl Into<String>) -> TrainError {
    TrainError::MissingInput {
        term: term.name(),
        input: input.into(),
    }
}

/// An input that [`resolve`] provides for `term` (the previous model's
/// similarities or parameters, as an engine holds them); its absence is an
/// error, never a skipped term.
pub fn required<'t, T>(
    input: &'t Option<T>,
    term: &'static str,
    what: &str,
) -> Result<&'t T, TrainError> {
    input.as_ref().ok_or_else(|| TrainError::MissingInput {
        term,
        input: what.to_string(),
    })
}

/// Turns the stage's regularizer list into its terms; `previous` is the chain's
/// state after the previous stage (none at stage 1).
pub fn resolve<'a>(
    stage: &Stage<'a>,
    previous: Option<&Previous<'a>>,
) -> Result<Terms<'a>, TrainError> {
    let mut loss = Vec::new();
    let mut batch = Vec::new();
    let mut needs = Needs::default();
    let mut pseudo_texts = None;
    for spec in stage.regularizer {
        let kind = match spec {
            RegularizerSpec::Ewc { on, .. } | RegularizerSpec::Mas { on, .. } => {
                let (method, coefficient) = penalty_coefficient(spec)
                    .ok_or_else(|| missing(spec, "a penalty coefficient".to_string()))?;
                weight_penalty(spec, previous, method, coefficient, *on)?
            }
            RegularizerSpec::Modx {
                alpha,
                temperature,
                correct,
            } => LossKind::Modx(ModxTerm {
                alpha: *alpha,
                temperature: *temperature,
                correct: *correct,
            }),
            RegularizerSpec::Distill {
                lambda,
                temperature,
            } => LossKind::Distill(DistillTerm {
                lambda: *lambda,
                temperature: *temperature,
            }),
            RegularizerSpec::Replay {
                memory,
                per_batch,
                sampler,
            } => {
                batch.push(BatchTerm::Replay {
                    memory: ReplayMemory::after_tasks(*memory, *sampler, &stage.past, stage.seed),
                    per_batch: *per_batch,
                });
                continue;
            }
            RegularizerSpec::PseudoText { per_image, weight } => {
                let texts = stage
                    .pseudo_texts
                    .ok_or_else(|| missing(spec, "the dataset's pseudo negative texts"))?;
                if !stage
                    .regularizer
                    .iter()
                    .any(|r| matches!(r, RegularizerSpec::Replay { .. }))
                {
                    return Err(missing(spec, "replayed images (a `replay` term)"));
                }
                pseudo_texts = Some(texts);
                batch.push(BatchTerm::PseudoText {
                    texts,
                    per_image: *per_image,
                });
                LossKind::PseudoText(PseudoTextTerm { weight: *weight })
            }
        };
        let term_needs = kind.needs();
        if (term_needs.anchors || term_needs.old_similarities) && previous.is_none() {
            return Err(missing(spec, NO_PREVIOUS));
        }
        needs.anchors |= term_needs.anchors;
        needs.old_similarities |= term_needs.old_similarities;
        loss.push(LossTerm {
            name: spec.name(),
            kind,
        });
    }
    let previous_model = previous.map(|p| p.model);
    Ok(Terms {
        loss: LossTerms {
            terms: loss,
            old_model: previous_model.filter(|_| needs.old_similarities),
            anchor_model: previous_model.filter(|_| needs.anchors),
            pseudo_texts,
        },
        batch,
    })
}

/// The importance a weight penalty weighs by and its coefficient: EWC's penalty is
/// `λ/2 · Σ F (θ − θ*)²` (Kirkpatrick et al.; Avalanche writes λ without the ½),
/// MAS's `λ · Σ Ω (θ − θ*)²` (Aljundi et al.). `None` for terms that are not weight
/// penalties. The one place these conventions are decided.
pub fn penalty_coefficient(spec: &RegularizerSpec) -> Option<(Method, f64)> {
    match spec {
        RegularizerSpec::Ewc { lambda, .. } => Some((Method::Fisher, lambda / 2.0)),
        RegularizerSpec::Mas { lambda, .. } => Some((Method::Omega, *lambda)),
        RegularizerSpec::Modx { .. }
        | RegularizerSpec::Distill { .. }
        | RegularizerSpec::Replay { .. }
        | RegularizerSpec::PseudoText { .. } => None,
    }
}

/// A weight penalty with the previous stage's importance estimate of `method`.
fn weight_penalty<'a>(
    spec: &RegularizerSpec,
    previous: Option<&Previous<'a>>,
    method: Method,
    coefficient: f64,
    on: Coverage,
) -> Result<LossKind<&'a Importance>, TrainError> {
    let previous = previous.ok_or_else(|| missing(spec, NO_PREVIOUS))?;
    let importance = previous
        .importance
        .iter()
        .copied()
        .find(|i| i.method == method)
        .ok_or_else(|| missing(spec, format!("a {} importance estimate", method.name())))?;
    Ok(LossKind::WeightPenalty {
        coefficient,
        on,
        importance,
    })
}
