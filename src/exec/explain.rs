//! `--explain`: for every node that will run, why its key is new. The cache keeps
//! each node's settings and input keys (`node.json`); the closest earlier node
//! with the same label tells which setting or input changed.

use super::cache::Cache;
use crate::plan::Plan;
use petgraph::graph::NodeIndex;
use serde_json::Value;

/// One reason per node that will run, in plan order.
pub fn explain(plan: &Plan, cache: &Cache, needed: &[bool]) -> Vec<(NodeIndex, String)> {
    let previous = cache.descriptions();
    let mut out = Vec::new();
    for (i, node) in plan.nodes() {
        if !needed[i.index()] {
            continue;
        }
        let candidates: Vec<&Value> = previous
            .iter()
            .filter(|d| {
                d["label"] == node.label.as_str()
                    && d["kind"] == serde_json::to_value(node.kind()).unwrap_or_default()
            })
            .collect();
        let inputs: Vec<(String, String)> = plan
            .inputs(i)
            .iter()
            .map(|&j| (plan.node(j).label.clone(), plan.node(j).key.clone()))
            .collect();
        let reasons = candidates
            .iter()
            .map(|d| {
                let mut changes = Vec::new();
                diff("", &d["settings"], &node.spec.canonical(), &mut changes);
                for (label, key) in &inputs {
                    let same = d["inputs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|x| x["label"] == label.as_str() && x["key"] == key.as_str());
                    if !same {
                        changes.push(format!("input {label} changed"));
                    }
                }
                changes
            })
            .min_by_key(|c| c.len());
        let reason = match reasons {
            None => "never run: no cached node has this label".to_string(),
            Some(c) if c.is_empty() => "its cached entry was removed".to_string(),
            Some(c) => {
                let more = c.len().saturating_sub(4);
                let mut text = c.into_iter().take(4).collect::<Vec<_>>().join("; ");
                if more > 0 {
                    text.push_str(&format!("; and {more} more"));
                }
                text
            }
        };
        out.push((i, reason));
    }
    out
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..37])
    } else {
        s
    }
}

/// Paths where two JSON values differ, as `path: old -> new`.
fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if old != new => out.push(format!("{path}: {} -> {}", short(old), short(new))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_the_changed_paths() {
        let mut out = Vec::new();
        diff(
            "",
            &serde_json::json!({"optimizer": {"lr": 0.0002, "kind": "adamw"}, "epochs": 20}),
            &serde_json::json!({"optimizer": {"lr": 0.001, "kind": "adamw"}, "epochs": 20}),
            &mut out,
        );
        assert_eq!(out, ["optimizer.lr: 0.0002 -> 0.001"]);
    }
}
