//! The `train` and `importance` nodes: learn one stage of a chain, estimate
//! parameter importance after it. Everything runs on a candle `Device` (CPU, or
//! CUDA with the `cuda` feature).
//!
//! [`train_stage`] resolves the stage's regularizers once into terms
//! (`terms.rs`) and runs the epoch loop (`steps.rs`) around one of two engines
//! computing the same step: `fused/` on the CPU, `graph.rs` (candle autograd)
//! elsewhere and as the reference the fused step is tested against.

pub mod batches;
mod fused;
mod graph;
pub mod importance;
pub mod loss;
pub mod optim;
mod steps;
pub mod tensors;
pub mod terms;

use crate::data::{PairData, PseudoTexts};
use crate::lang::{LossSpec, ModelSpec, RegularizerSpec, Schedule, TrainSpec};
use crate::model::Model;
use candle_core::Device;
use importance::Importance;
use steps::Stepper;

/// What one stage learns from and how.
pub struct Stage<'a> {
    pub model: &'a ModelSpec,
    pub train: &'a TrainSpec,
    pub schedule: Schedule,
    pub seed: u64,
    /// 1-based; the joint model is stage 1 of a one-stage chain.
    pub stage: usize,
    /// The task name (or `joint`), for logs and errors.
    pub label: String,
    /// The regularizer of this stage, `on = query` resolved; empty at stage 1.
    pub regularizer: &'a [RegularizerSpec],
    pub data: PairData<'a>,
    /// The dataset's pseudo negative texts, when a regularizer term uses them.
    pub pseudo_texts: Option<&'a PseudoTexts>,
    /// Training captions of the task(s) learned now (several for a joint schedule).
    pub tasks: Vec<&'a [u32]>,
    /// Earlier tasks in learning order, for the replay memory.
    pub past: Vec<(&'a str, &'a [u32])>,
    /// Called after every step with (steps done, total steps).
    pub on_step: Option<&'a (dyn Fn(usize, usize) + Sync)>,
}

/// The chain's state after the previous stage.
pub struct Previous<'a> {
    pub model: &'a Model,
    /// Accumulated importance for the penalties that need it (EWC, MAS).
    pub importance: Vec<&'a Importance>,
}

/// One row of the training log; training records every step.
pub use crate::results::LogRow;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training diverged at {task}, epoch {epoch}, step {step}: the {term} is {value}")]
    NonFinite {
        task: String,
        epoch: usize,
        step: usize,
        term: String,
        value: f64,
    },
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
    /// A stage continues from its previous model on that model's device, so the
    /// two must agree (else a GPU stage would silently train on the CPU).
    #[error("the previous model is on {found} but the stage asks for {wanted}")]
    DeviceMismatch { found: String, wanted: String },
    /// A regularizer whose input is missing fails its stage: training without
    /// the term would silently be another method.
    #[error("the {term} regularizer needs {input}, which this stage was not given")]
    MissingInput { term: &'static str, input: String },
    /// A stepper was asked for gradients before computing any.
    /// Ctrl-C: the stage stopped between two steps (nothing is kept).
    #[error("interrupted at {task}, epoch {epoch}, step {step}")]
    Interrupted {
        task: String,
        epoch: usize,
        step: usize,
    },
    #[error("the training step's {0} ran before its losses")]
    NoGradients(&'static str),
}

pub struct Trained {
    pub model: Model,
    pub log: Vec<LogRow>,
}

/// Which step implementation trains: candle's autograd (any device) or the
/// fused CPU step. [`train_stage`] picks `Fused` on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Graph,
    Fused,
}

/// Trains one stage, starting from the previous model (or a fresh one).
pub fn train_stage(
    stage: &Stage,
    previous: Option<&Previous>,
    device: &Device,
) -> Result<Trained, TrainError> {
    let engine = if device.is_cpu() {
        Engine::Fused
    } else {
        Engine::Graph
    };
    train_stage_with(stage, previous, device, engine)
}

/// [`train_stage`] with a chosen engine (`Fused` needs the CPU).
pub fn train_stage_with(
    stage: &Stage,
    previous: Option<&Previous>,
    device: &Device,
    engine: Engine,
) -> Result<Trained, TrainError> {
    let t = stage.train;
    if let Some(p) = previous {
        if !p.model.device().same_device(device) {
            return Err(TrainError::DeviceMismatch {
                found: format!("{:?}", p.model.device().location()),
                wanted: format!("{:?}", device.location()),
            });
        }
    }
    // Before any model is built, so a missing input fails at once.
    let terms = terms::resolve(stage, previous)?;
    let model = match previous {
        Some(p) => p.model.deep_clone()?,
        None => {
            let logit_scale = match &t.loss {
                LossSpec::Infonce {
                    temperature,
                    learnable: true,
                } => Some((1.0 / temperature).ln()),
                _ => None,
            };
            Model::new(
                stage.model,
                stage.data.image_dim,
                stage.data.text_dim,
                stage.seed,
                logit_scale,
                device,
            )?
        }
    };
    let stepper: Box<dyn Stepper + '_> = match engine {
        Engine::Fused if device.is_cpu() => {
            Box::new(fused::FusedStep::new(model, stage, terms.loss)?)
        }
        _ => Box::new(graph::GraphStep::new(model, stage, terms.loss)?),
    };
    steps::run_steps(stage, &terms.batch, stepper)
}
