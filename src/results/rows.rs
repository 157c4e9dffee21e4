//! The row types of the result tables, one per table, and their columns. `eval`
//! produces recall and drift rows (and caches them as JSON lines), `exec` writes
//! every table from them, and `report` reads them back. Counts and indices are
//! `usize` in a row and `uint64` in its table.

use super::schema::{Column, ResultRow};
use serde::{Deserialize, Serialize};

/// One measurement: a task's queries after a stage, one direction, gallery and K.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecallRow {
    pub stage: usize,
    pub stage_task: String,
    /// A task, or `all` for the pooled queries of every task seen (union only).
    pub eval_task: String,
    pub gallery: String,
    pub direction: String,
    pub k: usize,
    pub recall: f64,
    pub median_rank: f64,
    pub mean_rank: f64,
    pub n_queries: usize,
    pub gallery_size: usize,
}

impl ResultRow for RecallRow {
    const FILE: &'static str = "recall.arrow";
    const COLUMNS: &'static [Column<Self>] = &[
        Column::uint64("stage", |r| r.stage as u64, |r, v| r.stage = v as usize),
        Column::text("stage_task", |r| &r.stage_task, |r, v| r.stage_task = v),
        Column::text("eval_task", |r| &r.eval_task, |r, v| r.eval_task = v),
        Column::text("gallery", |r| &r.gallery, |r, v| r.gallery = v),
        Column::text("direction", |r| &r.direction, |r, v| r.direction = v),
        Column::uint64("k", |r| r.k as u64, |r, v| r.k = v as usize),
        Column::float64("recall", |r| r.recall, |r, v| r.recall = v),
        Column::float64("median_rank", |r| r.median_rank, |r, v| r.median_rank = v),
        Column::float64("mean_rank", |r| r.mean_rank, |r, v| r.mean_rank = v),
        Column::uint64(
            "n_queries",
            |r| r.n_queries as u64,
            |r, v| r.n_queries = v as usize,
        ),
        Column::uint64(
            "gallery_size",
            |r| r.gallery_size as u64,
            |r, v| r.gallery_size = v as usize,
        ),
    ];
}

/// One figure of the recall matrix: per seed (`statistic = value`), or its mean or
/// sample standard deviation over seeds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SummaryRow {
    /// `value`, `mean` or `std`.
    pub statistic: String,
    pub n_seeds: usize,
    pub direction: String,
    pub gallery: String,
    pub k: usize,
    /// `average`, `forgetting`, `bwt`, `fwt` or `total`.
    pub metric: String,
    pub formula: String,
    /// Null for the `std` of one seed.
    pub value: Option<f64>,
}

impl ResultRow for SummaryRow {
    const FILE: &'static str = "summary.arrow";
    const COLUMNS: &'static [Column<Self>] = &[
        Column::text("statistic", |r| &r.statistic, |r, v| r.statistic = v),
        Column::uint64(
            "n_seeds",
            |r| r.n_seeds as u64,
            |r, v| r.n_seeds = v as usize,
        ),
        Column::text("direction", |r| &r.direction, |r, v| r.direction = v),
        Column::text("gallery", |r| &r.gallery, |r, v| r.gallery = v),
        Column::uint64("k", |r| r.k as u64, |r, v| r.k = v as usize),
        Column::text("metric", |r| &r.metric, |r, v| r.metric = v),
        Column::text("formula", |r| &r.formula, |r, v| r.formula = v),
        Column::optional_float64("value", |r| r.value, |r, v| r.value = v),
    ];
}

/// One training step as training records it (an entry's `log.jsonl`), or one
/// epoch's mean (`train.log = epoch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub stage: usize,
    pub task: String,
    pub epoch: usize,
    pub step: usize,
    pub loss: f64,
    pub task_loss: f64,
    /// Each regularizer term as it enters the loss: a `term_<name>` column each
    /// (read back in the table's column order).
    pub terms: Vec<(String, f64)>,
    pub lr: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

/// A row of `train_log.arrow`: which model of the variant, and its step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainLogRow {
    /// `both`, or the direction a decoupled model serves.
    pub model: String,
    pub log: LogRow,
}

impl ResultRow for TrainLogRow {
    const FILE: &'static str = "train_log.arrow";
    const COLUMNS: &'static [Column<Self>] = &[
        Column::text("model", |r| &r.model, |r, v| r.model = v),
        Column::uint64(
            "stage",
            |r| r.log.stage as u64,
            |r, v| r.log.stage = v as usize,
        ),
        Column::text("task", |r| &r.log.task, |r, v| r.log.task = v),
        Column::uint64(
            "epoch",
            |r| r.log.epoch as u64,
            |r, v| r.log.epoch = v as usize,
        ),
        Column::uint64(
            "step",
            |r| r.log.step as u64,
            |r, v| r.log.step = v as usize,
        ),
        Column::float64("loss", |r| r.log.loss, |r, v| r.log.loss = v),
        Column::float64("task_loss", |r| r.log.task_loss, |r, v| r.log.task_loss = v),
        Column::named("term_", |r| &r.log.terms, |r, v| r.log.terms = v),
        Column::float64("lr", |r| r.log.lr, |r, v| r.log.lr = v),
        Column::float64("grad_norm", |r| r.log.grad_norm, |r, v| r.log.grad_norm = v),
        Column::float64("seconds", |r| r.log.seconds, |r, v| r.log.seconds = v),
    ];
}

/// One diagnostic of an old task after a stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftRow {
    pub stage: usize,
    pub stage_task: String,
    pub task: String,
    /// The stage that learned the task (whose model made the old embeddings).
    pub task_stage: usize,
    pub direction: String,
    pub metric: String,
    /// `image`, `text`, `cross` or `union`.
    pub modality: String,
    /// Null on an `unavailable` row.
    pub value: Option<f64>,
    /// Why a variant has no diagnostic (metric `unavailable`); empty otherwise.
    #[serde(default)]
    pub note: String,
}

impl ResultRow for DriftRow {
    const FILE: &'static str = "drift.arrow";
    const COLUMNS: &'static [Column<Self>] = &[
        Column::uint64("stage", |r| r.stage as u64, |r, v| r.stage = v as usize),
        Column::text("stage_task", |r| &r.stage_task, |r, v| r.stage_task = v),
        Column::text("task", |r| &r.task, |r, v| r.task = v),
        Column::uint64(
            "task_stage",
            |r| r.task_stage as u64,
            |r, v| r.task_stage = v as usize,
        ),
        Column::text("direction", |r| &r.direction, |r, v| r.direction = v),
        Column::text("metric", |r| &r.metric, |r, v| r.metric = v),
        Column::text("modality", |r| &r.modality, |r, v| r.modality = v),
        Column::optional_float64("value", |r| r.value, |r, v| r.value = v),
        Column::text("note", |r| &r.note, |r, v| r.note = v),
    ];
}

/// One gallery or query embedding an evaluation used (`--keep-embeddings`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddingRow {
    /// The evaluation the row served.
    pub stage: usize,
    /// The stage of the model that made the embedding.
    pub model_stage: usize,
    pub model: String,
    pub task: String,
    /// `image` or `text`.
    pub modality: String,
    /// `query`, `gallery` or `reference`.
    pub role: String,
    pub item_id: String,
    /// A caption's image, or an image's own id.
    pub image_id: String,
    /// L2-normalised.
    pub vector: Vec<f32>,
}

impl ResultRow for EmbeddingRow {
    const FILE: &'static str = "embeddings.arrow";
    const COLUMNS: &'static [Column<Self>] = &[
        Column::uint64("stage", |r| r.stage as u64, |r, v| r.stage = v as usize),
        Column::uint64(
            "model_stage",
            |r| r.model_stage as u64,
            |r, v| r.model_stage = v as usize,
        ),
        Column::text("model", |r| &r.model, |r, v| r.model = v),
        Column::text("task", |r| &r.task, |r, v| r.task = v),
        Column::text("modality", |r| &r.modality, |r, v| r.modality = v),
        Column::text("role", |r| &r.role, |r, v| r.role = v),
        Column::text("item_id", |r| &r.item_id, |r, v| r.item_id = v),
        Column::text("image_id", |r| &r.image_id, |r, v| r.image_id = v),
        Column::vector("vector", |r| &r.vector, |r, v| r.vector = v),
    ];
}

/// One zero-shot figure: a task's evaluated images classified against every class
/// of a set after a stage, top-K accuracy in percent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZeroshotRow {
    pub stage: usize,
    pub stage_task: String,
    pub class_set: String,
    pub task: String,
    pub k: usize,
    pub accuracy: f64,
    pub n_images: usize,
    pub n_classes: usize,
}

impl ResultRow for ZeroshotRow {
    const FILE: &'static str = "zeroshot.arrow";
    const COLUMNS: &'static [Column<Self>] = &[
        Column::uint64("stage", |r| r.stage as u64, |r, v| r.stage = v as usize),
        Column::text("stage_task", |r| &r.stage_task, |r, v| r.stage_task = v),
        Column::text("class_set", |r| &r.class_set, |r, v| r.class_set = v),
        Column::text("task", |r| &r.task, |r, v| r.task = v),
        Column::uint64("k", |r| r.k as u64, |r, v| r.k = v as usize),
        Column::float64("accuracy", |r| r.accuracy, |r, v| r.accuracy = v),
        Column::uint64(
            "n_images",
            |r| r.n_images as u64,
            |r, v| r.n_images = v as usize,
        ),
        Column::uint64(
            "n_classes",
            |r| r.n_classes as u64,
            |r, v| r.n_classes = v as usize,
        ),
    ];
}
