//! What each kind of node computes: it reads its spec (the planner's decisions)
//! and its inputs' cache entries by slot, and writes its own output files.
//!
//! Entry layout: `load` → `split.json`; `train` → `model.safetensors`,
//! `log.jsonl`; `importance` → `importance.safetensors`; `index`/`query` →
//! `embeddings.safetensors` (tensors `image`, `text`: rows in the task's test
//! order); `evaluate` → `recall.jsonl`, `drift.jsonl`; `zeroshot` →
//! `zeroshot.jsonl`, `embeddings.safetensors` (tensors `prompts`, one row per
//! class, and `image`, every task's evaluated images in task order).

use super::cache::Cache;
use super::entries::{read_embeddings, write_jsonl};
use super::schedule::{Events, Runner};
use crate::data::classes::read_class_set;
use crate::data::{load_split, read_pseudo_texts, ClassSet, LoadedSplit, PseudoTexts};
use crate::eval::{self, Embedded, Evaluation, TaskEmbeddings};
use crate::lang::{Modality, RegularizerSpec, TrainSpec};
use crate::model::{load_checkpoint, save_checkpoint, CheckpointMeta, Model};
use crate::plan::{
    EmbedNode, Estimate, EvaluateNode, ImportanceNode, InitNode, LoadNode, NodeSpec, Plan, Slot,
    TrainNode, ZeroshotImages, ZeroshotNode,
};
use crate::results::ZeroshotRow;
use crate::train::importance::{self, Importance};
use crate::train::{train_stage, Previous, Stage};
use candle_core::{Device, Tensor};
use petgraph::graph::NodeIndex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// A split loaded at most once per run, whichever node asks first.
type SplitCell = OnceLock<Result<Arc<LoadedSplit>, String>>;

/// Runs nodes for the scheduler.
pub struct NodeRunner<'a> {
    plan: &'a Plan,
    cache: &'a Cache,
    device: Device,
    events: Option<&'a dyn Events>,
    splits: Mutex<HashMap<String, Arc<SplitCell>>>,
    /// Class sets by (load node key, class set name), read once per run.
    class_sets: Mutex<HashMap<(String, String), Arc<ClassSet>>>,
    /// Pseudo negative texts by load node key, read once per run.
    pseudo_texts: Mutex<HashMap<String, Arc<PseudoTexts>>>,
}

impl<'a> NodeRunner<'a> {
    pub fn new(plan: &'a Plan, cache: &'a Cache, device: Device) -> Self {
        NodeRunner {
            plan,
            cache,
            device,
            events: None,
            splits: Mutex::new(HashMap::new()),
            class_sets: Mutex::new(HashMap::new()),
            pseudo_texts: Mutex::new(HashMap::new()),
        }
    }

    /// Reports training steps to `events` (progress bars).
    pub fn with_events(mut self, events: &'a dyn Events) -> Self {
        self.events = Some(events);
        self
    }

    /// The input of `node` in `slot`.
    fn input(&self, node: NodeIndex, slot: Slot) -> Result<NodeIndex, String> {
        self.plan
            .inputs(node)
            .get(slot)
            .copied()
            .ok_or_else(|| format!("{} has no input {slot}", self.plan.node(node).label))
    }

    /// The split behind the `load` node in `slot` of `node`, loaded once per run
    /// whoever asks first.
    fn split(&self, node: NodeIndex, slot: Slot) -> Result<Arc<LoadedSplit>, String> {
        self.split_of(self.input(node, slot)?)
    }

    /// Reads the split of a `load` node now (it is kept for the nodes that need it),
    /// so that invalid data is found before anything is computed.
    fn preload(&self, load: NodeIndex) -> Result<(), String> {
        self.split_of(load).map(|_| ())
    }

    /// Reads now the split of every `load` node that a node `needed` marks is
    /// or reads, so that invalid data is found before anything is computed.
    pub fn preload_needed(&self, needed: &[bool]) -> Result<(), String> {
        for (i, node) in self.plan.nodes() {
            let used = self
                .plan
                .graph
                .neighbors_directed(i, petgraph::Direction::Outgoing)
                .any(|d| needed[d.index()]);
            if matches!(node.spec, NodeSpec::Load(_)) && (used || needed[i.index()]) {
                self.preload(i)?;
            }
        }
        Ok(())
    }

    fn split_of(&self, load: NodeIndex) -> Result<Arc<LoadedSplit>, String> {
        let n = self.plan.node(load);
        let NodeSpec::Load(spec) = &n.spec else {
            return Err(format!("{} is not a load node", n.label));
        };
        let cell = self
            .splits
            .lock()
            .map_err(|_| "poisoned")?
            .entry(n.key.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| self.read_split(spec).map(Arc::new))
            .clone()
    }

    fn read_split(&self, spec: &LoadNode) -> Result<LoadedSplit, String> {
        let manifest = self.plan.dataset_manifest(&spec.dataset)?;
        load_split(&manifest, &spec.split).map_err(|e| e.to_string())
    }

    /// The class set `name` of the dataset behind the `load` node in `slot`.
    fn class_set(
        &self,
        node: NodeIndex,
        slot: Slot,
        name: &str,
        split: &LoadedSplit,
    ) -> Result<Arc<ClassSet>, String> {
        let load = self.plan.node(self.input(node, slot)?);
        let key = (load.key.clone(), name.to_string());
        if let Some(set) = self.class_sets.lock().map_err(|_| "poisoned")?.get(&key) {
            return Ok(set.clone());
        }
        let NodeSpec::Load(spec) = &load.spec else {
            return Err(format!("{} is not a load node", load.label));
        };
        let manifest = self.plan.dataset_manifest(&spec.dataset)?;
        let set = read_class_set(&manifest, name, split.text_dim).map_err(|e| e.to_string())?;
        if set.image_class.len() != split.image_ids.len() {
            return Err(format!(
                "{}: the images table changed while the run read it",
                manifest.path.display()
            ));
        }
        let set = Arc::new(set);
        self.class_sets
            .lock()
            .map_err(|_| "poisoned")?
            .insert(key, set.clone());
        Ok(set)
    }

    /// The pseudo negative texts of the dataset behind the `load` node in `slot`.
    fn pseudo_texts(
        &self,
        node: NodeIndex,
        slot: Slot,
        split: &LoadedSplit,
    ) -> Result<Arc<PseudoTexts>, String> {
        let load = self.plan.node(self.input(node, slot)?);
        // Held while reading, so two train nodes never read the table twice.
        let mut read = self.pseudo_texts.lock().map_err(|_| "poisoned")?;
        if let Some(texts) = read.get(&load.key) {
            return Ok(texts.clone());
        }
        let NodeSpec::Load(spec) = &load.spec else {
            return Err(format!("{} is not a load node", load.label));
        };
        let manifest = self.plan.dataset_manifest(&spec.dataset)?;
        let texts = read_pseudo_texts(&manifest, &split.image_ids, split.text_dim)
            .map_err(|e| e.to_string())?;
        let texts = Arc::new(texts);
        read.insert(load.key.clone(), texts.clone());
        Ok(texts)
    }

    /// The model an `init` or `train` node in `slot` of `node` made.
    fn model(&self, node: NodeIndex, slot: Slot, split: &LoadedSplit) -> Result<Model, String> {
        let maker = self.plan.node(self.input(node, slot)?);
        let spec = match &maker.spec {
            NodeSpec::Train(t) => &t.model,
            NodeSpec::Init(i) => &i.model,
            NodeSpec::Load(_)
            | NodeSpec::Importance(_)
            | NodeSpec::Index(_)
            | NodeSpec::Query(_)
            | NodeSpec::Evaluate(_)
            | NodeSpec::Zeroshot(_) => {
                return Err(format!("{} makes no model", maker.label));
            }
        };
        let path = self.cache.entry(&maker.key).join("model.safetensors");
        let (tensors, _) =
            load_checkpoint(&path, "model", &self.device).map_err(|e| e.to_string())?;
        Model::with_values(
            spec,
            split.image_dim,
            split.text_dim,
            &tensors,
            &self.device,
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The importance estimate an `importance` node in `slot` of `node` made.
    fn importance_of(&self, node: NodeIndex, slot: Slot) -> Result<Importance, String> {
        let key = &self.plan.node(self.input(node, slot)?).key;
        Importance::load(
            &self.cache.entry(key).join("importance.safetensors"),
            &self.device,
        )
        .map_err(|e| e.to_string())
    }

    fn metadata(&self, node: NodeIndex, what: &str, split: &LoadedSplit) -> CheckpointMeta {
        let n = self.plan.node(node);
        CheckpointMeta::new(
            what,
            &n.key,
            n.spec.canonical(),
            split.image_dim,
            split.text_dim,
        )
    }

    fn init(&self, node: NodeIndex, spec: &InitNode, out: &Path) -> Result<(), String> {
        let split = self.split(node, spec.load)?;
        // The same draws as the initialisation of `train(1)` (no learnable scale:
        // it does not enter the embeddings).
        let model = Model::new(
            &spec.model,
            split.image_dim,
            split.text_dim,
            spec.seed,
            None,
            &self.device,
        )
        .map_err(|e| e.to_string())?;
        save_checkpoint(
            &out.join("model.safetensors"),
            &model.named_tensors(),
            &self.metadata(node, "model", &split),
        )
        .map_err(|e| e.to_string())
    }

    fn train(&self, node: NodeIndex, spec: &TrainNode, out: &Path) -> Result<(), String> {
        let split = self.split(node, spec.load)?;
        let tasks = spec
            .tasks
            .iter()
            .map(|t| split.task(t).map(|r| r.train_captions.as_slice()))
            .collect::<Result<Vec<_>, _>>()?;
        let past = spec
            .past
            .iter()
            .map(|t| {
                split
                    .task(t)
                    .map(|r| (t.as_str(), r.train_captions.as_slice()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let previous_model = spec
            .previous
            .map(|slot| self.model(node, slot, &split))
            .transpose()?;
        let importances = spec
            .importance
            .iter()
            .map(|&slot| self.importance_of(node, slot))
            .collect::<Result<Vec<_>, _>>()?;
        let pseudo_texts = if spec
            .regularizer
            .iter()
            .any(|r| matches!(r, RegularizerSpec::PseudoText { .. }))
        {
            Some(self.pseudo_texts(node, spec.load, &split)?)
        } else {
            None
        };
        let on_step = |done: usize, total: usize| {
            if let Some(events) = self.events {
                events.progress(node, done, total);
            }
        };
        let r = &spec.recipe;
        let train = TrainSpec {
            loss: r.loss.clone(),
            optimizer: r.optimizer.clone(),
            schedule_lr: r.schedule_lr.clone(),
            epochs: r.epochs,
            batch: r.batch,
            negatives: r.negatives,
            regularizer: spec.regularizer.clone(),
            decouple: false,
            grad_clip: r.grad_clip,
            log: crate::lang::LogEvery::Step,
        };
        let stage = Stage {
            on_step: Some(&on_step),
            model: &spec.model,
            train: &train,
            schedule: spec.schedule,
            seed: spec.seed,
            stage: spec.stage,
            label: spec.label(),
            regularizer: &spec.regularizer,
            data: split.pairs(),
            pseudo_texts: pseudo_texts.as_deref(),
            tasks,
            past,
        };
        let previous = previous_model.as_ref().map(|model| Previous {
            model,
            importance: importances.iter().collect(),
        });
        let trained =
            train_stage(&stage, previous.as_ref(), &self.device).map_err(|e| e.to_string())?;
        save_checkpoint(
            &out.join("model.safetensors"),
            &trained.model.named_tensors(),
            &self.metadata(node, "model", &split),
        )
        .map_err(|e| e.to_string())?;
        write_jsonl(&out.join("log.jsonl"), &trained.log)
    }

    fn importance(&self, node: NodeIndex, spec: &ImportanceNode, out: &Path) -> Result<(), String> {
        let split = self.split(node, spec.load)?;
        let model = self.model(node, spec.model, &split)?;
        let previous = spec
            .previous
            .map(|slot| self.importance_of(node, slot))
            .transpose()?;
        let task = split.task(&spec.task)?;
        let estimate = match &spec.estimate {
            Estimate::Fisher {
                accumulate,
                loss,
                batch,
                seed,
            } => importance::fisher(
                &model,
                &split.pairs(),
                &task.train_captions,
                loss,
                *batch,
                *seed,
                previous.as_ref(),
                *accumulate,
            ),
            Estimate::Omega => importance::omega(
                &model,
                &split.pairs(),
                &task.train_captions,
                previous.as_ref(),
            ),
        }
        .map_err(|e| e.to_string())?;
        let n = self.plan.node(node);
        estimate
            .save(
                &out.join("importance.safetensors"),
                &n.key,
                n.spec.canonical(),
                &model,
            )
            .map_err(|e| e.to_string())
    }

    fn embed(&self, node: NodeIndex, spec: &EmbedNode, out: &Path) -> Result<(), String> {
        let split = self.split(node, spec.load)?;
        let model = self.model(node, spec.model, &split)?;
        let task = split.task(&spec.task)?;
        let mut tensors = Vec::new();
        for &modality in &spec.modalities {
            let (rows, features, dim) = match modality {
                Modality::Image => (&task.test_images, &split.image_features, split.image_dim),
                Modality::Text => (&task.test_captions, &split.caption_features, split.text_dim),
            };
            if dim != model.input_dim(modality) {
                return Err(format!(
                    "{} features are {dim}-d but the model reads {}-d",
                    modality.name(),
                    model.input_dim(modality)
                ));
            }
            let embedded = model
                .embed_rows(modality, &features[..], rows)
                .map_err(|e| e.to_string())?;
            let width = embedded.len() / rows.len().max(1);
            let t = Tensor::from_vec(embedded, (rows.len(), width), &Device::Cpu)
                .map_err(|e| e.to_string())?;
            tensors.push((modality.name().to_string(), t));
        }
        save_checkpoint(
            &out.join("embeddings.safetensors"),
            &tensors,
            &self.metadata(node, "embeddings", &split),
        )
        .map_err(|e| e.to_string())
    }

    fn evaluate(&self, node: NodeIndex, spec: &EvaluateNode, out: &Path) -> Result<(), String> {
        let split = self.split(node, spec.load)?;
        let (mut recall, mut drift) = (Vec::new(), Vec::new());
        // One direction at a time, each input read once for it: only one
        // direction's embeddings are in memory at once (they grow with the test
        // sets; docs/PERFORMANCE.md). Rows come out in direction order, as
        // `eval::evaluate` writes them for several directions.
        for d in &spec.directions {
            let mut read: HashMap<Slot, Embedded> = HashMap::new();
            for t in &d.tasks {
                let drift = t.drift.iter().flat_map(|d| d.now.iter().chain(&d.then));
                for &slot in [t.query, t.gallery].iter().chain(drift) {
                    if let std::collections::hash_map::Entry::Vacant(entry) = read.entry(slot) {
                        let key = &self.plan.node(self.input(node, slot)?).key;
                        entry.insert(read_embeddings(self.cache, key)?);
                    }
                }
            }
            let tasks = d
                .tasks
                .iter()
                .map(|t| TaskEmbeddings {
                    query: &read[&t.query],
                    gallery: &read[&t.gallery],
                    gallery_stage: t.gallery_stage,
                    drift: t
                        .drift
                        .as_ref()
                        .map(|d| (merged(&read, &d.now), merged(&read, &d.then))),
                })
                .collect();
            let (r, dr) = eval::evaluate(
                &split,
                &Evaluation {
                    stage: spec.stage,
                    stage_task: &spec.stage_task,
                    tasks: &spec.tasks,
                    seen: spec.seen,
                    recall: &spec.recall,
                    galleries: &spec.galleries,
                    directions: vec![(d.direction, tasks)],
                },
            )?;
            recall.extend(r);
            drift.extend(dr);
        }
        write_jsonl(&out.join("recall.jsonl"), &recall)?;
        write_jsonl(&out.join("drift.jsonl"), &drift)
    }
}

impl NodeRunner<'_> {
    /// Classifies images (every task's evaluated images, or every image of a
    /// downstream set) against the class set's prompts, all embedded by the stage's
    /// model.
    fn zeroshot(&self, node: NodeIndex, spec: &ZeroshotNode, out: &Path) -> Result<(), String> {
        let split = self.split(node, spec.load)?;
        let model = self.model(node, spec.model, &split)?;
        // (task, image features row-major, each image's class) per group of images.
        let mut groups: Vec<(String, Vec<f32>, Vec<u32>)> = Vec::new();
        let set = match &spec.images {
            ZeroshotImages::Tasks { tasks } => {
                let set = self.class_set(node, spec.load, &spec.class_set, &split)?;
                for task in tasks {
                    let test = &split.task(task)?.test_images;
                    let rows: Vec<usize> = test.iter().map(|&r| r as usize).collect();
                    let (features, labels) = labelled(
                        &rows,
                        &split.image_features,
                        split.image_dim,
                        &set,
                        &split.image_ids,
                    )?;
                    groups.push((task.clone(), features, labels));
                }
                set
            }
            ZeroshotImages::Downstream { dataset, name } => {
                let (images, set) = self.downstream(dataset, &spec.class_set, &split)?;
                let rows: Vec<usize> = (0..images.rows()).collect();
                let (features, labels) =
                    labelled(&rows, &images.features, images.dim, &set, &images.ids)?;
                groups.push((name.clone(), features, labels));
                Arc::new(set)
            }
        };
        let n_classes = set.classes.len();
        let prompts = model
            .embed_all(Modality::Text, &set.features, n_classes)
            .map_err(|e| e.to_string())?;
        let dim = prompts.len() / n_classes.max(1);
        let class_set = spec.shown_class_set();
        let mut rows = Vec::new();
        let mut all_images = Vec::new();
        for (task, features, labels) in groups {
            let images = model
                .embed_all(Modality::Image, &features, labels.len())
                .map_err(|e| e.to_string())?;
            let ranks = eval::zeroshot::class_ranks(&images, &prompts, dim, &labels);
            for &k in &spec.top {
                rows.push(ZeroshotRow {
                    stage: spec.stage,
                    stage_task: spec.stage_task.clone(),
                    class_set: class_set.clone(),
                    task: task.clone(),
                    k,
                    accuracy: eval::zeroshot::top_k_accuracy(&ranks, k),
                    n_images: labels.len(),
                    n_classes,
                });
            }
            all_images.extend(images);
        }
        let tensor = |data: Vec<f32>| {
            let n = data.len() / dim.max(1);
            Tensor::from_vec(data, (n, dim), &Device::Cpu).map_err(|e| e.to_string())
        };
        save_checkpoint(
            &out.join("embeddings.safetensors"),
            &[
                ("prompts".to_string(), tensor(prompts)?),
                ("image".to_string(), tensor(all_images)?),
            ],
            &self.metadata(node, "embeddings", &split),
        )
        .map_err(|e| e.to_string())?;
        write_jsonl(&out.join("zeroshot.jsonl"), &rows)
    }

    /// A downstream set's images table and class set, checked against the sizes
    /// of the pipeline's features.
    fn downstream(
        &self,
        dataset: &str,
        class_set: &str,
        split: &LoadedSplit,
    ) -> Result<(crate::data::tables::Table, ClassSet), String> {
        let manifest = self.plan.dataset_manifest(dataset)?;
        let images = manifest
            .images_path()
            .ok_or_else(|| format!("{}: names no images table", manifest.path.display()))?;
        let table = crate::data::read::read_table(&images, &[]).map_err(|e| e.to_string())?;
        if table.dim != split.image_dim {
            return Err(format!(
                "{}: {}-d image features, the pipeline's dataset {}-d: featurize both with the same encoder",
                images.display(),
                table.dim,
                split.image_dim
            ));
        }
        let set =
            crate::data::classes::load_class_set(&manifest, class_set, &table, split.text_dim)
                .map_err(|e| e.to_string())?;
        Ok((table, set))
    }
}

/// The features of image `rows` and their classes; an image without exactly one
/// class is an error that names it.
fn labelled(
    rows: &[usize],
    features: &[f32],
    dim: usize,
    set: &ClassSet,
    ids: &[String],
) -> Result<(Vec<f32>, Vec<u32>), String> {
    let mut gathered = Vec::with_capacity(rows.len() * dim);
    let mut labels = Vec::with_capacity(rows.len());
    for &r in rows {
        let class = set.image_class[r].ok_or_else(|| {
            format!(
                "image `{}` has no single value in the column of class set `{}`: zero-shot classification needs one class per image",
                ids[r], set.name
            )
        })?;
        labels.push(class);
        gathered.extend_from_slice(&features[r * dim..(r + 1) * dim]);
    }
    Ok((gathered, labels))
}

/// One model's embeddings of a task from several entries (its query and index
/// embeddings), modality by modality.
fn merged(read: &HashMap<Slot, Embedded>, slots: &[Slot]) -> Embedded {
    let mut out = Embedded::new();
    for slot in slots {
        for (modality, rows) in &read[slot] {
            out.entry(modality.clone()).or_insert_with(|| rows.clone());
        }
    }
    out
}

impl Runner for NodeRunner<'_> {
    fn run(&self, node: NodeIndex, out: &Path) -> Result<(), String> {
        match &self.plan.node(node).spec {
            NodeSpec::Load(_) => {
                let split = self.split_of(node)?;
                let text =
                    serde_json::to_string_pretty(&split.summary()).map_err(|e| e.to_string())?;
                std::fs::write(out.join("split.json"), text).map_err(|e| e.to_string())
            }
            NodeSpec::Init(spec) => self.init(node, spec, out),
            NodeSpec::Train(spec) => self.train(node, spec, out),
            NodeSpec::Importance(spec) => self.importance(node, spec, out),
            NodeSpec::Index(spec) | NodeSpec::Query(spec) => self.embed(node, spec, out),
            NodeSpec::Evaluate(spec) => self.evaluate(node, spec, out),
            NodeSpec::Zeroshot(spec) => self.zeroshot(node, spec, out),
        }
    }

    fn describe(&self, node: NodeIndex) -> serde_json::Value {
        let n = self.plan.node(node);
        serde_json::json!({
            "key": n.key,
            "kind": n.kind(),
            "label": n.label,
            "pipeline": self.plan.pipeline,
            "settings": n.spec.canonical(),
            "inputs": self.plan.inputs(node).iter().map(|&i| serde_json::json!({
                "key": self.plan.node(i).key, "label": self.plan.node(i).label, "kind": self.plan.node(i).kind(),
            })).collect::<Vec<_>>(),
            "lethe_version": env!("CARGO_PKG_VERSION"),
        })
    }
}
