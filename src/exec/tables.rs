//! The result-tables step: gathers every variant's evaluation rows, training logs and
//! diagnostics from the cache into the run directory's Arrow tables, and the
//! headline table printed at the end of a run.

use super::cache::Cache;
use super::entries::{read_embeddings, read_jsonl};
use super::run::RunOptions;
use crate::data::Manifest;
use crate::eval::drift::DriftRow;
use crate::eval::metrics::{self, mean_std};
use crate::eval::RecallRow;
use crate::lang::{LogEvery, Schedule};
use crate::plan::{NodeKind, NodeSpec, Plan};
use crate::results::{Cell, Table, VectorTable};
use crate::train::LogRow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The column of a swept setting (`variant` lines become `variant_line`, since
/// `variant` is the label column).
fn axis_column(axis: &str) -> String {
    if axis == "variant" {
        "variant_line".to_string()
    } else {
        axis.to_string()
    }
}

/// Run-level columns every table starts with.
fn identify(t: &mut Table, run_id: &str, plan: &Plan, v: usize) {
    let e = &plan.experiments[v];
    t.set("run_id", run_id)
        .set("pipeline", plan.pipeline.as_str())
        .set("variant", e.label.as_str())
        .set("seed", e.seed);
    for (axis, label) in &e.axes {
        t.set(&axis_column(axis), label.as_str());
    }
}

/// Writes recall, summary, train_log and drift tables (and embeddings when asked).
pub fn write_report(
    plan: &Plan,
    cache: &Cache,
    dir: &Path,
    options: &RunOptions,
) -> Result<(), String> {
    let run_id = super::run::run_id_of(dir);
    let mut metadata = HashMap::new();
    metadata.insert("lethe.run_id".to_string(), run_id.clone());
    metadata.insert("lethe.pipeline".to_string(), plan.pipeline.clone());
    metadata.insert(
        "lethe.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    metadata.insert("lethe.file".to_string(), options.file.display().to_string());
    let mut recall = Table::new();
    let mut drift = Table::new();
    let mut log = Table::new();
    let mut per_seed: Vec<(usize, Vec<metrics::Figure>)> = Vec::new();
    for v in 0..plan.experiments.len() {
        let e = &plan.experiments[v];
        let evaluations = &plan.variant_nodes[v].evaluations;
        // Variants with a failed node (under --keep-going) have no results.
        if evaluations
            .iter()
            .any(|i| !cache.contains(&plan.node(*i).key))
        {
            continue;
        }
        let mut rows: Vec<RecallRow> = Vec::new();
        for &i in evaluations {
            let entry = cache.entry(&plan.node(i).key);
            rows.extend(read_jsonl::<RecallRow>(&entry.join("recall.jsonl"))?);
            for d in read_jsonl::<DriftRow>(&entry.join("drift.jsonl"))? {
                identify(&mut drift, &run_id, plan, v);
                drift
                    .set("stage", d.stage)
                    .set("stage_task", d.stage_task)
                    .set("task", d.task)
                    .set("task_stage", d.task_stage)
                    .set("direction", d.direction)
                    .set("metric", d.metric)
                    .set("modality", d.modality)
                    .set("value", d.value);
                drift.end_row();
            }
        }
        for r in &rows {
            identify(&mut recall, &run_id, plan, v);
            recall
                .set("stage", r.stage)
                .set("stage_task", r.stage_task.as_str())
                .set("eval_task", r.eval_task.as_str())
                .set("gallery", r.gallery.as_str())
                .set("direction", r.direction.as_str())
                .set("k", r.k)
                .set("recall", r.recall)
                .set("median_rank", r.median_rank)
                .set("mean_rank", r.mean_rank)
                .set("n_queries", r.n_queries)
                .set("gallery_size", r.gallery_size);
            recall.end_row();
        }
        per_seed.push((
            v,
            metrics::figures(&rows, &e.tasks, e.schedule == Schedule::Sequential),
        ));
        for &i in &plan.variant_nodes[v].trainings {
            let node = plan.node(i);
            let steps = read_jsonl::<LogRow>(&cache.entry(&node.key).join("log.jsonl"))?;
            for row in aggregate(&steps, e.train.log) {
                identify(&mut log, &run_id, plan, v);
                log.set("model", node.direction.map_or("both", |d| d.name()))
                    .set("stage", row.stage)
                    .set("task", row.task.as_str())
                    .set("epoch", row.epoch)
                    .set("step", row.step)
                    .set("loss", row.loss)
                    .set("task_loss", row.task_loss);
                for (name, value) in &row.terms {
                    log.set(&format!("term_{name}"), *value);
                }
                log.set("lr", row.lr)
                    .set("grad_norm", row.grad_norm)
                    .set("seconds", row.seconds);
                log.end_row();
            }
        }
    }
    if drift.rows() == 0 {
        // Joint schedules have no old tasks to measure: keep the documented schema.
        drift = empty_drift_table();
    }
    let summary = summary_table(plan, &run_id, &per_seed);
    recall.write(&dir.join("recall.arrow"), &metadata)?;
    summary.write(&dir.join("summary.arrow"), &metadata)?;
    log.write(&dir.join("train_log.arrow"), &metadata)?;
    drift.write(&dir.join("drift.arrow"), &metadata)?;
    if options.keep_embeddings {
        write_embeddings(plan, cache, dir, &run_id, &metadata)?;
    }
    std::fs::write(dir.join("headline.txt"), headline(plan, &per_seed)).map_err(|e| e.to_string())
}

fn empty_drift_table() -> Table {
    let text = || Cell::Str(String::new());
    Table::new().declare(&[
        ("run_id", text()),
        ("pipeline", text()),
        ("variant", text()),
        ("seed", Cell::U64(0)),
        ("stage", Cell::U64(0)),
        ("stage_task", text()),
        ("task", text()),
        ("task_stage", Cell::U64(0)),
        ("direction", text()),
        ("metric", text()),
        ("modality", text()),
        ("value", Cell::F64(0.0)),
    ])
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

fn summary_table(plan: &Plan, run_id: &str, per_seed: &[(usize, Vec<metrics::Figure>)]) -> Table {
    let mut t = Table::new().declare(&[("seed", Cell::U64(0)), ("value", Cell::F64(0.0))]);
    let mut groups: BTreeMap<GroupKey, (usize, &str, Vec<f64>)> = BTreeMap::new();
    for (v, figures) in per_seed {
        for f in figures {
            identify(&mut t, run_id, plan, *v);
            t.set("statistic", "value")
                .set("n_seeds", 1usize)
                .set("direction", f.direction.as_str())
                .set("gallery", f.gallery.as_str())
                .set("k", f.k)
                .set("metric", f.metric)
                .set("formula", f.formula)
                .set("value", f.value);
            t.end_row();
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
        let (mean, std) = mean_std(&values);
        for (statistic, value) in [("mean", Some(mean)), ("std", std)] {
            identify(&mut t, run_id, plan, v);
            t.set("seed", Cell::Null)
                .set("statistic", statistic)
                .set("n_seeds", values.len())
                .set("direction", direction.as_str())
                .set("gallery", gallery.as_str())
                .set("k", k)
                .set("metric", metric)
                .set("formula", formula)
                .set("value", value);
            t.end_row();
        }
    }
    t
}

/// One line per variant: the average recall at the largest K, per direction, with
/// the task known (per_task), mean ± std over seeds.
fn headline(plan: &Plan, per_seed: &[(usize, Vec<metrics::Figure>)]) -> String {
    let mut by_label: BTreeMap<(usize, String), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for (v, figures) in per_seed {
        let label = plan.experiments[*v].label.clone();
        let first = plan
            .experiments
            .iter()
            .position(|e| e.label == label)
            .unwrap_or(*v);
        let k = figures.iter().map(|f| f.k).max().unwrap_or(0);
        for f in figures
            .iter()
            .filter(|f| f.k == k && (f.metric == "average" || f.metric == "total"))
        {
            let column = format!(
                "{} {} R@{k}",
                f.direction,
                if f.metric == "total" {
                    "union total"
                } else {
                    "avg"
                }
            );
            if f.metric == "average" && f.gallery != "per_task" {
                continue;
            }
            by_label
                .entry((first, label.clone()))
                .or_default()
                .entry(column)
                .or_default()
                .push(f.value);
        }
    }
    let columns: Vec<String> = by_label
        .values()
        .flat_map(|m| m.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let width = by_label
        .keys()
        .map(|(_, l)| l.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = format!("{:<width$}", "variant");
    for c in &columns {
        out.push_str(&format!("  {c:>20}"));
    }
    out.push('\n');
    for ((_, label), values) in &by_label {
        out.push_str(&format!("{label:<width$}"));
        for c in &columns {
            let cell = match values.get(c) {
                Some(v) => match mean_std(v) {
                    (m, Some(s)) => format!("{m:.1} ± {s:.1}"),
                    (m, None) => format!("{m:.1}"),
                },
                None => "-".to_string(),
            };
            out.push_str(&format!("  {cell:>20}"));
        }
        out.push('\n');
    }
    out
}

fn write_embeddings(
    plan: &Plan,
    cache: &Cache,
    dir: &Path,
    run_id: &str,
    metadata: &HashMap<String, String>,
) -> Result<(), String> {
    let mut table: Option<VectorTable> = None;
    // Variants usually share one split: read (or generate) it once.
    let mut splits: HashMap<(std::path::PathBuf, String), crate::data::LoadedSplit> =
        HashMap::new();
    for v in 0..plan.experiments.len() {
        let e = &plan.experiments[v];
        let key = (e.dataset.clone(), e.split.clone());
        if !splits.contains_key(&key) {
            let manifest = Manifest::load(&e.dataset).map_err(|e| e.to_string())?;
            let split = crate::data::load_split(&manifest, &e.split).map_err(|e| e.to_string())?;
            splits.insert(key.clone(), split);
        }
        let split = &splits[&key];
        for &i in &plan.variant_nodes[v].evaluations {
            let NodeSpec::Evaluate(spec) = &plan.node(i).spec else {
                return Err(format!("{} is not an evaluation", plan.node(i).label));
            };
            let stage = spec.stage;
            // Index inputs that are not a searched gallery feed the drift diagnostics only.
            let galleries: Vec<usize> = spec
                .directions
                .iter()
                .flat_map(|d| d.tasks.iter().map(|t| t.gallery))
                .collect();
            let mut inputs: Vec<(usize, petgraph::graph::NodeIndex)> =
                plan.inputs(i).iter().copied().enumerate().collect();
            inputs.sort_by_key(|&(_, node)| node);
            for (slot, input) in inputs {
                let n = plan.node(input);
                let role = match n.kind() {
                    NodeKind::Query => "query",
                    NodeKind::Index if galleries.contains(&slot) => "gallery",
                    NodeKind::Index => "reference",
                    NodeKind::Load
                    | NodeKind::Init
                    | NodeKind::Train
                    | NodeKind::Importance
                    | NodeKind::Evaluate => continue,
                };
                let task = split.task(&n.tasks[0])?;
                for (modality, (rows, data)) in read_embeddings(cache, &n.key)? {
                    let dim = data.len() / rows.max(1);
                    let t = table.get_or_insert_with(|| VectorTable::new(dim));
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
                    for (row, (item, image)) in items.into_iter().enumerate() {
                        identify(&mut t.table, run_id, plan, v);
                        t.table
                            .set("stage", stage)
                            .set("model_stage", n.stage.unwrap_or(stage))
                            .set("model", n.direction.map_or("both", |d| d.name()))
                            .set("task", n.tasks[0].as_str())
                            .set("modality", modality.as_str())
                            .set("role", role)
                            .set("item_id", item)
                            .set("image_id", image);
                        t.push_vector(&data[row * dim..(row + 1) * dim]);
                    }
                }
            }
        }
    }
    match table {
        Some(t) => t.write(&dir.join("embeddings.arrow"), metadata),
        None => Ok(()),
    }
}
