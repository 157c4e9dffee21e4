//! The scheduler and cache with stand-in node runners: reruns execute nothing,
//! failures stay with their dependents, concurrent runs never compute a key twice.

mod common;
use common::*;
use lethe::exec::{execute, Cache, Events, ExecOptions, Outcome, Runner};
use lethe::lang::ManifestCache;
use lethe::plan::{self, Plan};
use petgraph::graph::NodeIndex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

fn plan_of(name: &str) -> Plan {
    let o = check_file(&fixture(name));
    let p = o.pipeline().clone();
    plan::lower(&p.name, p.experiments, &mut ManifestCache::default())
}

/// Writes the node's key; fails the nodes whose label is in `fail`; counts runs per key.
struct Fake<'a> {
    plan: &'a Plan,
    fail: Vec<&'static str>,
    runs: Mutex<HashMap<String, usize>>,
    delay_ms: u64,
}

impl Runner for Fake<'_> {
    fn run(&self, node: NodeIndex, out: &Path) -> Result<(), String> {
        let n = self.plan.node(node);
        *self.runs.lock().unwrap().entry(n.key.clone()).or_default() += 1;
        std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
        if self.fail.contains(&n.label.as_str()) {
            return Err(format!("{} broke", n.label));
        }
        std::fs::write(out.join("output"), &n.key).map_err(|e| e.to_string())
    }
    fn describe(&self, node: NodeIndex) -> serde_json::Value {
        serde_json::json!({ "label": self.plan.node(node).label })
    }
}

struct Quiet;
impl Events for Quiet {
    fn started(&self, _: NodeIndex) {}
    fn finished(&self, _: NodeIndex, _: &Outcome) {}
}

fn fake<'a>(plan: &'a Plan, fail: Vec<&'static str>) -> Fake<'a> {
    Fake {
        plan,
        fail,
        runs: Mutex::new(HashMap::new()),
        delay_ms: 0,
    }
}

fn count(outcomes: &[Outcome], f: impl Fn(&Outcome) -> bool) -> usize {
    outcomes.iter().filter(|o| f(o)).count()
}

#[test]
fn a_second_run_executes_nothing() {
    let plan = plan_of("ewc.pipe");
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let options = ExecOptions {
        jobs: 2,
        keep_going: false,
    };
    let first = execute(&plan, &cache, &fake(&plan, vec![]), &Quiet, options);
    assert_eq!(
        count(&first, |o| matches!(o, Outcome::Executed(_))),
        plan.graph.node_count()
    );
    for (_, n) in plan.nodes() {
        assert_eq!(
            std::fs::read_to_string(cache.entry(&n.key).join("output")).unwrap(),
            n.key
        );
        assert_eq!(
            cache.description(&n.key).unwrap()["label"],
            n.label.as_str()
        );
    }
    let second = execute(&plan, &cache, &fake(&plan, vec![]), &Quiet, options);
    assert_eq!(count(&second, |o| matches!(o, Outcome::Executed(_))), 0);
    // Everything the tables read is reported cached; the rest is not needed.
    assert!(second
        .iter()
        .all(|o| matches!(o, Outcome::Cached | Outcome::NotRun)));
}

#[test]
fn cached_nodes_do_not_pull_their_inputs() {
    let plan = plan_of("ewc.pipe");
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let options = ExecOptions {
        jobs: 1,
        keep_going: false,
    };
    execute(&plan, &cache, &fake(&plan, vec![]), &Quiet, options);
    // Forget the Fisher after task 1: only train(2) reads it, and train(2) is cached.
    let first = plan
        .nodes()
        .find(|(_, n)| n.label == "importance(ewc, 1: d1)")
        .unwrap()
        .1
        .key
        .clone();
    std::fs::remove_dir_all(cache.entry(&first)).unwrap();
    let runner = fake(&plan, vec![]);
    let again = execute(&plan, &cache, &runner, &Quiet, options);
    assert_eq!(count(&again, |o| matches!(o, Outcome::Executed(_))), 0);
    // Forget train(3): the tables read its log, so it runs again, and only it.
    let last = plan
        .nodes()
        .find(|(_, n)| n.label == "train(3: d3)")
        .unwrap()
        .1
        .key
        .clone();
    std::fs::remove_dir_all(cache.entry(&last)).unwrap();
    let again = execute(&plan, &cache, &runner, &Quiet, options);
    assert_eq!(count(&again, |o| matches!(o, Outcome::Executed(_))), 1);
    assert!(runner.runs.lock().unwrap().contains_key(&last));
}

#[test]
fn failure_skips_dependents_and_keep_going_finishes_the_rest() {
    let plan = plan_of("grid.pipe");
    let failing = "train(2: second)";
    for keep_going in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let out = execute(
            &plan,
            &cache,
            &fake(&plan, vec![failing]),
            &Quiet,
            ExecOptions {
                jobs: 1,
                keep_going,
            },
        );
        let failed: Vec<NodeIndex> = (0..out.len())
            .map(NodeIndex::new)
            .filter(|i| matches!(out[i.index()], Outcome::Failed(_)))
            .collect();
        assert!(!failed.is_empty());
        for (i, o) in out.iter().enumerate() {
            if let Outcome::Skipped { failed_input } = o {
                // Skipped nodes depend (transitively) on a failure.
                assert!(petgraph::algo::has_path_connecting(
                    &plan.graph,
                    *failed_input,
                    NodeIndex::new(i),
                    None
                ));
            }
        }
        let executed = count(&out, |o| matches!(o, Outcome::Executed(_)));
        if keep_going {
            // Every node not downstream of a failure ran, the joint variants' among them.
            let joint = plan
                .nodes()
                .filter(|(_, n)| n.label == "train(joint)")
                .count();
            assert_eq!(
                count(&out, |o| matches!(o, Outcome::NotRun)),
                0,
                "every node ran, failed or was skipped"
            );
            assert!(executed > joint);
        } else {
            assert_eq!(
                failed.len(),
                1,
                "no new node starts after the first failure"
            );
        }
        if let Outcome::Failed(msg) = &out[failed[0].index()] {
            assert!(msg.contains("broke"));
        }
        // Failed nodes leave nothing in the cache.
        for f in &failed {
            assert!(!cache.contains(&plan.node(*f).key));
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}

#[test]
fn concurrent_runs_share_a_cache_without_computing_a_key_twice() {
    let plan = plan_of("grid.pipe");
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let runner = Fake {
        plan: &plan,
        fail: vec![],
        runs: Mutex::new(HashMap::new()),
        delay_ms: 2,
    };
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                execute(
                    &plan,
                    &cache,
                    &runner,
                    &Quiet,
                    ExecOptions {
                        jobs: 2,
                        keep_going: false,
                    },
                )
            });
        }
    });
    let runs = runner.runs.lock().unwrap();
    assert_eq!(runs.len(), plan.graph.node_count());
    assert!(
        runs.values().all(|&n| n == 1),
        "a key was computed twice: {runs:?}"
    );
}
