//! What the report says, independent of how it is printed: the paper's tables
//! (blocks of columns grouped by indexing policy), the recall matrix of every
//! variant, and the drift diagnostics, each figure as mean ± std over seeds.

use super::load::{RunResults, VariantInfo};
use super::table::{block, matrix_of, split_by_axes, BlockSource, Figures};
pub use super::table::{
    one_decimal, unique, Block, Column, DriftChart, Matrix, Policy, Row, RowKind, Stat,
};
use super::ReportError;
use crate::results::{Identified, SummaryRow};
use std::collections::BTreeMap;

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
    pub zeroshot: super::zeroshot::Zeroshot,
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
        let source = BlockSource {
            title: direction,
            matrix: direction,
            direction,
            per_task: "per_task",
            union: true,
            tasks: None,
        };
        for (title, members) in split_by_axes(&variants) {
            blocks.push(block(&source, &title, &members, &figures));
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
        zeroshot: super::zeroshot::build(results, &variants),
        formulas,
        warnings: super::terms::inert_warnings(&shares, &results.variants),
        shares,
    })
}

fn matrix(results: &RunResults, v: &VariantInfo, direction: &str, k: u64) -> Option<Matrix> {
    let points: Vec<(u64, String, String, f64)> = results
        .recall
        .iter()
        .filter(|r| r.identity.variant == v.label)
        .map(|r| &r.row)
        .filter(|r| r.direction == direction && r.gallery == "per_task" && r.k as u64 == k)
        .map(|r| {
            (
                r.stage as u64,
                r.stage_task.clone(),
                r.eval_task.clone(),
                r.recall,
            )
        })
        .collect();
    matrix_of(v, direction, &v.tasks, &points)
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
        let zeroshot = |r: &&&SummaryRow| r.direction == crate::eval::metrics::ZEROSHOT;
        let k = rows
            .iter()
            .filter(|r| !zeroshot(r))
            .map(|r| r.k)
            .max()
            .unwrap_or(0);
        for r in rows.iter().filter(|r| r.k == k && !zeroshot(r)) {
            let figure = match (r.metric.as_str(), r.gallery.as_str()) {
                ("average", "per_task") => "avg",
                ("total", _) => "union total",
                _ => continue,
            };
            let column = format!("{} {figure} R@{k}", r.direction);
            values.entry((i, column)).or_default().extend(r.value);
        }
        // Zero-shot classification: the average top-1 accuracy per class set.
        for r in rows.iter().filter(|r| zeroshot(r)) {
            if r.metric == "average" && r.k as u64 == super::zeroshot::TOP {
                let column = format!("zero-shot {} avg top-{}", r.gallery, r.k);
                values.entry((i, column)).or_default().extend(r.value);
            }
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
