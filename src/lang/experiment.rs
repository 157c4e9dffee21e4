//! The checker's output: one fully specified, typed experiment per variant.
//! Everything downstream (plan, run, report) works from these types only.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One variant of a pipeline, every setting resolved and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub pipeline: String,
    /// The variant's label (`ft, reindex`); the pipeline's name when nothing is swept.
    pub label: String,
    /// Swept setting → the label of the value this variant takes (axis order).
    /// The variant-line axis is named `variant`. Seeds are not listed here.
    pub axes: Vec<(String, String)>,
    pub dataset: PathBuf,
    pub split: String,
    pub tasks: Vec<String>,
    pub seed: u64,
    pub schedule: Schedule,
    pub device: DeviceSpec,
    pub model: ModelSpec,
    pub train: TrainSpec,
    pub index: IndexPolicy,
    pub evaluate: EvaluateSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Sequential,
    Joint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "ordinal")]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub image: BranchSpec,
    pub text: BranchSpec,
    /// The top `share` layers are one set of weights used by both branches.
    pub share: usize,
}

/// `mlp(hidden, embed, activation, dropout)`: `hidden.len() + 1` linear layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchSpec {
    pub hidden: Vec<usize>,
    pub embed: usize,
    pub activation: Activation,
    pub dropout: f64,
}

impl BranchSpec {
    /// Number of linear layers.
    pub fn depth(&self) -> usize {
        self.hidden.len() + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    Tanh,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub loss: LossSpec,
    pub optimizer: OptimizerSpec,
    pub schedule_lr: LrSchedule,
    pub epochs: u32,
    pub batch: usize,
    pub negatives: Negatives,
    /// The terms of the regularizer; empty for `none`.
    pub regularizer: Vec<RegularizerSpec>,
    pub decouple: bool,
    /// Gradient clipping by global norm; `None` for `grad_clip = none`.
    pub grad_clip: Option<f64>,
    pub log: LogEvery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LossSpec {
    Triplet {
        margin: f64,
        negatives: TripletNegatives,
        /// `sum` over the batch as VSE++'s code does (the default: lr, clipping
        /// and λ keep their VSE++ meaning), or `mean`.
        reduction: Reduction,
    },
    Infonce {
        temperature: f64,
        learnable: bool,
    },
}

/// How a per-pair loss is reduced over the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    Sum,
    Mean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripletNegatives {
    Hardest,
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OptimizerSpec {
    Adamw {
        lr: f64,
        weight_decay: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LrSchedule {
    Constant,
    /// Multiply the rate by `gamma` every `every` epochs.
    Step {
        every: u32,
        gamma: f64,
    },
    /// Linear warm-up over the first `warmup` fraction of steps, then cosine decay.
    Cosine {
        warmup: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Negatives {
    WithinTask,
    CrossTask,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RegularizerSpec {
    Ewc {
        lambda: f64,
        accumulate: Accumulate,
        on: Coverage,
    },
    Mas {
        lambda: f64,
        on: Coverage,
    },
    Modx {
        alpha: f64,
        temperature: f64,
        correct: bool,
    },
    Distill {
        lambda: f64,
        temperature: f64,
    },
    Replay {
        memory: usize,
        per_batch: usize,
        sampler: Sampler,
    },
    /// IncCLIP's pseudo text replay: each replayed image meets `per_image` of its
    /// generated negative texts as extra negatives, their loss times `weight`.
    PseudoText {
        per_image: usize,
        weight: f64,
    },
}

impl RegularizerSpec {
    pub fn name(&self) -> &'static str {
        match self {
            RegularizerSpec::Ewc { .. } => "ewc",
            RegularizerSpec::Mas { .. } => "mas",
            RegularizerSpec::Modx { .. } => "modx",
            RegularizerSpec::Distill { .. } => "distill",
            RegularizerSpec::Replay { .. } => "replay",
            RegularizerSpec::PseudoText { .. } => "pseudo_text",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accumulate {
    Sum,
    Mean,
}

/// Which parameters a weight penalty covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    Both,
    Image,
    Text,
    /// The branch embedding the queries of the model's direction (decoupled only).
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    Reservoir,
    Balanced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogEvery {
    Step,
    Epoch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexPolicy {
    Frozen,
    Reindex,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateSpec {
    pub recall: Vec<usize>,
    pub directions: Vec<Direction>,
    pub gallery: Vec<GalleryScope>,
    /// Zero-shot class sets (names in the dataset manifest's `classes:`).
    pub zeroshot: Vec<String>,
    /// Downstream zero-shot sets: other datasets whose every image is classified
    /// against each of their class sets after every stage.
    pub downstream: Vec<Downstream>,
}

/// A downstream zero-shot set, checked: featurized by the same encoders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Downstream {
    pub dataset: PathBuf,
    /// The manifest's `name`.
    pub name: String,
    /// Its `classes:`, in manifest order.
    pub class_sets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Im2txt,
    Txt2im,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Im2txt => "im2txt",
            Direction::Txt2im => "txt2im",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GalleryScope {
    PerTask,
    Union,
}

/// The two sides of a pair: what an image or a caption is embedded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Image,
    Text,
}

impl Modality {
    pub fn name(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::Text => "text",
        }
    }
}
