//! `lethe run --executor slurm ...`, `lethe status` and `lethe collect`: the
//! command-line side of [`lethe::exec::slurm`].

use lethe::exec::run::{Executor, Pending, RunOptions};
use lethe::exec::slurm::{self, job, sbatch, SlurmOptions, PENDING_FILE};
use lethe::exec::Cache;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where `lethe run` computes, and the Slurm settings.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Compute here (`local`) or as Slurm jobs over the cache (`slurm`: the cache
    /// must be on a filesystem every compute node shares; docs/cluster.md).
    #[arg(long, value_enum, default_value = "local")]
    executor: ExecutorKind,
    /// Slurm partition of every job.
    #[arg(long, value_name = "P")]
    partition: Option<String>,
    /// Slurm account of every job.
    #[arg(long, value_name = "A")]
    account: Option<String>,
    /// Time limit of every job, in Slurm's format (`2:00:00`).
    #[arg(long, value_name = "T")]
    time: Option<String>,
    /// GPUs for the jobs of one node kind; only `train=N` (the jobs that train,
    /// and estimate importance after training).
    #[arg(long, value_name = "KIND=N")]
    gpus_per_node_kind: Vec<String>,
    /// Passed to every sbatch as it is (repeat for several).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
    /// The most jobs one run submits (trainings of one wave share jobs beyond it).
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_jobs: usize,
    /// Return after submitting; `lethe status DIR` follows, `lethe collect DIR`
    /// writes the tables.
    #[arg(long)]
    detach: bool,
    /// On Ctrl-C, cancel the submitted jobs without asking.
    #[arg(long)]
    cancel_on_exit: bool,
    /// Job mode: compute the nodes whose keys this file lists (what a job runs).
    #[arg(long, value_name = "FILE", hide = true)]
    job_keys: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ExecutorKind {
    Local,
    Slurm,
}

impl ClusterArgs {
    /// The executor, or why the flags do not make one.
    pub fn executor(&self) -> Result<Executor, String> {
        let slurm_only = [
            ("--partition", self.partition.is_some()),
            ("--account", self.account.is_some()),
            ("--time", self.time.is_some()),
            ("--gpus-per-node-kind", !self.gpus_per_node_kind.is_empty()),
            ("--sbatch-arg", !self.sbatch_arg.is_empty()),
            ("--detach", self.detach),
            ("--cancel-on-exit", self.cancel_on_exit),
        ];
        if self.executor == ExecutorKind::Local {
            if let Some((flag, _)) = slurm_only.iter().find(|(_, given)| *given) {
                return Err(format!("{flag} needs `--executor slurm`"));
            }
            return Ok(Executor::Local);
        }
        if self.max_jobs == 0 {
            return Err("--max-jobs must be at least 1".into());
        }
        let mut gpus_for_training = None;
        for g in &self.gpus_per_node_kind {
            let parsed = g
                .split_once('=')
                .and_then(|(kind, n)| Some((kind, n.parse::<u32>().ok()?)));
            match parsed {
                Some(("train", n)) => gpus_for_training = Some(n),
                Some((kind, _)) => {
                    return Err(format!(
                        "--gpus-per-node-kind {g}: `{kind}` is not a node kind that requests GPUs; only `train` does (its jobs also estimate importance)"
                    ))
                }
                None => {
                    return Err(format!(
                        "--gpus-per-node-kind {g}: expected KIND=N, such as train=1"
                    ))
                }
            }
        }
        Ok(Executor::Slurm(SlurmOptions {
            partition: self.partition.clone(),
            account: self.account.clone(),
            time: self.time.clone(),
            gpus_for_training,
            sbatch_args: self.sbatch_arg.clone(),
            max_jobs: self.max_jobs,
            detach: self.detach,
            cancel_on_exit: self.cancel_on_exit,
        }))
    }

    /// Job mode's key list, when this is a job.
    pub fn job_keys(&self) -> Option<&Path> {
        self.job_keys.as_deref()
    }
}

/// `lethe run FILE --job-keys LIST`: one Slurm job's share of the plan.
pub fn job_cmd(options: &RunOptions, keys: &Path) -> ExitCode {
    match job::run_job(
        &options.file,
        &options.cache,
        options.device,
        keys,
        options.jobs,
    ) {
        Ok(n) => {
            eprintln!("computed {n} nodes");
            ExitCode::SUCCESS
        }
        Err(job::JobError::Invalid(d, sources)) => {
            crate::print_diagnostics(&d, &sources);
            ExitCode::from(2)
        }
        Err(job::JobError::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn read_pending(dir: &Path) -> Result<Pending, String> {
    let path = dir.join(PENDING_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e}; a detached run's folder (`<run-id>.pending`, printed by `lethe run --detach`) holds it",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `lethe status DIR`: each job of a detached run, its state and its nodes done.
pub fn status_cmd(dir: &Path) -> ExitCode {
    let result = (|| -> Result<(), String> {
        let pending = read_pending(dir)?;
        let cache = Cache::open(&pending.cache)
            .map_err(|e| format!("cannot open the cache {}: {e}", pending.cache.display()))?;
        let ids: Vec<String> = pending.jobs.iter().map(|j| j.id.clone()).collect();
        let alive = sbatch::alive(&ids)?;
        let (mut nodes, mut done, mut running) = (0, 0, 0);
        for j in &pending.jobs {
            let made = slurm::cached_count(&cache, &j.keys);
            nodes += j.keys.len();
            done += made;
            let state = match alive.get(&j.id) {
                Some(s) => {
                    running += 1;
                    s.clone()
                }
                None if made == j.keys.len() => "COMPLETED".to_string(),
                None => sbatch::how_it_ended(&j.id).unwrap_or_else(|| "ended".into()),
            };
            println!(
                "job {} {}: {state}, {made} of {} nodes cached, log {}",
                j.id,
                j.label,
                j.keys.len(),
                j.log.display()
            );
        }
        println!(
            "{done} of {nodes} nodes cached; {running} of {} jobs pending or running",
            pending.jobs.len()
        );
        if running == 0 {
            println!("write the tables with: lethe collect {}", dir.display());
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `lethe collect DIR`: follows a detached run's jobs (submitting again what
/// failed) and writes its tables as the attached run would have.
pub fn collect_cmd(dir: &Path) -> ExitCode {
    let pending = match read_pending(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let device = match crate::parse_device(&pending.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.join(PENDING_FILE).display());
            return ExitCode::from(2);
        }
    };
    let options = RunOptions {
        file: pending.file,
        out: pending.out,
        cache: pending.cache,
        jobs: 1,
        device: Some(device),
        keep_embeddings: pending.keep_embeddings,
        keep_going: false,
        quiet: false,
        explain: false,
        executor: Executor::Slurm(pending.slurm),
    };
    let code = crate::run_cmd(options);
    if code == ExitCode::SUCCESS {
        let _ = std::fs::remove_dir_all(dir);
    }
    code
}

/// The pending folder's run id for messages.
pub fn pending_note(dir: &Path) -> String {
    format!(
        "submitted; follow with `lethe status {0}`, write the tables with `lethe collect {0}` (or run the same command again)",
        dir.display()
    )
}
