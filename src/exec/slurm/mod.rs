//! `lethe run --executor slurm`: the needed nodes become Slurm jobs over the
//! shared cache, and the driver follows them until it can write the run
//! directory with the same code, from the same cache entries, as a local run.
//!
//! Each job runs this binary in job mode (`lethe run FILE --job-keys LIST`),
//! which re-plans the pipeline and computes the listed nodes; the cache's per-key
//! locks make two jobs or two drivers never compute one node twice. What the
//! driver submitted is recorded under `<cache>/slurm/jobs/<id>.json`: a second
//! driver on the same cache (or the same command run again after a Ctrl-C, or
//! `lethe collect`) follows the live jobs that already make a node instead of
//! submitting it again, and submits only what no live job makes.

mod groups;
pub mod job;
pub mod sbatch;

pub use groups::{group, JobGroup};

use super::cache::Cache;
use super::schedule::{Events, Outcome};
use crate::plan::Plan;
use petgraph::graph::NodeIndex;
use petgraph::Direction::Incoming;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How jobs are submitted (`lethe run --executor slurm ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// `--time` of every job (Slurm's format, e.g. `2:00:00`).
    pub time: Option<String>,
    /// GPUs requested by the jobs that train (`--gpus-per-node-kind train=N`).
    pub gpus_for_training: Option<u32>,
    /// Passed to every `sbatch` as they are.
    pub sbatch_args: Vec<String>,
    pub max_jobs: usize,
    pub detach: bool,
    pub cancel_on_exit: bool,
}

/// One submitted job, as `<cache>/slurm/jobs/<id>.json` and a detached run's
/// `slurm.json` record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub label: String,
    /// The node keys it computes.
    pub keys: Vec<String>,
    /// The keys of the cached entries its nodes read (kept by `lethe cache gc`
    /// while the job is recorded).
    #[serde(default)]
    pub reads: Vec<String>,
    /// The jobs it waits for (`afterok`).
    #[serde(default)]
    pub after: Vec<String>,
    pub log: PathBuf,
}

/// The file in a detached run's `<run-id>.pending` folder.
pub const PENDING_FILE: &str = "slurm.json";

/// What the driver ended with.
pub enum Driven {
    /// Every job ended: one outcome per node, as a local run's.
    Done(Vec<Outcome>),
    /// `--detach`: submitted, not followed.
    Detached(Vec<JobRecord>),
    /// Ctrl-C: what was said about the jobs.
    Interrupted(String),
}

/// What a job runs: this binary on the same pipeline, cache and device.
pub struct JobCommand<'a> {
    pub file: &'a Path,
    pub cache: &'a Path,
    pub device: crate::lang::DeviceSpec,
    pub pipeline: &'a str,
}

fn poll_interval() -> Duration {
    // Tests poll a localhost cluster fast; a real cluster's scheduler is slower.
    let ms = std::env::var("LETHE_SLURM_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    Duration::from_millis(ms)
}

/// `<cache>/slurm`, with its `jobs`, `keys` and `logs` folders; an error when the
/// cache cannot be written (jobs on other machines write to it too).
pub fn state_dir(cache: &Cache) -> Result<PathBuf, String> {
    let dir = cache.root().join("slurm");
    for sub in ["jobs", "keys", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
            format!(
                "cannot write to the cache {} ({e}): with `--executor slurm` it must be on a filesystem that this machine and every compute node can write",
                cache.root().display()
            )
        })?;
    }
    Ok(dir)
}

/// The live jobs of earlier submissions on this cache that can still finish, by
/// node key. The records of ended jobs are removed; a job waiting for a job that
/// ended without making its nodes never runs: it is cancelled and its record
/// removed, so its nodes are submitted again.
fn live_jobs(dir: &Path, cache: &Cache) -> Result<HashMap<String, JobRecord>, String> {
    let mut records = Vec::new();
    for entry in std::fs::read_dir(dir.join("jobs")).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        match serde_json::from_str::<JobRecord>(&text) {
            Ok(r) => records.push((path, r)),
            // A record being written, or damaged: not a job to follow.
            Err(_) => continue,
        }
    }
    let ids: Vec<String> = records.iter().map(|(_, r)| r.id.clone()).collect();
    let alive = sbatch::alive(&ids)?;
    let mut failed: HashSet<String> = records
        .iter()
        .filter(|(_, r)| !alive.contains_key(&r.id) && !r.keys.iter().all(|k| cache.contains(k)))
        .map(|(_, r)| r.id.clone())
        .collect();
    loop {
        let doomed: Vec<String> = records
            .iter()
            .filter(|(_, r)| alive.contains_key(&r.id) && !failed.contains(&r.id))
            .filter(|(_, r)| r.after.iter().any(|a| failed.contains(a)))
            .map(|(_, r)| r.id.clone())
            .collect();
        if doomed.is_empty() {
            break;
        }
        sbatch::cancel(&doomed)?;
        failed.extend(doomed);
    }
    let mut by_key = HashMap::new();
    for (path, record) in records {
        if alive.contains_key(&record.id) && !failed.contains(&record.id) {
            for key in &record.keys {
                by_key.insert(key.clone(), record.clone());
            }
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(by_key)
}

/// Submits the jobs that make the `needed` nodes no live job makes, and follows
/// every job that makes a needed node until all have ended.
pub fn drive(
    plan: &Plan,
    cache: &Cache,
    needed: &[bool],
    command: &JobCommand,
    options: &SlurmOptions,
    events: &dyn Events,
) -> Result<Driven, String> {
    // `run` checked that sbatch is here before reading the data.
    let dir = state_dir(cache)?;
    // One driver submits at a time, so two never submit the same node.
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("submit.lock"))
        .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    let external = live_jobs(&dir, cache)?;
    let mut maker: HashMap<NodeIndex, JobRecord> = HashMap::new();
    let mut ours_needed = needed.to_vec();
    for (i, node) in plan.nodes() {
        if needed[i.index()] {
            if let Some(r) = external.get(&node.key) {
                maker.insert(i, r.clone());
                ours_needed[i.index()] = false;
            }
        }
    }
    let groups = group(plan, &ours_needed, options.max_jobs);
    let mut ours = Vec::new();
    for g in &groups {
        let mut after: Vec<String> = Vec::new();
        for &n in &g.nodes {
            for input in plan.graph.neighbors_directed(n, Incoming) {
                if let Some(r) = maker.get(&input) {
                    if !after.contains(&r.id) {
                        after.push(r.id.clone());
                    }
                }
            }
        }
        let record = submit(plan, &dir, g, &after, command, options)?;
        for &n in &g.nodes {
            maker.insert(n, record.clone());
        }
        ours.push(record);
    }
    drop(lock);
    let others: BTreeMap<&str, &JobRecord> = maker
        .values()
        .filter(|r| !ours.iter().any(|o| o.id == r.id))
        .map(|r| (r.id.as_str(), r))
        .collect();
    eprintln!(
        "submitted {} Slurm job{} for {} nodes{}",
        ours.len(),
        if ours.len() == 1 { "" } else { "s" },
        groups.iter().map(|g| g.nodes.len()).sum::<usize>(),
        if others.is_empty() {
            String::new()
        } else {
            format!(
                "; following {} job{} of another run that make{} {} more",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                if others.len() == 1 { "s" } else { "" },
                needed.iter().filter(|n| **n).count()
                    - groups.iter().map(|g| g.nodes.len()).sum::<usize>()
            )
        }
    );
    for r in &ours {
        eprintln!(
            "  job {} {} ({} nodes), log {}",
            r.id,
            r.label,
            r.keys.len(),
            r.log.display()
        );
    }
    if options.detach {
        return Ok(Driven::Detached(ours));
    }
    follow(plan, cache, needed, &maker, &ours, options, events)
}

/// Submits one group; writes its record.
fn submit(
    plan: &Plan,
    dir: &Path,
    g: &JobGroup,
    after: &[String],
    command: &JobCommand,
    options: &SlurmOptions,
) -> Result<JobRecord, String> {
    let keys: Vec<String> = g.nodes.iter().map(|&n| plan.node(n).key.clone()).collect();
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let keys_file =
        dir.join("keys")
            .join(format!("{}-{}-{stamp}.keys", g.label, std::process::id()));
    std::fs::write(&keys_file, keys.join("\n") + "\n")
        .map_err(|e| format!("cannot write {}: {e}", keys_file.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the lethe binary: {e}"))?;
    // Trainings in one job run side by side; small nodes use every core.
    let jobs = if g.trains {
        g.nodes
            .iter()
            .filter(|&&n| plan.node(n).kind() == crate::plan::NodeKind::Train)
            .count()
            .max(1)
    } else {
        usize::MAX
    };
    let mut wrap = vec![
        "exec".to_string(),
        sbatch::shell_quote(&exe.to_string_lossy()),
        "run".into(),
        sbatch::shell_quote(&command.file.to_string_lossy()),
        "--cache".into(),
        sbatch::shell_quote(&command.cache.to_string_lossy()),
        "--device".into(),
        command.device.to_string(),
        "--job-keys".into(),
        sbatch::shell_quote(&keys_file.to_string_lossy()),
        "--quiet".into(),
    ];
    // `lethe run` caps --jobs at the cores the job was given.
    wrap.push(if jobs == usize::MAX {
        "--jobs=$(nproc)".to_string()
    } else {
        format!("--jobs={jobs}")
    });
    let log = dir.join("logs").join(format!("{}-%j.log", g.label));
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let args = sbatch_args(g, after, command.pipeline, &log, &cwd, options);
    let id = sbatch::submit(&args, &wrap.join(" "))?;
    let mut reads: Vec<String> = Vec::new();
    for &n in &g.nodes {
        for input in plan.graph.neighbors_directed(n, Incoming) {
            let key = &plan.node(input).key;
            if !keys.contains(key) && !reads.contains(key) {
                reads.push(key.clone());
            }
        }
    }
    let record = JobRecord {
        log: PathBuf::from(log.to_string_lossy().replace("%j", &id)),
        id,
        label: g.label.clone(),
        keys,
        reads,
        after: after.to_vec(),
    };
    let path = dir.join("jobs").join(format!("{}.json", record.id));
    let text = serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(record)
}

/// The `sbatch` options of a job (before `--wrap`): its name, log, working
/// folder, dependencies, and the user's settings; GPUs only for training jobs.
pub fn sbatch_args(
    g: &JobGroup,
    after: &[String],
    pipeline: &str,
    log: &Path,
    cwd: &Path,
    options: &SlurmOptions,
) -> Vec<String> {
    let mut args = vec![
        format!("--job-name=lethe:{pipeline}:{}", g.label),
        format!("--output={}", log.display()),
        format!("--chdir={}", cwd.display()),
        // A job whose input job failed is cancelled rather than left pending forever.
        "--kill-on-invalid-dep=yes".to_string(),
    ];
    if !after.is_empty() {
        args.push(format!("--dependency=afterok:{}", after.join(":")));
    }
    if let Some(p) = &options.partition {
        args.push(format!("--partition={p}"));
    }
    if let Some(a) = &options.account {
        args.push(format!("--account={a}"));
    }
    if let Some(t) = &options.time {
        args.push(format!("--time={t}"));
    }
    if let (Some(n), true) = (options.gpus_for_training, g.trains) {
        args.push(format!("--gpus={n}"));
    }
    args.extend(options.sbatch_args.iter().cloned());
    args
}

/// Follows the jobs that make the needed nodes until all have ended.
fn follow(
    plan: &Plan,
    cache: &Cache,
    needed: &[bool],
    maker: &HashMap<NodeIndex, JobRecord>,
    ours: &[JobRecord],
    options: &SlurmOptions,
    events: &dyn Events,
) -> Result<Driven, String> {
    let jobs: BTreeMap<String, &JobRecord> = maker.values().map(|r| (r.id.clone(), r)).collect();
    let ids: Vec<String> = jobs.keys().cloned().collect();
    let mut ended: HashMap<String, Option<String>> = HashMap::new();
    let mut started: HashMap<String, Instant> = HashMap::new();
    let mut done: HashMap<NodeIndex, Duration> = HashMap::new();
    let wanted: Vec<NodeIndex> = (0..needed.len())
        .filter(|&i| needed[i])
        .map(NodeIndex::new)
        .collect();
    loop {
        if crate::interrupt::requested() {
            return Ok(Driven::Interrupted(interrupted(ours, options)?));
        }
        let live: Vec<String> = ids
            .iter()
            .filter(|id| !ended.contains_key(*id))
            .cloned()
            .collect();
        let alive = sbatch::alive(&live)?;
        for id in &live {
            match alive.get(id) {
                Some(state) if state != "PENDING" => {
                    if !started.contains_key(id) {
                        started.insert(id.clone(), Instant::now());
                        for &n in &wanted {
                            if maker.get(&n).is_some_and(|r| &r.id == id) {
                                events.started(n);
                            }
                        }
                    }
                }
                Some(_) => {}
                None => {
                    let whole = jobs[id].keys.iter().all(|k| cache.contains(k));
                    ended.insert(
                        id.clone(),
                        (!whole)
                            .then(|| sbatch::how_it_ended(id).unwrap_or_else(|| "ended".into())),
                    );
                }
            }
        }
        for &n in &wanted {
            if !done.contains_key(&n) && cache.contains(&plan.node(n).key) {
                let since = maker
                    .get(&n)
                    .and_then(|r| started.get(&r.id))
                    .map_or(Duration::ZERO, Instant::elapsed);
                done.insert(n, since);
                events.finished(n, &Outcome::Executed(since));
            }
        }
        if ended.len() == ids.len() {
            break;
        }
        std::thread::sleep(poll_interval());
    }
    for r in ours {
        let _ = std::fs::remove_file(
            cache
                .root()
                .join("slurm")
                .join("jobs")
                .join(format!("{}.json", r.id)),
        );
    }
    Ok(Driven::Done(outcomes(
        plan, cache, needed, maker, &ended, &done,
    )))
}

/// One outcome per node: a needed node its job did not make failed with that
/// job, or was skipped for a failed input.
fn outcomes(
    plan: &Plan,
    cache: &Cache,
    needed: &[bool],
    maker: &HashMap<NodeIndex, JobRecord>,
    ended: &HashMap<String, Option<String>>,
    done: &HashMap<NodeIndex, Duration>,
) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = Vec::with_capacity(needed.len());
    for (i, &need) in needed.iter().enumerate() {
        let node = NodeIndex::new(i);
        let key = &plan.node(node).key;
        let outcome = if !need {
            if cache.contains(key) {
                Outcome::Cached
            } else {
                Outcome::NotRun
            }
        } else if cache.contains(key) {
            Outcome::Executed(done.get(&node).copied().unwrap_or_default())
        } else if let Some(failed) = plan
            .graph
            .neighbors_directed(node, Incoming)
            .find(|d| matches!(out[d.index()], Outcome::Failed(_) | Outcome::Skipped { .. }))
        {
            Outcome::Skipped {
                failed_input: failed,
            }
        } else {
            let job = &maker[&node];
            let how = ended
                .get(&job.id)
                .cloned()
                .flatten()
                .unwrap_or_else(|| "ended".into());
            Outcome::Failed(format!(
                "Slurm job {} ({}) {how} without computing it; see its log {}",
                job.id,
                job.label,
                job.log.display()
            ))
        };
        out.push(outcome);
    }
    out
}

/// Ctrl-C while following: cancel our jobs when asked to (`--cancel-on-exit`,
/// or yes at the prompt on a terminal), else leave them running.
fn interrupted(ours: &[JobRecord], options: &SlurmOptions) -> Result<String, String> {
    let ids: Vec<String> = ours.iter().map(|r| r.id.clone()).collect();
    let cancel = options.cancel_on_exit || {
        if std::io::stdin().is_terminal() {
            eprint!("\ncancel the {} submitted Slurm jobs? [y/N] ", ids.len());
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            answer.trim().eq_ignore_ascii_case("y")
        } else {
            false
        }
    };
    if cancel {
        sbatch::cancel(&ids)?;
        Ok(format!(
            "interrupted: cancelled Slurm jobs {}; what they finished is cached, run the same command again to resume",
            ids.join(" ")
        ))
    } else {
        Ok(format!(
            "interrupted: Slurm jobs {} keep running; run the same command again to follow them and write the tables, or `scancel {}`",
            ids.join(" "),
            ids.join(" ")
        ))
    }
}

/// Every key a recorded Slurm job makes or reads (records are removed when a
/// driver sees their job ended).
pub fn recorded_keys(cache: &Cache) -> HashSet<String> {
    let mut keys = HashSet::new();
    let Ok(entries) = std::fs::read_dir(cache.root().join("slurm").join("jobs")) else {
        return keys;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Ok(r) = serde_json::from_str::<JobRecord>(&text) {
            keys.extend(r.keys);
            keys.extend(r.reads);
        }
    }
    keys
}

/// Which of `keys` are cached, for `lethe status`.
pub fn cached_count(cache: &Cache, keys: &[String]) -> usize {
    keys.iter().filter(|k| cache.contains(k)).count()
}
