//! A batch as candle tensors, for the graph step and the importance estimates:
//! feature rows of one modality, a batch's images, captions and positives mask,
//! and the task loss on the batch similarity matrix.

use super::loss;
use crate::data::PairData;
use crate::lang::LossSpec;
use crate::model::{Modality, Model};
use candle_core::{Device, Tensor};

/// Feature rows as tensors: a trait of `train` rather than a method of
/// [`PairData`], because `data` sits below the model and candle's tensors.
pub trait GatherRows {
    /// Rows of one modality as a (n x dim) tensor.
    fn gather(&self, m: Modality, rows: &[u32], device: &Device) -> candle_core::Result<Tensor>;
}

impl GatherRows for PairData<'_> {
    fn gather(&self, m: Modality, rows: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let dim = match m {
            Modality::Image => self.image_dim,
            Modality::Text => self.text_dim,
        };
        let mut out = Vec::with_capacity(rows.len() * dim);
        for &r in rows {
            out.extend_from_slice(match m {
                Modality::Image => self.image(r),
                Modality::Text => self.caption(r),
            });
        }
        Tensor::from_vec(out, (rows.len(), dim), device)
    }
}

/// Images, captions and the positives mask of a batch of caption rows.
pub fn batch_tensors(
    data: &PairData,
    captions: &[u32],
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let images = data.images_of(captions);
    let n = captions.len();
    let mut positives = vec![0f32; n * n];
    for b in 0..n {
        for j in 0..n {
            if images[b] == images[j] {
                positives[b * n + j] = 1.0;
            }
        }
    }
    Ok((
        data.gather(Modality::Image, &images, device)?,
        data.gather(Modality::Text, captions, device)?,
        Tensor::from_vec(positives, (n, n), device)?,
    ))
}

/// The task loss on a batch similarity matrix.
pub fn task_loss(
    model: &Model,
    loss: &LossSpec,
    s: &Tensor,
    positives: &Tensor,
) -> candle_core::Result<Tensor> {
    match loss {
        LossSpec::Triplet {
            margin,
            negatives,
            reduction,
        } => loss::triplet(s, positives, *margin, *negatives, *reduction),
        LossSpec::Infonce { temperature, .. } => {
            loss::infonce(s, positives, &infonce_scale(model, *temperature, s)?)
        }
    }
}

/// InfoNCE's inverse temperature: `exp(logit_scale)` when learnable, else 1/τ.
fn infonce_scale(model: &Model, temperature: f64, s: &Tensor) -> candle_core::Result<Tensor> {
    match model.logit_scale() {
        Some(v) => v.as_tensor().exp()?.reshape(()),
        None => Tensor::new(1.0 / temperature as f32, s.device()),
    }
}

/// The pseudo texts of a batch as the loss sees them: `q = φ(I) ψ(T)ᵀ` (B x P)
/// and `owner` (B x P), 1 where text p negates the image of pair b.
pub struct PseudoScores {
    pub q: Tensor,
    pub owner: Tensor,
}

/// The loss the pseudo texts add to the task loss (unweighted).
pub fn pseudo_text_loss(
    model: &Model,
    loss: &LossSpec,
    s: &Tensor,
    positives: &Tensor,
    pseudo: &PseudoScores,
) -> candle_core::Result<Tensor> {
    match loss {
        LossSpec::Triplet {
            margin,
            negatives,
            reduction,
        } => {
            loss::pseudo_text_triplet(s, &pseudo.q, &pseudo.owner, *margin, *negatives, *reduction)
        }
        LossSpec::Infonce { temperature, .. } => loss::pseudo_text_infonce(
            s,
            positives,
            &infonce_scale(model, *temperature, s)?,
            &pseudo.q,
            &pseudo.owner,
        ),
    }
}
