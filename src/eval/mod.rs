//! The `evaluate` node: Recall@K, median and mean rank of every task after a
//! stage, in both directions, with per-task and union galleries, and the drift
//! diagnostics. Definitions: `docs/methods.md` ("Evaluation", "Diagnostics").
//!
//! Conventions follow the VSE++ evaluation code: an image query hits at K if any
//! of its captions is in the top K; every caption is a query with one correct
//! image; with 0-based ranks r, `median_rank = floor(median(r)) + 1` and
//! `mean_rank = mean(r) + 1`; ties go to the earlier gallery item.

pub mod drift;
pub mod metrics;
pub mod search;
pub mod zeroshot;

use crate::data::LoadedSplit;
use crate::lang::{Direction, GalleryScope};
use crate::results::{DriftRow, RecallRow};
use search::{for_each_row, Matrix, Scoring};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Embeddings of one task by one model: modality → row-major floats.
pub type Embedded = BTreeMap<String, (usize, Vec<f32>)>;

/// Ranks of queries against a gallery, and the share of top-`overlap_k` results
/// that come from a task other than the query's.
pub struct Searched {
    pub ranks: Vec<usize>,
    pub other_task_share: f64,
}

/// Searches `queries` (whose correct image rows are `targets`) in a gallery whose
/// items show images `gallery_image` and belong to tasks `gallery_task`.
pub fn search(
    queries: Matrix,
    targets: &[u32],
    query_task: usize,
    gallery: Matrix,
    gallery_image: &[u32],
    gallery_task: &[usize],
    overlap_k: usize,
) -> Result<Searched, String> {
    let ranks = Mutex::new(vec![0usize; queries.rows]);
    let other = Mutex::new(0usize);
    for_each_row(queries, gallery, Scoring::best_for_ranks(), |i, row| {
        let target = targets[i];
        let rank = row
            .first_correct_rank(|j| gallery_image[j] == target)
            .unwrap_or(row.len() + 1);
        let foreign = row
            .top_k(overlap_k)
            .into_iter()
            .filter(|&j| gallery_task[j] != query_task)
            .count();
        if let Ok(mut r) = ranks.lock() {
            r[i] = rank;
        }
        if let Ok(mut o) = other.lock() {
            *o += foreign;
        }
    });
    let shown = queries.rows * overlap_k.min(gallery.rows);
    Ok(Searched {
        ranks: ranks.into_inner().map_err(|_| "poisoned")?,
        other_task_share: if shown == 0 {
            0.0
        } else {
            other.into_inner().map_err(|_| "poisoned")? as f64 / shown as f64
        },
    })
}

/// Recall@K (percent), VSE++ median rank and mean rank of 1-based ranks.
pub fn recall_figures(ranks: &[usize], k: usize) -> (f64, f64, f64) {
    if ranks.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let hits = ranks.iter().filter(|&&r| r <= k).count();
    let mut zero_based: Vec<f64> = ranks.iter().map(|&r| (r - 1) as f64).collect();
    zero_based.sort_by(f64::total_cmp);
    let n = zero_based.len();
    let median = if n % 2 == 1 {
        zero_based[n / 2]
    } else {
        (zero_based[n / 2 - 1] + zero_based[n / 2]) / 2.0
    };
    let mean = zero_based.iter().sum::<f64>() / n as f64;
    (
        100.0 * hits as f64 / n as f64,
        median.floor() + 1.0,
        mean + 1.0,
    )
}

/// One task's side of a direction: what is searched and what is correct. The
/// embeddings are borrowed from what the node read (no copy: at COCO size a
/// direction's embeddings are hundreds of MiB).
struct Side<'a> {
    /// Query embeddings (model k) and their correct image rows.
    queries: (usize, &'a [f32]),
    targets: Vec<u32>,
    /// Gallery embeddings (the policy's model) and the image row of each item.
    gallery: (usize, &'a [f32]),
    gallery_image: Vec<u32>,
}

fn side<'a>(
    split: &LoadedSplit,
    task: usize,
    direction: Direction,
    query: &'a Embedded,
    gallery: &'a Embedded,
) -> Result<Side<'a>, String> {
    let rows = &split.tasks[task];
    let get = |e: &'a Embedded, m: &str| {
        e.get(m)
            .map(|(n, v)| (*n, v.as_slice()))
            .ok_or_else(|| format!("no {m} embeddings for task `{}`", rows.name))
    };
    let caption_images: Vec<u32> = rows
        .test_captions
        .iter()
        .map(|&c| split.caption_image[c as usize])
        .collect();
    Ok(match direction {
        Direction::Im2txt => Side {
            queries: get(query, "image")?,
            targets: rows.test_images.clone(),
            gallery: get(gallery, "text")?,
            gallery_image: caption_images,
        },
        Direction::Txt2im => Side {
            queries: get(query, "text")?,
            targets: caption_images,
            gallery: get(gallery, "image")?,
            gallery_image: rows.test_images.clone(),
        },
    })
}

/// One task's embeddings for one direction, as the plan wired them.
pub struct TaskEmbeddings<'a> {
    /// The task's queries, embedded by the stage's model.
    pub query: &'a Embedded,
    /// The gallery the indexing policy searches.
    pub gallery: &'a Embedded,
    /// The stage whose model embedded the gallery.
    pub gallery_stage: usize,
    /// For a task learned before the stage: its items by the stage's model and by
    /// the model that learned it, both modalities, for the drift diagnostics.
    pub drift: Option<(Embedded, Embedded)>,
}

/// Everything one evaluation reads: the stage, the metrics asked for, and per
/// direction the embeddings of every task.
pub struct Evaluation<'a> {
    pub stage: usize,
    /// The task learned at this stage, or `joint`.
    pub stage_task: &'a str,
    /// Every task, in learning order.
    pub tasks: &'a [String],
    /// How many of `tasks` are learned by this stage (the union gallery's members).
    pub seen: usize,
    pub recall: &'a [usize],
    pub galleries: &'a [GalleryScope],
    pub directions: Vec<(Direction, Vec<TaskEmbeddings<'a>>)>,
}

/// Recall rows and drift rows of one evaluation.
pub fn evaluate(
    split: &LoadedSplit,
    ev: &Evaluation,
) -> Result<(Vec<RecallRow>, Vec<DriftRow>), String> {
    let k = ev.stage;
    let t = ev.tasks.len();
    let task_index: Vec<usize> = ev
        .tasks
        .iter()
        .map(|name| {
            split
                .tasks
                .iter()
                .position(|r| &r.name == name)
                .ok_or_else(|| format!("the split has no task `{name}`"))
        })
        .collect::<Result<_, _>>()?;
    let seen = ev.seen;
    let overlap_k = ev.recall.iter().copied().max().unwrap_or(10);
    let mut rows = Vec::new();
    let mut drift_rows = Vec::new();
    for (direction, inputs) in &ev.directions {
        let direction = *direction;
        if inputs.len() != t {
            return Err(format!(
                "{} embeddings of {} tasks for {t} tasks",
                direction.name(),
                inputs.len()
            ));
        }
        let sides: Vec<Side> = (0..t)
            .map(|j| {
                side(
                    split,
                    task_index[j],
                    direction,
                    inputs[j].query,
                    inputs[j].gallery,
                )
            })
            .collect::<Result<_, _>>()?;
        let dim = |m: &(usize, &[f32])| m.1.len().checked_div(m.0).unwrap_or(0);
        let mut emit = |eval_task: &str, scope: &str, ranks: &[usize], gallery_size: usize| {
            for &kk in ev.recall {
                let (recall, median_rank, mean_rank) = recall_figures(ranks, kk);
                rows.push(RecallRow {
                    stage: k,
                    stage_task: ev.stage_task.to_string(),
                    eval_task: eval_task.to_string(),
                    gallery: scope.to_string(),
                    direction: direction.name().to_string(),
                    k: kk,
                    recall,
                    median_rank,
                    mean_rank,
                    n_queries: ranks.len(),
                    gallery_size,
                });
            }
        };
        let mut pooled = Vec::new();
        let mut overlap = vec![None; t];
        for j in 0..t {
            let s = &sides[j];
            let queries = Matrix::new(s.queries.1, dim(&s.queries));
            if ev.galleries.contains(&GalleryScope::PerTask) {
                let g = Matrix::new(s.gallery.1, dim(&s.gallery));
                let found = search(
                    queries,
                    &s.targets,
                    j,
                    g,
                    &s.gallery_image,
                    &vec![j; g.rows],
                    overlap_k,
                )?;
                emit(&ev.tasks[j], "per_task", &found.ranks, g.rows);
            }
            if ev.galleries.contains(&GalleryScope::Union) {
                // Every task seen so far, plus this one when it is not learned yet.
                let members: Vec<usize> = (0..seen).chain((j >= seen).then_some(j)).collect();
                let mut data = Vec::new();
                let (mut images, mut tasks) = (Vec::new(), Vec::new());
                for &m in &members {
                    data.extend_from_slice(sides[m].gallery.1);
                    images.extend_from_slice(&sides[m].gallery_image);
                    tasks.extend(std::iter::repeat_n(m, sides[m].gallery_image.len()));
                }
                let g = Matrix::new(&data, dim(&s.gallery));
                let found = search(queries, &s.targets, j, g, &images, &tasks, overlap_k)?;
                emit(&ev.tasks[j], "union", &found.ranks, g.rows);
                overlap[j] = Some(found.other_task_share);
                if j < seen {
                    pooled.push((found.ranks, g.rows));
                }
            }
        }
        if !pooled.is_empty() {
            let size = pooled[0].1;
            let all: Vec<usize> = pooled.into_iter().flat_map(|(r, _)| r).collect();
            emit("all", "union", &all, size);
        }
        for j in 0..seen.min(t) {
            let Some((now, then)) = &inputs[j].drift else {
                continue;
            };
            // A gallery from an older model than the queries': what a frozen
            // index compares.
            let mixed = inputs[j].gallery_stage < k;
            drift_rows.extend(
                drift::diagnostics(
                    split,
                    task_index[j],
                    now,
                    then,
                    drift::Gallery {
                        embedded: inputs[j].gallery,
                        older: mixed,
                        direction,
                    },
                    overlap[j],
                )?
                .into_iter()
                .map(|(metric, modality, value)| DriftRow {
                    stage: k,
                    stage_task: ev.stage_task.to_string(),
                    task: ev.tasks[j].clone(),
                    task_stage: j + 1,
                    direction: direction.name().to_string(),
                    metric,
                    modality,
                    value: Some(value),
                    note: String::new(),
                }),
            );
        }
    }
    Ok((rows, drift_rows))
}
