//! `lethe plan` output: text for people, JSON for tools, DOT and Mermaid drawings.

use super::{NodeKind, Plan};
use crate::lang::{Direction, Experiment};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Text => text(plan),
        Format::Json => json(plan),
        Format::Dot => dot(plan),
        Format::Mermaid => mermaid(plan),
    }
}

/// "all", or the count and the first few variant names.
fn users(plan: &Plan, variants: &[usize]) -> String {
    if variants.len() == plan.experiments.len() {
        return if variants.len() == 1 {
            "all".to_string()
        } else {
            format!("all {}", variants.len())
        };
    }
    let shown: Vec<String> = variants
        .iter()
        .take(3)
        .map(|&v| format!("\"{}\"", plan.variant_name(v)))
        .collect();
    let more = variants.len().saturating_sub(3);
    format!(
        "{}: {}{}",
        variants.len(),
        shown.join(", "),
        if more > 0 {
            format!(", +{more} more")
        } else {
            String::new()
        }
    )
}

fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let n = plan.experiments.len();
    let _ = writeln!(
        out,
        "plan for pipeline \"{}\": {n} variant{}",
        plan.pipeline,
        if n == 1 { "" } else { "s" }
    );
    let width = plan
        .nodes()
        .map(|(_, node)| node.label.len())
        .max()
        .unwrap_or(10)
        .min(60);
    let cache_column = plan.cached.is_some();
    let _ = writeln!(
        out,
        "\n  {:>4}  {:<10}  {:<width$}  {:<12}  {}used by",
        "#",
        "kind",
        "node",
        "key",
        if cache_column { "cached  " } else { "" }
    );
    for (i, node) in plan.nodes() {
        let mark = match plan.is_cached(&node.key) {
            Some(true) => "yes     ",
            Some(false) => "-       ",
            None => "",
        };
        let _ = writeln!(
            out,
            "  {:>4}  {:<10}  {:<width$}  {:<12}  {mark}{}",
            i.index() + 1,
            node.kind().name(),
            node.label,
            node.short_key(),
            users(plan, &node.variants)
        );
    }
    let _ = writeln!(out, "\nvariants: {n}");
    for i in 0..n.min(50) {
        let _ = writeln!(out, "  {:>4}  {}", i + 1, plan.variant_name(i));
    }
    if n > 50 {
        let _ = writeln!(out, "  ... and {} more (see --format json)", n - 50);
    }
    let _ = writeln!(out, "\nnodes          shared  without sharing");
    let (mut shared, mut unshared) = (0, 0);
    for kind in NodeKind::ALL {
        let s = plan.count(kind);
        let u = plan.unshared.get(&kind).copied().unwrap_or(0);
        shared += s;
        unshared += u;
        let _ = writeln!(out, "  {:<12} {:>6}  {:>15}", kind.name(), s, u);
    }
    let _ = writeln!(out, "  {:<12} {:>6}  {:>15}", "total", shared, unshared);
    out
}

/// The JSON document, with fields in the documented order.
#[derive(Serialize)]
struct JsonPlan<'a> {
    pipeline: &'a str,
    variants: Vec<JsonVariant<'a>>,
    nodes: Vec<JsonNode<'a>>,
    totals: BTreeMap<&'static str, JsonTotal>,
}

#[derive(Serialize)]
struct JsonVariant<'a> {
    id: usize,
    label: &'a str,
    seed: u64,
    axes: BTreeMap<&'a str, &'a str>,
    settings: &'a Experiment,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    key: &'a str,
    kind: NodeKind,
    label: &'a str,
    tasks: &'a [String],
    stage: Option<usize>,
    direction: Option<Direction>,
    inputs: Vec<&'a str>,
    variants: &'a [usize],
    spec: &'a super::NodeSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached: Option<bool>,
}

#[derive(Serialize)]
struct JsonTotal {
    shared: usize,
    without_sharing: usize,
}

fn json(plan: &Plan) -> String {
    let doc = JsonPlan {
        pipeline: &plan.pipeline,
        variants: plan
            .experiments
            .iter()
            .enumerate()
            .map(|(id, e)| JsonVariant {
                id,
                label: &e.label,
                seed: e.seed,
                axes: e
                    .axes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                settings: e,
            })
            .collect(),
        nodes: plan
            .nodes()
            .map(|(i, node)| JsonNode {
                key: &node.key,
                kind: node.kind(),
                label: &node.label,
                tasks: &node.tasks,
                stage: node.stage,
                direction: node.direction,
                inputs: plan
                    .inputs(i)
                    .iter()
                    .map(|&j| plan.node(j).key.as_str())
                    .collect(),
                variants: &node.variants,
                spec: &node.spec,
                cached: plan.is_cached(&node.key),
            })
            .collect(),
        totals: NodeKind::ALL
            .iter()
            .map(|k| {
                (
                    k.name(),
                    JsonTotal {
                        shared: plan.count(*k),
                        without_sharing: plan.unshared.get(k).copied().unwrap_or(0),
                    },
                )
            })
            .collect(),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn colour(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Load => "#d9d9d9",
        NodeKind::Init => "#deebf7",
        NodeKind::Train => "#9ecae1",
        NodeKind::Importance => "#fdd0a2",
        NodeKind::Index => "#c7e9c0",
        NodeKind::Query => "#e5f5e0",
        NodeKind::Evaluate => "#dadaeb",
        NodeKind::Zeroshot => "#fcbba1",
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&plan.pipeline));
    let _ = writeln!(
        out,
        "  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];"
    );
    for (i, node) in plan.nodes() {
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\\n{} | {} variant{}\", fillcolor=\"{}\"];",
            i.index(),
            escape(&node.label),
            node.short_key(),
            node.variants.len(),
            if node.variants.len() == 1 { "" } else { "s" },
            colour(node.kind())
        );
    }
    for e in plan.graph.edge_indices() {
        if let Some((a, b)) = plan.graph.edge_endpoints(e) {
            let _ = writeln!(out, "  n{} -> n{};", a.index(), b.index());
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, node) in plan.nodes() {
        let label = node.label.replace('"', "#quot;");
        let _ = writeln!(
            out,
            "  n{}[\"{}<br/>{}\"]:::{}",
            i.index(),
            label,
            node.short_key(),
            node.kind().name()
        );
    }
    for e in plan.graph.edge_indices() {
        if let Some((a, b)) = plan.graph.edge_endpoints(e) {
            let _ = writeln!(out, "  n{} --> n{}", a.index(), b.index());
        }
    }
    for kind in NodeKind::ALL {
        let _ = writeln!(out, "  classDef {} fill:{}", kind.name(), colour(kind));
    }
    out
}
