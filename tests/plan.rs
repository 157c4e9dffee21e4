//! Lowering: node sharing across variants, key semantics, golden outputs.
//! Regenerate the golden files with `LETHE_BLESS=1 cargo test --test plan`, and
//! read the diff before committing it: a key that changed means cached results
//! would no longer be found.

mod common;
use common::*;
use lethe::lang::ManifestCache;
use lethe::plan::{self, Format, NodeKind, Plan};
use std::path::Path;

fn plan_of(path: &Path) -> Plan {
    let o = check_file(path);
    let p = o.pipeline().clone();
    plan::lower(&p.name, p.experiments, &mut ManifestCache::default())
}

fn plan_text(body: &str) -> Plan {
    let o = check(&with_header(body));
    let p = o.pipeline().clone();
    plan::lower(&p.name, p.experiments, &mut ManifestCache::default())
}

fn keys(plan: &Plan, kind: NodeKind) -> Vec<String> {
    plan.nodes()
        .filter(|(_, n)| n.kind() == kind)
        .map(|(_, n)| n.key.clone())
        .collect()
}

#[test]
fn table1_shares_training_as_specified() {
    let plan = plan_of(&repo().join("pipelines/table1.pipe"));
    assert_eq!(plan.experiments.len(), 60);
    // Per seed and architecture: 2 joint, 1 shared train(1), 2 x {ft, EWC, MAS},
    // 4 for each decoupled variant (two direction models, tasks 2 and 3).
    assert_eq!(plan.count(NodeKind::Train), 102);
    assert_eq!(plan.unshared[&NodeKind::Train], 192);
    assert_eq!(plan.count(NodeKind::Load), 1);
    // One untrained model per seed and architecture, shared by every chain.
    assert_eq!(plan.count(NodeKind::Init), 6);
    // train(1) of one seed and architecture serves all 8 continual variants.
    let first = plan
        .nodes()
        .find(|(_, n)| n.label == "train(1: animals)")
        .map(|(_, n)| n)
        .unwrap();
    assert_eq!(first.variants.len(), 8);
}

#[test]
fn nodes_are_in_topological_order() {
    let plan = plan_of(&repo().join("pipelines/table1.pipe"));
    for e in plan.graph.edge_indices() {
        let (a, b) = plan.graph.edge_endpoints(e).unwrap();
        assert!(
            a < b,
            "edge {} -> {} goes backwards",
            plan.node(a).label,
            plan.node(b).label
        );
    }
    assert!(petgraph::algo::toposort(&plan.graph, None).is_ok());
}

#[test]
fn keys_are_deterministic() {
    let a = plan_of(&repo().join("pipelines/table1.pipe"));
    let b = plan_of(&repo().join("pipelines/table1.pipe"));
    let ka: Vec<&str> = a.nodes().map(|(_, n)| n.key.as_str()).collect();
    let kb: Vec<&str> = b.nodes().map(|(_, n)| n.key.as_str()).collect();
    assert_eq!(ka, kb);
}

#[test]
fn index_policy_never_changes_training() {
    let plan = plan_text("    sweep { index = [frozen, reindex] }");
    assert_eq!(plan.count(NodeKind::Train), 3);
    assert_eq!(plan.unshared[&NodeKind::Train], 6);
    // Stages 0 (the untrained model) and 1 evaluate the same galleries under
    // both policies.
    assert_eq!(plan.count(NodeKind::Evaluate), 6);
}

#[test]
fn first_task_does_not_depend_on_the_regularizer() {
    let plan = plan_text(
        "    sweep { train.regularizer = [none, ewc(lambda = 10), mas, modx, distill, replay(memory = 20)] }",
    );
    let first: Vec<_> = plan
        .nodes()
        .filter(|(_, n)| n.label.starts_with("train(1:"))
        .collect();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1.variants.len(), 6);
    assert_eq!(plan.count(NodeKind::Train), 1 + 6 * 2);
}

#[test]
fn penalty_strength_does_not_change_importance() {
    let plan = plan_text(
        "    sweep { train.regularizer.lambda = [1, 10, 100] }\n    train.regularizer = ewc",
    );
    // Fisher after tasks 1 and 2 of the shared chain prefix: after task 1 is shared by
    // all three; after task 2 each lambda has its own train(2) and so its own Fisher.
    assert_eq!(plan.count(NodeKind::Importance), 1 + 3);
    assert_eq!(plan.count(NodeKind::Train), 1 + 3 * 2);
}

#[test]
fn coverage_does_not_change_importance_but_changes_training() {
    let plan = plan_text(
        "    sweep { train.regularizer.on = [both, image, text] }\n    train.regularizer = mas",
    );
    let imp_after_1: Vec<_> = plan
        .nodes()
        .filter(|(_, n)| n.kind() == NodeKind::Importance && n.stage == Some(1))
        .collect();
    assert_eq!(imp_after_1.len(), 1);
    assert_eq!(plan.count(NodeKind::Train), 1 + 3 * 2);
}

#[test]
fn every_training_setting_changes_the_key() {
    let base = plan_text("");
    for body in [
        "    seed = 1",
        "    device = cuda",
        "    model { image = mlp(hidden = [512]) }",
        "    train { epochs = 3 }",
        "    train { batch = 64 }",
        "    train { optimizer = adamw(lr = 1e-3) }",
        "    train { loss = infonce }",
        "    train { schedule_lr = cosine }",
        "    train { grad_clip = none }",
    ] {
        let other = plan_text(body);
        assert_ne!(
            keys(&base, NodeKind::Train)[0],
            keys(&other, NodeKind::Train)[0],
            "{body}"
        );
    }
    // What cannot change a model leaves its key alone.
    for body in [
        "    index = reindex",
        "    evaluate { recall = [1] }",
        "    train { log = step }",
        "    train { regularizer = ewc }",
    ] {
        let other = plan_text(body);
        assert_eq!(
            keys(&base, NodeKind::Train)[0],
            keys(&other, NodeKind::Train)[0],
            "{body}"
        );
    }
}

#[test]
fn same_settings_written_differently_share_keys() {
    let a = plan_text("    train { optimizer = adamw(lr = 2e-4) }");
    let b = plan_text("    train { optimizer = adamw(lr = 0.0002, weight_decay = 1e-4) }");
    assert_eq!(keys(&a, NodeKind::Train), keys(&b, NodeKind::Train));
}

#[test]
fn decoupled_chains_fork_after_the_first_task() {
    let plan = plan_text("    train { decouple = true; regularizer = ewc(on = query) }");
    let labels: Vec<String> = plan
        .nodes()
        .filter(|(_, n)| n.kind() == NodeKind::Train)
        .map(|(_, n)| n.label.clone())
        .collect();
    assert_eq!(
        labels,
        [
            "train(1: d1, im2txt model)",
            "train(2: d2, im2txt model)",
            "train(3: d3, im2txt model)",
            "train(2: d2, txt2im model)",
            "train(3: d3, txt2im model)",
        ]
    );
}

#[test]
fn joint_schedule_trains_once() {
    let plan = plan_text("    schedule = joint");
    assert_eq!(plan.count(NodeKind::Train), 1);
    assert_eq!(plan.count(NodeKind::Evaluate), 1);
    assert_eq!(plan.count(NodeKind::Importance), 0);
}

fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    // Paths differ between machines; keys and labels do not.
    let actual = actual.replace(&repo().display().to_string(), "<repo>");
    if std::env::var_os("LETHE_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with LETHE_BLESS=1", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n  expected: {:?}\n  actual:   {:?}",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn golden_plans() {
    for fixture_name in ["ewc", "grid"] {
        let plan = plan_of(&fixture(&format!("{fixture_name}.pipe")));
        golden(
            &format!("{fixture_name}.plan.txt"),
            &plan::render(&plan, Format::Text),
        );
        golden(
            &format!("{fixture_name}.plan.json"),
            &plan::render(&plan, Format::Json),
        );
        golden(
            &format!("{fixture_name}.plan.dot"),
            &plan::render(&plan, Format::Dot),
        );
        golden(
            &format!("{fixture_name}.plan.mmd"),
            &plan::render(&plan, Format::Mermaid),
        );
    }
}

#[test]
fn json_plan_has_the_documented_shape() {
    let plan = plan_of(&fixture("grid.pipe"));
    let doc: serde_json::Value = serde_json::from_str(&plan::render(&plan, Format::Json)).unwrap();
    assert_eq!(doc["pipeline"], "toy-grid");
    let variants = doc["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 12);
    assert_eq!(variants[0]["label"], "joint, slow");
    assert!(variants[0]["settings"]["train"]["optimizer"]["lr"].is_number());
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), plan.graph.node_count());
    let known: std::collections::HashSet<&str> =
        nodes.iter().map(|n| n["key"].as_str().unwrap()).collect();
    for n in nodes {
        for field in ["key", "kind", "label", "inputs", "variants", "spec"] {
            assert!(!n[field].is_null(), "node without {field}: {n}");
        }
        for input in n["inputs"].as_array().unwrap() {
            assert!(known.contains(input.as_str().unwrap()));
        }
    }
}

#[test]
fn every_node_spec_round_trips_through_its_canonical_form_with_the_same_key() {
    use lethe::plan::{node_key, Estimate, NodeSpec};
    let mut seen = std::collections::BTreeSet::new();
    let mut estimates = std::collections::BTreeSet::new();
    for file in [
        "pipelines/table1.pipe",
        "pipelines/modx.pipe",
        "pipelines/zeroshot.pipe",
    ] {
        let plan = plan_of(&repo().join(file));
        for (i, node) in plan.nodes() {
            let canonical = node.spec.canonical();
            let back: NodeSpec = serde_json::from_value(canonical.clone())
                .unwrap_or_else(|e| panic!("{}: {e}\n{canonical}", node.label));
            assert_eq!(back, node.spec, "{}", node.label);
            assert_eq!(back.canonical(), canonical);
            let inputs: Vec<&str> = plan
                .inputs(i)
                .iter()
                .map(|&j| plan.node(j).key.as_str())
                .collect();
            assert_eq!(node_key(&back, inputs), node.key, "{}", node.label);
            seen.insert(node.kind());
            if let NodeSpec::Importance(s) = &node.spec {
                estimates.insert(s.estimate.name());
                assert!(matches!(
                    s.estimate,
                    Estimate::Fisher { .. } | Estimate::Omega
                ));
            }
        }
    }
    assert_eq!(seen.len(), NodeKind::ALL.len(), "kinds covered: {seen:?}");
    assert_eq!(estimates.len(), 2, "both estimates covered: {estimates:?}");
}

#[test]
fn evaluation_inputs_are_wired_by_slot() {
    use lethe::plan::NodeSpec;
    let plan = plan_of(&repo().join("pipelines/table1.pipe"));
    for (i, node) in plan.nodes() {
        let NodeSpec::Evaluate(spec) = &node.spec else {
            continue;
        };
        assert_eq!(plan.input(i, spec.load).unwrap().kind(), NodeKind::Load);
        for d in &spec.directions {
            assert_eq!(d.tasks.len(), spec.tasks.len());
            for (j, t) in d.tasks.iter().enumerate() {
                let query = plan.input(i, t.query).unwrap();
                let gallery = plan.input(i, t.gallery).unwrap();
                assert_eq!(query.kind(), NodeKind::Query);
                assert_eq!(gallery.kind(), NodeKind::Index);
                assert_eq!(query.tasks, [spec.tasks[j].clone()]);
                assert_eq!(gallery.tasks, [spec.tasks[j].clone()]);
                assert_eq!(query.stage, Some(spec.stage));
                assert_eq!(gallery.stage, Some(t.gallery_stage));
                // Old tasks (learned before this stage) have drift inputs: both
                // modalities by this stage's model and by the one that learned it.
                let sequential = spec.stage_task != "joint";
                assert_eq!(t.drift.is_some(), sequential && j + 1 < spec.stage);
                if let Some(d) = &t.drift {
                    for (slots, stage) in [(d.now, spec.stage), (d.then, j + 1)] {
                        let [q, x] = slots.map(|s| plan.input(i, s).unwrap());
                        assert_eq!((q.kind(), x.kind()), (NodeKind::Query, NodeKind::Index));
                        assert_eq!((q.stage, x.stage), (Some(stage), Some(stage)));
                        assert_eq!(q.direction, x.direction);
                    }
                }
            }
        }
    }
}
