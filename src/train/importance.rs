//! Parameter importance after a task (EWC's Fisher, MAS's omega) and the weight
//! penalties that use it. Formulas: `docs/methods.md`.

use super::batches::epoch_batches;
use super::tensors::{batch_tensors, task_loss, GatherRows};
use crate::data::PairData;
use crate::lang::{Accumulate, Coverage, LossSpec, Negatives};
use crate::model::{Group, Modality, Model};
use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// EWC: empirical Fisher, mean over batches of squared gradients of the task loss.
    Fisher,
    /// MAS: mean over samples of |∂‖g(x)‖²/∂θ|, before the L2 normalisation.
    Omega,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Fisher => "fisher",
            Method::Omega => "omega",
        }
    }
}

/// Accumulated importance, one tensor per parameter (same names as the model's).
#[derive(Debug, Clone)]
pub struct Importance {
    pub method: Method,
    pub tensors: Vec<(String, Tensor)>,
    /// Tasks accumulated so far.
    pub tasks: usize,
}

fn zeros_like_params(model: &Model) -> Result<Vec<Tensor>> {
    model
        .params()
        .iter()
        .map(|p| p.var.as_detached_tensor().zeros_like())
        .collect()
}

/// Adds this task's estimate to the previous accumulation.
fn accumulate(
    model: &Model,
    method: Method,
    estimate: Vec<Tensor>,
    previous: Option<&Importance>,
    mode: Accumulate,
) -> Result<Importance> {
    let k = previous.map_or(0, |p| p.tasks) + 1;
    let mut tensors = Vec::new();
    for (p, f) in model.params().iter().zip(estimate) {
        let old = previous.and_then(|prev| {
            prev.tensors
                .iter()
                .find(|(n, _)| *n == p.name)
                .map(|(_, t)| t)
        });
        let value = match (old, mode) {
            (None, _) => f,
            (Some(o), Accumulate::Sum) => (o + f)?,
            // Running mean: Ω ← (k−1)/k·Ω + 1/k·F.
            (Some(o), Accumulate::Mean) => ((o * ((k - 1) as f64 / k as f64))? + (f / k as f64)?)?,
        };
        tensors.push((p.name.clone(), value));
    }
    Ok(Importance {
        method,
        tensors,
        tasks: k,
    })
}

/// EWC's empirical Fisher on one task's training pairs, at the model's weights.
/// Batches are those of one epoch (stream `fisher`); no dropout, so the estimate
/// is deterministic.
#[allow(clippy::too_many_arguments)]
pub fn fisher(
    model: &Model,
    data: &PairData,
    captions: &[u32],
    loss: &LossSpec,
    batch: usize,
    seed: u64,
    previous: Option<&Importance>,
    mode: Accumulate,
) -> Result<Importance> {
    let mut sums = zeros_like_params(model)?;
    let batches = epoch_batches(
        &[captions],
        batch,
        Negatives::WithinTask,
        seed ^ 0x0f15_4e12,
        0,
        0,
    );
    for b in &batches {
        let (images, texts, positives) = batch_tensors(data, b, model.device())?;
        let ei = model.forward(Modality::Image, &images, None, false)?;
        let et = model.forward(Modality::Text, &texts, None, false)?;
        let s = ei.matmul(&et.t()?)?;
        let grads = task_loss(model, loss, &s, &positives)?.backward()?;
        for (sum, p) in sums.iter_mut().zip(model.params()) {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                *sum = (&*sum + g.sqr()?)?;
            }
        }
    }
    let n = batches.len().max(1) as f64;
    let estimate = sums
        .into_iter()
        .map(|s| s / n)
        .collect::<Result<Vec<_>>>()?;
    accumulate(model, Method::Fisher, estimate, previous, mode)
}

/// MAS's omega on one task's training images and captions: the exact mean over
/// samples of absolute per-sample gradients. For a linear layer the per-sample
/// gradient is the outer product δ aᵀ, so Σ_x |δ_x a_xᵀ| = |Δ|ᵀ|A|: one matrix
/// product per layer instead of one backward pass per sample.
pub fn omega(
    model: &Model,
    data: &PairData,
    captions: &[u32],
    previous: Option<&Importance>,
) -> Result<Importance> {
    let mut images: Vec<u32> = captions
        .iter()
        .map(|&c| data.caption_image[c as usize])
        .collect();
    images.sort_unstable();
    images.dedup();
    let mut sums = zeros_like_params(model)?;
    let mut counts = vec![0usize; sums.len()];
    const CHUNK: usize = 512;
    for (modality, rows) in [
        (Modality::Image, &images),
        (Modality::Text, &captions.to_vec()),
    ] {
        for chunk in rows.chunks(CHUNK) {
            let x = data.gather(modality, chunk, model.device())?;
            let (g, probes) = model.forward_probed(modality, &x)?;
            let grads = g.sqr()?.sum_all()?.backward()?;
            for probe in probes {
                let Some(delta) = grads.get(probe.probe.as_tensor()) else {
                    continue;
                };
                let w = delta.abs()?.t()?.matmul(&probe.input.abs()?)?;
                let b = delta.abs()?.sum(0)?;
                sums[probe.weight] = (&sums[probe.weight] + w)?;
                sums[probe.bias] = (&sums[probe.bias] + b)?;
                counts[probe.weight] += chunk.len();
                counts[probe.bias] += chunk.len();
            }
        }
    }
    let estimate = sums
        .into_iter()
        .zip(counts)
        .map(|(s, n)| if n > 0 { s / n as f64 } else { Ok(s) })
        .collect::<Result<Vec<_>>>()?;
    accumulate(model, Method::Omega, estimate, previous, Accumulate::Sum)
}

/// Whether a penalty with coverage `on` applies to a parameter of `group`.
/// `image` and `text` include the shared layers; `query` must already be resolved.
pub fn covers(on: Coverage, group: Group) -> bool {
    match group {
        Group::Temperature => false,
        Group::Shared => true,
        Group::Image => matches!(on, Coverage::Both | Coverage::Image),
        Group::Text => matches!(on, Coverage::Both | Coverage::Text),
    }
}

/// `coefficient · Σ_i Ω_i (θ_i − θ*_i)²` over the covered parameters.
pub fn penalty(
    model: &Model,
    importance: &Importance,
    anchors: &[Tensor],
    on: Coverage,
    coefficient: f64,
) -> Result<Tensor> {
    let mut total = Tensor::zeros((), candle_core::DType::F32, model.device())?;
    for (p, anchor) in model.params().iter().zip(anchors) {
        if !covers(on, p.group) {
            continue;
        }
        // By name: importance read back from a checkpoint comes in file order.
        let Some((_, omega)) = importance.tensors.iter().find(|(n, _)| *n == p.name) else {
            continue;
        };
        let diff = (p.var.as_tensor() - anchor)?;
        total = (total + (omega * diff.sqr()?)?.sum_all()?)?;
    }
    total.affine(coefficient, 0.0)
}

impl Importance {
    /// Saves the accumulated importance as a safetensors checkpoint of kind
    /// `importance`; the method and task count travel in the metadata.
    pub fn save(
        &self,
        path: &std::path::Path,
        node_key: &str,
        settings: serde_json::Value,
        model: &Model,
    ) -> std::result::Result<(), crate::model::CheckpointError> {
        let settings = serde_json::json!({ "node": settings, "method": self.method.name(), "tasks": self.tasks });
        let meta = crate::model::CheckpointMeta::new(
            "importance",
            node_key,
            settings,
            model.image_dim,
            model.text_dim,
        );
        crate::model::save_checkpoint(path, &self.tensors, &meta)
    }

    /// Reads an importance checkpoint written by [`Importance::save`].
    pub fn load(
        path: &std::path::Path,
        device: &candle_core::Device,
    ) -> std::result::Result<Importance, crate::model::CheckpointError> {
        let (tensors, meta) = crate::model::load_checkpoint(path, "importance", device)?;
        let bad = |m: &str| crate::model::CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: m.to_string(),
        };
        let method = match meta.settings["method"].as_str() {
            Some("fisher") => Method::Fisher,
            Some("omega") => Method::Omega,
            _ => return Err(bad("no importance method in the metadata")),
        };
        let tasks = meta.settings["tasks"]
            .as_u64()
            .ok_or_else(|| bad("no task count in the metadata"))? as usize;
        Ok(Importance {
            method,
            tensors,
            tasks,
        })
    }
}
