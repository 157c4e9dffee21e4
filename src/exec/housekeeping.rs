//! What a cache shared for months needs: `lethe runs` (the run directories under
//! a folder), `lethe cache du` (what the cache holds, by node kind and pipeline)
//! and `lethe cache gc` (delete the entries nothing kept refers to).
//!
//! A run directory lists every node key its plan used (`nodes.json`), and a live
//! run marks its keys in the cache ([`Cache::mark_active`]). gc keeps an entry
//! when a kept run lists it, a given pipeline plans it, or a live run uses it,
//! and deletes the others, each only if no process holds its lock (one that is
//! computing it now): never a referenced or locked entry.

use super::cache::{Cache, FileRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The run directory's list of the nodes it used.
pub const NODES_FILE: &str = "nodes.json";

/// The largest run.json, nodes.json or headline.txt read (a plan of thousands
/// of nodes lists them in well under a megabyte).
const TEXT_LIMIT: u64 = 256 << 20;

fn read_text(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read_bounded(path, TEXT_LIMIT).map_err(|e| e.message)?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// One node of a run, as `nodes.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRef {
    pub key: String,
    pub kind: String,
    pub label: String,
}

/// How far a run directory got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Every variant has results.
    Complete,
    /// Written with `--keep-going`: some nodes failed.
    Partial { failed_nodes: usize },
    /// `<id>.incomplete`: killed while writing, or still being written.
    Incomplete,
    /// `<id>.pending`: submitted to Slurm with `--detach`, not collected yet.
    Submitted,
}

/// A run directory found by [`list_runs`].
#[derive(Debug, Clone)]
pub struct RunListing {
    pub dir: PathBuf,
    pub pipeline: String,
    pub run_id: String,
    pub status: RunStatus,
    pub variants: Option<u64>,
    pub wall_seconds: Option<f64>,
    /// The headline's first figure column: its name, best value and variant.
    pub headline: Option<(String, String, String)>,
}

/// The run directories under `root` (`root/<pipeline>/<run-id>/`, or `root` a
/// pipeline's folder, or `root` a run directory), oldest first by run id.
pub fn list_runs(root: &Path) -> Result<Vec<RunListing>, String> {
    let mut runs: Vec<RunListing> = run_dirs(root)?.iter().map(|d| listing(d)).collect();
    runs.sort_by(|a, b| (&a.run_id, &a.pipeline).cmp(&(&b.run_id, &b.pipeline)));
    Ok(runs)
}

/// The run directories under `root`, without reading them.
fn run_dirs(root: &Path) -> Result<Vec<PathBuf>, String> {
    if !root.is_dir() {
        return Err(format!("{}: no such folder of runs", root.display()));
    }
    let mut dirs = Vec::new();
    collect_run_dirs(root, 2, &mut dirs);
    Ok(dirs)
}

fn is_incomplete(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".incomplete"))
}

fn is_pending(dir: &Path) -> bool {
    dir.join(super::slurm::PENDING_FILE).is_file()
}

fn is_run_dir(dir: &Path) -> bool {
    dir.join("run.json").is_file() || is_incomplete(dir) || is_pending(dir)
}

fn collect_run_dirs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if is_run_dir(dir) {
        out.push(dir.to_path_buf());
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        collect_run_dirs(&child, depth - 1, out);
    }
}

fn listing(dir: &Path) -> RunListing {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run: Option<serde_json::Value> = read_text(&dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let field = |k: &str| run.as_ref().and_then(|r| r.get(k).cloned());
    let pipeline = field("pipeline")
        .and_then(|p| p.as_str().map(str::to_string))
        .or_else(|| {
            dir.parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let status = if is_pending(dir) {
        RunStatus::Submitted
    } else if is_incomplete(dir) || run.is_none() {
        RunStatus::Incomplete
    } else {
        match field("nodes").and_then(|n| n["failed"].as_u64()) {
            Some(n) if n > 0 => RunStatus::Partial {
                failed_nodes: n as usize,
            },
            _ => RunStatus::Complete,
        }
    };
    RunListing {
        dir: dir.to_path_buf(),
        pipeline,
        run_id: name
            .trim_end_matches(".incomplete")
            .trim_end_matches(".pending")
            .to_string(),
        status,
        variants: field("variants").and_then(|v| v.as_u64()),
        wall_seconds: field("wall_seconds").and_then(|v| v.as_f64()),
        headline: best_of_first_column(dir),
    }
}

/// The headline's first figure column: its name, its best mean over the
/// variants (as the report shows it) and the variant that has it.
fn best_of_first_column(dir: &Path) -> Option<(String, String, String)> {
    let table = crate::report::headline_table(dir).ok()?;
    let column = table.columns.first()?.clone();
    let (variant, stat) = table
        .rows
        .iter()
        .filter_map(|(variant, cells)| Some((variant, cells.first()?.as_ref()?)))
        // The first of equal bests, in the pipeline's variant order.
        .reduce(|best, next| {
            if next.1.mean > best.1.mean {
                next
            } else {
                best
            }
        })?;
    Some((column, stat.show(), variant.clone()))
}

/// The keys every run directory under `roots` lists. A run directory written
/// before runs listed their nodes cannot say what it needs: an error, so gc
/// never deletes what a kept run may need.
pub fn keys_of_runs(roots: &[PathBuf]) -> Result<(HashSet<String>, usize), String> {
    let mut keys = HashSet::new();
    let mut runs = 0;
    for root in roots {
        // Only the node lists are read: no run's tables.
        for dir in run_dirs(root)? {
            let path = dir.join(NODES_FILE);
            if is_incomplete(&dir) && !path.exists() {
                continue;
            }
            let text = read_text(&path).map_err(|e| {
                format!(
                    "{}: {e}; this run was written before runs listed their nodes: \
                     run its pipeline again (what is cached is reused) or delete the folder",
                    path.display()
                )
            })?;
            let nodes: Vec<NodeRef> =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            keys.extend(nodes.into_iter().map(|n| n.key));
            runs += 1;
        }
    }
    Ok((keys, runs))
}

/// Entries and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub entries: usize,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
    }
}

/// What `lethe cache du` prints.
#[derive(Debug, Default)]
pub struct Usage {
    pub total: Tally,
    pub by_kind: BTreeMap<String, Tally>,
    /// By the pipeline that computed the entry (a shared entry counts once).
    pub by_pipeline: BTreeMap<String, Tally>,
    /// Entries without a readable `node.json` (recomputed when needed).
    pub damaged: Tally,
}

/// One entry's kind, label, pipeline and bytes, from its `node.json`.
struct EntryInfo {
    kind: String,
    label: String,
    pipeline: String,
    bytes: u64,
}

fn entry_info(cache: &Cache, key: &str) -> Option<EntryInfo> {
    let description = cache.description(key)?;
    let files: Vec<FileRecord> = serde_json::from_value(description["files"].clone()).ok()?;
    let node_json =
        std::fs::metadata(cache.entry(key).join(super::cache::NODE_FILE)).map_or(0, |m| m.len());
    let text = |k: &str| description[k].as_str().unwrap_or("?").to_string();
    Some(EntryInfo {
        kind: text("kind"),
        label: text("label"),
        pipeline: text("pipeline"),
        bytes: node_json + files.iter().map(|f| f.bytes).sum::<u64>(),
    })
}

/// Bytes of every file under `dir` (for entries `node.json` cannot describe).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Sizes of everything in the cache.
pub fn usage(cache: &Cache) -> Usage {
    let mut usage = Usage::default();
    for key in cache.keys() {
        match entry_info(cache, &key) {
            Some(info) => {
                usage.total.add(info.bytes);
                usage.by_kind.entry(info.kind).or_default().add(info.bytes);
                usage
                    .by_pipeline
                    .entry(info.pipeline)
                    .or_default()
                    .add(info.bytes);
            }
            None => usage.damaged.add(dir_bytes(&cache.entry(&key))),
        }
    }
    usage
}

/// One entry gc deletes (or would, with `--dry-run`).
#[derive(Debug, Clone)]
pub struct Removal {
    pub key: String,
    pub kind: String,
    pub label: String,
    pub bytes: u64,
}

/// What `lethe cache gc` did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<Removal>,
    /// Entries kept because something refers to them.
    pub referenced: usize,
    /// Entries younger than `--older-than`.
    pub young: usize,
    /// Entries another process holds locked (computing them): left alone.
    pub locked: Vec<String>,
}

/// Deletes (or with `dry_run` only lists) every entry that `keep` does not name
/// and no live run uses, older than `older_than` when given.
pub fn gc(
    cache: &Cache,
    keep: &HashSet<String>,
    older_than: Option<Duration>,
    dry_run: bool,
) -> Result<GcReport, String> {
    let mut active = cache
        .active_keys()
        .map_err(|e| format!("{}: {e}", cache.root().display()))?;
    // Slurm jobs still queued have marked nothing yet: keep what they make and read.
    active.extend(super::slurm::recorded_keys(cache));
    let now = SystemTime::now();
    let mut report = GcReport::default();
    for key in cache.keys() {
        if keep.contains(&key) || active.contains(&key) {
            report.referenced += 1;
            continue;
        }
        let entry = cache.entry(&key);
        if let Some(age) = older_than {
            let modified = std::fs::metadata(&entry).and_then(|m| m.modified());
            let old = modified.is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= age);
            if !old {
                report.young += 1;
                continue;
            }
        }
        let removal = match entry_info(cache, &key) {
            Some(info) => Removal {
                key: key.clone(),
                kind: info.kind,
                label: info.label,
                bytes: info.bytes,
            },
            None => Removal {
                key: key.clone(),
                kind: "damaged".to_string(),
                label: "(no readable node.json)".to_string(),
                bytes: dir_bytes(&entry),
            },
        };
        if !dry_run {
            let removed = cache
                .remove_if_free(&key)
                .map_err(|e| format!("cannot remove {}: {e}", entry.display()))?;
            if !removed {
                report.locked.push(key);
                continue;
            }
        }
        report.removed.push(removal);
    }
    Ok(report)
}

/// `30d`, `12h`, `90m` or `45s`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not an age; expected a number and d, h, m or s, as in 30d");
    let unit = text.chars().last().ok_or_else(bad)?;
    let number: u64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    let seconds = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}
