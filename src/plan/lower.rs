//! From experiments to the DAG. See "The DAG" in `docs/language.md`.
//!
//! What each key depends on (and, as important, what it does not):
//! - `load`: the manifest's content hash and the split.
//! - `train(k)`: model, loss, optimizer, lr schedule, epochs, batch, negatives,
//!   clipping, seed, device, the task, and the regularizer only for `k > 1`
//!   (at task 1 there is nothing to protect), with `on = query` resolved to the
//!   branch of the chain's direction. Not the index policy, evaluation or labels.
//! - `importance(k)`: the method (EWC Fisher with its accumulation, or MAS omega)
//!   and what the estimate reads; not `lambda` or `on`, which only weigh it later.
//! - `index(j, m)` / `query(j, k)`: the embedding model's key, the task and the
//!   modalities embedded.
//! - `evaluate(k)`: the galleries and queries the policy selects, and the metrics.

use super::{Node, NodeKind, Plan, KEY_SCHEMA};
use crate::lang::{
    Coverage, Direction, Experiment, IndexPolicy, ManifestCache, RegularizerSpec, Schedule,
};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// Lowers the experiments of one pipeline into a shared DAG.
pub fn lower(pipeline: &str, experiments: Vec<Experiment>, manifests: &mut ManifestCache) -> Plan {
    let mut b = Builder {
        graph: DiGraph::new(),
        by_key: HashMap::new(),
        unshared: BTreeMap::new(),
    };
    let mut evaluations = Vec::new();
    let mut trainings = Vec::new();
    // A content hash reads the feature tables: once per dataset, not per variant.
    let mut datasets: HashMap<std::path::PathBuf, (String, String)> = HashMap::new();
    for (i, e) in experiments.iter().enumerate() {
        let (data_hash, data_name) = datasets
            .entry(e.dataset.clone())
            .or_insert_with(|| {
                manifests
                    .get(&e.dataset)
                    .map(|m| (m.content_hash(), m.name.clone()))
                    .unwrap_or_else(|_| ("unreadable".to_string(), e.dataset.display().to_string()))
            })
            .clone();
        let (evals, trains) = b.experiment(i, e, &data_hash, &data_name);
        evaluations.extend(evals);
        trainings.extend(trains);
    }
    // One report for the whole pipeline: it reads every evaluation and training log.
    let mut inputs: Vec<NodeIndex> = evaluations.into_iter().chain(trainings).collect();
    inputs.sort();
    inputs.dedup();
    let variants: Vec<Value> = experiments
        .iter()
        .map(|e| json!({ "label": e.label, "seed": e.seed, "axes": e.axes, "log": e.train.log }))
        .collect();
    let report = b.add(
        Spec {
            kind: NodeKind::Report,
            label: format!("report({pipeline})"),
            tasks: Vec::new(),
            stage: None,
            direction: None,
            settings: json!({ "pipeline": pipeline, "variants": variants }),
        },
        &inputs,
        None,
    );
    b.graph[report].variants = (0..experiments.len()).collect();
    Plan {
        pipeline: pipeline.to_string(),
        experiments,
        graph: b.graph,
        by_key: b.by_key,
        unshared: b.unshared,
        cached: None,
    }
}

struct Builder {
    graph: DiGraph<Node, ()>,
    by_key: HashMap<String, NodeIndex>,
    unshared: BTreeMap<NodeKind, usize>,
}

/// What a node is, before it has a key.
struct Spec {
    kind: NodeKind,
    label: String,
    tasks: Vec<String>,
    stage: Option<usize>,
    direction: Option<Direction>,
    settings: Value,
}

impl Builder {
    /// Adds a node, or finds the identical one another variant already added.
    fn add(&mut self, spec: Spec, inputs: &[NodeIndex], variant: Option<usize>) -> NodeIndex {
        *self.unshared.entry(spec.kind).or_default() += 1;
        let mut h = blake3::Hasher::new();
        h.update(KEY_SCHEMA.as_bytes());
        h.update(b"\0");
        h.update(spec.kind.name().as_bytes());
        h.update(b"\0");
        // serde_json maps are sorted by key: this string is canonical.
        h.update(spec.settings.to_string().as_bytes());
        for &i in inputs {
            h.update(b"\0");
            h.update(self.graph[i].key.as_bytes());
        }
        let key = h.finalize().to_hex().to_string();
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.graph.add_node(Node {
                    key: key.clone(),
                    kind: spec.kind,
                    label: spec.label,
                    tasks: spec.tasks,
                    stage: spec.stage,
                    direction: spec.direction,
                    settings: spec.settings,
                    variants: Vec::new(),
                });
                for &input in inputs {
                    self.graph.add_edge(input, i, ());
                }
                self.by_key.insert(key, i);
                i
            }
        };
        if let Some(v) = variant {
            let users = &mut self.graph[index].variants;
            if users.last() != Some(&v) {
                users.push(v);
            }
        }
        index
    }

    /// Lowers one variant; returns its evaluate and train nodes.
    fn experiment(
        &mut self,
        v: usize,
        e: &Experiment,
        data_hash: &str,
        dataset_name: &str,
    ) -> (Vec<NodeIndex>, Vec<NodeIndex>) {
        let load = self.add(
            Spec {
                kind: NodeKind::Load,
                label: format!("load({dataset_name}, {})", e.split),
                tasks: e.tasks.clone(),
                stage: None,
                direction: None,
                settings: json!({ "dataset": data_hash, "split": e.split }),
            },
            &[],
            Some(v),
        );
        let common = json!({
            "model": e.model,
            "loss": e.train.loss,
            "optimizer": e.train.optimizer,
            "schedule_lr": e.train.schedule_lr,
            "epochs": e.train.epochs,
            "batch": e.train.batch,
            "negatives": e.train.negatives,
            "grad_clip": e.train.grad_clip,
            "seed": e.seed,
            "device": e.device.to_string(),
        });
        let t = e.tasks.len();
        // Decoupled sequential training forks one model chain per evaluated direction.
        let chains: Vec<Option<Direction>> =
            if e.train.decouple && e.schedule == Schedule::Sequential {
                e.evaluate.directions.iter().map(|d| Some(*d)).collect()
            } else {
                vec![None]
            };
        let mut trains = Vec::new();
        // models[c][k-1]: the model of chain c after stage k.
        let mut models: Vec<Vec<NodeIndex>> = Vec::new();
        for &chain in &chains {
            let chain_models = match e.schedule {
                Schedule::Joint => {
                    let mut settings = common.clone();
                    settings["schedule"] = json!("joint");
                    settings["tasks"] = json!(e.tasks);
                    let m = self.add(
                        Spec {
                            kind: NodeKind::Train,
                            label: "train(joint)".into(),
                            tasks: e.tasks.clone(),
                            stage: Some(t),
                            direction: None,
                            settings,
                        },
                        &[load],
                        Some(v),
                    );
                    vec![m; t]
                }
                Schedule::Sequential => self.sequential_chain(v, e, chain, load, &common),
            };
            trains.extend(chain_models.iter().copied());
            models.push(chain_models);
        }
        let evals = self.evaluations(v, e, &chains, &models, load);
        (evals, trains)
    }

    fn sequential_chain(
        &mut self,
        v: usize,
        e: &Experiment,
        chain: Option<Direction>,
        load: NodeIndex,
        common: &Value,
    ) -> Vec<NodeIndex> {
        let regularizer = resolve_coverage(&e.train.regularizer, chain);
        let mut models = Vec::new();
        let mut importance: Vec<(&'static str, NodeIndex)> = Vec::new();
        let suffix = chain
            .map(|d| format!(", {} model", d.name()))
            .unwrap_or_default();
        for (k0, task) in e.tasks.iter().enumerate() {
            let k = k0 + 1;
            let mut settings = common.clone();
            settings["schedule"] = json!("sequential");
            settings["task"] = json!(task);
            settings["stage"] = json!(k);
            settings["regularizer"] = if k == 1 {
                json!([])
            } else {
                json!(regularizer)
            };
            let mut inputs = vec![load];
            inputs.extend(models.last().copied());
            inputs.extend(importance.iter().map(|(_, i)| *i));
            let model = self.add(
                Spec {
                    kind: NodeKind::Train,
                    label: format!("train({k}: {task}{suffix})"),
                    tasks: vec![task.clone()],
                    stage: Some(k),
                    direction: chain,
                    settings,
                },
                &inputs,
                Some(v),
            );
            models.push(model);
            if k == e.tasks.len() {
                break;
            }
            // Importance after task k, for the penalties of stage k + 1.
            let mut next = Vec::new();
            for r in &regularizer {
                let (method, settings) = match r {
                    RegularizerSpec::Ewc { accumulate, .. } => (
                        "ewc",
                        json!({ "method": "fisher", "accumulate": accumulate, "stage": k, "task": task,
                                "loss": e.train.loss, "batch": e.train.batch, "seed": e.seed,
                                "device": e.device.to_string() }),
                    ),
                    RegularizerSpec::Mas { .. } => (
                        "mas",
                        json!({ "method": "omega", "stage": k, "task": task,
                                "device": e.device.to_string() }),
                    ),
                    _ => continue,
                };
                let mut inputs = vec![model, load];
                inputs.extend(
                    importance
                        .iter()
                        .filter(|(m, _)| *m == method)
                        .map(|(_, i)| *i),
                );
                let node = self.add(
                    Spec {
                        kind: NodeKind::Importance,
                        label: format!("importance({method}, {k}: {task}{suffix})"),
                        tasks: vec![task.clone()],
                        stage: Some(k),
                        direction: chain,
                        settings,
                    },
                    &inputs,
                    Some(v),
                );
                next.push((method, node));
            }
            importance = next;
        }
        models
    }

    fn evaluations(
        &mut self,
        v: usize,
        e: &Experiment,
        chains: &[Option<Direction>],
        models: &[Vec<NodeIndex>],
        load: NodeIndex,
    ) -> Vec<NodeIndex> {
        let t = e.tasks.len();
        let stages: Vec<usize> = match e.schedule {
            Schedule::Joint => vec![t],
            Schedule::Sequential => (1..=t).collect(),
        };
        // Embedding nodes of this variant, by (kind, chain, task j, model stage m).
        let mut embedded: HashMap<(NodeKind, usize, usize, usize), NodeIndex> = HashMap::new();
        let mut evals = Vec::new();
        for &k in &stages {
            let mut inputs = Vec::new();
            // The stage of the model that made each task's gallery: with the inputs'
            // keys this fixes the evaluation, so the policy's name need not be hashed
            // (at stage 1 both policies read the same galleries and share the node).
            let mut gallery_models = Vec::new();
            for (c, chain) in chains.iter().enumerate() {
                let directions: Vec<Direction> = match chain {
                    Some(d) => vec![*d],
                    None => e.evaluate.directions.clone(),
                };
                let mut embed = |b: &mut Builder, kind: NodeKind, j: usize, m: usize| {
                    *embedded.entry((kind, c, j, m)).or_insert_with(|| {
                        b.embedding(
                            v,
                            e,
                            kind,
                            *chain,
                            &directions,
                            j,
                            m,
                            models[c][m - 1],
                            load,
                        )
                    })
                };
                for j in 1..=t {
                    inputs.push(embed(self, NodeKind::Query, j, k));
                    let gallery_stage = match (e.schedule, e.index) {
                        (Schedule::Joint, _) | (_, IndexPolicy::Reindex) => k,
                        // Frozen: embedded once by the model that learned the task; tasks
                        // not learned yet (forward transfer) by the current model.
                        (Schedule::Sequential, IndexPolicy::Frozen) => j.min(k),
                    };
                    inputs.push(embed(self, NodeKind::Index, j, gallery_stage));
                    if c == 0 {
                        gallery_models.push(gallery_stage);
                    }
                    if e.schedule == Schedule::Sequential
                        && e.index == IndexPolicy::Reindex
                        && j < k
                    {
                        // The task's own-stage embeddings, for the drift diagnostics.
                        inputs.push(embed(self, NodeKind::Index, j, j));
                    }
                }
            }
            let label = match e.schedule {
                Schedule::Joint => "evaluate(joint)".to_string(),
                Schedule::Sequential => format!("evaluate({k}: {})", e.tasks[k - 1]),
            };
            evals.push(self.add(
                Spec {
                    kind: NodeKind::Evaluate,
                    label,
                    tasks: e.tasks.clone(),
                    stage: Some(k),
                    direction: None,
                    settings: json!({ "stage": k, "tasks": e.tasks, "schedule": e.schedule,
                                      "gallery_models": gallery_models, "evaluate": e.evaluate }),
                },
                &inputs,
                Some(v),
            ));
        }
        evals
    }

    /// `index(j, m)` embeds task j's test gallery with model m; `query(j, m)` its queries.
    #[allow(clippy::too_many_arguments)]
    fn embedding(
        &mut self,
        v: usize,
        e: &Experiment,
        kind: NodeKind,
        chain: Option<Direction>,
        directions: &[Direction],
        j: usize,
        m: usize,
        model: NodeIndex,
        load: NodeIndex,
    ) -> NodeIndex {
        // im2txt: image queries, caption gallery; txt2im: the reverse.
        let mut modalities: Vec<&str> = directions
            .iter()
            .map(|d| match (kind, d) {
                (NodeKind::Index, Direction::Im2txt) | (NodeKind::Query, Direction::Txt2im) => {
                    "text"
                }
                _ => "image",
            })
            .collect();
        modalities.sort();
        modalities.dedup();
        let task = &e.tasks[j - 1];
        let model_name = match e.schedule {
            Schedule::Joint => "joint".to_string(),
            Schedule::Sequential => m.to_string(),
        };
        let suffix = chain
            .map(|d| format!(", {} model", d.name()))
            .unwrap_or_default();
        self.add(
            Spec {
                kind,
                label: format!("{}({task} @ {model_name}{suffix})", kind.name()),
                tasks: vec![task.clone()],
                stage: Some(m),
                direction: chain,
                settings: json!({ "task": task, "modalities": modalities }),
            },
            &[model, load],
            Some(v),
        )
    }
}

/// The regularizer as the chain's model applies it: `on = query` becomes the
/// branch that embeds that direction's queries.
pub fn resolve_coverage(
    terms: &[RegularizerSpec],
    chain: Option<Direction>,
) -> Vec<RegularizerSpec> {
    let query_branch = match chain {
        Some(Direction::Im2txt) => Coverage::Image,
        Some(Direction::Txt2im) => Coverage::Text,
        None => Coverage::Both,
    };
    terms
        .iter()
        .map(|t| match t {
            RegularizerSpec::Ewc {
                lambda,
                accumulate,
                on: Coverage::Query,
            } => RegularizerSpec::Ewc {
                lambda: *lambda,
                accumulate: *accumulate,
                on: query_branch,
            },
            RegularizerSpec::Mas {
                lambda,
                on: Coverage::Query,
            } => RegularizerSpec::Mas {
                lambda: *lambda,
                on: query_branch,
            },
            other => other.clone(),
        })
        .collect()
}
