//! What a pipeline may say: the settings, the calls some of them take (each
//! call's parameters with their types, ranges and defaults), the words of every
//! choice with the value each means, and the settings' defaults, written in the
//! language itself so that docs and engine agree.
//!
//! The checker reads every call and every word through these tables; nothing
//! here is repeated there.

mod signature;

pub use signature::{CallForm, Param, ParamDefault, ParamType, Range};
pub(crate) use signature::{CallTable, Choice, Signature};

use super::experiment::{
    Accumulate, Activation, Coverage, DeviceSpec, Direction, GalleryScope, IndexPolicy, LogEvery,
    Negatives, Reduction, Sampler, Schedule, TripletNegatives,
};
use signature::{call, choices, flag, number, whole, whole_computed, word};

/// One setting of a pipeline.
pub struct SettingDoc {
    pub key: &'static str,
    pub doc: &'static str,
}

const fn s(key: &'static str, doc: &'static str) -> SettingDoc {
    SettingDoc { key, doc }
}

/// Every setting, in the order the docs list them.
pub const SETTINGS: &[SettingDoc] = &[
    s(
        "dataset",
        "path of the dataset manifest, relative to the file that sets it",
    ),
    s("split", "a task split defined in the manifest"),
    s("tasks", "the tasks in the order they are learned"),
    s(
        "seed",
        "an integer, or a list of integers (one variant per seed)",
    ),
    s("schedule", "sequential | joint"),
    s("device", "cpu | cuda | \"cuda:N\""),
    s("index", "frozen | reindex"),
    s("model.image", "the image branch: a call of `BRANCH_CALLS`"),
    s("model.text", "the text branch: a call of `BRANCH_CALLS`"),
    s("model.share", "how many top layers both branches share"),
    s("train.loss", "the loss: a call of `LOSS_CALLS`"),
    s(
        "train.optimizer",
        "the optimizer: a call of `OPTIMIZER_CALLS`",
    ),
    s(
        "train.schedule_lr",
        "the learning-rate schedule: a call of `LR_SCHEDULE_CALLS`",
    ),
    s("train.epochs", "passes over each task's training captions"),
    s("train.batch", "positive pairs per batch"),
    s("train.negatives", "within_task | cross_task"),
    s(
        "train.regularizer",
        "calls of `REGULARIZER_CALLS`, combined with +",
    ),
    s("train.decouple", "true: one model per retrieval direction"),
    s("train.grad_clip", "maximum global gradient norm, or none"),
    s("train.log", "step | epoch: rows of the training log"),
    s("evaluate.recall", "the K of Recall@K"),
    s("evaluate.directions", "im2txt, txt2im"),
    s(
        "evaluate.gallery",
        "per_task (task known), union (task unknown)",
    ),
    s(
        "evaluate.zeroshot",
        "class sets of the manifest's `classes:` for zero-shot classification, or []",
    ),
    s(
        "evaluate.downstream",
        "paths of other dataset manifests with `classes:`: downstream zero-shot sets, or []",
    ),
];

/// Defaults of every setting but `dataset`, `split` and `tasks`.
pub const DEFAULTS: &str = r#"pipeline "defaults" {
    seed     = 0
    schedule = sequential
    device   = cpu
    index    = frozen
    model {
        image = mlp     # call parameters default in their signatures below
        text  = mlp
        share = 0
    }
    train {
        loss        = triplet
        optimizer   = adamw
        schedule_lr = constant
        epochs      = 20
        batch       = 128
        negatives   = within_task
        regularizer = none
        decouple    = false
        grad_clip   = 2.0
        log         = epoch
    }
    evaluate {
        recall     = [1, 5, 10]
        directions = [im2txt, txt2im]
        gallery    = [per_task, union]
        zeroshot   = []
        downstream = []
    }
}
"#;

/// Settings a pipeline must give itself.
pub const REQUIRED: &[&str] = &["dataset", "split", "tasks"];

pub fn setting(key: &str) -> Option<&'static SettingDoc> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// A setting, or a parameter path of a call-valued setting (`train.optimizer.lr`).
/// Whether the parameter exists is for the checker to say.
pub fn is_known_path(key: &str) -> bool {
    if setting(key).is_some() {
        return true;
    }
    match key.rsplit_once('.') {
        Some((head, _)) => takes_call(head),
        None => false,
    }
}

/// Whether a setting's value is a call whose parameters may be set by dotted path
/// (`train.optimizer.lr = 1e-4`, or as a sweep axis).
pub fn takes_call(key: &str) -> bool {
    call_forms().any(|f| f.settings.contains(&key))
}

/// Every call form of every call-valued setting, in table order.
pub fn call_forms() -> impl Iterator<Item = CallForm> {
    BRANCH_CALLS
        .erased()
        .chain(LOSS_CALLS.erased())
        .chain(OPTIMIZER_CALLS.erased())
        .chain(LR_SCHEDULE_CALLS.erased())
        .chain(REGULARIZER_CALLS.erased())
}

// The words of every choice and the value each means, in the order messages list them.
choices! {
    bool { "true" => true, "false" => false }
    Schedule { "sequential" => Schedule::Sequential, "joint" => Schedule::Joint }
    // `"cuda:N"` is read after these words, by the checker.
    DeviceSpec { "cpu" => DeviceSpec::Cpu, "cuda" => DeviceSpec::Cuda(0) }
    IndexPolicy { "frozen" => IndexPolicy::Frozen, "reindex" => IndexPolicy::Reindex }
    Activation { "relu" => Activation::Relu, "gelu" => Activation::Gelu, "tanh" => Activation::Tanh }
    TripletNegatives { "hardest" => TripletNegatives::Hardest, "all" => TripletNegatives::All }
    Reduction { "sum" => Reduction::Sum, "mean" => Reduction::Mean }
    Negatives { "within_task" => Negatives::WithinTask, "cross_task" => Negatives::CrossTask }
    Accumulate { "sum" => Accumulate::Sum, "mean" => Accumulate::Mean }
    Coverage {
        "both" => Coverage::Both,
        "image" => Coverage::Image,
        "text" => Coverage::Text,
        "query" => Coverage::Query,
    }
    Sampler { "reservoir" => Sampler::Reservoir, "balanced" => Sampler::Balanced }
    LogEvery { "step" => LogEvery::Step, "epoch" => LogEvery::Epoch }
    Direction { "im2txt" => Direction::Im2txt, "txt2im" => Direction::Txt2im }
    GalleryScope { "per_task" => GalleryScope::PerTask, "union" => GalleryScope::Union }
}

// Limits that keep a typo from asking for absurd work.
pub(crate) const MAX_WIDTH: u64 = 65_536;
pub(crate) const MAX_LAYERS: u64 = 16;
pub(crate) const MAX_EPOCHS: u64 = 100_000;
pub(crate) const MAX_BATCH: u64 = 1 << 20;
pub(crate) const MAX_MEMORY: u64 = 100_000_000;
const MAX_PSEUDO_PER_IMAGE: u64 = crate::data::manifest::MAX_PSEUDO_PER_IMAGE as u64;

// The call forms of each call-valued setting. The checker matches on each table's
// kind to build the typed value: adding a form here is one entry, plus one arm there.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchCall {
    Mlp,
}

pub(crate) const BRANCH_CALLS: CallTable<BranchCall> = CallTable {
    settings: &["model.image", "model.text"],
    forms: &[call(
        "mlp",
        BranchCall::Mlp,
        &[
            Param {
                name: "hidden",
                accepts: ParamType::WholeList {
                    min: 1,
                    max: MAX_WIDTH,
                    max_len: MAX_LAYERS as usize,
                    item: "a hidden size",
                    unit: "layers",
                },
                default: ParamDefault::WholeList(&[1024]),
            },
            whole("embed", 1, MAX_WIDTH, 512),
            word("activation", Activation::WORDS, "relu"),
            number("dropout", Range::UnitOpen, 0.0),
        ],
    )],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossCall {
    Triplet,
    Infonce,
}

pub(crate) const LOSS_CALLS: CallTable<LossCall> = CallTable {
    settings: &["train.loss"],
    forms: &[
        call(
            "triplet",
            LossCall::Triplet,
            &[
                number("margin", Range::NonNegative, 0.2),
                word("negatives", TripletNegatives::WORDS, "hardest"),
                word("reduction", Reduction::WORDS, "sum"),
            ],
        ),
        call(
            "infonce",
            LossCall::Infonce,
            &[
                number("temperature", Range::Positive, 0.07),
                flag("learnable", false),
            ],
        ),
    ],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptimizerCall {
    Adamw,
    Sgd,
}

pub(crate) const OPTIMIZER_CALLS: CallTable<OptimizerCall> = CallTable {
    settings: &["train.optimizer"],
    forms: &[
        call(
            "adamw",
            OptimizerCall::Adamw,
            &[
                number("lr", Range::Positive, 2e-4),
                number("weight_decay", Range::NonNegative, 1e-4),
                number("beta1", Range::UnitOpen, 0.9),
                number("beta2", Range::UnitOpen, 0.999),
                number("eps", Range::Positive, 1e-8),
            ],
        ),
        call(
            "sgd",
            OptimizerCall::Sgd,
            &[
                number("lr", Range::Positive, 0.1),
                number("momentum", Range::UnitOpen, 0.9),
                number("weight_decay", Range::NonNegative, 0.0),
            ],
        ),
    ],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LrScheduleCall {
    Constant,
    Step,
    Cosine,
}

pub(crate) const LR_SCHEDULE_CALLS: CallTable<LrScheduleCall> = CallTable {
    settings: &["train.schedule_lr"],
    forms: &[
        call("constant", LrScheduleCall::Constant, &[]),
        call(
            "step",
            LrScheduleCall::Step,
            &[
                whole("every", 1, MAX_EPOCHS, 10),
                number("gamma", Range::UnitPositive, 0.1),
            ],
        ),
        call(
            "cosine",
            LrScheduleCall::Cosine,
            &[number("warmup", Range::UnitOpen, 0.0)],
        ),
    ],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegularizerCall {
    /// Plain fine-tuning: no term.
    None,
    Ewc,
    Mas,
    Modx,
    Distill,
    Replay,
    PseudoText,
}

pub(crate) const REGULARIZER_CALLS: CallTable<RegularizerCall> = CallTable {
    settings: &["train.regularizer"],
    forms: &[
        call("none", RegularizerCall::None, &[]),
        call(
            "ewc",
            RegularizerCall::Ewc,
            &[
                number("lambda", Range::NonNegative, 1.0),
                word("accumulate", Accumulate::WORDS, "sum"),
                word("on", Coverage::WORDS, "both"),
            ],
        ),
        call(
            "mas",
            RegularizerCall::Mas,
            &[
                number("lambda", Range::NonNegative, 1.0),
                word("on", Coverage::WORDS, "both"),
            ],
        ),
        call(
            "modx",
            RegularizerCall::Modx,
            &[
                number("alpha", Range::NonNegative, 20.0),
                number("temperature", Range::Positive, 1.0),
                flag("correct", true),
            ],
        ),
        call(
            "distill",
            RegularizerCall::Distill,
            &[
                number("lambda", Range::NonNegative, 1.0),
                number("temperature", Range::Positive, 1.0),
            ],
        ),
        call(
            "replay",
            RegularizerCall::Replay,
            &[
                whole("memory", 1, MAX_MEMORY, 200),
                whole_computed("per_batch", 1, MAX_BATCH, "16, or `memory` when smaller"),
                word("sampler", Sampler::WORDS, "reservoir"),
            ],
        ),
        call(
            "pseudo_text",
            RegularizerCall::PseudoText,
            &[
                whole("per_image", 1, MAX_PSEUDO_PER_IMAGE, 1),
                number("weight", Range::NonNegative, 1.0),
            ],
        ),
    ],
};
