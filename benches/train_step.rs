//! One training step of the two-branch MLP (image 2048→1024→512, text 768→1024→512,
//! ReLU, batch 128, AdamW, clipping at 2) on the CPU: triplet with hardest
//! negatives, InfoNCE, triplet + EWC, InfoNCE + Mod-X; for each, the fused step
//! (what `lethe run` uses on the CPU) and candle's autograd step, against the
//! arithmetic floor (the step's matrix-product FLOPs at the measured matmul rate).
//! With `LETHE_PEER_PYTHON` (a Python with torch; `bench/run` sets one up) the
//! same steps run in PyTorch (`bench/train_peer.py`) and `ratio` lines follow.
//! Run: `cargo bench --bench train_step`. With `LETHE_BENCH_DEVICE=cuda` (a build
//! with `--features cuda`) the candle autograd step runs on the GPU instead, against
//! PyTorch on the same GPU (`bench/gpu`).

use candle_core::{Device, Tensor};
use lethe::data::PairData;
use lethe::lang::*;
use lethe::model::Model;
use lethe::rng::Rng;
use lethe::train::importance::{self, Importance};
use lethe::train::{train_stage_with, Engine, Previous, Stage};
use std::path::Path;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: usize = 1024;
const BATCH: usize = 128;
const EPOCHS: u32 = 6;

fn train_spec(loss: LossSpec, regularizer: Vec<RegularizerSpec>) -> TrainSpec {
    TrainSpec {
        loss,
        optimizer: OptimizerSpec::Adamw {
            lr: 2e-4,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        schedule_lr: LrSchedule::Constant,
        epochs: EPOCHS,
        batch: BATCH,
        negatives: Negatives::WithinTask,
        regularizer,
        decouple: false,
        grad_clip: Some(2.0),
        log: LogEvery::Step,
    }
}

/// Steps per second after the first epoch (allocator and cache warm-up).
fn steady_rate(log: &[lethe::train::LogRow]) -> f64 {
    let per_epoch = log.len() / EPOCHS as usize;
    let warm = log[per_epoch - 1].seconds;
    (log.len() - per_epoch) as f64 / (log.last().unwrap().seconds - warm)
}

/// FLOPs of the step's matrix products: forward and weight gradients of every
/// layer, input gradients of all but the first, S and its two gradients.
fn step_flops() -> f64 {
    let b = BATCH as f64;
    let layers = [
        (2048.0, 1024.0),
        (1024.0, 512.0),
        (768.0, 1024.0),
        (1024.0, 512.0),
    ];
    let weights: f64 = layers.iter().map(|(i, o)| i * o).sum();
    let hidden_inputs = 2.0 * 1024.0 * 512.0;
    2.0 * b * (2.0 * weights + hidden_inputs) + 3.0 * 2.0 * b * b * 512.0
}

/// The CPU's f32 matrix-product rate at the step's largest shape, GFLOP/s.
fn matmul_rate() -> f64 {
    let a = Tensor::rand(0f32, 1f32, (BATCH, 2048), &Device::Cpu).unwrap();
    let w = Tensor::rand(0f32, 1f32, (2048, 1024), &Device::Cpu).unwrap();
    let _ = a.matmul(&w).unwrap();
    let reps = 200;
    let started = Instant::now();
    for _ in 0..reps {
        let _ = a.matmul(&w).unwrap();
    }
    reps as f64 * 2.0 * (BATCH * 2048 * 1024) as f64 / started.elapsed().as_secs_f64() / 1e9
}

fn stage<'a>(
    model: &'a ModelSpec,
    train: &'a TrainSpec,
    k: usize,
    data: PairData<'a>,
    rows: &'a [u32],
) -> Stage<'a> {
    Stage {
        model,
        train,
        schedule: Schedule::Sequential,
        seed: 1,
        stage: k,
        label: "bench".into(),
        regularizer: if k > 1 { &train.regularizer } else { &[] },
        data,
        pseudo_texts: None,
        tasks: vec![rows],
        past: vec![],
        on_step: None,
    }
}

fn main() {
    let mut rng = Rng::derive(1, &["bench"]);
    let image_features: Vec<f32> = (0..ROWS * 2048).map(|_| rng.next_f32() - 0.5).collect();
    let caption_features: Vec<f32> = (0..ROWS * 768).map(|_| rng.next_f32() - 0.5).collect();
    let caption_image: Vec<u32> = (0..ROWS as u32).collect();
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
    let rows: Vec<u32> = (0..ROWS as u32).collect();
    let threads = rayon::current_num_threads();
    let triplet = LossSpec::Triplet {
        margin: 0.2,
        negatives: TripletNegatives::Hardest,
        reduction: Reduction::Sum,
    };
    let infonce = LossSpec::Infonce {
        temperature: 0.07,
        learnable: false,
    };
    // `LETHE_BENCH_DEVICE=cuda`: every model, the previous one included, on the GPU
    // (a stage continues from its previous model on that model's device).
    let gpu = std::env::var("LETHE_BENCH_DEVICE").as_deref() == Ok("cuda");
    let device = if gpu {
        Device::new_cuda(0).unwrap_or_else(|e| {
            eprintln!("no CUDA device (build with --features cuda): {e}");
            std::process::exit(2);
        })
    } else {
        Device::Cpu
    };
    // The previous model and Fisher the EWC and Mod-X variants start from.
    let mut first_spec = train_spec(triplet.clone(), vec![]);
    first_spec.epochs = 1;
    let first: Model = train_stage_with(
        &stage(&model, &first_spec, 1, data, &rows),
        None,
        &device,
        if gpu { Engine::Graph } else { Engine::Fused },
    )
    .expect("first stage")
    .model;
    let fisher: Importance = importance::fisher(
        &first,
        &data,
        &rows,
        &triplet,
        BATCH,
        1,
        None,
        Accumulate::Sum,
    )
    .expect("fisher");
    let previous = Previous {
        model: &first,
        importance: vec![&fisher],
    };
    let variants = [
        ("triplet", train_spec(triplet.clone(), vec![])),
        ("infonce", train_spec(infonce.clone(), vec![])),
        (
            "triplet_ewc",
            train_spec(
                triplet,
                vec![RegularizerSpec::Ewc {
                    lambda: 100.0,
                    accumulate: Accumulate::Sum,
                    on: Coverage::Both,
                }],
            ),
        ),
        (
            "infonce_modx",
            train_spec(
                infonce,
                vec![RegularizerSpec::Modx {
                    alpha: 1.0,
                    temperature: 1.0,
                    correct: true,
                }],
            ),
        ),
    ];
    if gpu {
        return on_gpu(&device, &model, &variants, data, &rows, &previous);
    }
    let rate = matmul_rate();
    let floor_ms = step_flops() / (rate * 1e9) * 1e3;
    println!(
        "train_step floor: {:.2} GFLOP a step at {rate:.0} GFLOP/s (candle/gemm, 128x2048 by 2048x1024, {threads} threads) = {floor_ms:.1} ms, {:.0} steps/s",
        step_flops() / 1e9,
        1e3 / floor_ms
    );
    let mut lethe = Vec::new();
    for (name, spec) in &variants {
        let k = if spec.regularizer.is_empty() { 1 } else { 2 };
        let prev = (k == 2).then_some(&previous);
        let mut rates = Vec::new();
        // LETHE_BENCH_ENGINES=fused leaves out candle's autograd step (for profiling).
        let engines: &[Engine] = if std::env::var("LETHE_BENCH_ENGINES").as_deref() == Ok("fused") {
            &[Engine::Fused]
        } else {
            &[Engine::Fused, Engine::Graph]
        };
        for &engine in engines {
            let out = train_stage_with(
                &stage(&model, spec, k, data, &rows),
                prev,
                &Device::Cpu,
                engine,
            )
            .expect("training");
            rates.push(steady_rate(&out.log));
        }
        println!(
            "train_step {name}: fused {:.1} steps/s ({:.1} ms, {:.0}% of the floor's speed); candle autograd {:.1} steps/s; {threads} threads",
            rates[0],
            1e3 / rates[0],
            100.0 * rates[0] * floor_ms / 1e3,
            rates.get(1).copied().unwrap_or(f64::NAN)
        );
        println!("figure train_step_{name} {:.2}", rates[0]);
        lethe.push((name.to_string(), rates[0]));
    }
    let Ok(python) = std::env::var("LETHE_PEER_PYTHON") else {
        println!("(set LETHE_PEER_PYTHON, or run bench/run, for the PyTorch peer)");
        return;
    };
    let out = std::process::Command::new(python)
        .arg(peer_script("train_peer.py"))
        .arg(threads.to_string())
        .arg("80")
        .output()
        .expect("run the PyTorch peer");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The floor is the machine's best measured f32 product rate: gemm's (above)
    // or numpy's BLAS, whichever is faster.
    let numpy_rate = stdout.lines().find_map(|line| {
        line.strip_prefix("peer matmul_numpy ")
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let Some(numpy_rate) = numpy_rate {
        let best = rate.max(numpy_rate);
        let floor_ms = step_flops() / (best * 1e9) * 1e3;
        println!(
            "train_step floor, the best measured rate: gemm {rate:.0}, numpy's BLAS {numpy_rate:.0} GFLOP/s = {floor_ms:.1} ms, {:.0} steps/s",
            1e3 / floor_ms
        );
        for (name, ours) in &lethe {
            println!(
                "train_step {name}: fused at {:.0}% of the best floor's speed",
                100.0 * ours * floor_ms / 1e3
            );
        }
    }
    for line in stdout.lines() {
        if line.starts_with("compile ") {
            println!("{line}");
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let ["peer", figure, value] = parts.as_slice() else {
            continue;
        };
        let (base, peer) = match figure.strip_suffix("_compiled") {
            Some(base) => (base, "torch_compile"),
            None => (*figure, "pytorch"),
        };
        let (Some((_, ours)), Ok(theirs)) = (
            lethe
                .iter()
                .find(|(n, _)| format!("train_step_{n}") == base),
            value.parse::<f64>(),
        ) else {
            continue;
        };
        println!(
            "{figure}: PyTorch{} {theirs:.1} steps/s",
            if peer == "torch_compile" {
                " (torch.compile)"
            } else {
                ""
            }
        );
        println!("ratio {base}_vs_{peer} {:.2}", ours / theirs);
    }
}

/// A peer script: `bench/` of the working directory when there is one (a binary
/// carried to another machine), else of the source tree it was built from.
fn peer_script(name: &str) -> std::path::PathBuf {
    let here = Path::new("bench").join(name);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join(name)
}

/// The candle autograd step on the GPU (the fused step is CPU-only), against
/// PyTorch on the same GPU.
fn on_gpu(
    device: &Device,
    model: &ModelSpec,
    variants: &[(&str, TrainSpec)],
    data: PairData,
    rows: &[u32],
    previous: &Previous,
) {
    let mut lethe = Vec::new();
    for (name, spec) in variants {
        let k = if spec.regularizer.is_empty() { 1 } else { 2 };
        let prev = (k == 2).then_some(previous);
        let out = train_stage_with(
            &stage(model, spec, k, data, rows),
            prev,
            device,
            Engine::Graph,
        )
        .expect("training on the GPU");
        let rate = steady_rate(&out.log);
        println!(
            "train_step {name} on cuda: candle autograd {rate:.1} steps/s ({:.2} ms)",
            1e3 / rate
        );
        println!("figure train_step_cuda_{name} {rate:.2}");
        lethe.push((format!("train_step_{name}"), rate));
    }
    let Ok(python) = std::env::var("LETHE_PEER_PYTHON") else {
        println!("(set LETHE_PEER_PYTHON to a Python with CUDA torch for the PyTorch peer)");
        return;
    };
    let out = std::process::Command::new(python)
        .arg(peer_script("train_peer.py"))
        .args(["1", "200", "cuda"])
        .output()
        .expect("run the PyTorch peer");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let ["peer", figure, value] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
            let (Some((_, ours)), Ok(theirs)) = (
                lethe.iter().find(|(n, _)| n == figure),
                value.parse::<f64>(),
            ) else {
                continue;
            };
            println!("{figure} on cuda: PyTorch {theirs:.1} steps/s");
            println!("ratio {figure}_cuda_vs_pytorch_cuda {:.2}", ours / theirs);
        }
    }
}
