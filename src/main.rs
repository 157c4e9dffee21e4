//! The `lethe` command line: a thin layer over the library's stages.
//! Exit codes: 0 success, 2 invalid input, 1 a failure at run time.

use clap::{Parser, Subcommand};
use lethe::diagnostics::{render_all, Diagnostic, SourceMap};
use lethe::exec::run::{self, RunError, RunOptions};
use lethe::exec::Cache;
use lethe::lang::{self, DeviceSpec, ManifestCache};
use lethe::plan::{self, Format};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod cli_cluster;
mod cli_housekeeping;
mod cli_import;

// candle allocates a fresh buffer for every operation; mimalloc halves a CPU
// training step's time against glibc's allocator (docs/PERFORMANCE.md, stack.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lethe",
    version,
    about = "Continual cross-modal retrieval experiments, declared in .pipe files",
    long_about = "lethe turns a small declarative .pipe file into a DAG of train, importance, \
index, query and evaluate nodes, shares the work that variants have in common, and writes \
Arrow tables of the results.\n\nStart with `lethe validate pipelines/quickstart.pipe` and \
`lethe plan pipelines/table1.pipe`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check pipelines (.pipe) and dataset manifests (.yaml) without running anything.
    #[command(
        after_help = "Examples:\n  lethe validate pipelines/*.pipe\n  lethe validate datasets/emoji/emoji.yaml\n\n\
Every error of every file is reported, each with file:line:column, the line and a caret.\n\
Exit status: 0 when all files are valid, 2 otherwise."
    )]
    Validate {
        /// Files to check: pipelines (.pipe) or dataset manifests (.yaml, .yml).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show the DAG a pipeline lowers to: nodes, keys, and which variants share them.
    #[command(
        after_help = "Examples:\n  lethe plan pipelines/table1.pipe\n  lethe plan pipelines/table1.pipe --format dot | dot -Tsvg > plan.svg\n  \
lethe plan pipelines/modx.pipe --format json | jq '.nodes | length'\n\n\
The text form lists nodes in topological order with their kind, short key and users, then\n\
counts nodes by kind with and without sharing between variants."
    )]
    Plan {
        /// The pipeline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Override the pipeline's device (cpu, cuda, cuda:N); it is part of node keys.
        #[arg(long, value_parser = parse_device, value_name = "DEVICE")]
        device: Option<DeviceSpec>,
        /// Say why each node that is not cached has a new key.
        #[arg(long)]
        explain: bool,
        /// The node cache whose entries are marked (when it exists) and --explain reads.
        #[arg(long, value_name = "DIR", default_value = ".lethe/cache")]
        cache: PathBuf,
    },
    /// Compute a manifest's feature tables from its `raw:` images and captions.
    #[command(
        after_help = "Examples:\n  datasets/fetch-encoders.sh .lethe/encoders\n  lethe featurize datasets/emoji/emoji.yaml --encoders .lethe/encoders --raw-root /tmp/emoji/package\n\n\
Images go through EfficientNet-Lite0 (1280-d; photos centre-cropped when `raw.crop: center`),\n\
captions through all-MiniLM-L6-v2 (384-d); tables are written as f16 where the manifest's `images:`\n\
and `captions:` say. Work is saved in chunks as it goes: a killed run continues where it stopped,\n\
and a table already made from the same raw list is kept. Nothing is downloaded."
    )]
    Featurize(cli_import::FeaturizeArgs),
    /// Bring a dataset in: COCO annotation files, Karpathy split files, VSE++ precomputed features.
    #[command(subcommand)]
    Import(cli_import::ImportCommand),
    /// Datasets: inspect a manifest's splits and tasks.
    #[command(subcommand)]
    Data(DataCommand),
    /// The node cache: verify its entries, see what it holds, delete what nothing uses.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Execute a pipeline: compute the nodes not cached yet, write the result tables.
    #[command(
        after_help = "Examples:\n  lethe run pipelines/quickstart.pipe\n  lethe run pipelines/table1.pipe --jobs 2 --keep-going\n  \
lethe run pipelines/emoji-ewc.pipe --device cuda --explain\n  \
lethe run pipelines/table1.pipe --executor slurm --partition gpu --gpus-per-node-kind train=1 --device cuda\n\n\
Results go to runs/<pipeline>/<run-id>/ (recall.arrow, summary.arrow, train_log.arrow, drift.arrow,\n\
run.json, plan.dot, pipeline.json). Node outputs are cached under .lethe/cache by key, so a second\n\
run of the same file computes nothing, and an interrupted run resumes where it stopped.\n\
Exit status: 0 success, 1 a node failed, 2 invalid input."
    )]
    Run {
        /// The pipeline file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Where run directories go.
        #[arg(long, value_name = "DIR", default_value = "runs")]
        out: PathBuf,
        /// The node cache, shared by all pipelines that use it.
        #[arg(long, value_name = "DIR", default_value = ".lethe/cache")]
        cache: PathBuf,
        /// Independent nodes to run at once (cores are split between them); at
        /// most the number of cores.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_jobs)]
        jobs: usize,
        /// Override the pipeline's device (cpu, cuda, cuda:N).
        #[arg(long, value_parser = parse_device, value_name = "DEVICE")]
        device: Option<DeviceSpec>,
        /// Also write embeddings.arrow with every gallery and query embedding.
        #[arg(long)]
        keep_embeddings: bool,
        /// After a node fails, finish the other variants and write their results.
        #[arg(long)]
        keep_going: bool,
        /// Print only errors and the final table.
        #[arg(long)]
        quiet: bool,
        /// Say why each node that runs has a new key.
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        cluster: cli_cluster::ClusterArgs,
    },
    /// Show the Slurm jobs of a run started with `lethe run --executor slurm --detach`.
    #[command(after_help = "Example:\n  lethe status runs/table1/2026-12-02T10-00-00Z.pending")]
    Status {
        /// The `<run-id>.pending` folder `lethe run --detach` printed.
        #[arg(value_name = "RUN_DIR")]
        dir: PathBuf,
    },
    /// Follow a detached Slurm run to its end and write its tables.
    #[command(
        after_help = "Example:\n  lethe collect runs/table1/2026-12-02T10-00-00Z.pending\n\n\
Jobs that failed are submitted again; the run directory is written as an attached run writes it."
    )]
    Collect {
        /// The `<run-id>.pending` folder `lethe run --detach` printed.
        #[arg(value_name = "RUN_DIR")]
        dir: PathBuf,
    },
    /// Print a run's results the way papers show them: tables, recall matrices, plots.
    #[command(
        after_help = "Examples:\n  lethe report runs/quickstart/2026-11-30T14-51-18Z\n  \
lethe report runs/table1/<run-id> --format markdown --k 10\n  \
lethe report runs/table1/<run-id> --format html --output table1.html\n\n\
Tables: one per direction (and per value of every swept axis other than the variant lines);\n\
rows are the tasks after the last stage with the task known, their average, the union gallery\n\
(task unknown), forgetting and BWT; columns are variants grouped by indexing policy; cells are\n\
mean ± std over seeds. Then the recall matrix of every variant and the drift diagnostics; the\n\
HTML page draws them as inline SVG plots and needs no network.\n\
Exit status: 0 success, 2 when the directory or one of its tables is missing or malformed."
    )]
    Report {
        /// The run directory (`lethe run` prints it as `results:`).
        #[arg(value_name = "RUN_DIR")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = lethe::report::Format::Text)]
        format: lethe::report::Format,
        /// The K of Recall@K to tabulate (default: the largest the run measured).
        #[arg(long, value_name = "K")]
        k: Option<u64>,
        /// Write to this file (whole, or not at all) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the run directories under a folder: pipeline, run id, status, variants, headline.
    #[command(
        after_help = "Examples:\n  lethe runs\n  lethe runs /shared/lethe-runs/table1\n\n\
A run killed while writing its tables is listed as incomplete (`<run-id>.incomplete`); one\n\
written with --keep-going while nodes failed, as partial."
    )]
    Runs {
        /// The folder `lethe run --out` wrote to.
        #[arg(value_name = "DIR", default_value = "runs")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Load every split of a manifest and print tasks with image and caption counts.
    #[command(
        after_help = "Examples:\n  lethe data inspect datasets/synthetic/small.yaml\n  lethe data inspect datasets/emoji/emoji.yaml\n\n\
Prints, per split and task, the train and test images and captions, the feature sizes and the\n\
memory the features take. Exit status 2 when the manifest or its tables are invalid."
    )]
    Inspect {
        /// The dataset manifest (.yaml).
        #[arg(value_name = "MANIFEST")]
        manifest: PathBuf,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Check every entry's files against the sizes and hashes its node.json records.
    #[command(
        after_help = "Examples:\n  lethe cache verify\n  lethe cache verify --cache /shared/lethe-cache --repair\n\n\
A damaged entry (a file deleted, truncated or edited, node.json lost) is never used: `lethe run`\n\
recomputes it. --repair removes damaged entries now. Exit status: 0 when every entry is complete\n\
(or was repaired), 1 when damaged entries remain, 2 when the cache cannot be read."
    )]
    Verify {
        /// The node cache.
        #[arg(long, value_name = "DIR", default_value = ".lethe/cache")]
        cache: PathBuf,
        /// Remove damaged entries.
        #[arg(long)]
        repair: bool,
    },
    /// What the cache holds: entries and bytes by node kind and by pipeline.
    Du {
        /// The node cache.
        #[arg(long, value_name = "DIR", default_value = ".lethe/cache")]
        cache: PathBuf,
    },
    /// Delete the entries no kept run, named pipeline or live run refers to.
    #[command(after_help = "Examples:\n  lethe cache gc --dry-run\n  \
lethe cache gc --keep-runs runs --keep pipelines/table1.pipe --older-than 30d\n\n\
Kept: every node a run directory under --keep-runs lists (default ./runs when nothing is named),\n\
every node a --keep pipeline plans, and every node a run in progress on this cache uses. An\n\
entry another process is computing (its lock held) is never deleted. Safe while runs use the cache.")]
    Gc {
        /// The node cache.
        #[arg(long, value_name = "DIR", default_value = ".lethe/cache")]
        cache: PathBuf,
        /// Keep what the runs under this folder used (repeatable).
        #[arg(long = "keep-runs", value_name = "DIR")]
        keep_runs: Vec<PathBuf>,
        /// Keep what this pipeline plans (repeatable).
        #[arg(long, value_name = "FILE.pipe")]
        keep: Vec<PathBuf>,
        /// Only delete entries written longer ago than this (30d, 12h, 90m, 45s).
        #[arg(long, value_name = "AGE", value_parser = lethe::exec::housekeeping::parse_age)]
        older_than: Option<std::time::Duration>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number of jobs")),
    }
}

/// More jobs than cores only adds threads that wait: capped, with a note.
fn cap_jobs(jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if jobs > cores {
        eprintln!(
            "note: --jobs {jobs} is more than the {cores} cores here; running {cores} at once"
        );
        cores
    } else {
        jobs
    }
}

pub(crate) fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    match s {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| format!("`{s}` is not a device; expected cpu, cuda or cuda:N")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Plan {
            file,
            format,
            device,
            explain,
            cache,
        } => plan_cmd(&file, format, device, &cache, explain),
        Command::Data(DataCommand::Inspect { manifest }) => inspect_cmd(&manifest),
        Command::Cache(CacheCommand::Verify { cache, repair }) => cache_verify_cmd(&cache, repair),
        Command::Cache(CacheCommand::Du { cache }) => cli_housekeeping::du_cmd(&cache),
        Command::Cache(CacheCommand::Gc {
            cache,
            keep_runs,
            keep,
            older_than,
            dry_run,
        }) => cli_housekeeping::gc_cmd(cli_housekeeping::GcArgs {
            cache: &cache,
            keep_runs: &keep_runs,
            keep: &keep,
            older_than,
            dry_run,
        }),
        Command::Runs { dir } => cli_housekeeping::runs_cmd(&dir),
        Command::Report {
            dir,
            format,
            k,
            output,
        } => report_cmd(&dir, format, k, output.as_deref()),
        Command::Featurize(args) => cli_import::featurize_cmd(args),
        Command::Import(command) => cli_import::import_cmd(command),
        Command::Run {
            file,
            out,
            cache,
            jobs,
            device,
            keep_embeddings,
            keep_going,
            quiet,
            explain,
            cluster,
        } => {
            let executor = match cluster.executor() {
                Ok(e) => e,
                Err(e) => {
                    print_diagnostics(&[Diagnostic::error(e)], &SourceMap::new());
                    return ExitCode::from(2);
                }
            };
            let options = RunOptions {
                file,
                out,
                cache,
                jobs: cap_jobs(jobs),
                device,
                keep_embeddings,
                keep_going,
                quiet,
                explain,
                executor,
            };
            match cluster.job_keys() {
                Some(keys) => cli_cluster::job_cmd(&options, keys),
                None => run_cmd(options),
            }
        }
        Command::Status { dir } => cli_cluster::status_cmd(&dir),
        Command::Collect { dir } => cli_cluster::collect_cmd(&dir),
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

pub(crate) fn print_diagnostics(diagnostics: &[Diagnostic], sources: &SourceMap) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(render_all(diagnostics, sources).as_bytes());
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut all_ok = true;
    let mut manifests = ManifestCache::default();
    for file in files {
        let mut sources = SourceMap::new();
        if is_manifest(file) {
            // A manifest is checked whole: every split, with its tables (or,
            // before featurization, its raw lists).
            let checked = lethe::data::Manifest::load(file).and_then(|m| {
                let note = lethe::data::inspect::check(&m)?;
                Ok((m.name.clone(), m.split_names().count(), note))
            });
            match checked {
                Ok((name, splits, note)) => println!(
                    "{}: ok (dataset `{name}`, {splits} split{}){}",
                    file.display(),
                    if splits == 1 { "" } else { "s" },
                    note.map(|n| format!("; {n}")).unwrap_or_default()
                ),
                Err(e) => {
                    all_ok = false;
                    print_diagnostics(&[Diagnostic::error(e.to_string())], &sources);
                }
            }
            continue;
        }
        match lang::load(file, &mut sources, &mut manifests) {
            Ok(p) => println!(
                "{}: ok (pipeline \"{}\", {} variant{})",
                file.display(),
                p.name,
                p.experiments.len(),
                if p.experiments.len() == 1 { "" } else { "s" }
            ),
            Err(diagnostics) => {
                all_ok = false;
                print_diagnostics(&diagnostics, &sources);
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn plan_cmd(
    file: &Path,
    format: Format,
    device: Option<DeviceSpec>,
    cache_root: &Path,
    explain: bool,
) -> ExitCode {
    let mut sources = SourceMap::new();
    let mut manifests = ManifestCache::default();
    let mut pipeline = match lang::load(file, &mut sources, &mut manifests) {
        Ok(p) => p,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, &sources);
            return ExitCode::from(2);
        }
    };
    if let Some(d) = device {
        for e in &mut pipeline.experiments {
            e.device = d;
        }
    }
    let mut plan = plan::lower(&pipeline.name, pipeline.experiments, &mut manifests);
    // Mark cached nodes when a cache exists; never create one just to look.
    if cache_root.is_dir() {
        if let Ok(cache) = Cache::open(cache_root) {
            plan.mark_cached(|key| cache.contains(key));
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(plan::render(&plan, format).as_bytes());
    if explain {
        let root = cache_root;
        match Cache::open(root) {
            Ok(cache) => {
                let needed = lethe::exec::needed(&plan, &cache);
                let cached = plan.nodes().filter(|(_, n)| cache.contains(&n.key)).count();
                let _ = writeln!(
                    stdout,
                    "\ncache {}: {cached} of {} nodes cached",
                    root.display(),
                    plan.graph.node_count()
                );
                for (i, why) in lethe::exec::explain::explain(&plan, &cache, &needed) {
                    let _ = writeln!(stdout, "  will run {}: {why}", plan.node(i).label);
                }
            }
            Err(e) => {
                eprintln!("error: cannot open the cache {}: {e}", root.display());
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

pub(crate) fn run_cmd(options: RunOptions) -> ExitCode {
    let summary = match run::run(&options) {
        Ok(s) => s,
        Err(RunError::Invalid(diagnostics, sources)) => {
            self::print_diagnostics(&diagnostics, &sources);
            return ExitCode::from(2);
        }
        Err(RunError::Failed(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(1);
        }
        Err(RunError::Interrupted(message)) => {
            eprintln!("{message}");
            return ExitCode::from(130);
        }
    };
    for (node, variants, message) in &summary.failures {
        eprintln!(
            "error: node {node} failed (variant{} {}): {message}",
            if variants.len() == 1 { "" } else { "s" },
            variants
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(dir) = &summary.detached {
        eprintln!("{}", cli_cluster::pending_note(dir));
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &summary.run_dir {
        if !options.quiet {
            eprintln!("results: {}", dir.display());
        }
        print_headline(dir);
    }
    if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn report_cmd(
    dir: &Path,
    format: lethe::report::Format,
    k: Option<u64>,
    output: Option<&Path>,
) -> ExitCode {
    let text = match lethe::report::report(dir, format, k) {
        Ok(text) => text,
        Err(e) => {
            print_diagnostics(&[Diagnostic::error(e.to_string())], &SourceMap::new());
            return ExitCode::from(2);
        }
    };
    let Some(path) = output else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    // Through a temporary file beside the target, so a failure leaves no half page.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let partial = path.with_file_name(format!(".{}.partial", name.unwrap_or_default()));
    match std::fs::write(&partial, text).and_then(|_| std::fs::rename(&partial, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            eprintln!("error: cannot write {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn inspect_cmd(manifest: &Path) -> ExitCode {
    match lethe::data::Manifest::load(manifest).and_then(|m| lethe::data::inspect(&m)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_diagnostics(&[Diagnostic::error(e.to_string())], &SourceMap::new());
            ExitCode::from(2)
        }
    }
}

fn cache_verify_cmd(root: &Path, repair: bool) -> ExitCode {
    if !root.is_dir() {
        eprintln!("error: {} is not a cache directory", root.display());
        return ExitCode::from(2);
    }
    let report = match Cache::open(root).and_then(|c| c.verify_all(repair)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot read the cache {}: {e}", root.display());
            return ExitCode::from(2);
        }
    };
    for (key, why) in &report.damaged {
        println!(
            "{} {key}: {why}",
            if repair { "removed" } else { "damaged" }
        );
    }
    let gib = report.bytes as f64 / (1u64 << 30) as f64;
    println!(
        "{}: {} complete, {} damaged{}; hashed {gib:.2} GiB in {:.1} s ({:.2} GiB/s)",
        root.display(),
        report.complete,
        report.damaged.len(),
        if repair { " (removed)" } else { "" },
        report.seconds,
        gib / report.seconds.max(1e-9)
    );
    if report.damaged.is_empty() || repair {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_headline(dir: &Path) {
    if let Ok(text) = std::fs::read_to_string(dir.join("headline.txt")) {
        print!("{text}");
    }
}
