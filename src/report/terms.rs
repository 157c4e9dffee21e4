//! How much each regularizer term weighs in the loss, stage by stage, from
//! `train_log.arrow`: a term whose share of the loss is tiny did nothing, and a
//! study that calls it "EWC" would be reporting plain fine-tuning. Both
//! `lethe report` and `lethe run` warn about such a term.

use super::load::VariantInfo;
use crate::eval::metrics::mean_std;
use crate::results::{Identified, TrainLogRow};
use std::collections::BTreeMap;

/// Below this mean share of the loss over a stage, a term is inert.
pub const INERT_SHARE: f64 = 0.01;

/// A term's share of the loss during one stage of one variant's model, over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct TermShare {
    pub variant: String,
    /// `both`, or the direction of a decoupled model.
    pub model: String,
    pub stage: usize,
    pub task: String,
    pub term: String,
    /// Per seed: mean term value over the stage's logged rows / mean total loss.
    pub shares: Vec<f64>,
}

impl TermShare {
    pub fn mean(&self) -> f64 {
        mean_std(&self.shares).0
    }
}

/// The share of every term at every stage, in variant, model and stage order.
pub fn shares(log: &[Identified<TrainLogRow>], variants: &[VariantInfo]) -> Vec<TermShare> {
    // (variant, model, stage, task, term) → seed → (term sum, loss sum).
    type Key = (usize, String, usize, String, String);
    let mut sums: BTreeMap<Key, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for r in log {
        let Some(v) = variants.iter().position(|v| v.label == r.identity.variant) else {
            continue;
        };
        let row = &r.row.log;
        for (term, value) in &row.terms {
            let key = (
                v,
                r.row.model.clone(),
                row.stage,
                row.task.clone(),
                term.clone(),
            );
            let seed = r.identity.seed.unwrap_or(0);
            let entry = sums.entry(key).or_default().entry(seed).or_default();
            entry.0 += value;
            entry.1 += row.loss;
        }
    }
    sums.into_iter()
        .map(|((v, model, stage, task, term), seeds)| TermShare {
            variant: variants[v].label.clone(),
            model,
            stage,
            task,
            term,
            shares: seeds
                .values()
                .map(|(term, loss)| if *loss > 0.0 { term / loss } else { 0.0 })
                .collect(),
        })
        .collect()
}

/// A term as papers name it.
fn display_name(term: &str) -> String {
    match term {
        "ewc" => "EWC".to_string(),
        "mas" => "MAS".to_string(),
        "modx" => "Mod-X".to_string(),
        "distill" => "Distillation".to_string(),
        "pseudo_text" => "Pseudo text replay".to_string(),
        other => other.to_string(),
    }
}

/// A warning for every term whose mean share over a stage is below
/// [`INERT_SHARE`], naming the variant, the stage and the term's strength.
pub fn inert_warnings(shares: &[TermShare], variants: &[VariantInfo]) -> Vec<String> {
    shares
        .iter()
        .filter(|s| s.mean() < INERT_SHARE)
        .map(|s| {
            let strength = variants
                .iter()
                .find(|v| v.label == s.variant)
                .and_then(|v| v.strengths.iter().find(|(t, _)| *t == s.term))
                .map(|(_, w)| format!(" at {w}"))
                .unwrap_or_default();
            let model = if s.model == "both" {
                String::new()
            } else {
                format!(", {} model", s.model)
            };
            format!(
                "{} contributed {:.2}% of the loss at stage {} ({}{model}) of \"{}\": it is inert{strength}",
                display_name(&s.term),
                100.0 * s.mean(),
                s.stage,
                s.task,
                s.variant
            )
        })
        .collect()
}
