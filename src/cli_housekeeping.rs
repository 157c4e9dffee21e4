//! `lethe runs`, `lethe cache du` and `lethe cache gc`: the command-line side of
//! [`lethe::exec::housekeeping`].

use lethe::diagnostics::SourceMap;
use lethe::exec::housekeeping::{self, RunStatus, Tally};
use lethe::exec::Cache;
use lethe::lang::{self, ManifestCache};
use lethe::plan;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// `lethe runs [DIR]`.
pub fn runs_cmd(root: &Path) -> ExitCode {
    let runs = match housekeeping::list_runs(root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if runs.is_empty() {
        println!("{}: no runs", root.display());
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<24} {:<21} {:<26} {:>8} {:>8}  headline (best of the first column)",
        "pipeline", "run", "status", "variants", "wall"
    );
    for run in &runs {
        let status = match run.status {
            RunStatus::Complete => "complete".to_string(),
            RunStatus::Partial { failed_nodes } => format!("partial ({failed_nodes} failed)"),
            RunStatus::Incomplete => "incomplete (killed?)".to_string(),
            RunStatus::Submitted => "submitted to Slurm".to_string(),
        };
        let headline = run
            .headline
            .as_ref()
            .map_or(String::new(), |(column, figure, variant)| {
                format!("{column} {figure} ({variant})")
            });
        println!(
            "{:<24} {:<21} {:<26} {:>8} {:>8}  {headline}",
            run.pipeline,
            run.run_id,
            status,
            run.variants.map_or("-".to_string(), |v| v.to_string()),
            run.wall_seconds
                .map_or("-".to_string(), |s| format!("{s:.1} s")),
        );
    }
    ExitCode::SUCCESS
}

/// A cache that must already exist: these commands never create one.
fn open_existing(root: &Path) -> Result<Cache, ExitCode> {
    if !root.is_dir() {
        eprintln!("error: {} is not a cache directory", root.display());
        return Err(ExitCode::from(2));
    }
    Cache::open(root).map_err(|e| {
        eprintln!("error: cannot open the cache {}: {e}", root.display());
        ExitCode::from(2)
    })
}

/// `lethe cache du`.
pub fn du_cmd(root: &Path) -> ExitCode {
    let cache = match open_existing(root) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let usage = housekeeping::usage(&cache);
    let line =
        |name: &str, t: &Tally| println!("  {name:<28} {:>7} {:>12}", t.entries, mib(t.bytes));
    println!(
        "{}: {} entries, {}",
        root.display(),
        usage.total.entries,
        mib(usage.total.bytes)
    );
    println!("{:<30} {:>7} {:>12}", "by node kind", "entries", "size");
    for (kind, t) in &usage.by_kind {
        line(kind, t);
    }
    // A shared entry counts once, under the pipeline that computed it.
    println!(
        "{:<30} {:>7} {:>12}",
        "by pipeline (that computed it)", "entries", "size"
    );
    for (pipeline, t) in &usage.by_pipeline {
        line(pipeline, t);
    }
    if usage.damaged.entries > 0 {
        line("damaged (no node.json)", &usage.damaged);
    }
    ExitCode::SUCCESS
}

/// What `lethe cache gc` is told to keep and how.
pub struct GcArgs<'a> {
    pub cache: &'a Path,
    pub keep_runs: &'a [PathBuf],
    pub keep: &'a [PathBuf],
    pub older_than: Option<Duration>,
    pub dry_run: bool,
}

/// The keys of the nodes a pipeline plans.
fn keys_of_pipeline(file: &Path, keys: &mut HashSet<String>) -> Result<(), ExitCode> {
    let mut sources = SourceMap::new();
    let mut manifests = ManifestCache::default();
    let pipeline = lang::load(file, &mut sources, &mut manifests).map_err(|diagnostics| {
        eprint!("{}", lethe::diagnostics::render_all(&diagnostics, &sources));
        ExitCode::from(2)
    })?;
    let plan = plan::lower(&pipeline.name, pipeline.experiments, &mut manifests);
    keys.extend(plan.graph.node_weights().map(|n| n.key.clone()));
    Ok(())
}

/// `lethe cache gc`.
pub fn gc_cmd(args: GcArgs) -> ExitCode {
    let cache = match open_existing(args.cache) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Nothing named to keep: the runs `lethe run` writes by default, and never
    // an empty keep set by accident (that would empty the cache).
    let default_runs = [PathBuf::from("runs")];
    let keep_runs = if args.keep_runs.is_empty() && args.keep.is_empty() {
        if !default_runs[0].is_dir() {
            eprintln!(
                "error: nothing to keep: name the runs whose entries stay (--keep-runs DIR) \
                 or pipelines (--keep FILE.pipe); there is no ./runs folder"
            );
            return ExitCode::from(2);
        }
        &default_runs[..]
    } else {
        args.keep_runs
    };
    let (mut keep, runs) = match housekeeping::keys_of_runs(keep_runs) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for file in args.keep {
        if let Err(code) = keys_of_pipeline(file, &mut keep) {
            return code;
        }
    }
    let report = match housekeeping::gc(&cache, &keep, args.older_than, args.dry_run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for r in &report.removed {
        println!(
            "{verb} {} {:<10} {:>10}  {}",
            r.key,
            r.kind,
            mib(r.bytes),
            r.label
        );
    }
    for key in &report.locked {
        println!("in use (locked by a computing run), kept: {key}");
    }
    let bytes: u64 = report.removed.iter().map(|r| r.bytes).sum();
    println!(
        "{}: {verb} {} entries ({}); kept {} referenced by {} run{} and {} pipeline{} or a live run{}{}",
        args.cache.display(),
        report.removed.len(),
        mib(bytes),
        report.referenced,
        runs,
        if runs == 1 { "" } else { "s" },
        args.keep.len(),
        if args.keep.len() == 1 { "" } else { "s" },
        if report.young > 0 {
            format!(", {} younger than --older-than", report.young)
        } else {
            String::new()
        },
        if report.locked.is_empty() {
            String::new()
        } else {
            format!(", {} in use", report.locked.len())
        },
    );
    ExitCode::SUCCESS
}
