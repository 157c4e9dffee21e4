//! Typed node specifications: exactly what each kind of node reads.
//!
//! The planner decides everything a node does and writes it here; the executor
//! obeys the spec and never goes back to the `Experiment` or searches the DAG.
//! A spec's canonical JSON (serde, maps sorted, numbers as parsed values) is
//! hashed into the node's key, so the key covers what the node reads by
//! construction. Inputs are named by their [`Slot`]: the position in the node's
//! input list, which is hashed too (as the inputs' keys, in slot order).

use crate::lang::{
    Accumulate, DeviceSpec, Direction, GalleryScope, LossSpec, LrSchedule, Modality, ModelSpec,
    Negatives, OptimizerSpec, RegularizerSpec, Schedule,
};
use serde::{Deserialize, Serialize};

/// The position of an input in a node's input list.
pub type Slot = usize;

/// The kind of a node: what it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Load,
    Init,
    Train,
    Importance,
    Index,
    Query,
    Evaluate,
    Zeroshot,
}

impl NodeKind {
    pub const ALL: [NodeKind; 8] = [
        NodeKind::Load,
        NodeKind::Init,
        NodeKind::Train,
        NodeKind::Importance,
        NodeKind::Index,
        NodeKind::Query,
        NodeKind::Evaluate,
        NodeKind::Zeroshot,
    ];
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Load => "load",
            NodeKind::Init => "init",
            NodeKind::Train => "train",
            NodeKind::Importance => "importance",
            NodeKind::Index => "index",
            NodeKind::Query => "query",
            NodeKind::Evaluate => "evaluate",
            NodeKind::Zeroshot => "zeroshot",
        }
    }
}

/// What a node computes, with every setting it reads and its inputs by slot.
// Boxing the large variants would buy nothing: a plan holds one spec per node.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NodeSpec {
    Load(LoadNode),
    Init(InitNode),
    Train(TrainNode),
    Importance(ImportanceNode),
    /// Embeds a task's test gallery.
    Index(EmbedNode),
    /// Embeds a task's test queries.
    Query(EmbedNode),
    Evaluate(EvaluateNode),
    Zeroshot(ZeroshotNode),
}

impl NodeSpec {
    pub fn kind(&self) -> NodeKind {
        match self {
            NodeSpec::Load(_) => NodeKind::Load,
            NodeSpec::Init(_) => NodeKind::Init,
            NodeSpec::Train(_) => NodeKind::Train,
            NodeSpec::Importance(_) => NodeKind::Importance,
            NodeSpec::Index(_) => NodeKind::Index,
            NodeSpec::Query(_) => NodeKind::Query,
            NodeSpec::Evaluate(_) => NodeKind::Evaluate,
            NodeSpec::Zeroshot(_) => NodeKind::Zeroshot,
        }
    }

    /// The canonical form hashed into the key (and stored in `node.json`).
    pub fn canonical(&self) -> serde_json::Value {
        // Every field is a plain value or a map of them: serialization cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads one split of a dataset. The dataset enters by content, never by path:
/// the path is kept beside the plan ([`super::Plan::dataset_path`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadNode {
    /// The manifest's content hash (manifest and tables).
    pub dataset: String,
    pub split: String,
}

/// The untrained model a sequential chain starts from (its weights are those
/// `train(1)` starts from): evaluated as stage 0 for forward transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitNode {
    pub model: ModelSpec,
    pub seed: u64,
    pub device: DeviceSpec,
    /// The features' sizes come from the data.
    pub load: Slot,
}

/// How one training run learns: everything of `train` but the regularizer,
/// which depends on the stage, and the settings that do not change a model
/// (`decouple` shapes the chains, `log` the tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub loss: LossSpec,
    pub optimizer: OptimizerSpec,
    pub schedule_lr: LrSchedule,
    pub epochs: u32,
    pub batch: usize,
    pub negatives: Negatives,
    pub grad_clip: Option<f64>,
}

/// Learns one stage of a chain (or the joint model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainNode {
    pub schedule: Schedule,
    /// 1-based; the joint model is stage `T` of its one-node chain.
    pub stage: usize,
    /// The tasks learned now: one, or every task for the joint model.
    pub tasks: Vec<String>,
    /// The tasks learned before, in order (the replay memory draws from them).
    pub past: Vec<String>,
    pub model: ModelSpec,
    // Flattened so that `--explain` names a setting as the pipeline does
    // (`optimizer.lr`, not `recipe.optimizer.lr`).
    #[serde(flatten)]
    pub recipe: Recipe,
    /// This stage's regularizer terms with `on = query` resolved to the chain's
    /// branch; empty at stage 1 (nothing to protect yet) and for the joint model.
    pub regularizer: Vec<RegularizerSpec>,
    pub seed: u64,
    pub device: DeviceSpec,
    pub load: Slot,
    /// The model of the previous stage, which this one continues from.
    pub previous: Option<Slot>,
    /// The importance estimates the penalties read (one per estimate kind).
    pub importance: Vec<Slot>,
}

impl TrainNode {
    /// The name training logs and errors use: the task, or `joint`.
    pub fn label(&self) -> String {
        match self.schedule {
            Schedule::Joint => "joint".to_string(),
            Schedule::Sequential => self.tasks.join("+"),
        }
    }
}

/// Which importance a penalty weighs its parameters by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Estimate {
    /// EWC's empirical Fisher of the task loss.
    Fisher {
        accumulate: Accumulate,
        loss: LossSpec,
        batch: usize,
        seed: u64,
    },
    /// MAS's omega: the sensitivity of the squared output norm.
    Omega,
}

impl Estimate {
    /// The estimate a regularizer term needs, if any. Not `lambda` or `on`,
    /// which only weigh the estimate later.
    pub fn for_term(
        term: &RegularizerSpec,
        loss: &LossSpec,
        batch: usize,
        seed: u64,
    ) -> Option<Self> {
        match term {
            RegularizerSpec::Ewc { accumulate, .. } => Some(Estimate::Fisher {
                accumulate: *accumulate,
                loss: loss.clone(),
                batch,
                seed,
            }),
            RegularizerSpec::Mas { .. } => Some(Estimate::Omega),
            RegularizerSpec::Modx { .. }
            | RegularizerSpec::Distill { .. }
            | RegularizerSpec::Replay { .. }
            | RegularizerSpec::PseudoText { .. } => None,
        }
    }

    /// `ewc` or `mas`: the name in labels.
    pub fn name(&self) -> &'static str {
        match self {
            Estimate::Fisher { .. } => "ewc",
            Estimate::Omega => "mas",
        }
    }
}

/// Estimates parameter importance after a stage, accumulated over the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportanceNode {
    pub estimate: Estimate,
    pub stage: usize,
    pub task: String,
    pub device: DeviceSpec,
    /// The model the importance is measured at.
    pub model: Slot,
    pub load: Slot,
    /// The same estimate after the previous stage, accumulated into this one.
    pub previous: Option<Slot>,
}

/// Embeds a task's test items with one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedNode {
    pub task: String,
    /// Sorted, without repeats.
    pub modalities: Vec<Modality>,
    pub model: Slot,
    pub load: Slot,
}

/// Recall (and drift) of every task after one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateNode {
    pub stage: usize,
    /// The task learned at this stage, or `joint`.
    pub stage_task: String,
    /// Every task of the chain, in learning order.
    pub tasks: Vec<String>,
    /// How many of `tasks` are learned by this stage (all for the joint model):
    /// the union gallery holds these.
    pub seen: usize,
    pub recall: Vec<usize>,
    pub galleries: Vec<GalleryScope>,
    pub directions: Vec<DirectionInputs>,
    pub load: Slot,
}

/// One direction's embeddings, task by task (the order of `tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionInputs {
    pub direction: Direction,
    pub tasks: Vec<TaskInputs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInputs {
    /// The task's queries, embedded by this stage's model.
    pub query: Slot,
    /// The gallery the indexing policy searches.
    pub gallery: Slot,
    /// The stage whose model embedded that gallery.
    pub gallery_stage: usize,
    /// For a task learned before this stage: what its drift diagnostics compare.
    pub drift: Option<DriftInputs>,
}

/// Zero-shot classification after one stage: images against the prompts of every
/// class of a set, by one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroshotNode {
    pub stage: usize,
    /// The task learned at this stage, `init` or `joint`.
    pub stage_task: String,
    pub images: ZeroshotImages,
    /// A class set of the dataset the images come from.
    pub class_set: String,
    /// The K of top-K accuracy.
    pub top: Vec<usize>,
    /// The stage's model (of the first chain when training is decoupled).
    pub model: Slot,
    /// The pipeline's split (the model's input sizes, and the tasks' images).
    pub load: Slot,
}

impl ZeroshotNode {
    /// The class set as the result tables name it: `set` for the tasks' images,
    /// `dataset/set` for a downstream set's (class set names hold no `/`).
    pub fn shown_class_set(&self) -> String {
        match &self.images {
            ZeroshotImages::Tasks { .. } => self.class_set.clone(),
            ZeroshotImages::Downstream { name, .. } => format!("{name}/{}", self.class_set),
        }
    }
}

/// Which images a zero-shot node classifies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "of")]
pub enum ZeroshotImages {
    /// Every task's evaluated images, in learning order. The load node's key (the
    /// manifest's content hash) covers the prompts table.
    Tasks { tasks: Vec<String> },
    /// Every image of a downstream dataset, which enters by content hash (its path
    /// is kept beside the plan, as a load node's is).
    Downstream { dataset: String, name: String },
}

/// Both modalities of an old task's test items, by this stage's model and by the
/// model that learned the task: each pair of slots is that model's query and
/// index embeddings (one modality each when a chain serves one direction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftInputs {
    pub now: [Slot; 2],
    pub then: [Slot; 2],
}
