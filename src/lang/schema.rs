//! What a pipeline may say: the settings, which of them take calls, and the
//! defaults, written in the language itself so that docs and engine agree.

/// One setting of a pipeline.
pub struct SettingDoc {
    pub key: &'static str,
    /// Whether its value is a call whose parameters may be set by dotted path
    /// (`train.optimizer.lr = 1e-4`, or as a sweep axis).
    pub takes_call: bool,
    pub doc: &'static str,
}

const fn s(key: &'static str, takes_call: bool, doc: &'static str) -> SettingDoc {
    SettingDoc {
        key,
        takes_call,
        doc,
    }
}

/// Every setting, in the order the docs list them.
pub const SETTINGS: &[SettingDoc] = &[
    s(
        "dataset",
        false,
        "path of the dataset manifest, relative to the file that sets it",
    ),
    s("split", false, "a task split defined in the manifest"),
    s("tasks", false, "the tasks in the order they are learned"),
    s(
        "seed",
        false,
        "an integer, or a list of integers (one variant per seed)",
    ),
    s("schedule", false, "sequential | joint"),
    s("device", false, "cpu | cuda | \"cuda:N\""),
    s("index", false, "frozen | reindex"),
    s(
        "model.image",
        true,
        "mlp(hidden, embed, activation, dropout): the image branch",
    ),
    s(
        "model.text",
        true,
        "mlp(hidden, embed, activation, dropout): the text branch",
    ),
    s(
        "model.share",
        false,
        "how many top layers both branches share",
    ),
    s(
        "train.loss",
        true,
        "triplet(margin, negatives, reduction) | infonce(temperature, learnable)",
    ),
    s(
        "train.optimizer",
        true,
        "adamw(lr, weight_decay, beta1, beta2, eps) | sgd(lr, momentum, weight_decay)",
    ),
    s(
        "train.schedule_lr",
        true,
        "constant | step(every, gamma) | cosine(warmup)",
    ),
    s(
        "train.epochs",
        false,
        "passes over each task's training captions",
    ),
    s("train.batch", false, "positive pairs per batch"),
    s("train.negatives", false, "within_task | cross_task"),
    s(
        "train.regularizer",
        true,
        "none | ewc | mas | modx | distill | replay, combined with +",
    ),
    s(
        "train.decouple",
        false,
        "true: one model per retrieval direction",
    ),
    s(
        "train.grad_clip",
        false,
        "maximum global gradient norm, or none",
    ),
    s("train.log", false, "step | epoch: rows of the training log"),
    s("evaluate.recall", false, "the K of Recall@K"),
    s("evaluate.directions", false, "im2txt, txt2im"),
    s(
        "evaluate.gallery",
        false,
        "per_task (task known), union (task unknown)",
    ),
];

/// Defaults of every setting but `dataset`, `split` and `tasks`.
pub const DEFAULTS: &str = r#"pipeline "defaults" {
    seed     = 0
    schedule = sequential
    device   = cpu
    index    = frozen
    model {
        image = mlp     # call parameters default in the checker: hidden = [1024], embed = 512
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
        Some((head, _)) => setting(head).is_some_and(|s| s.takes_call),
        None => false,
    }
}
