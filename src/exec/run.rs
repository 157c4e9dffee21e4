//! `lethe run`: plan, execute what is not cached, write the run directory.
//!
//! `runs/<pipeline>/<run-id>/` holds the result tables, `pipeline.json` (every
//! variant's resolved settings), `plan.dot`, `nodes.json` (every node's key, kind
//! and label) and `run.json` (provenance: source hash, lethe version, seeds,
//! device, host, start and end times, node counts).

use super::cache::Cache;
use super::nodes::NodeRunner;
use super::progress::Progress;
use super::schedule::{execute, needed, ExecOptions, Outcome};
use super::slurm::{self, Driven, JobCommand, SlurmOptions};
use crate::diagnostics::{Diagnostic, SourceMap};
use crate::lang::{self, DeviceSpec, ManifestCache};
use crate::plan::{self, Format, Plan};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub file: PathBuf,
    /// Where run directories go (`runs/` by default).
    pub out: PathBuf,
    /// The node cache (`.lethe/cache` by default).
    pub cache: PathBuf,
    pub jobs: usize,
    pub device: Option<DeviceSpec>,
    pub keep_embeddings: bool,
    pub keep_going: bool,
    pub quiet: bool,
    pub explain: bool,
    pub executor: Executor,
}

/// Where the nodes are computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Executor {
    /// In this process.
    Local,
    /// As Slurm jobs over the shared cache (`exec/slurm`).
    Slurm(SlurmOptions),
}

/// What a finished (or failed) run did.
pub struct RunSummary {
    pub plan: Plan,
    pub run_dir: Option<PathBuf>,
    pub outcomes: Vec<Outcome>,
    /// (node label, variant names, message) of every failure.
    pub failures: Vec<(String, Vec<String>, String)>,
    /// The process's peak resident memory (bytes; 0 where /proc is missing) and
    /// the peak each node kind raised it to (`Progress::peaks`).
    pub peaks: (u64, std::collections::BTreeMap<String, u64>),
    /// `--detach`: the folder that says what was submitted (`lethe status`).
    pub detached: Option<PathBuf>,
}

impl RunSummary {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(o)).count()
    }
    pub fn executed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Executed(_)))
    }
}

pub enum RunError {
    /// Invalid input: exit 2, nothing written.
    Invalid(Vec<Diagnostic>, SourceMap),
    /// The run could not start or finish writing (exit 1).
    Failed(String),
    /// Ctrl-C: what was finished (exit 130).
    Interrupted(String),
}

/// Plans the pipeline, computes what is not cached, writes the run directory.
pub fn run(options: &RunOptions) -> Result<RunSummary, RunError> {
    let started = SystemTime::now();
    let mut sources = SourceMap::new();
    let mut manifests = ManifestCache::default();
    let mut pipeline = match lang::load(&options.file, &mut sources, &mut manifests) {
        Ok(p) => p,
        Err(d) => return Err(RunError::Invalid(d, sources)),
    };
    if let Some(d) = options.device {
        for e in &mut pipeline.experiments {
            e.device = d;
        }
    }
    // One device per run: the first variant's (a pipeline rarely mixes them).
    let device_spec = pipeline.experiments[0].device;
    let device = crate::model::device(device_spec)
        .map_err(|e| RunError::Invalid(vec![Diagnostic::error(e)], SourceMap::new()))?;
    let plan = plan::lower(&pipeline.name, pipeline.experiments, &mut manifests);
    // Where the results go must be writable before anything is computed.
    let pipeline_dir = check_output(&options.out, &plan.pipeline)?;
    let cache = Cache::open(&options.cache).map_err(|e| {
        RunError::Failed(format!(
            "cannot open the cache {}: {e}",
            options.cache.display()
        ))
    })?;
    if let Executor::Slurm(_) = options.executor {
        // Before anything is planned to run: no Slurm, or a cache the jobs
        // cannot write, is a mistake in the command (exit 2).
        let invalid = |m: String| RunError::Invalid(vec![Diagnostic::error(m)], SourceMap::new());
        slurm::sbatch::available().map_err(invalid)?;
        slurm::state_dir(&cache).map_err(invalid)?;
    }
    let _ = cache.clean_scratch();
    // `lethe cache gc` in another process keeps what this run uses.
    let _active = cache
        .mark_active(plan.graph.node_weights().map(|n| n.key.as_str()))
        .map_err(|e| {
            RunError::Failed(format!(
                "cannot write to the cache {}: {e}",
                options.cache.display()
            ))
        })?;
    let needed = needed(&plan, &cache);
    let damaged = cache.damaged();
    for node in plan.graph.node_weights() {
        if let Some(why) = damaged.get(&node.key) {
            eprintln!(
                "warning: the cache entry of {} ({}) is damaged: {why}; it is recomputed",
                node.label,
                node.short_key()
            );
        }
    }
    let to_run = needed.iter().filter(|n| **n).count();
    let progress = Progress::new(&plan, to_run, options.quiet);
    progress.line(&format!(
        "lethe run {}: {} variant{}, {} nodes, {} to compute, {} cached",
        options.file.display(),
        plan.experiments.len(),
        if plan.experiments.len() == 1 { "" } else { "s" },
        plan.graph.node_count(),
        to_run,
        plan.graph.node_count() - to_run
    ));
    if options.explain {
        for (i, why) in super::explain::explain(&plan, &cache, &needed) {
            progress.line(&format!("  {}: {why}", plan.node(i).label));
        }
    }
    let runner = NodeRunner::new(&plan, &cache, device).with_events(&progress);
    // Invalid data is invalid input (exit 2, no run directory), as with
    // `lethe validate`: read every split a computing node needs before computing.
    runner
        .preload_needed(&needed)
        .map_err(|e| RunError::Invalid(vec![Diagnostic::error(e)], SourceMap::new()))?;
    progress.note_peak("reading the data");
    crate::interrupt::install();
    let outcomes = match &options.executor {
        Executor::Local => execute(
            &plan,
            &cache,
            &runner,
            &progress,
            ExecOptions {
                jobs: options.jobs,
                keep_going: options.keep_going,
            },
        ),
        Executor::Slurm(slurm_options) => {
            let (file, cache_root) = (absolute(&options.file), absolute(cache.root()));
            let command = JobCommand {
                file: &file,
                cache: &cache_root,
                device: device_spec,
                pipeline: &plan.pipeline,
            };
            match slurm::drive(&plan, &cache, &needed, &command, slurm_options, &progress)
                .map_err(RunError::Failed)?
            {
                Driven::Done(outcomes) => outcomes,
                Driven::Interrupted(message) => return Err(RunError::Interrupted(message)),
                Driven::Detached(jobs) => {
                    let dir = write_pending(&pipeline_dir, started, options, device_spec, &jobs)
                        .map_err(RunError::Failed)?;
                    let peaks = progress.peaks();
                    drop(runner);
                    drop(progress);
                    return Ok(RunSummary {
                        plan,
                        run_dir: None,
                        outcomes: Vec::new(),
                        failures: Vec::new(),
                        peaks,
                        detached: Some(dir),
                    });
                }
            }
        }
    };
    if crate::interrupt::requested() {
        let done = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Executed(_)))
            .count();
        return Err(RunError::Interrupted(format!(
            "interrupted: {done} of {to_run} nodes were computed and are cached; run the same command again to resume"
        )));
    }
    let failures: Vec<(String, Vec<String>, String)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Failed(msg) => {
                let node = plan.node(petgraph::graph::NodeIndex::new(i));
                Some((
                    node.label.clone(),
                    node.variants
                        .iter()
                        .map(|v| plan.variant_name(*v))
                        .collect(),
                    msg.clone(),
                ))
            }
            _ => None,
        })
        .collect();
    // Results are written when every variant finished, or with --keep-going for those that did.
    let peaks = progress.peaks();
    let mut summary = RunSummary {
        plan,
        run_dir: None,
        outcomes,
        failures,
        peaks,
        detached: None,
    };
    if summary.failures.is_empty() || options.keep_going {
        let (incomplete, dir) = run_directory(&pipeline_dir, started).map_err(RunError::Failed)?;
        // Written under `<id>.incomplete` and renamed when whole: a failure leaves
        // nothing, a kill at most a folder marked incomplete.
        let run_id = run_id_of(&incomplete);
        let target = super::tables::TablesTarget {
            dir: &incomplete,
            run_id: &run_id,
            file: &options.file,
            keep_embeddings: options.keep_embeddings,
        };
        let mut missing = Vec::new();
        let written = super::tables::write_report(&summary.plan, &cache, &target)
            .and_then(|lacking| {
                missing = lacking;
                // A variant without results while no node failed is a bug, never
                // a table quietly short of a seed.
                if !missing.is_empty() && summary.failures.is_empty() {
                    return Err(format!(
                        "no results for {} although no node failed",
                        missing.join(", ")
                    ));
                }
                write_provenance(
                    &incomplete,
                    &summary,
                    options,
                    device_spec,
                    &sources,
                    started,
                )
            })
            .and_then(|()| {
                // Rendered from the tables just written, by the code of `lethe report`.
                let headline = crate::report::headline(&incomplete).map_err(|e| e.to_string())?;
                std::fs::write(incomplete.join("headline.txt"), headline)
                    .map_err(|e| format!("cannot write headline.txt: {e}"))
            })
            .and_then(|()| {
                std::fs::rename(&incomplete, &dir).map_err(|e| {
                    format!(
                        "cannot rename {} to {}: {e}",
                        incomplete.display(),
                        dir.display()
                    )
                })
            });
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&incomplete);
            return Err(RunError::Failed(e));
        }
        if !missing.is_empty() {
            eprintln!(
                "warning: the tables lack {} of {} variants (a node they need failed): {}",
                missing.len(),
                summary.plan.experiments.len(),
                missing.join(", ")
            );
        }
        // A regularizer that weighed nothing is not the method the variant is named after.
        for w in crate::report::inert_warnings(&dir).unwrap_or_default() {
            eprintln!("warning: {w}");
        }
        summary.run_dir = Some(dir);
    }
    Ok(summary)
}

/// What `lethe status` and `lethe collect` read of a detached Slurm run
/// (`<out>/<pipeline>/<run-id>.pending/slurm.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub file: PathBuf,
    pub out: PathBuf,
    pub cache: PathBuf,
    pub device: String,
    pub keep_embeddings: bool,
    pub slurm: SlurmOptions,
    pub jobs: Vec<slurm::JobRecord>,
}

/// `path` made absolute (jobs run elsewhere, `collect` from anywhere).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn write_pending(
    pipeline_dir: &Path,
    started: SystemTime,
    options: &RunOptions,
    device: DeviceSpec,
    jobs: &[slurm::JobRecord],
) -> Result<PathBuf, String> {
    let Executor::Slurm(slurm_options) = &options.executor else {
        return Err("only a Slurm run is detached".into());
    };
    let pending = Pending {
        file: absolute(&options.file),
        out: absolute(&options.out),
        cache: absolute(&options.cache),
        device: device.to_string(),
        keep_embeddings: options.keep_embeddings,
        slurm: SlurmOptions {
            detach: false,
            ..slurm_options.clone()
        },
        jobs: jobs.to_vec(),
    };
    let dir = pipeline_dir.join(format!("{}.pending", timestamp(started, '-')));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(&pending).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(slurm::PENDING_FILE), text).map_err(|e| {
        format!(
            "cannot write {}: {e}",
            dir.join(slurm::PENDING_FILE).display()
        )
    })?;
    Ok(dir)
}

/// `YYYY-MM-DDTHH-MM-SSZ` of a time (UTC), for run ids and provenance.
pub fn timestamp(t: SystemTime, separator: char) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = separator;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}{s}{:02}{s}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The run id of a run directory, also while it is still `<id>.incomplete`.
pub fn run_id_of(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".incomplete")
        .unwrap_or(&name)
        .to_string()
}

/// `<out>/<pipeline>/`, checked writable before anything is computed: a probe
/// file is written in its nearest existing ancestor (nothing is left behind,
/// and no folder is created for a run that writes no results).
fn check_output(out: &Path, pipeline: &str) -> Result<PathBuf, RunError> {
    let safe: String = pipeline
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = out.join(&safe);
    let absolute = std::path::absolute(&base).unwrap_or_else(|_| base.clone());
    let existing = absolute
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let not_writable = |why: String| {
        RunError::Invalid(
            vec![Diagnostic::error(format!(
                "the output folder {} is not writable: {why}",
                base.display()
            ))
            .note("choose another with --out DIR")],
            SourceMap::new(),
        )
    };
    if !existing.is_dir() {
        return Err(not_writable(format!(
            "{} is not a folder",
            existing.display()
        )));
    }
    let probe = existing.join(format!(".lethe-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| not_writable(crate::files::io_message(&e)))?;
    Ok(base)
}

/// A free run id in `base`: the folder to write (`<id>.incomplete`) and its final name.
fn run_directory(base: &Path, started: SystemTime) -> Result<(PathBuf, PathBuf), String> {
    let stamp = timestamp(started, '-');
    // Two runs in the same second get distinct directories.
    for n in 0.. {
        let id = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = base.join(&id);
        let incomplete = base.join(format!("{id}.incomplete"));
        if dir.exists() {
            continue;
        }
        std::fs::create_dir_all(base)
            .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        match std::fs::create_dir(&incomplete) {
            Ok(()) => return Ok((incomplete, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", incomplete.display())),
        }
    }
    unreachable!("an unbounded search always finds a free name")
}

fn write_provenance(
    dir: &Path,
    summary: &RunSummary,
    options: &RunOptions,
    device: DeviceSpec,
    sources: &SourceMap,
    started: SystemTime,
) -> Result<(), String> {
    let plan = &summary.plan;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
    };
    write("plan.dot", plan::render(plan, Format::Dot))?;
    // Every node the run used, by key: what `lethe cache gc --keep-runs` keeps.
    let nodes: Vec<super::housekeeping::NodeRef> = plan
        .graph
        .node_weights()
        .map(|n| super::housekeeping::NodeRef {
            key: n.key.clone(),
            kind: n.kind().name().to_string(),
            label: n.label.clone(),
        })
        .collect();
    write(
        super::housekeeping::NODES_FILE,
        serde_json::to_string_pretty(&nodes).map_err(|e| e.to_string())?,
    )?;
    let variants: Vec<_> = plan.experiments.iter().collect();
    write(
        "pipeline.json",
        serde_json::to_string_pretty(&variants).map_err(|e| e.to_string())?,
    )?;
    let mut hasher = blake3::Hasher::new();
    let mut files = Vec::new();
    for f in sources.iter() {
        if f.display != "<defaults>" {
            hasher.update(f.text().as_bytes());
            files.push(f.display.clone());
        }
    }
    let mut seeds: Vec<u64> = plan.experiments.iter().map(|e| e.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| std::env::var("HOSTNAME").unwrap_or_default());
    // Compute time per node kind (summed over nodes: with --jobs above 1 it can
    // exceed the wall time), for `bench/run` and the reproduction notes.
    let mut seconds_by_kind = serde_json::Map::new();
    for kind in crate::plan::NodeKind::ALL {
        let seconds: f64 = summary
            .outcomes
            .iter()
            .enumerate()
            .filter(|(i, _)| plan.node(petgraph::graph::NodeIndex::new(*i)).kind() == kind)
            .filter_map(|(_, o)| match o {
                Outcome::Executed(d) => Some(d.as_secs_f64()),
                _ => None,
            })
            .fold(0.0, |a, b| a + b);
        seconds_by_kind.insert(
            kind.name().into(),
            serde_json::json!((seconds * 1e3).round() / 1e3),
        );
    }
    let wall = SystemTime::now()
        .duration_since(started)
        .map_or(0.0, |d| d.as_secs_f64());
    let run = serde_json::json!({
        "run_id": run_id_of(dir),
        "pipeline": plan.pipeline,
        "file": options.file.display().to_string(),
        "source_files": files,
        "source_hash": hasher.finalize().to_hex().to_string(),
        "lethe_version": env!("CARGO_PKG_VERSION"),
        "seeds": seeds,
        "device": device.to_string(),
        "host": host,
        "started": timestamp(started, ':'),
        "ended": timestamp(SystemTime::now(), ':'),
        "variants": plan.experiments.len(),
        "nodes": {
            "total": plan.graph.node_count(),
            "executed": summary.count(|o| matches!(o, Outcome::Executed(_))),
            "cached": summary.count(|o| matches!(o, Outcome::Cached)),
            "failed": summary.count(|o| matches!(o, Outcome::Failed(_))),
            "skipped": summary.count(|o| matches!(o, Outcome::Skipped { .. })),
        },
        "wall_seconds": (wall * 1e3).round() / 1e3,
        "seconds_by_kind": seconds_by_kind,
        "peak_rss_bytes": summary.peaks.0,
        "peak_rss_raised_by": summary.peaks.1,
        "failures": summary.failures.iter().map(|(n, v, m)| serde_json::json!({"node": n, "variants": v, "error": m})).collect::<Vec<_>>(),
    });
    write(
        "run.json",
        serde_json::to_string_pretty(&run).map_err(|e| e.to_string())?,
    )
}
