//! The previous model's embeddings, kept across a stage's batches. The previous
//! model is frozen (never updated, no dropout), so a row's embedding cannot
//! change within a stage: Mod-X and multimodal distillation need it in every
//! epoch, and recomputing it per batch doubled the forward passes of a step
//! (a third of a Mod-X step on 2 cores). Each row is embedded the first time a
//! batch holds it, by the same forward pass as before, and stored.

use super::net::{Net, Tape};
use crate::data::PairData;
use crate::model::Modality;

/// Most bytes the stored embeddings may take, counted as if every row the stage
/// trains on (its tasks and replay memory) were stored for both modalities. A
/// stage over more rows embeds each batch afresh. 256 MiB holds a Flickr30K-size
/// stage at 512 dimensions, about a tenth of COCO's features in memory.
pub const BUDGET_BYTES: usize = 256 << 20;

/// Whether a stage over `rows` caption rows (an image per caption at most)
/// stores its previous-model embeddings of `dim` floats.
pub fn fits(rows: usize, dim: usize) -> bool {
    2 * rows * dim * std::mem::size_of::<f32>() <= BUDGET_BYTES
}

const MISSING: u32 = u32::MAX;

/// One modality's stored embeddings, indexed by dataset row.
struct Stored {
    /// Per dataset row: its embedding's index in `values`, or [`MISSING`].
    slot: Vec<u32>,
    values: Vec<f32>,
}

impl Stored {
    fn new(rows: usize) -> Stored {
        Stored {
            slot: vec![MISSING; rows],
            values: Vec::new(),
        }
    }
}

/// The previous model's embeddings of every image and caption row a batch of
/// this stage has held so far.
pub struct OldEmbeddings {
    dim: usize,
    stored: [Stored; 2],
    /// Rows of the current batch not yet stored, for the forward pass.
    missing: Vec<u32>,
    /// The image row of each pair of the current batch.
    image_rows: Vec<u32>,
    tape: Tape,
}

impl OldEmbeddings {
    pub fn new(data: &PairData, dim: usize) -> OldEmbeddings {
        let images = data.image_features.len() / data.image_dim.max(1);
        OldEmbeddings {
            dim,
            stored: [Stored::new(images), Stored::new(data.caption_image.len())],
            missing: Vec::new(),
            image_rows: Vec::new(),
            tape: Tape::default(),
        }
    }

    /// `old`'s embeddings of a batch's pairs (caption rows): its images' to
    /// `images`, its captions' to `texts`, each (pairs x dim).
    pub fn batch(
        &mut self,
        old: &Net,
        data: &PairData,
        captions: &[u32],
        images: &mut Vec<f32>,
        texts: &mut Vec<f32>,
    ) {
        let mut image_rows = std::mem::take(&mut self.image_rows);
        image_rows.clear();
        image_rows.extend(captions.iter().map(|&c| data.caption_image[c as usize]));
        self.gather(old, data, Modality::Image, &image_rows, images);
        self.gather(old, data, Modality::Text, captions, texts);
        self.image_rows = image_rows;
    }

    /// Writes `old`'s embeddings of `rows` of modality `m` (image rows or
    /// caption rows, repeats allowed) to `out` (rows x dim), embedding the rows
    /// not stored yet first.
    fn gather(
        &mut self,
        old: &Net,
        data: &PairData,
        m: Modality,
        rows: &[u32],
        out: &mut Vec<f32>,
    ) {
        let k = match m {
            Modality::Image => 0,
            Modality::Text => 1,
        };
        let dim = self.dim;
        let stored = &mut self.stored[k];
        self.missing.clear();
        for &r in rows {
            if stored.slot[r as usize] == MISSING {
                // Marks the row as on its way so a repeat is embedded once.
                stored.slot[r as usize] = MISSING - 1;
                self.missing.push(r);
            }
        }
        if !self.missing.is_empty() {
            let feature_dim = match m {
                Modality::Image => data.image_dim,
                Modality::Text => data.text_dim,
            };
            let features = self.tape.features(self.missing.len(), feature_dim);
            for (row, &r) in features.chunks_exact_mut(feature_dim).zip(&self.missing) {
                row.copy_from_slice(match m {
                    Modality::Image => data.image(r),
                    Modality::Text => data.caption(r),
                });
            }
            old.forward(m, &mut self.tape, None);
            for (e, &r) in self.tape.embeddings.chunks_exact(dim).zip(&self.missing) {
                stored.slot[r as usize] = (stored.values.len() / dim) as u32;
                stored.values.extend_from_slice(e);
            }
        }
        out.clear();
        for &r in rows {
            let s = stored.slot[r as usize] as usize;
            out.extend_from_slice(&stored.values[s * dim..(s + 1) * dim]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::FusedStep;
    use crate::data::PairData;
    use crate::lang::*;
    use crate::model::Model;
    use crate::rng::Rng;
    use crate::train::batches::Batch;
    use crate::train::steps::Stepper;
    use crate::train::{terms, Previous, Stage};
    use candle_core::Device;

    /// A Mod-X step reads the same previous-model similarities whether the
    /// embeddings are stored across batches or recomputed for each: the stored
    /// path's losses follow the recomputed path's over batches that revisit rows.
    #[test]
    fn stored_embeddings_give_the_steps_of_recomputed_ones() {
        let (rows, image_dim, text_dim) = (40usize, 12usize, 8usize);
        let mut rng = Rng::derive(3, &["old-embeddings"]);
        let images: Vec<f32> = (0..rows * image_dim).map(|_| rng.normal() as f32).collect();
        let captions: Vec<f32> = (0..2 * rows * text_dim)
            .map(|_| rng.normal() as f32)
            .collect();
        let caption_image: Vec<u32> = (0..2 * rows as u32).map(|c| c / 2).collect();
        let data = PairData {
            image_features: &images,
            image_dim,
            caption_features: &captions,
            text_dim,
            caption_image: &caption_image,
        };
        let branch = BranchSpec {
            hidden: vec![16],
            embed: 8,
            activation: Activation::Relu,
            dropout: 0.0,
        };
        let model = ModelSpec {
            image: branch.clone(),
            text: branch,
            share: 0,
        };
        let train = TrainSpec {
            loss: LossSpec::Infonce {
                temperature: 0.1,
                learnable: false,
            },
            optimizer: OptimizerSpec::Adamw {
                lr: 1e-2,
                weight_decay: 0.0,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            schedule_lr: LrSchedule::Constant,
            epochs: 1,
            batch: 8,
            negatives: Negatives::WithinTask,
            regularizer: vec![RegularizerSpec::Modx {
                alpha: 1.0,
                temperature: 0.5,
                correct: false,
            }],
            decouple: false,
            grad_clip: None,
            log: LogEvery::Step,
        };
        let task: Vec<u32> = (0..2 * rows as u32).collect();
        let stage = Stage {
            model: &model,
            train: &train,
            schedule: Schedule::Sequential,
            seed: 1,
            stage: 2,
            label: "t".into(),
            regularizer: &train.regularizer,
            data,
            pseudo_texts: None,
            tasks: vec![&task],
            past: vec![],
            on_step: None,
        };
        let old = Model::new(&model, image_dim, text_dim, 7, None, &Device::Cpu).unwrap();
        let previous = Previous {
            model: &old,
            importance: vec![],
        };
        let step = |store: bool| {
            let terms = terms::resolve(&stage, Some(&previous)).unwrap();
            let start = old.deep_clone().unwrap();
            let mut s = FusedStep::new(start, &stage, terms.loss).unwrap();
            assert!(s.old_embeddings.is_some(), "a small stage stores them");
            if !store {
                s.old_embeddings = None;
            }
            s
        };
        let (mut stored, mut recomputed) = (step(true), step(false));
        // Rows recur across batches, and within one (two captions of an image).
        let batches: Vec<Vec<u32>> = (0..6)
            .map(|k| {
                (0..8)
                    .map(|j| ((k * 5 + j * 3) % (2 * rows)) as u32)
                    .collect()
            })
            .collect();
        let mut active = false;
        for captions in batches {
            let batch = Batch {
                captions,
                negatives: vec![],
            };
            let a = stored.losses(&batch, &mut Rng::derive(1, &["d"])).unwrap();
            let b = recomputed
                .losses(&batch, &mut Rng::derive(1, &["d"]))
                .unwrap();
            let (modx_a, modx_b) = (a.terms[0].1, b.terms[0].1);
            // Zero at the first step: the model starts as the previous one.
            active |= modx_b > 1e-6;
            assert!(
                (modx_a - modx_b).abs() <= 1e-5 * modx_b.abs(),
                "{modx_a} against {modx_b}"
            );
            assert!((a.total - b.total).abs() <= 1e-5 * b.total.abs());
            for s in [&mut stored, &mut recomputed] {
                s.gradient_norm().unwrap();
                s.update(1e-2, 1.0).unwrap();
            }
        }
        assert!(active, "the Mod-X term moved off zero");
    }

    #[test]
    fn the_budget_counts_both_modalities() {
        let dim = 512;
        let rows = super::BUDGET_BYTES / (2 * dim * 4);
        assert!(super::fits(rows, dim));
        assert!(!super::fits(rows + 1, dim));
    }
}
