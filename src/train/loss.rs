//! Losses on the batch similarity matrix `S = φ(I) ψ(C)ᵀ` (B x B, row b: the image
//! of pair b; column j: the caption of pair j), and the distillation terms of
//! Mod-X and multimodal knowledge distillation. Formulas: `docs/methods.md`.
//!
//! `positives` is a B x B 0/1 matrix: 1 where pair j's caption describes pair b's
//! image (the diagonal, and two captions of one image in the same batch). Such
//! entries are never negatives.

use crate::lang::{Reduction, TripletNegatives};
use candle_core::{Result, Tensor, D};

/// The diagonal of a square matrix as a column (B x 1).
fn diagonal(s: &Tensor) -> Result<Tensor> {
    let b = s.dim(0)?;
    let eye = Tensor::eye(b, s.dtype(), s.device())?;
    (s * eye)?.sum_keepdim(1)
}

/// Σ over `dim` of the largest entry, the gradient going to one entry only (the
/// first maximum), as PyTorch's `max(dim)` does. candle's `max` passes it to
/// every tied entry, which doubles the term when an image appears twice in a
/// batch (two of its captions drawn together): identical rows tie exactly.
fn hardest(cost: &Tensor, dim: usize) -> Result<Tensor> {
    let first = cost.contiguous()?.argmax_keepdim(dim)?;
    cost.contiguous()?.gather(&first, dim)?.sum_all()
}

/// A triplet total over `b` pairs, summed (VSE++) or averaged.
fn reduce(total: Tensor, reduction: Reduction, b: f64) -> Result<Tensor> {
    match reduction {
        Reduction::Sum => Ok(total),
        Reduction::Mean => total.affine(1.0 / b, 0.0),
    }
}

/// VSE++ bidirectional hinge ranking loss, summed over the B pairs as VSE++'s
/// code does (`cost_s.sum() + cost_im.sum()`), or averaged.
pub fn triplet(
    s: &Tensor,
    positives: &Tensor,
    margin: f64,
    negatives: TripletNegatives,
    reduction: Reduction,
) -> Result<Tensor> {
    let b = s.dim(0)? as f64;
    let negative = positives.affine(-1.0, 1.0)?; // 1 - positives
    let d = diagonal(s)?;
    // Image b against the captions j: m + S[b,j] - S[b,b].
    let cost_caption = (s.broadcast_sub(&d)? + margin)?.relu()?.mul(&negative)?;
    // Caption b against the images j: m + S[j,b] - S[b,b].
    let cost_image = (s.broadcast_sub(&d.t()?)? + margin)?
        .relu()?
        .mul(&negative)?;
    let total = match negatives {
        TripletNegatives::Hardest => (hardest(&cost_caption, 1)? + hardest(&cost_image, 0)?)?,
        TripletNegatives::All => (cost_caption.sum_all()? + cost_image.sum_all()?)?,
    };
    reduce(total, reduction, b)
}

/// Added to logits that must not act as negatives: exp() of it is exactly 0.
const MASKED: f64 = -1e4;

/// Symmetric InfoNCE (CLIP): ½ [CE(S·scale, I) + CE(Sᵀ·scale, I)], where `scale` is
/// 1/τ (a scalar tensor, possibly `exp(logit_scale)` of a learnable variable).
pub fn infonce(s: &Tensor, positives: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let b = s.dim(0)?;
    let eye = Tensor::eye(b, s.dtype(), s.device())?;
    let logits = infonce_logits(s, positives, scale)?;
    let rows = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let cols = candle_nn::ops::log_softmax(&logits.t()?, D::Minus1)?;
    let picked = ((rows * &eye)?.sum_all()? + (cols * &eye)?.sum_all()?)?;
    picked.affine(-0.5 / b as f64, 0.0)
}

/// InfoNCE's logits: `S·scale`, other captions of the same image masked out of
/// the denominator.
fn infonce_logits(s: &Tensor, positives: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let b = s.dim(0)?;
    let eye = Tensor::eye(b, s.dtype(), s.device())?;
    let mask = ((positives - &eye)? * MASKED)?;
    s.broadcast_mul(scale)? + mask
}

/// log Σ exp over each row (B x 1); the row maximum is a constant for the gradient.
fn log_sum_exp_rows(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(1)?.detach();
    x.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + max
}

/// Pseudo text replay with InfoNCE: the increase of the image-to-text rows'
/// cross-entropy when each row also meets its pseudo negative texts as extra
/// columns, weighted as InfoNCE weighs a row (½ / B). So the task loss plus this
/// term at `weight` 1 is exactly InfoNCE over the widened rows, and at 0 it is
/// nothing. `q` is `φ(I) ψ(T)ᵀ` (B x P) for the P pseudo texts, `owner` (B x P)
/// 1 where pseudo text p negates row b's image.
pub fn pseudo_text_infonce(
    s: &Tensor,
    positives: &Tensor,
    scale: &Tensor,
    q: &Tensor,
    owner: &Tensor,
) -> Result<Tensor> {
    let b = s.dim(0)?;
    let logits = infonce_logits(s, positives, scale)?;
    // Pseudo texts of other rows' images are no columns of this row.
    let extra = (q.broadcast_mul(scale)? + (owner.affine(-1.0, 1.0)? * MASKED)?)?;
    let widened = Tensor::cat(&[&logits, &extra], 1)?;
    let has = owner.max_keepdim(1)?;
    let increase = (log_sum_exp_rows(&widened)? - log_sum_exp_rows(&logits)?)?;
    (increase * has)?.sum_all()?.affine(0.5 / b as f64, 0.0)
}

/// Pseudo text replay with the triplet loss: a hinge `[m + q(b,p) − S[b,b]]₊` for
/// each pseudo text p of row b's image (the hardest one per row with `hardest`
/// negatives), summed or averaged over the B pairs as the task loss is.
pub fn pseudo_text_triplet(
    s: &Tensor,
    q: &Tensor,
    owner: &Tensor,
    margin: f64,
    negatives: TripletNegatives,
    reduction: Reduction,
) -> Result<Tensor> {
    let b = s.dim(0)? as f64;
    let cost = (q.broadcast_sub(&diagonal(s)?)? + margin)?
        .relu()?
        .mul(owner)?;
    let total = match negatives {
        TripletNegatives::Hardest => hardest(&cost, 1)?,
        TripletNegatives::All => cost.sum_all()?,
    };
    reduce(total, reduction, b)
}

/// Σ_rows KL(softmax(old/τ) ‖ softmax(new/τ)) as a vector of per-row values (B).
fn row_kl(old: &Tensor, new: &Tensor, temperature: f64) -> Result<Tensor> {
    let log_p_old = candle_nn::ops::log_softmax(&old.affine(1.0 / temperature, 0.0)?, D::Minus1)?;
    let log_p_new = candle_nn::ops::log_softmax(&new.affine(1.0 / temperature, 0.0)?, D::Minus1)?;
    (log_p_old.exp()? * (log_p_old - log_p_new)?)?.sum(1)
}

/// Rows (of `old`) whose most similar entry is the row's own pair: 1.0, else
/// 0.0. As the official Mod-X code: another caption of the same image ranked
/// first does not count as correct.
fn correct_rows(old: &Tensor) -> Result<Tensor> {
    let b = old.dim(0)?;
    let best = old.contiguous()?.argmax(1)?; // first maximum on ties
    let own = Tensor::arange(0u32, b as u32, old.device())?;
    best.eq(&own)?.to_dtype(old.dtype())
}

/// Mod-X: ½ Σ_rows [KL rows + KL columns] at temperature τ; with `correct`, rows
/// (columns) where the old model does not rank the row's own pair first are left
/// out. `old` is the old model's similarity matrix on the same batch (no gradient).
pub fn modx(new: &Tensor, old: &Tensor, temperature: f64, correct: bool) -> Result<Tensor> {
    let old = old.detach();
    let mut rows = row_kl(&old, new, temperature)?;
    let mut cols = row_kl(&old.t()?, &new.t()?, temperature)?;
    if correct {
        rows = (rows * correct_rows(&old)?)?;
        cols = (cols * correct_rows(&old.t()?)?)?;
    }
    (rows.sum_all()? + cols.sum_all()?)?.affine(0.5, 0.0)
}

/// Multimodal knowledge distillation: ½ [mean_rows KL + mean_columns KL].
pub fn distill(new: &Tensor, old: &Tensor, temperature: f64) -> Result<Tensor> {
    let old = old.detach();
    let rows = row_kl(&old, new, temperature)?;
    let cols = row_kl(&old.t()?, &new.t()?, temperature)?;
    (rows.mean_all()? + cols.mean_all()?)?.affine(0.5, 0.0)
}
