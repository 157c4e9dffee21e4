//! What each kind of node computes, reading its inputs' cache entries and
//! writing its own output files.
//!
//! Entry layout: `load` → `split.json`; `train` → `model.safetensors`,
//! `log.jsonl`; `importance` → `importance.safetensors`; `index`/`query` →
//! `embeddings.safetensors` (tensors `image`, `text`: rows in the task's test
//! order); `evaluate` → `recall.jsonl`.

use super::cache::Cache;
use super::schedule::{Events, Runner};
use crate::data::LoadedSplit;
use crate::lang::{Experiment, Schedule};
use crate::model::{load_checkpoint, save_checkpoint, CheckpointMeta, Modality, Model};
use crate::plan::{resolve_coverage, NodeKind, Plan};
use crate::train::importance::{self, Importance};
use crate::train::{train_stage, Previous, Stage};
use candle_core::{Device, Tensor};
use petgraph::graph::NodeIndex;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// Loads the split an experiment names (the data layer's job).
pub type Loader = dyn Fn(&Experiment) -> Result<LoadedSplit, String> + Sync;

/// Evaluates one `evaluate` node (the evaluation layer's job): given the node,
/// its experiment, the split and a way to read embedding entries, writes its rows.
pub type Evaluator = dyn Fn(&EvalContext) -> Result<(), String> + Sync;

/// What an evaluation needs.
pub struct EvalContext<'a> {
    pub plan: &'a Plan,
    pub node: NodeIndex,
    pub experiment: &'a Experiment,
    pub split: &'a LoadedSplit,
    pub cache: &'a Cache,
    pub out: &'a Path,
}

/// A split loaded at most once per run, whichever node asks first.
type SplitCell = OnceLock<Result<Arc<LoadedSplit>, String>>;

/// Runs nodes for the scheduler.
pub struct NodeRunner<'a> {
    pub plan: &'a Plan,
    pub cache: &'a Cache,
    pub device: Device,
    pub loader: &'a Loader,
    pub evaluator: &'a Evaluator,
    events: Option<&'a dyn Events>,
    splits: Mutex<HashMap<String, Arc<SplitCell>>>,
}

impl<'a> NodeRunner<'a> {
    pub fn new(
        plan: &'a Plan,
        cache: &'a Cache,
        device: Device,
        loader: &'a Loader,
        evaluator: &'a Evaluator,
    ) -> Self {
        NodeRunner {
            plan,
            cache,
            device,
            loader,
            evaluator,
            events: None,
            splits: Mutex::new(HashMap::new()),
        }
    }

    /// Reports training steps to `events` (progress bars).
    pub fn with_events(mut self, events: &'a dyn Events) -> Self {
        self.events = Some(events);
        self
    }

    fn experiment(&self, node: NodeIndex) -> &'a Experiment {
        // Every variant using a node agrees on everything the node depends on.
        &self.plan.experiments[self.plan.node(node).variants[0]]
    }

    /// The split behind a `load` node, loaded once per run whoever asks first.
    pub fn split(&self, load: NodeIndex) -> Result<Arc<LoadedSplit>, String> {
        let key = self.plan.node(load).key.clone();
        let cell = self
            .splits
            .lock()
            .map_err(|_| "poisoned")?
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| (self.loader)(self.experiment(load)).map(Arc::new))
            .clone()
    }

    fn input(&self, node: NodeIndex, kind: NodeKind) -> Result<NodeIndex, String> {
        self.plan
            .inputs(node)
            .into_iter()
            .find(|i| self.plan.node(*i).kind == kind)
            .ok_or_else(|| {
                format!(
                    "{} has no {} input",
                    self.plan.node(node).label,
                    kind.name()
                )
            })
    }

    fn model_of(&self, train: NodeIndex, split: &LoadedSplit) -> Result<Model, String> {
        let path = self
            .cache
            .entry(&self.plan.node(train).key)
            .join("model.safetensors");
        let (tensors, _) =
            load_checkpoint(&path, "model", &self.device).map_err(|e| e.to_string())?;
        Model::with_values(
            &self.experiment(train).model,
            split.image_dim,
            split.text_dim,
            &tensors,
            &self.device,
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn train(&self, node: NodeIndex, out: &Path) -> Result<(), String> {
        let n = self.plan.node(node);
        let e = self.experiment(node);
        let split = self.split(self.input(node, NodeKind::Load)?)?;
        let k = n.stage.unwrap_or(1);
        let (tasks, past, label, regularizer) = match e.schedule {
            Schedule::Joint => {
                let tasks = e
                    .tasks
                    .iter()
                    .map(|t| split.task(t).map(|r| r.train_captions.as_slice()))
                    .collect::<Result<Vec<_>, _>>()?;
                (tasks, Vec::new(), "joint".to_string(), Vec::new())
            }
            Schedule::Sequential => {
                let task = &e.tasks[k - 1];
                let past = e.tasks[..k - 1]
                    .iter()
                    .map(|t| {
                        split
                            .task(t)
                            .map(|r| (t.as_str(), r.train_captions.as_slice()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let regularizer = if k == 1 {
                    Vec::new()
                } else {
                    resolve_coverage(&e.train.regularizer, n.direction)
                };
                (
                    vec![split.task(task)?.train_captions.as_slice()],
                    past,
                    task.clone(),
                    regularizer,
                )
            }
        };
        let inputs = self.plan.inputs(node);
        let previous_model = inputs
            .iter()
            .find(|i| self.plan.node(**i).kind == NodeKind::Train)
            .map(|i| self.model_of(*i, &split))
            .transpose()?;
        let importances = inputs
            .iter()
            .filter(|i| self.plan.node(**i).kind == NodeKind::Importance)
            .map(|i| {
                Importance::load(
                    &self
                        .cache
                        .entry(&self.plan.node(*i).key)
                        .join("importance.safetensors"),
                    &self.device,
                )
                .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let on_step = |done: usize, total: usize| {
            if let Some(events) = self.events {
                events.progress(node, done, total);
            }
        };
        let stage = Stage {
            on_step: Some(&on_step),
            model: &e.model,
            train: &e.train,
            schedule: e.schedule,
            seed: e.seed,
            stage: k,
            label,
            regularizer: &regularizer,
            data: split.pairs(),
            tasks,
            past,
        };
        let previous = previous_model.as_ref().map(|model| Previous {
            model,
            importance: importances.iter().collect(),
        });
        let trained =
            train_stage(&stage, previous.as_ref(), &self.device).map_err(|e| e.to_string())?;
        let meta = CheckpointMeta::new(
            "model",
            &n.key,
            n.settings.clone(),
            split.image_dim,
            split.text_dim,
        );
        save_checkpoint(
            &out.join("model.safetensors"),
            &trained.model.named_tensors(),
            &meta,
        )
        .map_err(|e| e.to_string())?;
        let mut log = std::io::BufWriter::new(
            std::fs::File::create(out.join("log.jsonl")).map_err(|e| e.to_string())?,
        );
        for row in &trained.log {
            let line = serde_json::to_string(row).map_err(|e| e.to_string())?;
            writeln!(log, "{line}").map_err(|e| e.to_string())?;
        }
        log.flush().map_err(|e| e.to_string())
    }

    fn importance(&self, node: NodeIndex, out: &Path) -> Result<(), String> {
        let n = self.plan.node(node);
        let e = self.experiment(node);
        let split = self.split(self.input(node, NodeKind::Load)?)?;
        let model = self.model_of(self.input(node, NodeKind::Train)?, &split)?;
        let previous = self
            .plan
            .inputs(node)
            .into_iter()
            .find(|i| self.plan.node(*i).kind == NodeKind::Importance)
            .map(|i| {
                Importance::load(
                    &self
                        .cache
                        .entry(&self.plan.node(i).key)
                        .join("importance.safetensors"),
                    &self.device,
                )
            })
            .transpose()
            .map_err(|e| e.to_string())?;
        let task = split.task(&n.tasks[0])?;
        let accumulate = match n.settings["accumulate"].as_str() {
            Some("mean") => crate::lang::Accumulate::Mean,
            _ => crate::lang::Accumulate::Sum,
        };
        let estimate = match n.settings["method"].as_str() {
            Some("fisher") => importance::fisher(
                &model,
                &split.pairs(),
                &task.train_captions,
                &e.train.loss,
                e.train.batch,
                e.seed,
                previous.as_ref(),
                accumulate,
            ),
            _ => importance::omega(
                &model,
                &split.pairs(),
                &task.train_captions,
                previous.as_ref(),
            ),
        }
        .map_err(|e| e.to_string())?;
        estimate
            .save(
                &out.join("importance.safetensors"),
                &n.key,
                n.settings.clone(),
                &model,
            )
            .map_err(|e| e.to_string())
    }

    fn embed(&self, node: NodeIndex, out: &Path) -> Result<(), String> {
        let n = self.plan.node(node);
        let split = self.split(self.input(node, NodeKind::Load)?)?;
        let model = self.model_of(self.input(node, NodeKind::Train)?, &split)?;
        let task = split.task(&n.tasks[0])?;
        let mut tensors = Vec::new();
        for modality in n.settings["modalities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
        {
            let (m, rows, features, dim) = match modality {
                "image" => (
                    Modality::Image,
                    &task.test_images,
                    &split.image_features,
                    split.image_dim,
                ),
                _ => (
                    Modality::Text,
                    &task.test_captions,
                    &split.caption_features,
                    split.text_dim,
                ),
            };
            let mut gathered = Vec::with_capacity(rows.len() * dim);
            for &r in rows {
                gathered.extend_from_slice(&features[r as usize * dim..(r as usize + 1) * dim]);
            }
            let embedded = model
                .embed_all(m, &gathered, rows.len())
                .map_err(|e| e.to_string())?;
            let width = embedded.len() / rows.len().max(1);
            let t = Tensor::from_vec(embedded, (rows.len(), width), &Device::Cpu)
                .map_err(|e| e.to_string())?;
            tensors.push((modality.to_string(), t));
        }
        let meta = CheckpointMeta::new(
            "embeddings",
            &n.key,
            n.settings.clone(),
            split.image_dim,
            split.text_dim,
        );
        save_checkpoint(&out.join("embeddings.safetensors"), &tensors, &meta)
            .map_err(|e| e.to_string())
    }
}

/// Reads an `index`/`query` entry: modality name → (rows x dim) row-major floats.
pub fn read_embeddings(
    cache: &Cache,
    key: &str,
) -> Result<HashMap<String, (usize, Vec<f32>)>, String> {
    let path = cache.entry(key).join("embeddings.safetensors");
    let (tensors, _) =
        load_checkpoint(&path, "embeddings", &Device::Cpu).map_err(|e| e.to_string())?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let rows = t.dim(0).map_err(|e| e.to_string())?;
            let data = t
                .flatten_all()
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(|e| e.to_string())?;
            Ok((name, (rows, data)))
        })
        .collect()
}

impl Runner for NodeRunner<'_> {
    fn run(&self, node: NodeIndex, out: &Path) -> Result<(), String> {
        match self.plan.node(node).kind {
            NodeKind::Load => {
                let split = self.split(node)?;
                let text =
                    serde_json::to_string_pretty(&split.summary()).map_err(|e| e.to_string())?;
                std::fs::write(out.join("split.json"), text).map_err(|e| e.to_string())
            }
            NodeKind::Train => self.train(node, out),
            NodeKind::Importance => self.importance(node, out),
            NodeKind::Index | NodeKind::Query => self.embed(node, out),
            NodeKind::Evaluate => {
                let split = self.split(
                    self.input(node, NodeKind::Load)
                        .or_else(|_| self.load_of(node))?,
                )?;
                (self.evaluator)(&EvalContext {
                    plan: self.plan,
                    node,
                    experiment: self.experiment(node),
                    split: &split,
                    cache: self.cache,
                    out,
                })
            }
            NodeKind::Report => Err("the report is written by the run, not the scheduler".into()),
        }
    }

    fn describe(&self, node: NodeIndex) -> serde_json::Value {
        let n = self.plan.node(node);
        serde_json::json!({
            "key": n.key,
            "kind": n.kind,
            "label": n.label,
            "pipeline": self.plan.pipeline,
            "settings": n.settings,
            "inputs": self.plan.inputs(node).into_iter().map(|i| serde_json::json!({
                "key": self.plan.node(i).key, "label": self.plan.node(i).label, "kind": self.plan.node(i).kind,
            })).collect::<Vec<_>>(),
            "lethe_version": env!("CARGO_PKG_VERSION"),
        })
    }
}

impl NodeRunner<'_> {
    /// The load node an evaluation depends on (through its embedding inputs).
    fn load_of(&self, node: NodeIndex) -> Result<NodeIndex, String> {
        let first = self
            .plan
            .inputs(node)
            .into_iter()
            .next()
            .ok_or("an evaluation without inputs")?;
        self.input(first, NodeKind::Load)
    }
}
