//! One training step of the two-branch MLP (image 2048→1024→512, text 768→1024→512,
//! batch 128, AdamW), with triplet-hardest and InfoNCE losses, on the CPU.
//! Run: `cargo bench --bench train_step`. Peers (PyTorch) come with issue #9's harness.

use candle_core::Device;
use lethe::lang::*;
use lethe::rng::Rng;
use lethe::train::{train_stage, PairData, Stage};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let (images, captions, batch) = (1024usize, 1024usize, 128usize);
    let mut rng = Rng::derive(1, &["bench"]);
    let image_features: Vec<f32> = (0..images * 2048).map(|_| rng.next_f32() - 0.5).collect();
    let caption_features: Vec<f32> = (0..captions * 768).map(|_| rng.next_f32() - 0.5).collect();
    let caption_image: Vec<u32> = (0..captions as u32).collect();
    let data = PairData {
        image_features: &image_features,
        image_dim: 2048,
        caption_features: &caption_features,
        text_dim: 768,
        caption_image: &caption_image,
    };
    let branch = BranchSpec {
        hidden: vec![1024],
        embed: 512,
        activation: Activation::Relu,
        dropout: 0.0,
    };
    let model = ModelSpec {
        image: branch.clone(),
        text: branch,
        share: 0,
    };
    let rows: Vec<u32> = (0..captions as u32).collect();
    for (name, loss) in [
        (
            "triplet-hardest",
            LossSpec::Triplet {
                margin: 0.2,
                negatives: TripletNegatives::Hardest,
            },
        ),
        (
            "infonce",
            LossSpec::Infonce {
                temperature: 0.07,
                learnable: false,
            },
        ),
    ] {
        let train = TrainSpec {
            loss,
            optimizer: OptimizerSpec::Adamw {
                lr: 2e-4,
                weight_decay: 1e-4,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            schedule_lr: LrSchedule::Constant,
            epochs: 3,
            batch,
            negatives: Negatives::WithinTask,
            regularizer: vec![],
            decouple: false,
            grad_clip: Some(2.0),
            log: LogEvery::Step,
        };
        let stage = Stage {
            model: &model,
            train: &train,
            schedule: Schedule::Sequential,
            seed: 1,
            stage: 1,
            label: "bench".into(),
            regularizer: &[],
            data,
            tasks: vec![&rows],
            past: vec![],
            on_step: None,
        };
        let started = Instant::now();
        let out = train_stage(&stage, None, &Device::Cpu).expect("training");
        let seconds = started.elapsed().as_secs_f64();
        // Steady state: skip the first epoch (allocator and cache warm-up).
        let per_epoch = out.log.len() / 3;
        let warm = out.log[per_epoch - 1].seconds;
        let steps = (out.log.len() - per_epoch) as f64;
        println!(
            "train_step {name}: {:.1} steps/s ({:.1} ms/step, {} steps, {} threads; whole run {:.2} s)",
            steps / (out.log.last().unwrap().seconds - warm),
            1e3 * (out.log.last().unwrap().seconds - warm) / steps,
            out.log.len(),
            rayon::current_num_threads(),
            seconds
        );
    }
}
