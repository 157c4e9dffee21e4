//! The two-branch embedding network: an MLP per modality on top of precomputed
//! features, the top `share` layers one set of weights used by both, outputs
//! L2-normalised so that a dot product is the cosine similarity.

mod checkpoint;

pub use checkpoint::{load_checkpoint, save_checkpoint, CheckpointError, CheckpointMeta};

use crate::lang::{Activation, DeviceSpec, ModelSpec};
use crate::rng::Rng;
use candle_core::{DType, Device, Result, Tensor, Var, D};

pub use crate::lang::Modality;

/// Which part of the network a parameter belongs to (what `on = ...` selects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Image,
    Text,
    Shared,
    /// The learnable InfoNCE temperature: never penalised.
    Temperature,
}

/// A named trainable tensor.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub group: Group,
    pub var: Var,
}

#[derive(Debug, Clone)]
struct Layer {
    weight: usize, // index into params: (out, in)
    bias: usize,   // (out,)
}

/// The model of one training chain after some stage.
#[derive(Debug, Clone)]
pub struct Model {
    pub spec: ModelSpec,
    pub image_dim: usize,
    pub text_dim: usize,
    params: Vec<Param>,
    image_path: Vec<Layer>,
    text_path: Vec<Layer>,
    device: Device,
}

/// Values recorded by a probed forward pass (see [`Model::forward_probed`]).
pub struct Probe {
    /// Index of the layer's weight and bias in [`Model::params`].
    pub weight: usize,
    pub bias: usize,
    /// The layer's input (B x in), detached.
    pub input: Tensor,
    /// A zero variable added to the layer's output: its gradient is the
    /// per-sample gradient with respect to that output.
    pub probe: Var,
}

impl Model {
    /// A freshly initialised model. Every tensor draws from its own named stream,
    /// so initial values do not depend on construction order.
    pub fn new(
        spec: &ModelSpec,
        image_dim: usize,
        text_dim: usize,
        seed: u64,
        logit_scale: Option<f64>,
        device: &Device,
    ) -> Result<Model> {
        let mut params = Vec::new();
        let mut linear =
            |name: String, group: Group, fan_in: usize, fan_out: usize| -> Result<Layer> {
                // PyTorch's nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)) for both tensors.
                let bound = 1.0 / (fan_in as f32).sqrt();
                let draw = |suffix: &str, n: usize| {
                    let mut rng = Rng::derive(seed, &["init", &name, suffix]);
                    (0..n)
                        .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                        .collect::<Vec<f32>>()
                };
                let w =
                    Tensor::from_vec(draw("weight", fan_out * fan_in), (fan_out, fan_in), device)?;
                let b = Tensor::from_vec(draw("bias", fan_out), fan_out, device)?;
                params.push(Param {
                    name: format!("{name}.weight"),
                    group,
                    var: Var::from_tensor(&w)?,
                });
                params.push(Param {
                    name: format!("{name}.bias"),
                    group,
                    var: Var::from_tensor(&b)?,
                });
                Ok(Layer {
                    weight: params.len() - 2,
                    bias: params.len() - 1,
                })
            };
        let widths = |input: usize, b: &crate::lang::BranchSpec| {
            let mut w = vec![input];
            w.extend(&b.hidden);
            w.push(b.embed);
            w
        };
        let wi = widths(image_dim, &spec.image);
        let wt = widths(text_dim, &spec.text);
        let (di, dt, s) = (wi.len() - 1, wt.len() - 1, spec.share);
        let mut image_path = Vec::new();
        for l in 0..di - s {
            image_path.push(linear(
                format!("image.{l}"),
                Group::Image,
                wi[l],
                wi[l + 1],
            )?);
        }
        let mut text_path = Vec::new();
        for l in 0..dt - s {
            text_path.push(linear(format!("text.{l}"), Group::Text, wt[l], wt[l + 1])?);
        }
        for m in 0..s {
            let (fan_in, fan_out) = (wi[di - s + m], wi[di - s + m + 1]);
            let layer = linear(format!("shared.{m}"), Group::Shared, fan_in, fan_out)?;
            image_path.push(layer.clone());
            text_path.push(layer);
        }
        if let Some(scale) = logit_scale {
            params.push(Param {
                name: "logit_scale".into(),
                group: Group::Temperature,
                var: Var::from_tensor(&Tensor::new(&[scale as f32], device)?)?,
            });
        }
        Ok(Model {
            spec: spec.clone(),
            image_dim,
            text_dim,
            params,
            image_path,
            text_path,
            device: device.clone(),
        })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn input_dim(&self, m: Modality) -> usize {
        match m {
            Modality::Image => self.image_dim,
            Modality::Text => self.text_dim,
        }
    }

    /// (weight, bias) parameter indices of each layer of branch `m`, input first.
    pub fn layers(&self, m: Modality) -> Vec<(usize, usize)> {
        self.path(m).iter().map(|l| (l.weight, l.bias)).collect()
    }

    fn path(&self, m: Modality) -> &[Layer] {
        match m {
            Modality::Image => &self.image_path,
            Modality::Text => &self.text_path,
        }
    }

    /// The learnable log inverse temperature, if the loss has one.
    pub fn logit_scale(&self) -> Option<&Var> {
        self.params
            .iter()
            .find(|p| p.group == Group::Temperature)
            .map(|p| &p.var)
    }

    fn tensor(&self, i: usize, detached: bool) -> Tensor {
        if detached {
            self.params[i].var.as_detached_tensor()
        } else {
            self.params[i].var.as_tensor().clone()
        }
    }

    fn branch(&self, m: Modality) -> &crate::lang::BranchSpec {
        match m {
            Modality::Image => &self.spec.image,
            Modality::Text => &self.spec.text,
        }
    }

    /// The branch's activation (shared layers: the checker requires both agree).
    fn activate(&self, m: Modality, x: &Tensor) -> Result<Tensor> {
        match self.branch(m).activation {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Tanh => x.tanh(),
        }
    }

    /// The branch output before normalisation, `g(x)`. With `dropout`, hidden
    /// activations are dropped with the stream's masks (training only). With
    /// `detached`, no autograd graph is built (evaluation, frozen old models).
    pub fn forward_raw(
        &self,
        m: Modality,
        x: &Tensor,
        mut dropout: Option<&mut Rng>,
        detached: bool,
    ) -> Result<Tensor> {
        let path = self.path(m);
        let mut h = x.clone();
        for (l, layer) in path.iter().enumerate() {
            let w = self.tensor(layer.weight, detached);
            let b = self.tensor(layer.bias, detached);
            h = h.matmul(&w.t()?)?.broadcast_add(&b)?;
            if l + 1 < path.len() {
                h = self.activate(m, &h)?;
                let p = self.branch(m).dropout;
                if let (Some(rng), true) = (dropout.as_deref_mut(), p > 0.0) {
                    h = apply_dropout(&h, p, rng)?;
                }
            }
        }
        Ok(h)
    }

    /// L2-normalised embeddings.
    pub fn forward(
        &self,
        m: Modality,
        x: &Tensor,
        dropout: Option<&mut Rng>,
        detached: bool,
    ) -> Result<Tensor> {
        l2_normalize(&self.forward_raw(m, x, dropout, detached)?)
    }

    /// `g(x)` with a zero probe variable added to every layer's output, so one
    /// backward pass yields per-sample gradients with respect to each layer's
    /// output (used for MAS's per-sample absolute gradients).
    pub fn forward_probed(&self, m: Modality, x: &Tensor) -> Result<(Tensor, Vec<Probe>)> {
        let path = self.path(m);
        let mut h = x.clone();
        let mut probes = Vec::with_capacity(path.len());
        for (l, layer) in path.iter().enumerate() {
            let w = self.tensor(layer.weight, false);
            let b = self.tensor(layer.bias, false);
            let input = h.detach();
            let z = h.matmul(&w.t()?)?.broadcast_add(&b)?;
            let probe = Var::zeros(z.shape(), DType::F32, &self.device)?;
            h = (z + probe.as_tensor())?;
            probes.push(Probe {
                weight: layer.weight,
                bias: layer.bias,
                input,
                probe,
            });
            if l + 1 < path.len() {
                h = self.activate(m, &h)?;
            }
        }
        Ok((h, probes))
    }

    /// Embeds rows `rows` of the row-major `features` (eval mode), gathering a
    /// chunk of rows at a time: memory is one chunk of inputs plus the
    /// embeddings, never a copy of every selected row (a COCO-sized test set's
    /// features are a third of the split's).
    pub fn embed_rows(&self, m: Modality, features: &[f32], rows: &[u32]) -> Result<Vec<f32>> {
        let dim = self.input_dim(m);
        let mut out = Vec::with_capacity(rows.len() * self.spec.image.embed);
        const CHUNK: usize = 4096;
        let mut gathered = Vec::with_capacity(CHUNK.min(rows.len()) * dim);
        for chunk in rows.chunks(CHUNK) {
            gathered.clear();
            for &r in chunk {
                let r = r as usize;
                let row = features.get(r * dim..(r + 1) * dim).ok_or_else(|| {
                    candle_core::Error::Msg(format!("row {r} is past the {dim}-d features"))
                })?;
                gathered.extend_from_slice(row);
            }
            let x = Tensor::from_slice(&gathered, (chunk.len(), dim), &self.device)?;
            let e = self.forward(m, &x, None, true)?;
            out.extend(e.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Embeds `rows` feature vectors (row-major `features`) in chunks, without
    /// building a graph; returns the normalised embeddings row-major.
    pub fn embed_all(&self, m: Modality, features: &[f32], rows: usize) -> Result<Vec<f32>> {
        let dim = self.input_dim(m);
        let mut out = Vec::with_capacity(rows * self.spec.image.embed);
        const CHUNK: usize = 4096;
        for start in (0..rows).step_by(CHUNK) {
            let n = CHUNK.min(rows - start);
            let x = Tensor::from_slice(
                &features[start * dim..(start + n) * dim],
                (n, dim),
                &self.device,
            )?;
            let e = self.forward(m, &x, None, true)?;
            out.extend(e.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Detached copies of every parameter (anchors, old models). A copy, not a
    /// view: optimizers update variables in place.
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|p| p.var.as_detached_tensor().copy())
            .collect()
    }

    /// A deep copy whose variables are independent of this model's.
    pub fn deep_clone(&self) -> Result<Model> {
        let mut m = self.clone();
        for p in &mut m.params {
            p.var = Var::from_tensor(&p.var.as_detached_tensor().copy()?)?;
        }
        Ok(m)
    }

    /// Every parameter by name, detached (for checkpoints).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_detached_tensor()))
            .collect()
    }

    /// A model of this architecture with the given values, every parameter
    /// accounted for (no missing and no unexpected tensor).
    pub fn with_values(
        spec: &ModelSpec,
        image_dim: usize,
        text_dim: usize,
        values: &[(String, Tensor)],
        device: &Device,
    ) -> std::result::Result<Model, String> {
        let learnable = values
            .iter()
            .any(|(n, _)| n == "logit_scale")
            .then_some(0.0);
        let model = Model::new(spec, image_dim, text_dim, 0, learnable, device)
            .map_err(|e| e.to_string())?;
        if let Some(p) = model
            .params
            .iter()
            .find(|p| !values.iter().any(|(n, _)| *n == p.name))
        {
            return Err(format!("tensor `{}` is missing", p.name));
        }
        model.set_values(values)?;
        Ok(model)
    }

    /// Overwrites parameter values by name (shapes must match).
    pub fn set_values(&self, values: &[(String, Tensor)]) -> std::result::Result<(), String> {
        for (name, t) in values {
            let p = self
                .params
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| format!("unexpected tensor `{name}`"))?;
            if p.var.shape() != t.shape() {
                return Err(format!(
                    "tensor `{name}` has shape {:?}, the model expects {:?}",
                    t.dims(),
                    p.var.dims()
                ));
            }
            p.var.set(t).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn apply_dropout(h: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let keep = 1.0 - p as f32;
    let n = h.elem_count();
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.next_f32() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    h * Tensor::from_vec(mask, h.shape(), h.device())?
}

/// Rows divided by their Euclidean norm (guarded against zero rows).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    x.broadcast_div(&norm)
}

/// The device a pipeline asks for, or why it cannot be had.
pub fn device(spec: DeviceSpec) -> std::result::Result<Device, String> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => Device::new_cuda(n).map_err(|e| format!("cannot open CUDA device {n}: {e}")),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(n) => Err(format!(
            "device cuda:{n} was asked for, but this lethe was built without CUDA; rebuild with `cargo build --release --features cuda` (see README)"
        )),
    }
}
