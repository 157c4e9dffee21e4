//! Stage 4: lowering checked experiments into one DAG of keyed nodes.
//!
//! [`lower`] is the entry point. Each node's key is a blake3 hash of its kind, a
//! canonical JSON form of exactly the settings that can change its output, and
//! its inputs' keys. Variants that produce a node with the same key share it: the
//! graph holds each key once and lists the variants that use it.

mod lower;
mod render;

pub use lower::{lower, resolve_coverage};
pub use render::{render, Format};

use crate::lang::{Direction, Experiment};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Bumped whenever what a node computes changes meaning, so old cache entries
/// are never mistaken for new ones.
pub const KEY_SCHEMA: &str = "lethe-node-v2";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Load,
    Train,
    Importance,
    Index,
    Query,
    Evaluate,
    Report,
}

impl NodeKind {
    pub const ALL: [NodeKind; 7] = [
        NodeKind::Load,
        NodeKind::Train,
        NodeKind::Importance,
        NodeKind::Index,
        NodeKind::Query,
        NodeKind::Evaluate,
        NodeKind::Report,
    ];
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Load => "load",
            NodeKind::Train => "train",
            NodeKind::Importance => "importance",
            NodeKind::Index => "index",
            NodeKind::Query => "query",
            NodeKind::Evaluate => "evaluate",
            NodeKind::Report => "report",
        }
    }
}

/// One unit of work.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Hex blake3 key.
    pub key: String,
    pub kind: NodeKind,
    /// Human-readable name, e.g. `train(2: vehicles)` or `index(animals @ 3)`.
    pub label: String,
    /// The tasks whose data the node reads.
    pub tasks: Vec<String>,
    /// The stage (1-based) whose model the node makes or uses, if any.
    pub stage: Option<usize>,
    /// For decoupled training: the direction this model chain serves.
    pub direction: Option<Direction>,
    /// The canonical settings hashed into the key (for `--explain` and tools).
    pub settings: serde_json::Value,
    /// Indices (into `Plan::experiments`) of the variants that use the node.
    pub variants: Vec<usize>,
}

impl Node {
    pub fn short_key(&self) -> &str {
        &self.key[..12]
    }
}

/// The lowered pipeline: a DAG whose node indices are in topological order
/// (every node is added after its inputs).
#[derive(Debug)]
pub struct Plan {
    pub pipeline: String,
    pub experiments: Vec<Experiment>,
    pub graph: DiGraph<Node, ()>,
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
    /// The node's inputs, in the order they were declared.
    pub fn inputs(&self, i: NodeIndex) -> Vec<NodeIndex> {
        let mut inputs: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(i, petgraph::Direction::Incoming)
            .collect();
        inputs.sort();
        inputs
    }
    /// Nodes in topological order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.graph.node_indices().map(move |i| (i, &self.graph[i]))
    }
    pub fn count(&self, kind: NodeKind) -> usize {
        self.graph.node_weights().filter(|n| n.kind == kind).count()
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
