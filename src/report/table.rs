//! The paper's tables, independent of how they are printed: figures over seeds
//! (`Stat`), blocks of columns grouped by indexing policy with a row per task and
//! the summary rows, matrices and line charts. `model` (recall) and `zeroshot`
//! (accuracy) fill them.

use super::load::{RunResults, VariantInfo};
use crate::eval::metrics::mean_std;

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

/// The variants split into the paper's separate tables: one per value of every
/// swept axis except the variant lines (the columns). Without variant lines every
/// variant is a column of one table.
pub(super) fn split_by_axes<'a>(
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

/// Where a block's cells come from: the recall (or accuracy) matrices (task
/// rows) and the summary's mean/std (the other rows).
pub(super) struct Figures<'a> {
    pub results: &'a RunResults,
    pub k: u64,
    pub matrices: &'a [Matrix],
}

/// What one block tabulates: the matrices named `matrix` for its task rows, and
/// the summary rows of `direction` with the task-known figures under `per_task`
/// (and the union total when `union`).
pub(super) struct BlockSource<'a> {
    pub title: &'a str,
    pub matrix: &'a str,
    pub direction: &'a str,
    pub per_task: &'a str,
    pub union: bool,
    /// The task rows; `None`: the variants' tasks.
    pub tasks: Option<&'a [String]>,
}

impl Figures<'_> {
    /// Recall on `task` with the task known after the variant's last stage: the
    /// last row of its recall matrix.
    fn final_task(&self, variant: &str, matrix: &str, task: &str) -> Option<Stat> {
        let m = self
            .matrices
            .iter()
            .find(|m| m.variant == variant && m.direction == matrix)?;
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

pub(super) fn block<'a>(
    source: &BlockSource<'a>,
    axes_title: &str,
    members: &[(&VariantInfo, String)],
    figures: &Figures,
) -> Block {
    let direction = source.direction;
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
    let tasks = match source.tasks {
        Some(tasks) => tasks.to_vec(),
        None => unique(members.iter().flat_map(|(v, _)| v.tasks.iter().cloned())),
    };
    let row = |label: &str, kind: RowKind, cell: &dyn Fn(&Column) -> Option<Stat>| Row {
        label: label.to_string(),
        kind,
        cells: columns.iter().map(cell).collect(),
    };
    let mut rows: Vec<Row> = tasks
        .iter()
        .map(|task| {
            row(task, RowKind::Task, &|c| {
                figures.final_task(&c.variant, source.matrix, task)
            })
        })
        .collect();
    let summary = |gallery: &'a str, metric: &'static str| {
        move |c: &Column| figures.summary(&c.variant, direction, gallery, metric)
    };
    let per_task = source.per_task;
    rows.push(row(
        if source.union {
            "average (task known)"
        } else {
            "average"
        },
        RowKind::Average,
        &summary(per_task, "average"),
    ));
    if source.union {
        // The seed's row label is the tasks joined (`A+V+C`); long lists are summarised.
        let union = if tasks.len() <= 4 {
            format!("union {} (task unknown)", tasks.join("+"))
        } else {
            format!("union of all {} tasks (task unknown)", tasks.len())
        };
        rows.push(row(&union, RowKind::Union, &summary("union", "total")));
    }
    rows.push(row(
        "forgetting",
        RowKind::Forgetting,
        &summary(per_task, "forgetting"),
    ));
    rows.push(row("BWT", RowKind::Bwt, &summary(per_task, "bwt")));
    rows.push(row("FWT", RowKind::Fwt, &summary(per_task, "fwt")));
    // A row nobody has (no union gallery evaluated, say) is left out.
    rows.retain(|r| r.kind == RowKind::Task || r.cells.iter().any(Option::is_some));
    Block {
        title: if axes_title.is_empty() {
            source.title.to_string()
        } else {
            format!("{} · {axes_title}", source.title)
        },
        columns,
        rows,
    }
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

/// One variant's matrix from its points `(stage, stage's task, task, value)`
/// (one per seed): each cell the mean ± std over seeds.
pub(super) fn matrix_of(
    v: &VariantInfo,
    name: &str,
    tasks: &[String],
    points: &[(u64, String, String, f64)],
) -> Option<Matrix> {
    let mut stages: Vec<(u64, String)> = points.iter().map(|p| (p.0, p.1.clone())).collect();
    stages.sort();
    stages.dedup();
    if stages.is_empty() {
        return None;
    }
    let cells = stages
        .iter()
        .map(|(stage, _)| {
            tasks
                .iter()
                .map(|task| {
                    let values: Vec<f64> = points
                        .iter()
                        .filter(|p| p.0 == *stage && p.2 == *task)
                        .map(|p| p.3)
                        .collect();
                    Stat::of(&values).map(|s| s.of_seeds(values.len(), v.seeds.len()))
                })
                .collect()
        })
        .collect();
    Some(Matrix {
        variant: v.label.clone(),
        direction: name.to_string(),
        stages,
        tasks: tasks.to_vec(),
        cells,
    })
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
