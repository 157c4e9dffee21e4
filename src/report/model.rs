//! What the report says, independent of how it is printed: the paper's tables
//! (blocks of columns grouped by indexing policy), the recall matrix of every
//! variant, and the drift diagnostics, each figure as mean ± std over seeds.

use super::load::{RunResults, VariantInfo};
use super::ReportError;
use crate::eval::metrics::mean_std;
use crate::results::{Identified, RecallRow, SummaryRow};
use std::collections::BTreeMap;

/// A figure over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    /// Sample standard deviation; `None` with one seed.
    pub std: Option<f64>,
    /// (seeds the figure covers, seeds the pipeline asked for) when fewer were
    /// found than asked (a failed seed under `--keep-going`).
    pub partial: Option<(usize, usize)>,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        (!values.is_empty()).then(|| {
            let (mean, std) = mean_std(values);
            Stat {
                mean,
                std,
                partial: None,
            }
        })
    }

    /// Marks a figure over `found` seeds of the `asked` ones when it is fewer.
    pub fn of_seeds(mut self, found: usize, asked: usize) -> Stat {
        self.partial = (found < asked).then_some((found, asked));
        self
    }

    /// `12.3 ± 0.4`, or `12.3` with one seed; `(n of m seeds)` when seeds are missing.
    pub fn show(&self) -> String {
        let figure = match self.std {
            Some(s) => format!("{} ± {}", one_decimal(self.mean), one_decimal(s)),
            None => one_decimal(self.mean),
        };
        match self.partial {
            Some((found, asked)) => format!("{figure} ({found} of {asked} seeds)"),
            None => figure,
        }
    }
}

/// One decimal, without the `-0.0` that a tiny negative value would print.
pub fn one_decimal(x: f64) -> String {
    let s = format!("{x:.1}");
    if s == "-0.0" {
        "0.0".to_string()
    } else {
        s
    }
}

/// The paper's column groups, in the paper's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    Joint,
    Reindex,
    Frozen,
}

impl Policy {
    fn of(v: &VariantInfo) -> Policy {
        match (v.schedule.as_str(), v.index.as_str()) {
            ("joint", _) => Policy::Joint,
            (_, "reindex") => Policy::Reindex,
            _ => Policy::Frozen,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Policy::Joint => "joint (upper bound)",
            Policy::Reindex => "reindex",
            Policy::Frozen => "no reindex (frozen)",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The header: the variant line's label, or the whole label without one.
    pub header: String,
    /// The variant's full label (as in the tables' `variant` column).
    pub variant: String,
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// A task with the task known (its own gallery), after the last stage.
    Task,
    /// The mean over tasks of the rows above.
    Average,
    /// The union gallery, every task's queries pooled (task unknown).
    Union,
    Forgetting,
    Bwt,
    /// Forward transfer: what learning earlier tasks did for a task before it is learned.
    Fwt,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub kind: RowKind,
    /// One per column of the block, in column order.
    pub cells: Vec<Option<Stat>>,
}

/// One of the paper's tables: a direction and one value of every other swept axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// `im2txt`, then `model.share = sharing` and so on.
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

impl Block {
    /// Runs of adjacent columns under one policy: (policy, how many columns).
    pub fn groups(&self) -> Vec<(Policy, usize)> {
        let mut groups: Vec<(Policy, usize)> = Vec::new();
        for c in &self.columns {
            match groups.last_mut() {
                Some((policy, n)) if *policy == c.policy => *n += 1,
                _ => groups.push((c.policy, 1)),
            }
        }
        groups
    }
}

/// Recall on every task after every stage, for one variant and direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub variant: String,
    pub direction: String,
    /// (stage, the task it learned) in order.
    pub stages: Vec<(u64, String)>,
    pub tasks: Vec<String>,
    /// `cells[stage][task]`.
    pub cells: Vec<Vec<Option<Stat>>>,
}

/// One drift diagnostic over stages: a line per variant.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftChart {
    pub metric: String,
    pub modality: String,
    /// (variant, [(stage, mean over old tasks, directions and seeds)]).
    pub series: Vec<(String, Vec<(u64, f64)>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub pipeline: String,
    pub run_id: String,
    pub k: u64,
    pub seeds: usize,
    pub wall_seconds: Option<f64>,
    pub blocks: Vec<Block>,
    pub matrices: Vec<Matrix>,
    pub drift: Vec<DriftChart>,
    /// (metric, formula) as `summary.arrow` names them.
    pub formulas: Vec<(String, String)>,
    /// Each regularizer term's share of the loss, stage by stage.
    pub shares: Vec<super::terms::TermShare>,
    /// Terms that weighed less than 1% of the loss over a stage.
    pub warnings: Vec<String>,
}

pub fn build(results: &RunResults, k: Option<u64>) -> Result<Report, ReportError> {
    let recall_path = results.dir.join("recall.arrow");
    let mut ks: Vec<u64> = results.recall.iter().map(|r| r.row.k as u64).collect();
    ks.sort_unstable();
    ks.dedup();
    let Some(&largest) = ks.last() else {
        return Err(ReportError::new(
            &recall_path,
            "has no rows: the run evaluated nothing (did every variant fail?)",
        ));
    };
    let k = match k {
        None => largest,
        Some(k) if ks.contains(&k) => k,
        Some(k) => {
            let list: Vec<String> = ks.iter().map(u64::to_string).collect();
            return Err(ReportError::new(
                &recall_path,
                format!(
                    "has no Recall@{k}; the run measured K = {}",
                    list.join(", ")
                ),
            ));
        }
    };
    // Variants that produced results (a failed one under --keep-going has none).
    let variants: Vec<&VariantInfo> = results
        .variants
        .iter()
        .filter(|v| results.recall.iter().any(|r| r.identity.variant == v.label))
        .collect();
    let directions = unique(results.recall.iter().map(|r| r.row.direction.clone()));
    let mut formulas: Vec<(String, String)> = Vec::new();
    for s in results.summary.iter().map(|s| &s.row) {
        if !formulas.iter().any(|(m, _)| *m == s.metric) {
            formulas.push((s.metric.clone(), s.formula.clone()));
        }
    }
    let mut matrices = Vec::new();
    for v in &variants {
        for direction in &directions {
            if let Some(m) = matrix(results, v, direction, k) {
                matrices.push(m);
            }
        }
    }
    let figures = Figures {
        results,
        k,
        matrices: &matrices,
    };
    let mut blocks = Vec::new();
    for direction in &directions {
        for (title, members) in split_by_axes(&variants) {
            blocks.push(block(direction, &title, &members, &figures));
        }
    }
    let shares = super::terms::shares(&results.train_log, &results.variants);
    Ok(Report {
        pipeline: results.pipeline.clone(),
        run_id: results.run_id.clone(),
        k,
        seeds: variants.iter().map(|v| v.seeds.len()).max().unwrap_or(0),
        wall_seconds: results.wall_seconds,
        blocks,
        matrices,
        drift: drift_charts(results, &variants),
        formulas,
        warnings: super::terms::inert_warnings(&shares, &results.variants),
        shares,
    })
}

/// The variants split into the paper's separate tables: one per value of every
/// swept axis except the variant lines (the columns). Without variant lines every
/// variant is a column of one table.
fn split_by_axes<'a>(
    variants: &[&'a VariantInfo],
) -> Vec<(String, Vec<(&'a VariantInfo, String)>)> {
    let has_lines = variants
        .iter()
        .any(|v| v.axes.iter().any(|(a, _)| a == "variant"));
    let mut out: Vec<(String, Vec<(&VariantInfo, String)>)> = Vec::new();
    for v in variants {
        let (title, header) = if has_lines {
            let others: Vec<String> = v
                .axes
                .iter()
                .filter(|(a, _)| a != "variant")
                .map(|(a, l)| format!("{a} = {l}"))
                .collect();
            let line = v
                .axes
                .iter()
                .find(|(a, _)| a == "variant")
                .map_or(v.label.clone(), |(_, l)| l.clone());
            (others.join(", "), line)
        } else {
            (String::new(), v.label.clone())
        };
        match out.iter_mut().find(|(t, _)| *t == title) {
            Some((_, members)) => members.push((v, header)),
            None => out.push((title, vec![(v, header)])),
        }
    }
    out
}

/// Where a block's cells come from: the recall matrices (task rows) and the
/// summary's mean/std (the other rows).
struct Figures<'a> {
    results: &'a RunResults,
    k: u64,
    matrices: &'a [Matrix],
}

impl Figures<'_> {
    /// Recall on `task` with the task known after the variant's last stage: the
    /// last row of its recall matrix.
    fn final_task(&self, variant: &str, direction: &str, task: &str) -> Option<Stat> {
        let m = self
            .matrices
            .iter()
            .find(|m| m.variant == variant && m.direction == direction)?;
        let j = m.tasks.iter().position(|t| t == task)?;
        m.cells.last()?[j]
    }

    /// A summary figure (mean and std over seeds, as `lethe run` computed them).
    fn summary(&self, variant: &str, direction: &str, gallery: &str, metric: &str) -> Option<Stat> {
        let find = |statistic: &str| {
            let s = self.results.summary.iter().find(|s| {
                s.identity.variant == variant
                    && s.row.direction == direction
                    && s.row.gallery == gallery
                    && s.row.k as u64 == self.k
                    && s.row.metric == metric
                    && s.row.statistic == statistic
            })?;
            Some(s)
        };
        let mean = find("mean")?;
        let asked = self
            .results
            .variants
            .iter()
            .find(|v| v.label == variant)
            .map_or(0, |v| v.seeds.len());
        Some(
            Stat {
                mean: mean.row.value?,
                std: find("std").and_then(|s| s.row.value),
                partial: None,
            }
            .of_seeds(mean.row.n_seeds, asked),
        )
    }
}

fn block(
    direction: &str,
    axes_title: &str,
    members: &[(&VariantInfo, String)],
    figures: &Figures,
) -> Block {
    let mut columns: Vec<Column> = members
        .iter()
        .map(|(v, header)| Column {
            header: header.clone(),
            variant: v.label.clone(),
            policy: Policy::of(v),
        })
        .collect();
    // Stable: the pipeline's order within each policy group.
    columns.sort_by_key(|c| c.policy);
    let tasks = unique(members.iter().flat_map(|(v, _)| v.tasks.iter().cloned()));
    let row = |label: &str, kind: RowKind, cell: &dyn Fn(&Column) -> Option<Stat>| Row {
        label: label.to_string(),
        kind,
        cells: columns.iter().map(cell).collect(),
    };
    let mut rows: Vec<Row> = tasks
        .iter()
        .map(|task| {
            row(task, RowKind::Task, &|c| {
                figures.final_task(&c.variant, direction, task)
            })
        })
        .collect();
    let summary = |gallery: &'static str, metric: &'static str| {
        move |c: &Column| figures.summary(&c.variant, direction, gallery, metric)
    };
    rows.push(row(
        "average (task known)",
        RowKind::Average,
        &summary("per_task", "average"),
    ));
    // The seed's row label is the tasks joined (`A+V+C`); long lists are summarised.
    let union = if tasks.len() <= 4 {
        format!("union {} (task unknown)", tasks.join("+"))
    } else {
        format!("union of all {} tasks (task unknown)", tasks.len())
    };
    rows.push(row(&union, RowKind::Union, &summary("union", "total")));
    rows.push(row(
        "forgetting",
        RowKind::Forgetting,
        &summary("per_task", "forgetting"),
    ));
    rows.push(row("BWT", RowKind::Bwt, &summary("per_task", "bwt")));
    rows.push(row("FWT", RowKind::Fwt, &summary("per_task", "fwt")));
    // A row nobody has (no union gallery evaluated, say) is left out.
    rows.retain(|r| r.kind == RowKind::Task || r.cells.iter().any(Option::is_some));
    Block {
        title: if axes_title.is_empty() {
            direction.to_string()
        } else {
            format!("{direction} · {axes_title}")
        },
        columns,
        rows,
    }
}

fn matrix(results: &RunResults, v: &VariantInfo, direction: &str, k: u64) -> Option<Matrix> {
    let rows: Vec<&RecallRow> = results
        .recall
        .iter()
        .filter(|r| r.identity.variant == v.label)
        .map(|r| &r.row)
        .filter(|r| r.direction == direction && r.gallery == "per_task" && r.k as u64 == k)
        .collect();
    let mut stages: Vec<(u64, String)> = rows
        .iter()
        .map(|r| (r.stage as u64, r.stage_task.clone()))
        .collect();
    stages.sort();
    stages.dedup();
    if stages.is_empty() {
        return None;
    }
    let cells = stages
        .iter()
        .map(|(stage, _)| {
            v.tasks
                .iter()
                .map(|task| {
                    let values: Vec<f64> = rows
                        .iter()
                        .filter(|r| r.stage as u64 == *stage && r.eval_task == *task)
                        .map(|r| r.recall)
                        .collect();
                    Stat::of(&values).map(|s| s.of_seeds(values.len(), v.seeds.len()))
                })
                .collect()
        })
        .collect();
    Some(Matrix {
        variant: v.label.clone(),
        direction: direction.to_string(),
        stages,
        tasks: v.tasks.clone(),
        cells,
    })
}

fn drift_charts(results: &RunResults, variants: &[&VariantInfo]) -> Vec<DriftChart> {
    unique(
        results
            .drift
            .iter()
            .filter(|d| d.row.value.is_some())
            .map(|d| (d.row.metric.clone(), d.row.modality.clone())),
    )
    .into_iter()
    .map(|(metric, modality)| {
        let series = variants
            .iter()
            .filter_map(|v| {
                let mut by_stage: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
                for d in results
                    .drift
                    .iter()
                    .filter(|d| d.identity.variant == v.label)
                {
                    let d = &d.row;
                    if let (true, Some(value)) =
                        (d.metric == metric && d.modality == modality, d.value)
                    {
                        by_stage.entry(d.stage as u64).or_default().push(value);
                    }
                }
                let points: Vec<(u64, f64)> = by_stage
                    .into_iter()
                    .map(|(stage, values)| {
                        (stage, values.iter().sum::<f64>() / values.len() as f64)
                    })
                    .collect();
                (!points.is_empty()).then(|| (v.label.clone(), points))
            })
            .collect();
        DriftChart {
            metric,
            modality,
            series,
        }
    })
    .collect()
}

/// The table `lethe run` prints at its end: a row per variant label (pipeline order)
/// and, per direction, the average recall with the task known and the union total
/// at the variant's largest K, mean ± std over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// `im2txt avg R@10`, `im2txt union total R@10`, ..., sorted.
    pub columns: Vec<String>,
    /// (variant label, a cell per column).
    pub rows: Vec<(String, Vec<Option<Stat>>)>,
}

/// The headline from every row of `summary.arrow`: its per-seed rows come in the
/// pipeline's variant order. `asked` gives the seeds the pipeline asked of a variant.
pub fn headline(summary: &[Identified<SummaryRow>], asked: &dyn Fn(&str) -> usize) -> Headline {
    let per_seed: Vec<&Identified<SummaryRow>> = summary
        .iter()
        .filter(|s| s.row.statistic == "value")
        .collect();
    let variants = unique(per_seed.iter().map(|s| s.identity.variant.as_str()));
    // (variant's index, column) -> the seeds' values.
    let mut values: BTreeMap<(usize, String), Vec<f64>> = BTreeMap::new();
    for (i, variant) in variants.iter().enumerate() {
        let rows: Vec<&SummaryRow> = per_seed
            .iter()
            .filter(|s| s.identity.variant == *variant)
            .map(|s| &s.row)
            .collect();
        let k = rows.iter().map(|r| r.k).max().unwrap_or(0);
        for r in rows.iter().filter(|r| r.k == k) {
            let figure = match (r.metric.as_str(), r.gallery.as_str()) {
                ("average", "per_task") => "avg",
                ("total", _) => "union total",
                _ => continue,
            };
            let column = format!("{} {figure} R@{k}", r.direction);
            values.entry((i, column)).or_default().extend(r.value);
        }
    }
    let mut columns = unique(values.keys().map(|(_, c)| c.clone()));
    columns.sort();
    let mut rows: Vec<(String, Vec<Option<Stat>>)> = variants
        .iter()
        .enumerate()
        .map(|(i, variant)| {
            let cells = columns
                .iter()
                .map(|c| {
                    let v = values.get(&(i, c.clone()))?;
                    Some(Stat::of(v)?.of_seeds(v.len(), asked(variant)))
                })
                .collect();
            (variant.to_string(), cells)
        })
        .collect();
    // A variant without either figure has no line.
    rows.retain(|(_, cells)| cells.iter().any(Option::is_some));
    Headline { columns, rows }
}

/// The distinct items in order of first appearance.
pub fn unique<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Stat;

    #[test]
    fn a_mean_over_fewer_seeds_than_asked_says_so() {
        let full = Stat::of(&[1.0, 3.0]).unwrap().of_seeds(2, 2);
        assert_eq!(full.show(), "2.0 ± 1.4");
        let partial = Stat::of(&[1.0]).unwrap().of_seeds(1, 3);
        assert_eq!(partial.show(), "1.0 (1 of 3 seeds)");
    }
}
