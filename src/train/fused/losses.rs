//! The losses of `train::loss`, written out with their gradients with respect to
//! the batch similarity matrix `S` (B x B, row-major; row b: the image of pair b,
//! column j: the caption of pair j). Same formulas (`docs/methods.md`); computed
//! in f64 since B x B is small. Each function adds `weight · ∂loss/∂S` to `grad`
//! and returns `weight · loss`.

use crate::lang::{Reduction, TripletNegatives};

/// Which entries of S pair an image with one of its own captions.
pub struct Positives<'a> {
    pub b: usize,
    pub mask: &'a [bool],
}

impl Positives<'_> {
    fn at(&self, r: usize, c: usize) -> bool {
        self.mask[r * self.b + c]
    }
}

/// What each hinge term is multiplied by: the weight, over B when averaged.
fn hinge_scale(reduction: Reduction, weight: f64, b: usize) -> f64 {
    match reduction {
        Reduction::Sum => weight,
        Reduction::Mean => weight / b as f64,
    }
}

/// VSE++ bidirectional hinge loss, summed over the B pairs (VSE++) or averaged.
/// Hardest negatives take the first maximum on ties.
pub fn triplet(
    s: &[f32],
    pos: &Positives,
    margin: f64,
    negatives: TripletNegatives,
    reduction: Reduction,
    weight: f64,
    grad: &mut [f32],
) -> f64 {
    let b = pos.b;
    let scale = hinge_scale(reduction, weight, b);
    let at = |r: usize, c: usize| s[r * b + c] as f64;
    let mut total = 0.0;
    // Direction 0: image r against captions c (cost m + S[r,c] − S[r,r]);
    // direction 1: caption r against images c (cost m + S[c,r] − S[r,r]).
    for direction in 0..2 {
        for r in 0..b {
            let diagonal = at(r, r);
            let entry = |c: usize| if direction == 0 { (r, c) } else { (c, r) };
            let mut hardest: Option<(usize, f64)> = None;
            for c in 0..b {
                let (i, j) = entry(c);
                if pos.at(i, j) {
                    continue;
                }
                let cost = margin + at(i, j) - diagonal;
                if cost <= 0.0 {
                    continue;
                }
                match negatives {
                    TripletNegatives::All => {
                        total += cost;
                        grad[i * b + j] += scale as f32;
                        grad[r * b + r] -= scale as f32;
                    }
                    TripletNegatives::Hardest => {
                        if hardest.is_none_or(|(_, best)| cost > best) {
                            hardest = Some((c, cost));
                        }
                    }
                }
            }
            if let Some((c, cost)) = hardest {
                let (i, j) = entry(c);
                total += cost;
                grad[i * b + j] += scale as f32;
                grad[r * b + r] -= scale as f32;
            }
        }
    }
    total * scale
}

/// Added to logits that must not act as negatives (as in `train::loss`).
const MASKED: f64 = -1e4;

/// Row-wise log-softmax of `logit(c)` over c < b into `log_p`, and the
/// probabilities into `p` (from the same exponentials: one `exp` per entry).
fn log_softmax_row(b: usize, logit: impl Fn(usize) -> f64, log_p: &mut [f64], p: &mut [f64]) {
    let mut max = f64::NEG_INFINITY;
    for (c, o) in log_p.iter_mut().enumerate().take(b) {
        *o = logit(c);
        max = max.max(*o);
    }
    let mut sum = 0.0;
    for c in 0..b {
        p[c] = (log_p[c] - max).exp();
        sum += p[c];
    }
    let log_sum = max + sum.ln();
    for c in 0..b {
        log_p[c] -= log_sum;
        p[c] /= sum;
    }
}

/// Symmetric InfoNCE at inverse temperature `scale`: returns the weighted loss
/// and its derivative with respect to `scale`.
pub fn infonce(
    s: &[f32],
    pos: &Positives,
    scale: f64,
    weight: f64,
    grad: &mut [f32],
) -> (f64, f64) {
    let b = pos.b;
    let logit = |r: usize, c: usize| {
        let masked = pos.at(r, c) && r != c;
        s[r * b + c] as f64 * scale + if masked { MASKED } else { 0.0 }
    };
    let factor = -0.5 * weight / b as f64;
    let mut total = 0.0;
    let mut d_scale = 0.0;
    let (mut row, mut prob) = (vec![0f64; b], vec![0f64; b]);
    for direction in 0..2 {
        for r in 0..b {
            let entry = |c: usize| if direction == 0 { (r, c) } else { (c, r) };
            log_softmax_row(
                b,
                |c| {
                    let (i, j) = entry(c);
                    logit(i, j)
                },
                &mut row,
                &mut prob,
            );
            total += row[r];
            // ∂(log p_r)/∂logit_c = δ_rc − p_c.
            for (c, &pc) in prob.iter().enumerate() {
                let d_logit = factor * (if c == r { 1.0 } else { 0.0 } - pc);
                let (i, j) = entry(c);
                grad[i * b + j] += (d_logit * scale) as f32;
                d_scale += d_logit * s[i * b + j] as f64;
            }
        }
    }
    (factor * total, d_scale)
}

/// Per-row KL(softmax(old/τ) ‖ softmax(new/τ)) for one direction; adds
/// `row_weight(r) · ∂KL_r/∂S` to `grad` and returns Σ_r row_weight(r) · KL_r.
fn directed_kl(
    new: &[f32],
    old: &[f32],
    b: usize,
    transpose: bool,
    temperature: f64,
    row_weight: impl Fn(usize) -> f64,
    grad: &mut [f32],
) -> f64 {
    let index = |r: usize, c: usize| if transpose { c * b + r } else { r * b + c };
    let (mut lp_old, mut lp_new) = (vec![0f64; b], vec![0f64; b]);
    let (mut p_old, mut p_new) = (vec![0f64; b], vec![0f64; b]);
    let mut total = 0.0;
    for r in 0..b {
        let w = row_weight(r);
        if w == 0.0 {
            continue;
        }
        let old_logit = |c: usize| old[index(r, c)] as f64 / temperature;
        log_softmax_row(b, old_logit, &mut lp_old, &mut p_old);
        let new_logit = |c: usize| new[index(r, c)] as f64 / temperature;
        log_softmax_row(b, new_logit, &mut lp_new, &mut p_new);
        let mut kl = 0.0;
        for c in 0..b {
            kl += p_old[c] * (lp_old[c] - lp_new[c]);
            // ∂KL/∂new_c = (p_new − p_old)/τ.
            grad[index(r, c)] += (w * (p_new[c] - p_old[c]) / temperature) as f32;
        }
        total += w * kl;
    }
    total
}

/// Whether the old model ranks row r's own pair first (first maximum on ties).
/// As the official Mod-X code (`cognition_align`): the argmax must be `r`
/// itself, not another caption of the same image.
fn old_ranks_own_pair_first(old: &[f32], b: usize, r: usize, transpose: bool) -> bool {
    let index = |c: usize| if transpose { c * b + r } else { r * b + c };
    let mut best = 0;
    for c in 1..b {
        if old[index(c)] > old[index(best)] {
            best = c;
        }
    }
    best == r
}

/// Mod-X: α · ½ Σ_rows [KL rows + KL columns]; with `correct`, only rows the
/// old model ranks correctly.
pub fn modx(
    new: &[f32],
    old: &[f32],
    pos: &Positives,
    temperature: f64,
    correct: bool,
    alpha: f64,
    grad: &mut [f32],
) -> f64 {
    let mut total = 0.0;
    for transpose in [false, true] {
        let weight = |r: usize| {
            if !correct || old_ranks_own_pair_first(old, pos.b, r, transpose) {
                0.5 * alpha
            } else {
                0.0
            }
        };
        total += directed_kl(new, old, pos.b, transpose, temperature, weight, grad);
    }
    total
}

/// Multimodal knowledge distillation: λ · ½ [mean_rows KL + mean_columns KL].
pub fn distill(
    new: &[f32],
    old: &[f32],
    b: usize,
    temperature: f64,
    lambda: f64,
    grad: &mut [f32],
) -> f64 {
    let weight = 0.5 * lambda / b as f64;
    let mut total = 0.0;
    for transpose in [false, true] {
        total += directed_kl(new, old, b, transpose, temperature, |_| weight, grad);
    }
    total
}

/// A batch's pseudo texts as the losses see them: each row with some, with its
/// range of texts; `q[p]` the score of text p against its row's image.
pub struct PseudoScores<'a> {
    pub rows: &'a [(usize, std::ops::Range<usize>)],
    pub q: &'a [f32],
}

/// Pseudo text replay with the triplet loss (`train::loss::pseudo_text_triplet`):
/// a hinge `[m + q_p − S[r,r]]₊` per pseudo text of row r (only the hardest, first
/// on ties, with `hardest`), reduced as the task loss. Adds `weight · ∂/∂S` to
/// `grad` and `weight · ∂/∂q` to `grad_q`.
#[allow(clippy::too_many_arguments)]
pub fn pseudo_text_triplet(
    s: &[f32],
    b: usize,
    pseudo: &PseudoScores,
    margin: f64,
    negatives: TripletNegatives,
    reduction: Reduction,
    weight: f64,
    grad: &mut [f32],
    grad_q: &mut [f32],
) -> f64 {
    let scale = hinge_scale(reduction, weight, b);
    let mut total = 0.0;
    for (r, texts) in pseudo.rows {
        let diagonal = s[r * b + r] as f64;
        let cost = |p: usize| margin + pseudo.q[p] as f64 - diagonal;
        let mut count = |p: usize, total: &mut f64, grad_q: &mut [f32]| {
            *total += cost(p);
            grad_q[p] += scale as f32;
            grad[r * b + r] -= scale as f32;
        };
        match negatives {
            TripletNegatives::All => {
                for p in texts.clone().filter(|&p| cost(p) > 0.0) {
                    count(p, &mut total, grad_q);
                }
            }
            TripletNegatives::Hardest => {
                let mut hardest: Option<usize> = None;
                for p in texts.clone().filter(|&p| cost(p) > 0.0) {
                    if hardest.is_none_or(|h| cost(p) > cost(h)) {
                        hardest = Some(p);
                    }
                }
                if let Some(p) = hardest {
                    count(p, &mut total, grad_q);
                }
            }
        }
    }
    total * scale
}

/// log Σ exp of `values`.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Pseudo text replay with InfoNCE (`train::loss::pseudo_text_infonce`): for each
/// row with pseudo texts, ½/B · [LSE(row ∪ its texts) − LSE(row)] at inverse
/// temperature `scale`. Returns the weighted value and its derivative with
/// respect to `scale`; adds `weight · ∂/∂S` to `grad`, `weight · ∂/∂q` to `grad_q`.
pub fn pseudo_text_infonce(
    s: &[f32],
    pos: &Positives,
    pseudo: &PseudoScores,
    scale: f64,
    weight: f64,
    grad: &mut [f32],
    grad_q: &mut [f32],
) -> (f64, f64) {
    let b = pos.b;
    let factor = 0.5 * weight / b as f64;
    let (mut total, mut d_scale) = (0.0, 0.0);
    for (r, texts) in pseudo.rows {
        let r = *r;
        let logit = |c: usize| {
            let masked = pos.at(r, c) && r != c;
            s[r * b + c] as f64 * scale + if masked { MASKED } else { 0.0 }
        };
        let extra = |p: usize| pseudo.q[p] as f64 * scale;
        let row = (0..b).map(logit);
        let lse_row = log_sum_exp(row.clone());
        let lse_widened = log_sum_exp(row.chain(texts.clone().map(extra)));
        total += lse_widened - lse_row;
        for c in 0..b {
            // ∂/∂logit_c of the increase: p_widened(c) − p_row(c).
            let d_logit = factor * ((logit(c) - lse_widened).exp() - (logit(c) - lse_row).exp());
            grad[r * b + c] += (d_logit * scale) as f32;
            d_scale += d_logit * s[r * b + c] as f64;
        }
        for p in texts.clone() {
            let d_logit = factor * (extra(p) - lse_widened).exp();
            grad_q[p] += (d_logit * scale) as f32;
            d_scale += d_logit * pseudo.q[p] as f64;
        }
    }
    (factor * total, d_scale)
}
