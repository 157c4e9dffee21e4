//! Figures from the recall matrix `R[k][j]` (recall on task j after stage k, T
//! stages), each naming its formula since continual-learning libraries disagree.

use crate::results::{RecallRow, ZeroshotRow};
use std::collections::BTreeMap;

pub const AVERAGE: &str = "mean_j R[T][j]";
pub const FORGETTING: &str = "mean_{j<T} (max_{j<=l<T} R[l][j] - R[T][j]) (Chaudhry et al. 2018)";
pub const FWT: &str =
    "mean_{j>=2} (R[j-1][j] - R[0][j]), R[0] the untrained model (Lopez-Paz and Ranzato 2017)";
pub const BWT: &str = "mean_{j<T} (R[T][j] - R[j][j]) (Lopez-Paz and Ranzato 2017)";
pub const TOTAL: &str = "R[T][all]: union gallery, the queries of every task pooled";

/// Stage → task → recall, for one (direction, gallery, K).
type Matrix = BTreeMap<usize, BTreeMap<String, f64>>;

/// The `direction` of zero-shot figures in the summary (their `gallery` is the
/// class set and `k` the K of top-K accuracy).
pub const ZEROSHOT: &str = "zeroshot";

/// One figure of one variant and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub direction: String,
    pub gallery: String,
    pub k: usize,
    pub metric: &'static str,
    pub formula: &'static str,
    pub value: f64,
}

/// The figures of one variant and seed from all its recall rows. `tasks` in
/// learning order; a joint schedule has one stage, so only averages and totals.
pub fn figures(rows: &[RecallRow], tasks: &[String], sequential: bool) -> Vec<Figure> {
    let mut matrix: BTreeMap<(String, String, usize), Matrix> = BTreeMap::new();
    for r in rows {
        matrix
            .entry((r.direction.clone(), r.gallery.clone(), r.k))
            .or_default()
            .entry(r.stage)
            .or_default()
            .insert(r.eval_task.clone(), r.recall);
    }
    matrix_figures(matrix, tasks, sequential)
}

/// The same figures of the zero-shot accuracy matrix `A[k][j]` (top-K accuracy
/// on task j after stage k), one matrix per class set and K.
pub fn zeroshot_figures(rows: &[ZeroshotRow], tasks: &[String], sequential: bool) -> Vec<Figure> {
    let mut matrix: BTreeMap<(String, String, usize), Matrix> = BTreeMap::new();
    for r in rows {
        matrix
            .entry((ZEROSHOT.to_string(), r.class_set.clone(), r.k))
            .or_default()
            .entry(r.stage)
            .or_default()
            .insert(r.task.clone(), r.accuracy);
    }
    matrix_figures(matrix, tasks, sequential)
}

fn matrix_figures(
    matrix: BTreeMap<(String, String, usize), Matrix>,
    tasks: &[String],
    sequential: bool,
) -> Vec<Figure> {
    let mut out = Vec::new();
    for ((direction, gallery, k), by_stage) in matrix {
        let Some((&last, final_row)) = by_stage.iter().next_back() else {
            continue;
        };
        let mut push = |metric, formula, value| {
            out.push(Figure {
                direction: direction.clone(),
                gallery: gallery.clone(),
                k,
                metric,
                formula,
                value,
            })
        };
        let at_end: Vec<f64> = tasks
            .iter()
            .filter_map(|t| final_row.get(t).copied())
            .collect();
        if at_end.len() == tasks.len() && !tasks.is_empty() {
            push(
                "average",
                AVERAGE,
                at_end.iter().sum::<f64>() / at_end.len() as f64,
            );
        }
        if let Some(total) = final_row.get("all") {
            push("total", TOTAL, *total);
        }
        let t = tasks.len();
        if !sequential || t < 2 || last != t {
            continue;
        }
        let r = |k: usize, j: usize| {
            by_stage
                .get(&k)
                .and_then(|row| row.get(&tasks[j - 1]))
                .copied()
        };
        let mut forgetting = Vec::new();
        let mut bwt = Vec::new();
        for j in 1..t {
            let Some(end) = r(t, j) else { continue };
            // Only the stages from the one that learned task j on: earlier rows
            // are forward transfer (and on the union gallery, inflated by a
            // gallery that holds fewer tasks).
            let best = (j..t)
                .filter_map(|l| r(l, j))
                .fold(f64::NEG_INFINITY, f64::max);
            if best.is_finite() {
                forgetting.push(best - end);
            }
            if let Some(learned) = r(j, j) {
                bwt.push(end - learned);
            }
        }
        if forgetting.len() == t - 1 {
            push(
                "forgetting",
                FORGETTING,
                forgetting.iter().sum::<f64>() / forgetting.len() as f64,
            );
        }
        if bwt.len() == t - 1 {
            push("bwt", BWT, bwt.iter().sum::<f64>() / bwt.len() as f64);
        }
        let fwt: Vec<f64> = (2..=t)
            .filter_map(|j| Some(r(j - 1, j)? - r(0, j)?))
            .collect();
        if fwt.len() == t - 1 {
            push("fwt", FWT, fwt.iter().sum::<f64>() / fwt.len() as f64);
        }
    }
    out
}

/// Mean and sample standard deviation (n − 1); the deviation is `None` for one value.
pub fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: usize, task: &str, recall: f64) -> RecallRow {
        RecallRow {
            stage,
            stage_task: String::new(),
            eval_task: task.into(),
            gallery: "per_task".into(),
            direction: "im2txt".into(),
            k: 10,
            recall,
            median_rank: 1.0,
            mean_rank: 1.0,
            n_queries: 1,
            gallery_size: 1,
        }
    }

    #[test]
    fn matrix_figures_follow_their_formulas() {
        let tasks = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // R[k][j], stage 0 the untrained model:
        //                a     b     c
        let r = [
            [20.0, 30.0, 5.0],
            [50.0, 80.0, 5.0],
            [40.0, 60.0, 8.0],
            [30.0, 45.0, 70.0],
        ];
        let rows: Vec<RecallRow> = (0..4)
            .flat_map(|k| (0..3).map(move |j| row(k, ["a", "b", "c"][j], r[k][j])))
            .collect();
        let f = figures(&rows, &tasks, true);
        let get = |m: &str| f.iter().find(|x| x.metric == m).unwrap().value;
        assert!((get("average") - (30.0 + 45.0 + 70.0) / 3.0).abs() < 1e-12);
        // a: max(R1, R2) = 50 - 30 = 20; b: max over stages from 2 on = 60 - 45
        // = 15. R[1][b] = 80 is forward transfer: a max over every earlier stage
        // would give 35 for b.
        assert!((get("forgetting") - 17.5).abs() < 1e-12);
        // a: 30 - 50 = -20; b: 45 - 60 = -15.
        assert!((get("bwt") + 17.5).abs() < 1e-12);
        // b: R[1][b] - R[0][b] = 80 - 30 = 50; c: R[2][c] - R[0][c] = 8 - 5 = 3.
        assert!((get("fwt") - 26.5).abs() < 1e-12);
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!((m, s), (2.0, Some(1.0)));
        assert_eq!(mean_std(&[4.0]).1, None);
    }
}
