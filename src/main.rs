//! The `lethe` command line: a thin layer over the library's stages.
//! Exit codes: 0 success, 2 invalid input, 1 a failure at run time.

use clap::{Parser, Subcommand};
use lethe::diagnostics::{render_all, Diagnostic, SourceMap};
use lethe::lang::{self, DeviceSpec, ManifestCache};
use lethe::plan::{self, Format};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    },
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
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
        } => plan_cmd(&file, format, device),
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn report(diagnostics: &[Diagnostic], sources: &SourceMap) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(render_all(diagnostics, sources).as_bytes());
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut all_ok = true;
    let mut manifests = ManifestCache::default();
    for file in files {
        let mut sources = SourceMap::new();
        if is_manifest(file) {
            match lethe::data::Manifest::load(file) {
                Ok(m) => println!("{}: ok (dataset `{}`)", file.display(), m.name),
                Err(e) => {
                    all_ok = false;
                    report(&[Diagnostic::error(e.to_string())], &sources);
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
                report(&diagnostics, &sources);
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn plan_cmd(file: &Path, format: Format, device: Option<DeviceSpec>) -> ExitCode {
    let mut sources = SourceMap::new();
    let mut manifests = ManifestCache::default();
    let mut pipeline = match lang::load(file, &mut sources, &mut manifests) {
        Ok(p) => p,
        Err(diagnostics) => {
            report(&diagnostics, &sources);
            return ExitCode::from(2);
        }
    };
    if let Some(d) = device {
        for e in &mut pipeline.experiments {
            e.device = d;
        }
    }
    let plan = plan::lower(&pipeline.name, pipeline.experiments, &mut manifests);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(plan::render(&plan, format).as_bytes());
    ExitCode::SUCCESS
}
