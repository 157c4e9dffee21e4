//! The result-tables step: gathers every variant's evaluation rows, training logs and
//! diagnostics from the cache into the run directory's Arrow tables, each built
//! through its schema in [`crate::results`].

use super::cache::Cache;
use super::entries::{read_embeddings, read_jsonl};
use crate::data::classes::read_class_set;
use crate::data::Manifest;
use crate::eval::metrics::{self, mean_std};
use crate::lang::{LogEvery, Schedule};
use crate::plan::{NodeKind, NodeSpec, Plan, ZeroshotImages};
use crate::results::{
    DriftRow, EmbeddingRow, Identity, RecallRow, SummaryRow, TableWriter, TrainLogRow, ZeroshotRow,
};
use crate::train::LogRow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The identifying columns of variant `v`'s rows.
fn identify(run_id: &str, plan: &Plan, v: usize) -> Identity {
    let e = &plan.experiments[v];
    Identity {
        run_id: run_id.to_string(),
        pipeline: plan.pipeline.clone(),
        variant: e.label.clone(),
        seed: Some(e.seed),
        axes: e.axes.clone(),
    }
}

/// Every swept setting of the plan, in axis order: each table has a column for each,
/// rows or not.
fn swept_settings(plan: &Plan) -> Vec<String> {
    let mut axes: Vec<String> = Vec::new();
    for (axis, _) in plan.experiments.iter().flat_map(|e| &e.axes) {
        if !axes.contains(axis) {
            axes.push(axis.clone());
        }
    }
    axes
}

/// Where a run's tables go and what they record.
pub struct TablesTarget<'a> {
    pub dir: &'a Path,
    pub run_id: &'a str,
    /// The pipeline file, recorded in the tables' metadata.
    pub file: &'a Path,
    pub keep_embeddings: bool,
}

/// Writes recall, summary, train_log and drift tables (and embeddings when asked).
/// Returns the variants (with their seed) that have no results because a node they
/// need failed (under `--keep-going`): the caller says so, never the tables alone.
pub fn write_report(
    plan: &Plan,
    cache: &Cache,
    target: &TablesTarget,
) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    let (dir, run_id) = (target.dir, target.run_id.to_string());
    let mut metadata = HashMap::new();
    metadata.insert("lethe.run_id".to_string(), run_id.clone());
    metadata.insert("lethe.pipeline".to_string(), plan.pipeline.clone());
    metadata.insert(
        "lethe.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    metadata.insert("lethe.file".to_string(), target.file.display().to_string());
    let axes = swept_settings(plan);
    let mut recall = TableWriter::<RecallRow>::new(&axes);
    let mut drift = TableWriter::<DriftRow>::new(&axes);
    let mut log = TableWriter::<TrainLogRow>::new(&axes);
    let mut zeroshot = TableWriter::<ZeroshotRow>::new(&axes);
    let mut per_seed: Vec<(usize, Vec<metrics::Figure>)> = Vec::new();
    for v in 0..plan.experiments.len() {
        let e = &plan.experiments[v];
        let evaluations = &plan.variant_nodes[v].evaluations;
        // Variants with a failed node (under --keep-going) have no results.
        if evaluations
            .iter()
            .chain(&plan.variant_nodes[v].zeroshot)
            .any(|i| !cache.contains(&plan.node(*i).key))
        {
            missing.push(format!("\"{}\"", plan.variant_name(v)));
            continue;
        }
        let identity = identify(&run_id, plan, v);
        let mut rows: Vec<RecallRow> = Vec::new();
        let mut diagnosed = false;
        for &i in evaluations {
            let entry = cache.entry(&plan.node(i).key);
            rows.extend(read_jsonl::<RecallRow>(&entry.join("recall.jsonl"))?);
            for d in read_jsonl::<DriftRow>(&entry.join("drift.jsonl"))? {
                drift.push(&identity, &d);
                diagnosed = true;
            }
        }
        if !diagnosed {
            // Say why rather than leave a hole.
            let note = match e.schedule {
                Schedule::Joint => "joint training: no task is learned before another",
                Schedule::Sequential => "one task: no old task to measure",
            };
            for d in &e.evaluate.directions {
                drift.push(
                    &identity,
                    &DriftRow {
                        stage: e.tasks.len(),
                        stage_task: e.tasks.last().cloned().unwrap_or_default(),
                        direction: d.name().to_string(),
                        metric: "unavailable".to_string(),
                        note: note.to_string(),
                        ..DriftRow::default()
                    },
                );
            }
        }
        for r in &rows {
            recall.push(&identity, r);
        }
        let sequential = e.schedule == Schedule::Sequential;
        let mut figures = metrics::figures(&rows, &e.tasks, sequential);
        // The tasks' accuracies get the matrix figures over the tasks; a downstream
        // set's, its final accuracy (`average` over its one "task").
        let mut on_tasks: Vec<ZeroshotRow> = Vec::new();
        let mut downstream: BTreeMap<String, Vec<ZeroshotRow>> = BTreeMap::new();
        for &i in &plan.variant_nodes[v].zeroshot {
            let node = plan.node(i);
            let rows = read_jsonl::<ZeroshotRow>(&cache.entry(&node.key).join("zeroshot.jsonl"))?;
            for r in &rows {
                zeroshot.push(&identity, r);
            }
            match &node.spec {
                NodeSpec::Zeroshot(z) => match &z.images {
                    ZeroshotImages::Tasks { .. } => on_tasks.extend(rows),
                    ZeroshotImages::Downstream { name, .. } => {
                        downstream.entry(name.clone()).or_default().extend(rows)
                    }
                },
                _ => return Err(format!("{} is not a zero-shot node", node.label)),
            }
        }
        figures.extend(metrics::zeroshot_figures(&on_tasks, &e.tasks, sequential));
        for (name, rows) in downstream {
            figures.extend(metrics::zeroshot_figures(&rows, &[name], false));
        }
        per_seed.push((v, figures));
        for &i in &plan.variant_nodes[v].trainings {
            let node = plan.node(i);
            let model = node.direction.map_or("both", |d| d.name());
            let steps = read_jsonl::<LogRow>(&cache.entry(&node.key).join("log.jsonl"))?;
            for row in aggregate(&steps, e.train.log) {
                log.push(&identity, &log_row(model, row));
            }
        }
    }
    let summary = summary_table(plan, &run_id, &axes, &per_seed);
    recall.write(&dir.join("recall.arrow"), &metadata)?;
    summary.write(&dir.join("summary.arrow"), &metadata)?;
    log.write(&dir.join("train_log.arrow"), &metadata)?;
    drift.write(&dir.join("drift.arrow"), &metadata)?;
    if zeroshot.rows() > 0 {
        zeroshot.write(&dir.join("zeroshot.arrow"), &metadata)?;
    }
    if target.keep_embeddings {
        write_embeddings(plan, cache, dir, &run_id, &metadata)?;
    }
    Ok(missing)
}

/// A row of the training log of `model` (`both` or a decoupled model's direction).
fn log_row(model: &str, log: LogRow) -> TrainLogRow {
    TrainLogRow {
        model: model.to_string(),
        log,
    }
}
/// Per-epoch rows average the steps of the epoch (loss, terms, grad norm) and keep
/// its last learning rate and time.
fn aggregate(steps: &[LogRow], every: LogEvery) -> Vec<LogRow> {
    if every == LogEvery::Step {
        return steps.to_vec();
    }
    let mut out: Vec<LogRow> = Vec::new();
    let mut group: Vec<&LogRow> = Vec::new();
    let flush = |group: &mut Vec<&LogRow>, out: &mut Vec<LogRow>| {
        let Some(last) = group.last() else { return };
        let n = group.len() as f64;
        let mean = |f: &dyn Fn(&LogRow) -> f64| group.iter().map(|r| f(r)).sum::<f64>() / n;
        let mut row = (*last).clone();
        row.loss = mean(&|r| r.loss);
        row.task_loss = mean(&|r| r.task_loss);
        row.grad_norm = mean(&|r| r.grad_norm);
        for (i, term) in row.terms.iter_mut().enumerate() {
            term.1 = mean(&|r| r.terms.get(i).map_or(0.0, |t| t.1));
        }
        out.push(row);
        group.clear();
    };
    for s in steps {
        if group.last().is_some_and(|g| g.epoch != s.epoch) {
            flush(&mut group, &mut out);
        }
        group.push(s);
    }
    flush(&mut group, &mut out);
    out
}

/// (variant label, direction, gallery, K, metric): one figure across seeds.
type GroupKey = (String, String, String, usize, &'static str);

/// Each figure per seed (`value`), then its mean and std over the seeds of its
/// variant label.
fn summary_table(
    plan: &Plan,
    run_id: &str,
    axes: &[String],
    per_seed: &[(usize, Vec<metrics::Figure>)],
) -> TableWriter<SummaryRow> {
    let mut t = TableWriter::new(axes);
    let mut groups: BTreeMap<GroupKey, (usize, &str, Vec<f64>)> = BTreeMap::new();
    for (v, figures) in per_seed {
        let identity = identify(run_id, plan, *v);
        for f in figures {
            let row = SummaryRow {
                statistic: "value".to_string(),
                n_seeds: 1,
                direction: f.direction.clone(),
                gallery: f.gallery.clone(),
                k: f.k,
                metric: f.metric.to_string(),
                formula: f.formula.to_string(),
                value: Some(f.value),
            };
            t.push(&identity, &row);
            let key = (
                plan.experiments[*v].label.clone(),
                f.direction.clone(),
                f.gallery.clone(),
                f.k,
                f.metric,
            );
            groups
                .entry(key)
                .or_insert((*v, f.formula, Vec::new()))
                .2
                .push(f.value);
        }
    }
    for ((_, direction, gallery, k, metric), (v, formula, values)) in groups {
        // Figures over seeds belong to no one seed.
        let identity = Identity {
            seed: None,
            ..identify(run_id, plan, v)
        };
        let (mean, std) = mean_std(&values);
        for (statistic, value) in [("mean", Some(mean)), ("std", std)] {
            let row = SummaryRow {
                statistic: statistic.to_string(),
                n_seeds: values.len(),
                direction: direction.clone(),
                gallery: gallery.clone(),
                k,
                metric: metric.to_string(),
                formula: formula.to_string(),
                value,
            };
            t.push(&identity, &row);
        }
    }
    t
}

fn write_embeddings(
    plan: &Plan,
    cache: &Cache,
    dir: &Path,
    run_id: &str,
    metadata: &HashMap<String, String>,
) -> Result<(), String> {
    let mut table = TableWriter::<EmbeddingRow>::new(&swept_settings(plan));
    // Variants usually share one split: read (or generate) it once.
    let mut splits: HashMap<(std::path::PathBuf, String), crate::data::LoadedSplit> =
        HashMap::new();
    for v in 0..plan.experiments.len() {
        let e = &plan.experiments[v];
        let identity = identify(run_id, plan, v);
        let key = (e.dataset.clone(), e.split.clone());
        if !splits.contains_key(&key) {
            let manifest = Manifest::load(&e.dataset).map_err(|e| e.to_string())?;
            let split = crate::data::load_split(&manifest, &e.split).map_err(|e| e.to_string())?;
            splits.insert(key.clone(), split);
        }
        let split = &splits[&key];
        zeroshot_embeddings(plan, cache, v, split, &identity, &mut table)?;
        for &i in &plan.variant_nodes[v].evaluations {
            let NodeSpec::Evaluate(spec) = &plan.node(i).spec else {
                return Err(format!("{} is not an evaluation", plan.node(i).label));
            };
            let stage = spec.stage;
            // Inputs that are neither a searched gallery nor the stage's queries feed
            // the drift diagnostics only.
            let galleries: Vec<usize> = spec
                .directions
                .iter()
                .flat_map(|d| d.tasks.iter().map(|t| t.gallery))
                .collect();
            let queries: Vec<usize> = spec
                .directions
                .iter()
                .flat_map(|d| d.tasks.iter().map(|t| t.query))
                .collect();
            let mut inputs: Vec<(usize, petgraph::graph::NodeIndex)> =
                plan.inputs(i).iter().copied().enumerate().collect();
            inputs.sort_by_key(|&(_, node)| node);
            for (slot, input) in inputs {
                let n = plan.node(input);
                let role = match n.kind() {
                    NodeKind::Query if queries.contains(&slot) => "query",
                    NodeKind::Index if galleries.contains(&slot) => "gallery",
                    NodeKind::Query | NodeKind::Index => "reference",
                    NodeKind::Load
                    | NodeKind::Init
                    | NodeKind::Train
                    | NodeKind::Importance
                    | NodeKind::Evaluate
                    | NodeKind::Zeroshot => continue,
                };
                let task = split.task(&n.tasks[0])?;
                for (modality, (rows, data)) in read_embeddings(cache, &n.key)? {
                    let dim = data.len() / rows.max(1);
                    let items: Vec<(String, String)> = if modality == "image" {
                        task.test_images
                            .iter()
                            .map(|&r| {
                                (
                                    split.image_ids[r as usize].clone(),
                                    split.image_ids[r as usize].clone(),
                                )
                            })
                            .collect()
                    } else {
                        task.test_captions
                            .iter()
                            .map(|&c| {
                                (
                                    split.caption_ids[c as usize].clone(),
                                    split.image_ids[split.caption_image[c as usize] as usize]
                                        .clone(),
                                )
                            })
                            .collect()
                    };
                    for (row, (item_id, image_id)) in items.into_iter().enumerate() {
                        let embedding = EmbeddingRow {
                            stage,
                            model_stage: n.stage.unwrap_or(stage),
                            model: n.direction.map_or("both", |d| d.name()).to_string(),
                            task: n.tasks[0].clone(),
                            modality: modality.clone(),
                            role: role.to_string(),
                            item_id,
                            image_id,
                            vector: data[row * dim..(row + 1) * dim].to_vec(),
                        };
                        table.push(&identity, &embedding);
                    }
                }
            }
        }
    }
    if table.rows() == 0 {
        return Ok(());
    }
    table.write(&dir.join("embeddings.arrow"), metadata)
}

/// The embeddings zero-shot nodes compared: each class's prompt (role `prompt`,
/// `task` the class set, `item_id` the class) and each evaluated image (role
/// `zeroshot`), by the stage's model.
fn zeroshot_embeddings(
    plan: &Plan,
    cache: &Cache,
    v: usize,
    split: &crate::data::LoadedSplit,
    identity: &Identity,
    table: &mut TableWriter<EmbeddingRow>,
) -> Result<(), String> {
    let e = &plan.experiments[v];
    // Every class set of a stage classifies the same images by the same model:
    // they are kept once, with the first class set's node.
    let mut images_kept: Vec<(usize, String)> = Vec::new();
    // Class names by (class set as shown) and a downstream set's image ids by
    // name: read once, whatever the number of stages.
    let mut classes_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut ids_of: HashMap<String, Vec<String>> = HashMap::new();
    for &i in &plan.variant_nodes[v].zeroshot {
        let node = plan.node(i);
        let NodeSpec::Zeroshot(spec) = &node.spec else {
            return Err(format!("{} is not a zero-shot node", node.label));
        };
        let shown_set = spec.shown_class_set();
        let manifest = || match &spec.images {
            ZeroshotImages::Tasks { .. } => Manifest::load(&e.dataset).map_err(|e| e.to_string()),
            ZeroshotImages::Downstream { dataset, .. } => plan.dataset_manifest(dataset),
        };
        if !classes_of.contains_key(&shown_set) {
            let set = read_class_set(&manifest()?, &spec.class_set, split.text_dim)
                .map_err(|e| e.to_string())?;
            classes_of.insert(shown_set.clone(), set.classes);
        }
        let model = plan
            .inputs(i)
            .get(spec.model)
            .and_then(|&m| plan.node(m).direction)
            .map_or("both", |d| d.name());
        let read = read_embeddings(cache, &node.key)?;
        let rows_of = |name: &str| {
            read.get(name)
                .map(|(rows, data)| (data.len() / (*rows).max(1), data))
                .ok_or_else(|| format!("{}: no `{name}` embeddings", node.label))
        };
        let row =
            |task: &str, modality: &str, role: &str, item: &str, image: &str, vector: &[f32]| {
                EmbeddingRow {
                    stage: spec.stage,
                    model_stage: spec.stage,
                    model: model.to_string(),
                    task: task.to_string(),
                    modality: modality.to_string(),
                    role: role.to_string(),
                    item_id: item.to_string(),
                    image_id: image.to_string(),
                    vector: vector.to_vec(),
                }
            };
        let (dim, prompts) = rows_of("prompts")?;
        for (class, vector) in classes_of[&shown_set].iter().zip(prompts.chunks_exact(dim)) {
            table.push(
                identity,
                &row(&shown_set, "text", "prompt", class, "", vector),
            );
        }
        let images_key = (spec.stage, format!("{:?}", spec.images));
        if images_kept.contains(&images_key) {
            continue;
        }
        images_kept.push(images_key);
        // (task, its images' ids) in the order the node embedded them.
        let groups: Vec<(String, Vec<String>)> = match &spec.images {
            ZeroshotImages::Tasks { tasks } => tasks
                .iter()
                .map(|task| {
                    let ids = split
                        .task(task)?
                        .test_images
                        .iter()
                        .map(|&r| split.image_ids[r as usize].clone())
                        .collect();
                    Ok((task.clone(), ids))
                })
                .collect::<Result<_, String>>()?,
            ZeroshotImages::Downstream { name, .. } => {
                if !ids_of.contains_key(name) {
                    let manifest = manifest()?;
                    let path = manifest.images_path().ok_or_else(|| {
                        format!("{}: names no images table", manifest.path.display())
                    })?;
                    let images =
                        crate::data::read::read_table(&path, &[]).map_err(|e| e.to_string())?;
                    ids_of.insert(name.clone(), images.ids);
                }
                vec![(name.clone(), ids_of[name].clone())]
            }
        };
        let (dim, images) = rows_of("image")?;
        let mut vectors = images.chunks_exact(dim);
        for (task, ids) in &groups {
            for id in ids {
                let vector = vectors
                    .next()
                    .ok_or_else(|| format!("{}: fewer image embeddings than images", node.label))?;
                table.push(identity, &row(task, "image", "zeroshot", id, id, vector));
            }
        }
    }
    Ok(())
}
