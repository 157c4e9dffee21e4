//! Stage 4: lowering checked experiments into one DAG of keyed nodes.
//!
//! [`lower`] is the entry point. Each node's key is a blake3 hash of its kind, a
//! canonical JSON form of exactly the settings that can change its output, and
//! its inputs' keys. Variants that produce a node with the same key share it: the
//! graph holds each key once and lists the variants that use it.

mod lower;
mod render;
pub mod spec;

pub use lower::{lower, resolve_coverage};
pub use render::{render, Format};
pub use spec::{
    DirectionInputs, DriftInputs, EmbedNode, Estimate, EvaluateNode, ImportanceNode, InitNode,
    LoadNode, NodeKind, NodeSpec, Recipe, Slot, TaskInputs, TrainNode, ZeroshotImages,
    ZeroshotNode,
};

use crate::lang::{Direction, Experiment};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Bumped whenever what a node computes changes meaning, so old cache entries
/// are never mistaken for new ones.
pub const KEY_SCHEMA: &str = "lethe-node-v3";

/// The key of a node: `blake3(KEY_SCHEMA, kind, canonical spec, input keys)`.
pub fn node_key<'a>(spec: &NodeSpec, input_keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(KEY_SCHEMA.as_bytes());
    h.update(b"\0");
    h.update(spec.kind().name().as_bytes());
    h.update(b"\0");
    // serde_json maps are sorted by key and numbers are parsed values: canonical.
    h.update(spec.canonical().to_string().as_bytes());
    for key in input_keys {
        h.update(b"\0");
        h.update(key.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// One unit of work: its spec (what it computes) and display metadata.
#[derive(Debug, Clone)]
pub struct Node {
    /// Hex blake3 key.
    pub key: String,
    pub spec: NodeSpec,
    /// Human-readable name, e.g. `train(2: vehicles)` or `index(animals @ 3)`.
    pub label: String,
    /// The tasks whose data the node reads (for display and grouping).
    pub tasks: Vec<String>,
    /// The stage (1-based) whose model the node makes or uses, if any.
    pub stage: Option<usize>,
    /// For decoupled training: the direction this model chain serves.
    pub direction: Option<Direction>,
    /// The inputs in slot order (the order their keys were hashed).
    pub inputs: Vec<NodeIndex>,
    /// Indices (into `Plan::experiments`) of the variants that use the node.
    pub variants: Vec<usize>,
}

impl Node {
    pub fn kind(&self) -> NodeKind {
        self.spec.kind()
    }
    pub fn short_key(&self) -> &str {
        &self.key[..12]
    }
}

/// The nodes whose outputs make one variant's results.
#[derive(Debug, Clone, Default)]
pub struct VariantNodes {
    /// Its evaluations, stage by stage.
    pub evaluations: Vec<NodeIndex>,
    /// Its training runs, chain by chain and stage by stage.
    pub trainings: Vec<NodeIndex>,
    /// Its zero-shot classifications, class set by class set and stage by stage.
    pub zeroshot: Vec<NodeIndex>,
}

/// The lowered pipeline: a DAG whose node indices are in topological order
/// (every node is added after its inputs).
#[derive(Debug)]
pub struct Plan {
    pub pipeline: String,
    pub experiments: Vec<Experiment>,
    pub graph: DiGraph<Node, ()>,
    /// Per variant (index into `experiments`), the nodes its results come from.
    pub variant_nodes: Vec<VariantNodes>,
    /// Manifest content hash → a path it was read from (paths are not hashed).
    datasets: BTreeMap<String, PathBuf>,
    by_key: HashMap<String, NodeIndex>,
    /// How many nodes of each kind the variants would need if nothing were shared.
    pub unshared: BTreeMap<NodeKind, usize>,
    /// Keys found in a cache, once [`Plan::mark_cached`] has looked.
    pub cached: Option<std::collections::HashSet<String>>,
}

impl Plan {
    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.graph[i]
    }
    pub fn find(&self, key: &str) -> Option<NodeIndex> {
        self.by_key.get(key).copied()
    }
    /// The node's inputs, in slot order.
    pub fn inputs(&self, i: NodeIndex) -> &[NodeIndex] {
        &self.graph[i].inputs
    }
    /// The input in a slot of a node.
    pub fn input(&self, i: NodeIndex, slot: Slot) -> Option<&Node> {
        self.graph[i].inputs.get(slot).map(|&j| &self.graph[j])
    }
    /// The nodes whose outputs the result tables read: every variant's
    /// evaluations, zero-shot classifications and training runs.
    pub fn result_nodes(&self) -> std::collections::HashSet<NodeIndex> {
        self.variant_nodes
            .iter()
            .flat_map(|v| {
                v.evaluations
                    .iter()
                    .chain(&v.zeroshot)
                    .chain(&v.trainings)
                    .copied()
            })
            .collect()
    }
    /// The manifest with this content hash (a load node's dataset).
    pub fn dataset_path(&self, hash: &str) -> Option<&Path> {
        self.datasets.get(hash).map(PathBuf::as_path)
    }
    /// The manifest with this content hash, read again (the executor's view of a
    /// dataset the planner hashed).
    pub fn dataset_manifest(&self, hash: &str) -> Result<crate::data::Manifest, String> {
        let path = self
            .dataset_path(hash)
            .ok_or_else(|| format!("no manifest with content hash {hash}"))?;
        crate::data::Manifest::load(path).map_err(|e| e.to_string())
    }
    /// Nodes in topological order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.graph.node_indices().map(move |i| (i, &self.graph[i]))
    }
    pub fn count(&self, kind: NodeKind) -> usize {
        self.graph
            .node_weights()
            .filter(|n| n.kind() == kind)
            .count()
    }
    /// Records which nodes `contains` reports cached (shown by `lethe plan`).
    pub fn mark_cached(&mut self, contains: impl Fn(&str) -> bool) {
        self.cached = Some(
            self.graph
                .node_weights()
                .filter(|n| contains(&n.key))
                .map(|n| n.key.clone())
                .collect(),
        );
    }

    /// Whether a node is cached: `None` when no cache was consulted.
    pub fn is_cached(&self, key: &str) -> Option<bool> {
        self.cached.as_ref().map(|c| c.contains(key))
    }

    /// A variant's display name: its label, and its seed when seeds are swept.
    pub fn variant_name(&self, i: usize) -> String {
        let e = &self.experiments[i];
        if self.experiments.iter().any(|o| o.seed != e.seed) {
            format!("{} [seed {}]", e.label, e.seed)
        } else {
            e.label.clone()
        }
    }
}
