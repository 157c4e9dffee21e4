//! Zero-shot classification in the report: per class set, a table in the
//! paper's layout (top-1 accuracy on each task after the last stage, average,
//! forgetting, BWT, FWT over seeds, from `summary.arrow`), the accuracy matrix of
//! every variant (`zeroshot.arrow`) and a chart of the mean accuracy over tasks
//! after each stage.

use super::load::{RunResults, VariantInfo};
use super::table::{
    block, matrix_of, split_by_axes, unique, Block, BlockSource, DriftChart, Figures, Matrix,
};
use crate::eval::metrics::ZEROSHOT;
use std::collections::BTreeMap;

/// The K of the top-K accuracy the report tabulates (top-5 is in the tables).
pub const TOP: u64 = 1;

/// The zero-shot part of a report; empty when the run classified nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Zeroshot {
    pub blocks: Vec<Block>,
    pub matrices: Vec<Matrix>,
    pub charts: Vec<DriftChart>,
}

/// The name of a class set's accuracy matrices (their `direction`).
fn matrix_name(class_set: &str) -> String {
    format!("zero-shot {class_set} top-{TOP}")
}

pub fn build(results: &RunResults, variants: &[&VariantInfo]) -> Zeroshot {
    let sets = unique(results.zeroshot.iter().map(|r| r.row.class_set.clone()));
    let mut out = Zeroshot::default();
    for set in &sets {
        let name = matrix_name(set);
        // A downstream set (`dataset/set`: class set names hold no `/`) has one
        // "task", its dataset; the tasks' sets have the variants' tasks.
        let tasks = set.contains('/').then(|| {
            unique(
                results
                    .zeroshot
                    .iter()
                    .filter(|r| r.row.class_set == *set)
                    .map(|r| r.row.task.clone()),
            )
        });
        let matrices: Vec<Matrix> = variants
            .iter()
            .filter_map(|v| matrix(results, v, set, &name, tasks.as_deref().unwrap_or(&v.tasks)))
            .collect();
        let figures = Figures {
            results,
            k: TOP,
            matrices: &matrices,
        };
        let source = BlockSource {
            title: &name,
            matrix: &name,
            direction: ZEROSHOT,
            per_task: set,
            union: false,
            tasks: tasks.as_deref(),
        };
        for (title, members) in split_by_axes(variants) {
            out.blocks.push(block(&source, &title, &members, &figures));
        }
        out.charts.push(DriftChart {
            metric: format!("zero-shot top-{TOP} accuracy, {set} (%)"),
            modality: "mean over tasks".to_string(),
            series: matrices
                .iter()
                .filter(|m| m.stages.len() > 1)
                .map(|m| (m.variant.clone(), mean_over_tasks(results, m, set)))
                .collect(),
        });
        out.matrices.extend(matrices);
    }
    out
}

/// Top-1 accuracy on every task after every stage, mean ± std over seeds.
fn matrix(
    results: &RunResults,
    v: &VariantInfo,
    set: &str,
    name: &str,
    tasks: &[String],
) -> Option<Matrix> {
    let points: Vec<(u64, String, String, f64)> = results
        .zeroshot
        .iter()
        .filter(|r| r.identity.variant == v.label)
        .map(|r| &r.row)
        .filter(|r| r.class_set == set && r.k as u64 == TOP)
        .map(|r| {
            (
                r.stage as u64,
                r.stage_task.clone(),
                r.task.clone(),
                r.accuracy,
            )
        })
        .collect();
    matrix_of(v, name, tasks, &points)
}

/// (stage, mean top-1 accuracy over tasks and seeds) of one variant.
fn mean_over_tasks(results: &RunResults, m: &Matrix, set: &str) -> Vec<(u64, f64)> {
    let mut by_stage: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in results
        .zeroshot
        .iter()
        .filter(|r| r.identity.variant == m.variant)
        .map(|r| &r.row)
        .filter(|r| r.class_set == set && r.k as u64 == TOP)
    {
        by_stage.entry(r.stage as u64).or_default().push(r.accuracy);
    }
    by_stage
        .into_iter()
        .map(|(stage, values)| (stage, values.iter().sum::<f64>() / values.len() as f64))
        .collect()
}
