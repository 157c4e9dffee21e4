//! Which task each image belongs to, by a split's rules, and how many images
//! each rule turned away (what `lethe data inspect` prints).
//!
//! A task's column rules first find its candidates: images with one of the
//! listed values in every named column (a plain column holds one value, a list
//! column any number). `match: all` then drops candidates that also hold an
//! unlisted value; `match: dominant` drops those whose most frequent value is
//! unlisted (or tied with an unlisted one). The caption rule drops candidates
//! none of whose captions match (a task with only a caption rule has the
//! matching images as candidates). Last, an image already in an earlier task is
//! an error, or dropped under `overlap: first`.
//!
//! A `random` split has no rules: [`random_chunks`] deals the images out.

use super::error::DataError;
use super::rules::{Match, Overlap, RandomChunks, SplitRules, TaskRule};
use super::tables::Table;
use std::collections::HashMap;
use std::path::Path;

/// How many images a task's rules selected and turned away, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskReport {
    /// Images with a listed value in every column of the task (or, for a task
    /// with only a caption rule, a matching caption).
    pub candidates: usize,
    /// `match: all`: candidates that also hold an unlisted value.
    pub other_values: usize,
    /// `match: dominant`: candidates whose most frequent value is unlisted.
    pub not_dominant: usize,
    /// `match: dominant`: candidates whose most frequent values tie, one unlisted.
    pub tied: usize,
    /// Candidates none of whose captions match the caption rule.
    pub no_caption: usize,
    /// `overlap: first`: images an earlier task of the split already holds.
    pub taken: usize,
    /// Held-out images beyond the split's `test_images` limit (set by the split).
    pub beyond_limit: usize,
}

impl TaskReport {
    /// The images that passed every rule.
    pub fn selected(&self) -> usize {
        self.candidates
            - self.other_values
            - self.not_dominant
            - self.tied
            - self.no_caption
            - self.taken
    }
}

/// The task of every image row, with one report per task.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub task_of: Vec<Option<usize>>,
    pub reports: Vec<TaskReport>,
}

/// Why a candidate is not selected by one task's own rules.
enum Verdict {
    NotCandidate,
    Selected,
    OtherValues,
    NotDominant,
    Tied,
    NoCaption,
}

/// Applies a split's rules. `caption_text` and `caption_image` are the captions'
/// `text` column (when the table has one) and the image row of every caption.
pub fn select(
    manifest_path: &Path,
    split: &str,
    rules: &SplitRules,
    images: &Table,
    caption_text: Option<&[String]>,
    caption_image: &[u32],
) -> Result<Selection, DataError> {
    let mut selection = Selection {
        task_of: vec![None; images.rows()],
        reports: vec![TaskReport::default(); rules.tasks.len()],
    };
    for (t, (task, rule)) in rules.tasks.iter().enumerate() {
        for column in rule.columns.keys() {
            if !images.has_column(column) {
                let known: Vec<&str> = images
                    .columns
                    .keys()
                    .chain(images.lists.keys())
                    .map(String::as_str)
                    .filter(|c| *c != "split")
                    .collect();
                let mut message = format!(
                    "task `{task}` of split `{split}` selects on column `{column}`, which the images table lacks"
                );
                if let Some(hint) = crate::diagnostics::did_you_mean(column, known.iter().copied())
                {
                    message.push_str(&format!(" (did you mean `{hint}`?)"));
                }
                return Err(DataError::invalid(manifest_path, message));
            }
        }
        let matched = match &rule.caption {
            None => None,
            Some(regex) => {
                let texts = caption_text.ok_or_else(|| {
                    DataError::invalid(
                        manifest_path,
                        format!("task `{task}` of split `{split}` selects by caption, and the captions table has no `text` column"),
                    )
                })?;
                let mut hit = vec![false; images.rows()];
                for (text, &image) in texts.iter().zip(caption_image) {
                    let slot = &mut hit[image as usize];
                    if !*slot && regex.is_match(text) {
                        *slot = true;
                    }
                }
                Some(hit)
            }
        };
        let report = &mut selection.reports[t];
        for row in 0..images.rows() {
            let verdict = verdict(images, rule, row, matched.as_deref());
            match verdict {
                Verdict::NotCandidate => continue,
                Verdict::Selected => {}
                Verdict::OtherValues => report.other_values += 1,
                Verdict::NotDominant => report.not_dominant += 1,
                Verdict::Tied => report.tied += 1,
                Verdict::NoCaption => report.no_caption += 1,
            }
            report.candidates += 1;
            if !matches!(verdict, Verdict::Selected) {
                continue;
            }
            match (selection.task_of[row], rules.overlap) {
                (None, _) => selection.task_of[row] = Some(t),
                (Some(_), Overlap::First) => report.taken += 1,
                (Some(other), Overlap::Error) => {
                    let other_name = rules
                        .tasks
                        .get_index(other)
                        .map(|(n, _)| n.as_str())
                        .unwrap_or_default();
                    return Err(DataError::invalid(
                        manifest_path,
                        format!(
                            "image \"{}\" is in two tasks of split `{split}`: `{other_name}` and `{task}` (add `overlap: first` to the split to keep it in the first)",
                            images.ids[row]
                        ),
                    ));
                }
            }
        }
    }
    Ok(selection)
}

fn verdict(images: &Table, rule: &TaskRule, row: usize, matched: Option<&[bool]>) -> Verdict {
    if rule.columns.is_empty() {
        return match matched {
            Some(hit) if hit[row] => Verdict::Selected,
            _ => Verdict::NotCandidate,
        };
    }
    let mut first_failure = None;
    for (column, listed) in &rule.columns {
        let values = images.values(column, row).unwrap_or_default();
        if !values.iter().any(|v| listed.contains(v)) {
            return Verdict::NotCandidate;
        }
        if first_failure.is_none() {
            first_failure = match rule.matching {
                Match::Any => None,
                Match::All => {
                    (!values.iter().all(|v| listed.contains(v))).then_some(Verdict::OtherValues)
                }
                Match::Dominant => dominant_failure(values, listed),
            };
        }
    }
    if let Some(failure) = first_failure {
        return failure;
    }
    match matched {
        Some(hit) if !hit[row] => Verdict::NoCaption,
        _ => Verdict::Selected,
    }
}

/// Whether an image's most frequent value is listed: `None` when it is (every
/// value tied for most must be), otherwise why not.
fn dominant_failure(values: &[String], listed: &[String]) -> Option<Verdict> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in values {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    let most = counts.values().copied().max().unwrap_or(0);
    let top: Vec<&str> = counts
        .iter()
        .filter(|(_, &n)| n == most)
        .map(|(v, _)| *v)
        .collect();
    let listed_top = top
        .iter()
        .filter(|v| listed.iter().any(|l| l == *v))
        .count();
    if listed_top == top.len() {
        None
    } else if listed_top > 0 {
        Some(Verdict::Tied)
    } else {
        Some(Verdict::NotDominant)
    }
}

/// Deals images into `chunks.tasks` random chunks of equal size (IncCLIP's
/// instance-incremental stream). Images are shuffled by a seeded hash of their
/// id (blake3 of the seed and the id: the order never depends on table order)
/// and dealt round-robin within each group (`group[row]`: the image's part, so
/// every chunk gets its share of train, validation and test images), the deal
/// continuing across groups so that chunk sizes differ by at most one overall
/// as well as within each group.
pub fn random_chunks(chunks: RandomChunks, ids: &[String], group: &[u8]) -> Selection {
    let n = chunks.tasks;
    let mut selection = Selection {
        task_of: vec![None; ids.len()],
        reports: vec![TaskReport::default(); n],
    };
    let mut groups: Vec<u8> = group.to_vec();
    groups.sort_unstable();
    groups.dedup();
    let mut dealt = 0usize;
    for g in groups {
        let mut rows: Vec<([u8; 32], usize)> = (0..ids.len())
            .filter(|&r| group[r] == g)
            .map(|r| (shuffle_key(chunks.seed, &ids[r]), r))
            .collect();
        rows.sort_unstable();
        for (_, row) in rows {
            let chunk = dealt % n;
            selection.task_of[row] = Some(chunk);
            selection.reports[chunk].candidates += 1;
            dealt += 1;
        }
    }
    selection
}

/// An image's place in a seeded shuffle.
fn shuffle_key(seed: u64, id: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"lethe random split");
    hasher.update(&seed.to_le_bytes());
    hasher.update(id.as_bytes());
    *hasher.finalize().as_bytes()
}
