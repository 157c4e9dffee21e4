//! Which needed nodes share a Slurm job.
//!
//! A job per node would make a Table 1 run hundreds of jobs, most of them
//! seconds long. Nodes are grouped by *wave*: a `train` node's wave is one more
//! than its inputs' highest, every other node's is its inputs' highest (inputs
//! computed in this run only; cached ones count 0). The importance estimate after
//! a training stage joins that stage's job. Per wave there are:
//! - heavy jobs: the wave's trainings (each with its importance estimates),
//!   independent of one another, dealt into at most `heavy_per_wave` jobs;
//! - one light job: the wave's loading, indexing, querying and evaluation, many
//!   small nodes that the job runs in parallel on its cores.
//!
//! A heavy job of wave w reads only nodes of earlier waves; the light job of wave
//! w reads the heavy jobs of waves up to w and light jobs before it. So the jobs,
//! in the order returned, form a DAG in which every dependency comes first.

use crate::plan::{NodeKind, Plan};
use petgraph::graph::NodeIndex;
use petgraph::Direction::Incoming;

/// One job's nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct JobGroup {
    /// In topological order.
    pub nodes: Vec<NodeIndex>,
    pub wave: usize,
    /// Whether it trains (so it gets `--gpus-per-node-kind train=N`).
    pub trains: bool,
    /// `wave2-train1`, `wave2-light`: the job's name after the pipeline's.
    pub label: String,
}

/// The jobs for the nodes `needed` marks, at most `max_jobs` of them when the
/// waves allow (every wave needs one job of each kind it has); dependencies first.
pub fn group(plan: &Plan, needed: &[bool], max_jobs: usize) -> Vec<JobGroup> {
    let n = plan.graph.node_count();
    let mut wave = vec![0usize; n];
    // A heavy unit's first node: the training, or an importance estimate whose
    // training is cached.
    let mut unit_of: Vec<Option<usize>> = vec![None; n];
    // Node indices are a topological order (the planner adds inputs first).
    for i in 0..n {
        if !needed[i] {
            continue;
        }
        let node = NodeIndex::new(i);
        let inputs: Vec<usize> = plan
            .graph
            .neighbors_directed(node, Incoming)
            .map(NodeIndex::index)
            .filter(|&d| needed[d])
            .collect();
        let highest = inputs.iter().map(|&d| wave[d]).max().unwrap_or(0);
        match plan.node(node).kind() {
            NodeKind::Train => {
                wave[i] = highest + 1;
                unit_of[i] = Some(i);
            }
            NodeKind::Importance => {
                let training = inputs
                    .iter()
                    .copied()
                    .find(|&d| plan.node(NodeIndex::new(d)).kind() == NodeKind::Train);
                match training {
                    Some(t) => {
                        wave[i] = wave[t];
                        unit_of[i] = unit_of[t];
                    }
                    None => {
                        wave[i] = highest + 1;
                        unit_of[i] = Some(i);
                    }
                }
            }
            NodeKind::Load
            | NodeKind::Init
            | NodeKind::Index
            | NodeKind::Query
            | NodeKind::Evaluate
            | NodeKind::Zeroshot => wave[i] = highest,
        }
    }
    let waves = (0..n).filter(|&i| needed[i]).map(|i| wave[i]).max();
    let Some(last) = waves else {
        return Vec::new();
    };
    let has_light = |w: usize| (0..n).any(|i| needed[i] && unit_of[i].is_none() && wave[i] == w);
    let light_jobs = (0..=last).filter(|&w| has_light(w)).count();
    // Trainings are in waves 1..=last.
    let heavy_waves = last.max(1);
    let heavy_per_wave = (max_jobs.saturating_sub(light_jobs) / heavy_waves).max(1);
    let mut jobs = Vec::new();
    for w in 0..=last {
        // Heavy units of this wave, each kept whole, dealt round-robin.
        let units: Vec<usize> = (0..n)
            .filter(|&i| needed[i] && wave[i] == w && unit_of[i] == Some(i))
            .collect();
        let count = units.len().min(heavy_per_wave);
        let slot: std::collections::HashMap<usize, usize> = units
            .iter()
            .enumerate()
            .map(|(k, &u)| (u, k % count))
            .collect();
        let mut heavy: Vec<Vec<NodeIndex>> = vec![Vec::new(); count];
        for i in 0..n {
            if let (true, Some(u)) = (needed[i] && wave[i] == w, unit_of[i]) {
                heavy[slot[&u]].push(NodeIndex::new(i));
            }
        }
        for (k, nodes) in heavy.into_iter().enumerate() {
            jobs.push(JobGroup {
                nodes,
                wave: w,
                trains: true,
                label: format!("wave{w}-train{}", k + 1),
            });
        }
        let light: Vec<NodeIndex> = (0..n)
            .filter(|&i| needed[i] && wave[i] == w && unit_of[i].is_none())
            .map(NodeIndex::new)
            .collect();
        if !light.is_empty() {
            jobs.push(JobGroup {
                nodes: light,
                wave: w,
                trains: false,
                label: format!("wave{w}-light"),
            });
        }
    }
    jobs
}
