//! Job mode (`lethe run FILE --job-keys LIST`): what one Slurm job runs. It plans
//! the pipeline as the driver did and computes the listed nodes whose entries are
//! missing, each after its listed inputs; every other input must be cached
//! (another job made it). No run directory is written: the driver writes it.

use super::super::cache::Cache;
use super::super::nodes::NodeRunner;
use super::super::progress::Progress;
use super::super::schedule::{execute_nodes, ExecOptions, Outcome};
use crate::diagnostics::{Diagnostic, SourceMap};
use crate::lang::{self, DeviceSpec, ManifestCache};
use crate::plan;
use petgraph::graph::NodeIndex;
use petgraph::Direction::Incoming;
use std::path::Path;

/// Why a job did not compute its nodes.
pub enum JobError {
    /// The pipeline, its data or the key list are not what was submitted (exit 2).
    Invalid(Vec<Diagnostic>, SourceMap),
    /// A node failed or an input is missing (exit 1).
    Failed(String),
}

/// Computes the nodes whose keys `keys_file` lists; returns how many it computed.
pub fn run_job(
    file: &Path,
    cache_dir: &Path,
    device: Option<DeviceSpec>,
    keys_file: &Path,
    jobs: usize,
) -> Result<usize, JobError> {
    let invalid = |m: String| JobError::Invalid(vec![Diagnostic::error(m)], SourceMap::new());
    let mut sources = SourceMap::new();
    let mut manifests = ManifestCache::default();
    let mut pipeline = match lang::load(file, &mut sources, &mut manifests) {
        Ok(p) => p,
        Err(d) => return Err(JobError::Invalid(d, sources)),
    };
    if let Some(d) = device {
        for e in &mut pipeline.experiments {
            e.device = d;
        }
    }
    let device = crate::model::device(pipeline.experiments[0].device).map_err(invalid)?;
    let plan = plan::lower(&pipeline.name, pipeline.experiments, &mut manifests);
    let text = std::fs::read_to_string(keys_file)
        .map_err(|e| invalid(format!("cannot read {}: {e}", keys_file.display())))?;
    let keys: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let cache = Cache::open(cache_dir).map_err(|e| {
        JobError::Failed(format!(
            "cannot open the cache {}: {e}",
            cache_dir.display()
        ))
    })?;
    let _active = cache
        .mark_active(keys.iter().copied())
        .map_err(|e| JobError::Failed(format!("cannot write to the cache: {e}")))?;
    let n = plan.graph.node_count();
    let mut listed = vec![false; n];
    for key in &keys {
        let Some((i, _)) = plan.nodes().find(|(_, node)| node.key == *key) else {
            return Err(invalid(format!(
                "node {key} is not in the plan of {}: the pipeline or its data changed after the job was submitted; run `lethe run` again",
                file.display()
            )));
        };
        listed[i.index()] = true;
    }
    let needed: Vec<bool> = (0..n)
        .map(|i| listed[i] && !cache.contains(&plan.node(NodeIndex::new(i)).key))
        .collect();
    for (i, node) in plan.nodes() {
        if !needed[i.index()] {
            continue;
        }
        for input in plan.graph.neighbors_directed(i, Incoming) {
            let made = plan.node(input);
            if !needed[input.index()] && !cache.contains(&made.key) {
                return Err(JobError::Failed(format!(
                    "{} needs {} ({}), which is not cached: the job that makes it did not finish",
                    node.label,
                    made.label,
                    made.short_key()
                )));
            }
        }
    }
    let to_run = needed.iter().filter(|x| **x).count();
    let progress = Progress::new(&plan, to_run, false);
    let runner = NodeRunner::new(&plan, &cache, device).with_events(&progress);
    runner.preload_needed(&needed).map_err(invalid)?;
    crate::interrupt::install();
    let outcomes = execute_nodes(
        &plan,
        &cache,
        &needed,
        &runner,
        &progress,
        ExecOptions {
            jobs,
            keep_going: true,
        },
    );
    let failures: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Failed(m) => Some(format!("{}: {m}", plan.node(NodeIndex::new(i)).label)),
            _ => None,
        })
        .collect();
    if !failures.is_empty() {
        return Err(JobError::Failed(failures.join("\n")));
    }
    if crate::interrupt::requested() {
        return Err(JobError::Failed("interrupted".into()));
    }
    Ok(outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Executed(_)))
        .count())
}
