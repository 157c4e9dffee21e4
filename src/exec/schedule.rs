//! Executes the nodes of a plan that are needed and not cached, in dependency
//! order, up to `jobs` at a time.
//!
//! A node is needed when the report needs it and it is not cached: a cached node
//! never asks for its inputs, so resuming after `train(3)` finished does not redo
//! `train(1)`. A failed node fails its dependents only; without `keep_going` no
//! new node starts after the first failure. Each worker runs its node in a rayon
//! pool of `cores / jobs` threads, so parallel nodes do not oversubscribe the
//! cores that candle and rayon use inside a node.

use super::cache::Cache;
use crate::plan::Plan;
use petgraph::graph::NodeIndex;
use petgraph::Direction::{Incoming, Outgoing};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What happened to a node in this run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Already in the cache (possibly made meanwhile by another process).
    Cached,
    Executed(Duration),
    Failed(String),
    /// Not run because an input failed.
    Skipped {
        failed_input: NodeIndex,
    },
    /// Not needed, or not reached after a failure without `--keep-going`.
    NotRun,
}

/// Computes one node's output into an empty directory.
pub trait Runner: Sync {
    fn run(&self, node: NodeIndex, out: &Path) -> Result<(), String>;
    /// The node's `node.json`: what `--explain` compares against later.
    fn describe(&self, node: NodeIndex) -> serde_json::Value;
}

/// Told about starts, steps and ends (progress display).
pub trait Events: Sync {
    fn started(&self, node: NodeIndex);
    /// `done` of `total` units (training steps) of a running node.
    fn progress(&self, _node: NodeIndex, _done: usize, _total: usize) {}
    fn finished(&self, node: NodeIndex, outcome: &Outcome);
}

#[derive(Debug, Clone, Copy)]
pub struct ExecOptions {
    pub jobs: usize,
    pub keep_going: bool,
}

/// Which nodes the run must compute: those not cached whose output the result
/// tables read (evaluations, training logs) or a node that computes reads.
pub fn needed(plan: &Plan, cache: &Cache) -> Vec<bool> {
    let n = plan.graph.node_count();
    let mut needed = vec![false; n];
    let results = plan.result_nodes();
    // Reverse topological order: a node's dependents are decided before it.
    for i in (0..n).rev() {
        let node = NodeIndex::new(i);
        let output_read = results.contains(&node)
            || plan
                .graph
                .neighbors_directed(node, Outgoing)
                .any(|d| needed[d.index()]);
        needed[i] = output_read && !cache.contains(&plan.node(node).key);
    }
    needed
}

struct State {
    outcomes: Vec<Option<Outcome>>,
    waiting_on: Vec<usize>,
    ready: VecDeque<NodeIndex>,
    running: usize,
    stop: bool,
}

/// Runs every needed node. Returns one outcome per node.
pub fn execute(
    plan: &Plan,
    cache: &Cache,
    runner: &dyn Runner,
    events: &dyn Events,
    options: ExecOptions,
) -> Vec<Outcome> {
    execute_nodes(plan, cache, &needed(plan, cache), runner, events, options)
}

/// Runs the nodes `needed` marks (a Slurm job's share of a plan), each after its
/// marked inputs. An unmarked input must be cached: its runner reads it.
pub fn execute_nodes(
    plan: &Plan,
    cache: &Cache,
    needed: &[bool],
    runner: &dyn Runner,
    events: &dyn Events,
    options: ExecOptions,
) -> Vec<Outcome> {
    let n = plan.graph.node_count();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut waiting_on = vec![0usize; n];
    let mut ready = VecDeque::new();
    for (i, outcome) in outcomes.iter_mut().enumerate() {
        let node = NodeIndex::new(i);
        if !needed[i] {
            *outcome = Some(if cache.contains(&plan.node(node).key) {
                Outcome::Cached
            } else {
                Outcome::NotRun
            });
        }
    }
    for i in 0..n {
        if outcomes[i].is_some() {
            continue;
        }
        let node = NodeIndex::new(i);
        waiting_on[i] = plan
            .graph
            .neighbors_directed(node, Incoming)
            .filter(|d| outcomes[d.index()].is_none())
            .count();
        if waiting_on[i] == 0 {
            ready.push_back(node);
        }
    }
    let state = Mutex::new(State {
        outcomes,
        waiting_on,
        ready,
        running: 0,
        stop: false,
    });
    let wake = Condvar::new();
    let jobs = options.jobs.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads_per_job = (cores / jobs).max(1);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads_per_job)
                    .build()
                    .ok();
                worker(
                    plan,
                    cache,
                    runner,
                    events,
                    options,
                    &state,
                    &wake,
                    pool.as_ref(),
                );
            });
        }
    });
    let state = state.into_inner().unwrap_or_else(|e| e.into_inner());
    state
        .outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::NotRun))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn worker(
    plan: &Plan,
    cache: &Cache,
    runner: &dyn Runner,
    events: &dyn Events,
    options: ExecOptions,
    state: &Mutex<State>,
    wake: &Condvar,
    pool: Option<&rayon::ThreadPool>,
) {
    loop {
        let node = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if !s.stop && !crate::interrupt::requested() {
                    if let Some(node) = s.ready.pop_front() {
                        s.running += 1;
                        break node;
                    }
                }
                if s.running == 0 {
                    wake.notify_all();
                    return;
                }
                s = wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        events.started(node);
        let compute = || run_one(plan, cache, runner, node);
        let outcome = match pool {
            Some(p) => p.install(compute),
            None => compute(),
        };
        events.finished(node, &outcome);
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.running -= 1;
        let failed = matches!(outcome, Outcome::Failed(_));
        s.outcomes[node.index()] = Some(outcome);
        if failed {
            if !options.keep_going {
                s.stop = true;
            }
            // Everything downstream is skipped, whatever the mode.
            let mut stack: Vec<NodeIndex> = plan.graph.neighbors_directed(node, Outgoing).collect();
            while let Some(d) = stack.pop() {
                if s.outcomes[d.index()].is_none() {
                    s.outcomes[d.index()] = Some(Outcome::Skipped { failed_input: node });
                    events.finished(d, &Outcome::Skipped { failed_input: node });
                    stack.extend(plan.graph.neighbors_directed(d, Outgoing));
                }
            }
        } else {
            for d in plan.graph.neighbors_directed(node, Outgoing) {
                if s.outcomes[d.index()].is_none() {
                    s.waiting_on[d.index()] -= 1;
                    if s.waiting_on[d.index()] == 0 {
                        s.ready.push_back(d);
                    }
                }
            }
        }
        wake.notify_all();
    }
}

fn run_one(plan: &Plan, cache: &Cache, runner: &dyn Runner, node: NodeIndex) -> Outcome {
    let key = &plan.node(node).key;
    let started = Instant::now();
    let result = (|| -> Result<Outcome, String> {
        let _lock = cache.lock(key).map_err(|e| {
            format!(
                "cannot lock the cache entry in {}: {e}",
                cache.root().display()
            )
        })?;
        if cache.contains(key) {
            return Ok(Outcome::Cached);
        }
        let scratch = cache.scratch(key).map_err(|e| {
            format!(
                "cannot create a scratch directory in {}: {e}",
                cache.root().display()
            )
        })?;
        if let Err(e) = runner.run(node, &scratch) {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
        cache
            .commit(key, &scratch, &runner.describe(node))
            .map_err(|e| {
                format!(
                    "cannot store the result in {}: {e}",
                    cache.entry(key).display()
                )
            })?;
        Ok(Outcome::Executed(started.elapsed()))
    })();
    result.unwrap_or_else(Outcome::Failed)
}
