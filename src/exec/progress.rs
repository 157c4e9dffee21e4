//! What the user sees while a run executes: on a terminal, one line per running
//! node with a bar, rate and ETA (indicatif); otherwise plain log lines.

use super::schedule::{Events, Outcome};
use crate::plan::Plan;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use petgraph::graph::NodeIndex;
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub struct Progress<'a> {
    plan: &'a Plan,
    /// How many nodes this run will compute (for "[3/25]").
    total: usize,
    done: AtomicUsize,
    quiet: bool,
    bars: Option<(MultiProgress, Mutex<HashMap<NodeIndex, ProgressBar>>)>,
    /// The process's peak resident memory so far, and for each node kind the
    /// highest peak reached by one of its nodes (`before nodes`: reading the data).
    peaks: Mutex<(u64, BTreeMap<String, u64>)>,
}

/// The process's peak resident set (VmHWM), in bytes; `None` where /proc has none.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl<'a> Progress<'a> {
    pub fn new(plan: &'a Plan, total: usize, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal() && !quiet;
        let bars = terminal.then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        let before = peak_rss().unwrap_or(0);
        Progress {
            plan,
            total,
            done: AtomicUsize::new(0),
            quiet,
            bars,
            peaks: Mutex::new((
                before,
                BTreeMap::from([("before nodes".to_string(), before)]),
            )),
        }
    }

    /// Records the peak reached so far under `what` when it is a new peak.
    pub fn note_peak(&self, what: &str) {
        if let (Some(now), Ok(mut peaks)) = (peak_rss(), self.peaks.lock()) {
            if now > peaks.0 {
                peaks.0 = now;
                peaks.1.insert(what.to_string(), now);
            }
        }
    }

    /// The process's peak resident memory, and which node kinds raised it to
    /// what: a kind is listed when one of its nodes ended with a new peak (with
    /// `--jobs` above 1, nodes running beside it share the blame).
    pub fn peaks(&self) -> (u64, BTreeMap<String, u64>) {
        let (peak, by_kind) = self.peaks.lock().map(|p| p.clone()).unwrap_or_default();
        (peak_rss().unwrap_or(peak), by_kind)
    }

    /// Prints a line above the bars (or plainly).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }
}

impl Events for Progress<'_> {
    fn started(&self, node: NodeIndex) {
        let label = &self.plan.node(node).label;
        match &self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>28.bold} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(label.clone());
                if let Ok(mut b) = bars.lock() {
                    b.insert(node, bar);
                }
            }
            None if !self.quiet => self.line(&format!("start   {label}")),
            None => {}
        }
    }

    fn progress(&self, node: NodeIndex, done: usize, total: usize) {
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.lock().ok().and_then(|b| b.get(&node).cloned()) {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        }
    }

    fn finished(&self, node: NodeIndex, outcome: &Outcome) {
        if let (Outcome::Executed(_), Some(now), Ok(mut peaks)) =
            (outcome, peak_rss(), self.peaks.lock())
        {
            if now > peaks.0 {
                peaks.0 = now;
                let kind = self.plan.node(node).kind().name().to_string();
                let entry = peaks.1.entry(kind).or_insert(0);
                *entry = (*entry).max(now);
            }
        }
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.lock().ok().and_then(|mut b| b.remove(&node)) {
                bar.finish_and_clear();
            }
        }
        let label = &self.plan.node(node).label;
        // After Ctrl-C, a stage stopped mid-way and its dependents are not failures.
        if crate::interrupt::requested()
            && matches!(outcome, Outcome::Failed(_) | Outcome::Skipped { .. })
        {
            return;
        }
        let n = match outcome {
            Outcome::Executed(_) | Outcome::Failed(_) => {
                self.done.fetch_add(1, Ordering::Relaxed) + 1
            }
            _ => self.done.load(Ordering::Relaxed),
        };
        let counter = format!(
            "[{n:>width$}/{}]",
            self.total,
            width = self.total.to_string().len()
        );
        match outcome {
            Outcome::Executed(d) => self.line(&format!(
                "{counter} {label}: done in {:.1} s",
                d.as_secs_f64()
            )),
            Outcome::Cached => self.line(&format!(
                "{counter} {label}: cached (made meanwhile by another run)"
            )),
            Outcome::Failed(e) => self.line(&format!("{counter} {label}: FAILED: {e}")),
            Outcome::Skipped { failed_input } => self.line(&format!(
                "skipped {label}: its input {} failed",
                self.plan.node(*failed_input).label
            )),
            Outcome::NotRun => {}
        }
    }
}
