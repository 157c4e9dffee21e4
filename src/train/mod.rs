//! The `train` and `importance` nodes: learn one stage of a chain, estimate
//! parameter importance after it. Everything runs on a candle `Device` (CPU, or
//! CUDA with the `cuda` feature) through the same code.

pub mod batches;
mod fused;
mod graph;
pub mod importance;
pub mod loss;
pub mod optim;

use crate::lang::{DeviceSpec, LossSpec, ModelSpec, RegularizerSpec, Schedule, TrainSpec};
use crate::model::{Modality, Model};
use crate::rng::Rng;
use batches::{epoch_batches, ReplayMemory};
use candle_core::{Device, Tensor};
use importance::Importance;
use std::time::Instant;

/// The features of a dataset, borrowed: enough to train and to embed.
#[derive(Debug, Clone, Copy)]
pub struct PairData<'a> {
    /// Row-major, `image_dim` floats per image.
    pub image_features: &'a [f32],
    pub image_dim: usize,
    /// Row-major, `text_dim` floats per caption.
    pub caption_features: &'a [f32],
    pub text_dim: usize,
    /// The image row of every caption row.
    pub caption_image: &'a [u32],
}

impl PairData<'_> {
    /// Rows of one modality as a (n x dim) tensor.
    pub fn gather(
        &self,
        m: Modality,
        rows: &[u32],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let (features, dim) = match m {
            Modality::Image => (self.image_features, self.image_dim),
            Modality::Text => (self.caption_features, self.text_dim),
        };
        let mut out = Vec::with_capacity(rows.len() * dim);
        for &r in rows {
            let r = r as usize;
            out.extend_from_slice(&features[r * dim..(r + 1) * dim]);
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
    let images: Vec<u32> = captions
        .iter()
        .map(|&c| data.caption_image[c as usize])
        .collect();
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
        LossSpec::Triplet { margin, negatives } => loss::triplet(s, positives, *margin, *negatives),
        LossSpec::Infonce { temperature, .. } => {
            let scale = match model.logit_scale() {
                Some(v) => v.as_tensor().exp()?.reshape(())?,
                None => Tensor::new(1.0 / *temperature as f32, s.device())?,
            };
            loss::infonce(s, positives, &scale)
        }
    }
}

/// The device a pipeline asks for, or why it cannot be had.
pub fn device(spec: DeviceSpec) -> Result<Device, String> {
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

/// What one stage learns from and how.
pub struct Stage<'a> {
    pub model: &'a ModelSpec,
    pub train: &'a TrainSpec,
    pub schedule: Schedule,
    pub seed: u64,
    /// 1-based; the joint model is stage 1 of a one-stage chain.
    pub stage: usize,
    /// The task name (or `joint`), for logs and errors.
    pub label: String,
    /// The regularizer of this stage, `on = query` resolved; empty at stage 1.
    pub regularizer: &'a [RegularizerSpec],
    pub data: PairData<'a>,
    /// Training captions of the task(s) learned now (several for a joint schedule).
    pub tasks: Vec<&'a [u32]>,
    /// Earlier tasks in learning order, for the replay memory.
    pub past: Vec<(&'a str, &'a [u32])>,
    /// Called after every step with (steps done, total steps).
    pub on_step: Option<&'a (dyn Fn(usize, usize) + Sync)>,
}

/// The chain's state after the previous stage.
pub struct Previous<'a> {
    pub model: &'a Model,
    /// Accumulated importance for the penalties that need it (EWC, MAS).
    pub importance: Vec<&'a Importance>,
}

/// One row of the training log; training records every step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogRow {
    pub stage: usize,
    pub task: String,
    pub epoch: usize,
    pub step: usize,
    pub loss: f64,
    pub task_loss: f64,
    /// Each regularizer term, weighted as it enters the loss.
    pub terms: Vec<(String, f64)>,
    pub lr: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training diverged at {task}, epoch {epoch}, step {step}: the {term} is {value}")]
    NonFinite {
        task: String,
        epoch: usize,
        step: usize,
        term: String,
        value: f64,
    },
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
    /// A stage continues from its previous model on that model's device, so the
    /// two must agree (else a GPU stage would silently train on the CPU).
    #[error("the previous model is on {found} but the stage asks for {wanted}")]
    DeviceMismatch { found: String, wanted: String },
}

pub struct Trained {
    pub model: Model,
    pub log: Vec<LogRow>,
}

/// The loss values of one step: the task loss, each regularizer term weighted as
/// it enters the loss, and their sum.
pub struct StepLosses {
    pub task: f64,
    pub terms: Vec<(String, f64)>,
    pub total: f64,
}

/// One way of computing a training step. Gradients stay inside the stepper
/// between `losses` and `update`.
pub trait Stepper {
    /// Forward and backward pass on a batch of caption rows (and their images).
    fn losses(&mut self, captions: &[u32], dropout: &mut Rng) -> Result<StepLosses, TrainError>;
    /// The global L2 norm of the gradients of the last `losses` call.
    fn gradient_norm(&mut self) -> Result<f64, TrainError>;
    /// One optimizer update with the gradients multiplied by `grad_scale`.
    fn update(&mut self, lr: f64, grad_scale: f64) -> Result<(), TrainError>;
    /// The trained model.
    fn finish(self: Box<Self>) -> Result<Model, TrainError>;
}

/// Which step implementation trains: candle's autograd (any device) or the
/// fused CPU step. [`train_stage`] picks `Fused` on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Graph,
    Fused,
}

/// Trains one stage, starting from the previous model (or a fresh one).
pub fn train_stage(
    stage: &Stage,
    previous: Option<&Previous>,
    device: &Device,
) -> Result<Trained, TrainError> {
    let engine = if device.is_cpu() {
        Engine::Fused
    } else {
        Engine::Graph
    };
    train_stage_with(stage, previous, device, engine)
}

/// [`train_stage`] with a chosen engine (`Fused` needs the CPU).
pub fn train_stage_with(
    stage: &Stage,
    previous: Option<&Previous>,
    device: &Device,
    engine: Engine,
) -> Result<Trained, TrainError> {
    let t = stage.train;
    if let Some(p) = previous {
        if !p.model.device().same_device(device) {
            return Err(TrainError::DeviceMismatch {
                found: format!("{:?}", p.model.device().location()),
                wanted: format!("{:?}", device.location()),
            });
        }
    }
    let model = match previous {
        Some(p) => p.model.deep_clone()?,
        None => {
            let logit_scale = match &t.loss {
                LossSpec::Infonce {
                    temperature,
                    learnable: true,
                } => Some((1.0 / temperature).ln()),
                _ => None,
            };
            Model::new(
                stage.model,
                stage.data.image_dim,
                stage.data.text_dim,
                stage.seed,
                logit_scale,
                device,
            )?
        }
    };
    let stepper: Box<dyn Stepper + '_> = match engine {
        Engine::Fused if device.is_cpu() => {
            Box::new(fused::FusedStep::new(model, stage, previous)?)
        }
        _ => Box::new(graph::GraphStep::new(model, stage, previous)?),
    };
    run_steps(stage, stepper)
}

/// The epochs of a stage: batches (plus replay), learning rate, clipping, logging
/// and the finiteness checks, around whichever stepper computes the steps.
fn run_steps(stage: &Stage, mut stepper: Box<dyn Stepper + '_>) -> Result<Trained, TrainError> {
    let t = stage.train;
    let replay = stage.regularizer.iter().find_map(|r| match r {
        RegularizerSpec::Replay {
            memory,
            per_batch,
            sampler,
        } => Some((
            ReplayMemory::after_tasks(*memory, *sampler, &stage.past, stage.seed),
            *per_batch,
        )),
        _ => None,
    });
    let steps_per_epoch = epoch_batches(
        &stage.tasks,
        t.batch,
        t.negatives,
        stage.seed,
        stage.stage,
        0,
    )
    .len();
    let total_steps = steps_per_epoch * t.epochs as usize;
    let mut dropout_rng = Rng::derive(stage.seed, &["dropout", &stage.stage.to_string()]);
    let mut replay_rng = Rng::derive(stage.seed, &["replay", "draw", &stage.stage.to_string()]);
    let started = Instant::now();
    let mut log = Vec::with_capacity(total_steps);
    let mut step = 0;
    for epoch in 0..t.epochs as usize {
        for mut batch in epoch_batches(
            &stage.tasks,
            t.batch,
            t.negatives,
            stage.seed,
            stage.stage,
            epoch,
        ) {
            if let Some((memory, per_batch)) = &replay {
                batch.extend(memory.sample(*per_batch, &mut replay_rng));
            }
            let losses = stepper.losses(&batch, &mut dropout_rng)?;
            // Every term is checked so the message can name the one that went bad.
            let finite = |name: &str, value: f64| -> Result<f64, TrainError> {
                if value.is_finite() {
                    Ok(value)
                } else {
                    Err(TrainError::NonFinite {
                        task: stage.label.clone(),
                        epoch: epoch + 1,
                        step: step + 1,
                        term: name.to_string(),
                        value,
                    })
                }
            };
            finite("task loss", losses.task)?;
            for (name, value) in &losses.terms {
                finite(&format!("{name} term"), *value)?;
            }
            finite("total loss", losses.total)?;
            let grad_norm = finite("gradient norm", stepper.gradient_norm()?)?;
            let lr = optim::learning_rate(
                &t.schedule_lr,
                optim::base_lr(&t.optimizer),
                step,
                total_steps,
                steps_per_epoch,
            );
            stepper.update(lr, optim::clip_factor(grad_norm, t.grad_clip))?;
            log.push(LogRow {
                stage: stage.stage,
                task: stage.label.clone(),
                epoch: epoch + 1,
                step: step + 1,
                loss: losses.total,
                task_loss: losses.task,
                terms: losses.terms,
                lr,
                grad_norm,
                seconds: started.elapsed().as_secs_f64(),
            });
            step += 1;
            if let Some(f) = stage.on_step {
                f(step, total_steps);
            }
        }
    }
    Ok(Trained {
        model: stepper.finish()?,
        log,
    })
}
