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
//! - `zeroshot(k)`: the stage's model, the class set and the K of top-K; the
//!   dataset's prompts through the load node's key.

use super::spec::*;
use super::{node_key, Node, Plan, VariantNodes};
use crate::lang::{
    Coverage, Direction, Experiment, IndexPolicy, ManifestCache, Modality, RegularizerSpec,
    Schedule,
};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// The K of the top-K accuracies of zero-shot classification (IncCLIP's).
const ZEROSHOT_TOP: [usize; 2] = [1, 5];

/// Lowers the experiments of one pipeline into a shared DAG.
pub fn lower(pipeline: &str, experiments: Vec<Experiment>, manifests: &mut ManifestCache) -> Plan {
    let mut b = Builder {
        graph: DiGraph::new(),
        by_key: HashMap::new(),
        unshared: BTreeMap::new(),
    };
    let mut variant_nodes = Vec::with_capacity(experiments.len());
    // A content hash reads the feature tables: once per dataset, not per variant.
    let mut hashes: HashMap<PathBuf, (String, String)> = HashMap::new();
    let mut datasets = BTreeMap::new();
    // (content hash, name) of a manifest, registered as a dataset of the plan.
    let mut dataset = |path: &PathBuf| -> (String, String) {
        let (hash, name) = hashes
            .entry(path.clone())
            .or_insert_with(|| {
                manifests
                    .get(path)
                    .map(|m| (m.content_hash(), m.name.clone()))
                    .unwrap_or_else(|_| ("unreadable".to_string(), path.display().to_string()))
            })
            .clone();
        datasets.entry(hash.clone()).or_insert_with(|| path.clone());
        (hash, name)
    };
    for (i, e) in experiments.iter().enumerate() {
        let (data_hash, data_name) = dataset(&e.dataset);
        // Downstream zero-shot sets enter by content hash too.
        let downstream: Vec<(String, String)> = e
            .evaluate
            .downstream
            .iter()
            .map(|d| dataset(&d.dataset))
            .collect();
        variant_nodes.push(b.experiment(i, e, &data_hash, &data_name, &downstream));
    }
    Plan {
        pipeline: pipeline.to_string(),
        experiments,
        graph: b.graph,
        variant_nodes,
        datasets,
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

/// What a node shows, beside its spec.
struct Display {
    label: String,
    tasks: Vec<String>,
    stage: Option<usize>,
    direction: Option<Direction>,
}

/// A node's inputs as they are declared: each new one gets the next slot.
#[derive(Default)]
struct Inputs(Vec<NodeIndex>);

impl Inputs {
    /// The slot of `node`, adding it if it is not an input yet.
    fn slot(&mut self, node: NodeIndex) -> Slot {
        match self.0.iter().position(|&i| i == node) {
            Some(slot) => slot,
            None => {
                self.0.push(node);
                self.0.len() - 1
            }
        }
    }
}

impl Builder {
    /// Adds a node, or finds the identical one another variant already added.
    fn add(
        &mut self,
        spec: NodeSpec,
        display: Display,
        inputs: Inputs,
        variant: usize,
    ) -> NodeIndex {
        *self.unshared.entry(spec.kind()).or_default() += 1;
        let key = node_key(&spec, inputs.0.iter().map(|&i| self.graph[i].key.as_str()));
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.graph.add_node(Node {
                    key: key.clone(),
                    spec,
                    label: display.label,
                    tasks: display.tasks,
                    stage: display.stage,
                    direction: display.direction,
                    inputs: inputs.0.clone(),
                    variants: Vec::new(),
                });
                for &input in &inputs.0 {
                    self.graph.add_edge(input, i, ());
                }
                self.by_key.insert(key, i);
                i
            }
        };
        let users = &mut self.graph[index].variants;
        if users.last() != Some(&variant) {
            users.push(variant);
        }
        index
    }

    /// Lowers one variant; returns the nodes its results come from.
    fn experiment(
        &mut self,
        v: usize,
        e: &Experiment,
        data_hash: &str,
        dataset_name: &str,
        downstream: &[(String, String)],
    ) -> VariantNodes {
        let load = self.add(
            NodeSpec::Load(LoadNode {
                dataset: data_hash.to_string(),
                split: e.split.clone(),
            }),
            Display {
                label: format!("load({dataset_name}, {})", e.split),
                tasks: e.tasks.clone(),
                stage: None,
                direction: None,
            },
            Inputs::default(),
            v,
        );
        let t = e.tasks.len();
        // Decoupled sequential training forks one model chain per evaluated direction.
        let chains: Vec<Option<Direction>> =
            if e.train.decouple && e.schedule == Schedule::Sequential {
                e.evaluate.directions.iter().map(|d| Some(*d)).collect()
            } else {
                vec![None]
            };
        let mut trainings = Vec::new();
        // models[c][k]: the model of chain c after stage k (0: untrained).
        let mut models: Vec<Vec<NodeIndex>> = Vec::new();
        for &chain in &chains {
            let chain_models = match e.schedule {
                Schedule::Joint => {
                    let mut inputs = Inputs::default();
                    let spec = TrainNode {
                        schedule: Schedule::Joint,
                        stage: t,
                        tasks: e.tasks.clone(),
                        past: Vec::new(),
                        model: e.model.clone(),
                        recipe: recipe(e),
                        regularizer: Vec::new(),
                        seed: e.seed,
                        device: e.device,
                        load: inputs.slot(load),
                        previous: None,
                        importance: Vec::new(),
                    };
                    let m = self.add(
                        NodeSpec::Train(spec),
                        Display {
                            label: "train(joint)".into(),
                            tasks: e.tasks.clone(),
                            stage: Some(t),
                            direction: None,
                        },
                        inputs,
                        v,
                    );
                    vec![m; t + 1]
                }
                Schedule::Sequential => {
                    // Every chain starts from the same untrained model (one node).
                    let mut chain_models = vec![self.init(v, e, load)];
                    chain_models.extend(self.sequential_chain(v, e, chain, load));
                    chain_models
                }
            };
            trainings.extend(chain_models[1..].iter().copied());
            models.push(chain_models);
        }
        // Chains share their first stages; results are read in plan order.
        trainings.sort();
        trainings.dedup();
        let mut evaluations = self.evaluations(v, e, &chains, &models, load);
        evaluations.sort();
        let zeroshot = self.zeroshot(v, e, &models[0], load, downstream);
        VariantNodes {
            evaluations,
            trainings,
            zeroshot,
        }
    }

    /// Zero-shot classification after every evaluated stage, one node per class set
    /// and stage, by the stage's model: the tasks' images against the pipeline
    /// dataset's class sets, then every downstream set's images against its own.
    /// With decoupled training the first chain's model classifies (the one serving
    /// the first evaluated direction).
    fn zeroshot(
        &mut self,
        v: usize,
        e: &Experiment,
        models: &[NodeIndex],
        load: NodeIndex,
        downstream: &[(String, String)],
    ) -> Vec<NodeIndex> {
        let t = e.tasks.len();
        let stages: Vec<usize> = match e.schedule {
            Schedule::Joint => vec![t],
            Schedule::Sequential => (0..=t).collect(),
        };
        let mut targets: Vec<(ZeroshotImages, String)> = e
            .evaluate
            .zeroshot
            .iter()
            .map(|set| {
                let images = ZeroshotImages::Tasks {
                    tasks: e.tasks.clone(),
                };
                (images, set.clone())
            })
            .collect();
        for (d, (hash, name)) in e.evaluate.downstream.iter().zip(downstream) {
            for set in &d.class_sets {
                let images = ZeroshotImages::Downstream {
                    dataset: hash.clone(),
                    name: name.clone(),
                };
                targets.push((images, set.clone()));
            }
        }
        let mut nodes = Vec::new();
        for (images, class_set) in targets {
            for &k in &stages {
                let stage_task = match e.schedule {
                    Schedule::Joint => "joint".to_string(),
                    Schedule::Sequential if k == 0 => "init".to_string(),
                    Schedule::Sequential => e.tasks[k - 1].clone(),
                };
                let mut inputs = Inputs::default();
                let spec = ZeroshotNode {
                    stage: k,
                    stage_task: stage_task.clone(),
                    images: images.clone(),
                    class_set: class_set.clone(),
                    top: ZEROSHOT_TOP.to_vec(),
                    model: inputs.slot(models[k]),
                    load: inputs.slot(load),
                };
                let tasks = match &images {
                    ZeroshotImages::Tasks { tasks } => tasks.clone(),
                    ZeroshotImages::Downstream { name, .. } => vec![name.clone()],
                };
                let label = format!("zeroshot({}, {k}: {stage_task})", spec.shown_class_set());
                nodes.push(self.add(
                    NodeSpec::Zeroshot(spec),
                    Display {
                        label,
                        tasks,
                        stage: Some(k),
                        direction: None,
                    },
                    inputs,
                    v,
                ));
            }
        }
        nodes
    }

    fn init(&mut self, v: usize, e: &Experiment, load: NodeIndex) -> NodeIndex {
        let mut inputs = Inputs::default();
        let spec = InitNode {
            model: e.model.clone(),
            seed: e.seed,
            device: e.device,
            load: inputs.slot(load),
        };
        self.add(
            NodeSpec::Init(spec),
            Display {
                label: "init".into(),
                tasks: Vec::new(),
                stage: Some(0),
                direction: None,
            },
            inputs,
            v,
        )
    }

    fn sequential_chain(
        &mut self,
        v: usize,
        e: &Experiment,
        chain: Option<Direction>,
        load: NodeIndex,
    ) -> Vec<NodeIndex> {
        let regularizer = resolve_coverage(&e.train.regularizer, chain);
        let mut models: Vec<NodeIndex> = Vec::new();
        // The importance estimates after the last stage, by estimate name.
        let mut importance: Vec<(&'static str, NodeIndex)> = Vec::new();
        let suffix = chain
            .map(|d| format!(", {} model", d.name()))
            .unwrap_or_default();
        for (k0, task) in e.tasks.iter().enumerate() {
            let k = k0 + 1;
            let mut inputs = Inputs::default();
            let spec = TrainNode {
                schedule: Schedule::Sequential,
                stage: k,
                tasks: vec![task.clone()],
                past: e.tasks[..k0].to_vec(),
                model: e.model.clone(),
                recipe: recipe(e),
                // At stage 1 there is nothing to protect.
                regularizer: if k == 1 {
                    Vec::new()
                } else {
                    regularizer.clone()
                },
                seed: e.seed,
                device: e.device,
                load: inputs.slot(load),
                previous: models.last().map(|&m| inputs.slot(m)),
                importance: importance.iter().map(|(_, i)| inputs.slot(*i)).collect(),
            };
            let model = self.add(
                NodeSpec::Train(spec),
                Display {
                    label: format!("train({k}: {task}{suffix})"),
                    tasks: vec![task.clone()],
                    stage: Some(k),
                    direction: chain,
                },
                inputs,
                v,
            );
            models.push(model);
            if k == e.tasks.len() {
                break;
            }
            // Importance after task k, for the penalties of stage k + 1.
            let mut next = Vec::new();
            for term in &regularizer {
                let Some(estimate) = Estimate::for_term(term, &e.train.loss, e.train.batch, e.seed)
                else {
                    continue;
                };
                let name = estimate.name();
                let mut inputs = Inputs::default();
                let spec = ImportanceNode {
                    estimate,
                    stage: k,
                    task: task.clone(),
                    device: e.device,
                    model: inputs.slot(model),
                    load: inputs.slot(load),
                    previous: importance
                        .iter()
                        .find(|(m, _)| *m == name)
                        .map(|(_, i)| inputs.slot(*i)),
                };
                let node = self.add(
                    NodeSpec::Importance(spec),
                    Display {
                        label: format!("importance({name}, {k}: {task}{suffix})"),
                        tasks: vec![task.clone()],
                        stage: Some(k),
                        direction: chain,
                    },
                    inputs,
                    v,
                );
                next.push((name, node));
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
            // Stage 0: the untrained model, for forward transfer.
            Schedule::Sequential => (0..=t).collect(),
        };
        // Embedding nodes of this variant, by (kind, chain, task j, model stage m).
        let mut embedded: HashMap<(Embedding, usize, usize, usize), NodeIndex> = HashMap::new();
        let mut evals = Vec::new();
        for &k in &stages {
            let mut inputs = Inputs::default();
            let load_slot = inputs.slot(load);
            let mut directions = Vec::new();
            for (c, chain) in chains.iter().enumerate() {
                let chain_directions: Vec<Direction> = match chain {
                    Some(d) => vec![*d],
                    None => e.evaluate.directions.clone(),
                };
                let mut embed = |b: &mut Builder, role: Embedding, j: usize, m: usize| {
                    *embedded.entry((role, c, j, m)).or_insert_with(|| {
                        b.embedding(
                            v,
                            e,
                            role,
                            *chain,
                            &chain_directions,
                            j,
                            m,
                            models[c][m],
                            load,
                        )
                    })
                };
                let mut tasks = Vec::with_capacity(t);
                for j in 1..=t {
                    let query = inputs.slot(embed(self, Embedding::Query, j, k));
                    let gallery_stage = match (e.schedule, e.index) {
                        (Schedule::Joint, _) | (_, IndexPolicy::Reindex) => k,
                        // Frozen: embedded once by the model that learned the task; tasks
                        // not learned yet (forward transfer) by the current model.
                        (Schedule::Sequential, IndexPolicy::Frozen) => j.min(k),
                    };
                    let gallery = inputs.slot(embed(self, Embedding::Index, j, gallery_stage));
                    // An old task's drift compares both modalities by this stage's
                    // model with those by the model that learned it.
                    let drift = (e.schedule == Schedule::Sequential && j < k).then(|| {
                        let mut both = |b: &mut Builder, m: usize| {
                            [
                                inputs.slot(embed(b, Embedding::Query, j, m)),
                                inputs.slot(embed(b, Embedding::Index, j, m)),
                            ]
                        };
                        DriftInputs {
                            now: both(self, k),
                            then: both(self, j),
                        }
                    });
                    tasks.push(TaskInputs {
                        query,
                        gallery,
                        gallery_stage,
                        drift,
                    });
                }
                // The gallery stages fix the evaluation together with the inputs'
                // keys, so the policy's name is not hashed: at stage 1 both policies
                // read the same galleries and share the node.
                directions.extend(chain_directions.iter().map(|&direction| DirectionInputs {
                    direction,
                    tasks: tasks.clone(),
                }));
            }
            let (stage_task, label) = match e.schedule {
                Schedule::Joint => ("joint".to_string(), "evaluate(joint)".to_string()),
                Schedule::Sequential if k == 0 => {
                    ("init".to_string(), "evaluate(0: init)".to_string())
                }
                Schedule::Sequential => (
                    e.tasks[k - 1].clone(),
                    format!("evaluate({k}: {})", e.tasks[k - 1]),
                ),
            };
            let spec = EvaluateNode {
                stage: k,
                stage_task,
                tasks: e.tasks.clone(),
                seen: match e.schedule {
                    Schedule::Joint => t,
                    Schedule::Sequential => k,
                },
                recall: e.evaluate.recall.clone(),
                galleries: e.evaluate.gallery.clone(),
                directions,
                load: load_slot,
            };
            evals.push(self.add(
                NodeSpec::Evaluate(spec),
                Display {
                    label,
                    tasks: e.tasks.clone(),
                    stage: Some(k),
                    direction: None,
                },
                inputs,
                v,
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
        role: Embedding,
        chain: Option<Direction>,
        directions: &[Direction],
        j: usize,
        m: usize,
        model: NodeIndex,
        load: NodeIndex,
    ) -> NodeIndex {
        // im2txt: image queries, caption gallery; txt2im: the reverse.
        let mut modalities: Vec<Modality> =
            directions
                .iter()
                .map(|d| match (role, d) {
                    (Embedding::Index, Direction::Im2txt)
                    | (Embedding::Query, Direction::Txt2im) => Modality::Text,
                    (Embedding::Index, Direction::Txt2im)
                    | (Embedding::Query, Direction::Im2txt) => Modality::Image,
                })
                .collect();
        modalities.sort();
        modalities.dedup();
        let task = &e.tasks[j - 1];
        let model_name = match e.schedule {
            Schedule::Joint => "joint".to_string(),
            Schedule::Sequential if m == 0 => "init".to_string(),
            Schedule::Sequential => m.to_string(),
        };
        let suffix = chain
            .map(|d| format!(", {} model", d.name()))
            .unwrap_or_default();
        let mut inputs = Inputs::default();
        let node = EmbedNode {
            task: task.clone(),
            modalities,
            model: inputs.slot(model),
            load: inputs.slot(load),
        };
        let (spec, kind) = match role {
            Embedding::Index => (NodeSpec::Index(node), NodeKind::Index),
            Embedding::Query => (NodeSpec::Query(node), NodeKind::Query),
        };
        self.add(
            spec,
            Display {
                label: format!("{}({task} @ {model_name}{suffix})", kind.name()),
                tasks: vec![task.clone()],
                stage: Some(m),
                direction: chain,
            },
            inputs,
            v,
        )
    }
}

/// Which side of a direction an embedding node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Embedding {
    /// A task's gallery.
    Index,
    /// A task's queries.
    Query,
}

/// What every training run of a variant shares.
fn recipe(e: &Experiment) -> Recipe {
    let t = &e.train;
    Recipe {
        loss: t.loss.clone(),
        optimizer: t.optimizer.clone(),
        schedule_lr: t.schedule_lr.clone(),
        epochs: t.epochs,
        batch: t.batch,
        negatives: t.negatives,
        grad_clip: t.grad_clip,
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
