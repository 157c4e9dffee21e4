//! The epochs of a stage around a [`Stepper`]: batches (and the batch terms,
//! replay), learning rate, clipping, logging and the finiteness checks. The two
//! steppers, `fused` (CPU) and `graph` (candle autograd), compute the same step.

use super::batches::{draw_distinct, epoch_batches, Batch};
use super::terms::BatchTerm;
use super::{optim, LogRow, Stage, TrainError, Trained};
use crate::model::Model;
use crate::rng::Rng;
use std::time::Instant;

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
    /// Forward and backward pass on a batch.
    fn losses(&mut self, batch: &Batch, dropout: &mut Rng) -> Result<StepLosses, TrainError>;
    /// The global L2 norm of the gradients of the last `losses` call.
    fn gradient_norm(&mut self) -> Result<f64, TrainError>;
    /// One optimizer update with the gradients multiplied by `grad_scale`.
    fn update(&mut self, lr: f64, grad_scale: f64) -> Result<(), TrainError>;
    /// The trained model.
    fn finish(self: Box<Self>) -> Result<Model, TrainError>;
}

/// Runs every epoch of `stage` with `stepper`; `batch_terms` change each batch.
pub fn run_steps(
    stage: &Stage,
    batch_terms: &[BatchTerm],
    mut stepper: Box<dyn Stepper + '_>,
) -> Result<Trained, TrainError> {
    let t = stage.train;
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
    let mut pseudo_rng = Rng::derive(
        stage.seed,
        &["pseudo_text", "draw", &stage.stage.to_string()],
    );
    let started = Instant::now();
    let mut log = Vec::with_capacity(total_steps);
    let mut step = 0;
    for epoch in 0..t.epochs as usize {
        for captions in epoch_batches(
            &stage.tasks,
            t.batch,
            t.negatives,
            stage.seed,
            stage.stage,
            epoch,
        ) {
            let fresh = captions.len();
            let mut batch = Batch {
                captions,
                negatives: Vec::new(),
            };
            // Replay first: pseudo texts go to the replayed pairs, whatever the
            // order the regularizer lists the two in.
            for term in batch_terms {
                if let BatchTerm::Replay { memory, per_batch } = term {
                    batch
                        .captions
                        .extend(memory.sample(*per_batch, &mut replay_rng));
                }
            }
            for term in batch_terms {
                match term {
                    BatchTerm::Replay { .. } => {}
                    BatchTerm::PseudoText { texts, per_image } => {
                        for row in fresh..batch.captions.len() {
                            let image = stage.data.caption_image[batch.captions[row] as usize];
                            let drawn =
                                draw_distinct(texts.of_image(image), *per_image, &mut pseudo_rng);
                            batch
                                .negatives
                                .extend(drawn.into_iter().map(|t| (row as u32, t)));
                        }
                    }
                }
            }
            if crate::interrupt::requested() {
                return Err(TrainError::Interrupted {
                    task: stage.label.clone(),
                    epoch: epoch + 1,
                    step: step + 1,
                });
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
