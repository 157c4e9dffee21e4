//! Training behaves as the methods promise: it learns, EWC holds old weights,
//! results are bit-identical for a seed, divergence is reported precisely, and
//! checkpoints round-trip with their metadata.

use candle_core::Device;
use lethe::data::PairData;
use lethe::lang::*;
use lethe::model::{load_checkpoint, save_checkpoint, CheckpointMeta, Modality, Model};
use lethe::rng::Rng;
use lethe::train::importance::{self, Importance};
use lethe::train::tensors::GatherRows;
use lethe::train::{train_stage, train_stage_with, Engine, Previous, Stage, TrainError};

/// A small cross-modal set: per image a latent vector; image and caption features
/// are different random non-linear maps of it plus noise; two captions per image.
/// Three domains with different latent means.
struct Toy {
    images: Vec<f32>,
    captions: Vec<f32>,
    caption_image: Vec<u32>,
    /// Per domain: train caption rows, test image rows.
    train: Vec<Vec<u32>>,
    test: Vec<Vec<u32>>,
}

const LATENT: usize = 8;
const IMAGE_DIM: usize = 24;
const TEXT_DIM: usize = 16;

fn toy() -> Toy {
    let mut rng = Rng::derive(99, &["toy"]);
    let map = |rng: &mut Rng, out: usize| -> Vec<f64> {
        (0..out * LATENT)
            .map(|_| rng.normal() / (LATENT as f64).sqrt())
            .collect()
    };
    let (a, b) = (map(&mut rng, IMAGE_DIM), map(&mut rng, TEXT_DIM));
    let apply = |m: &[f64], z: &[f64], out: usize, rng: &mut Rng, noise: f64| -> Vec<f32> {
        (0..out)
            .map(|o| {
                ((0..LATENT)
                    .map(|i| m[o * LATENT + i] * z[i])
                    .sum::<f64>()
                    .tanh()
                    * 2.0
                    + noise * rng.normal()) as f32
            })
            .collect()
    };
    let mut t = Toy {
        images: vec![],
        captions: vec![],
        caption_image: vec![],
        train: vec![vec![]; 3],
        test: vec![vec![]; 3],
    };
    for d in 0..3 {
        let mean: Vec<f64> = (0..LATENT).map(|_| rng.normal()).collect();
        for i in 0..80 {
            let z: Vec<f64> = mean.iter().map(|m| m + rng.normal()).collect();
            let image = (t.images.len() / IMAGE_DIM) as u32;
            t.images.extend(apply(&a, &z, IMAGE_DIM, &mut rng, 0.1));
            let held_out = i % 5 == 0;
            if held_out {
                t.test[d].push(image);
            }
            for _ in 0..2 {
                let c = t.caption_image.len() as u32;
                t.captions.extend(apply(&b, &z, TEXT_DIM, &mut rng, 0.1));
                t.caption_image.push(image);
                if !held_out {
                    t.train[d].push(c);
                }
            }
        }
    }
    t
}

/// Mean cosine distance between two models' image embeddings of `rows`.
fn image_drift(anchor: &Model, model: &Model, data: &PairData, rows: &[u32]) -> f32 {
    let x = data.gather(Modality::Image, rows, &Device::Cpu).unwrap();
    let a = anchor.forward(Modality::Image, &x, None, true).unwrap();
    let b = model.forward(Modality::Image, &x, None, true).unwrap();
    1.0 - (a * b)
        .unwrap()
        .sum(1)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// im2txt Recall@k (percent) of `images` (image rows) against `captions` (caption rows).
fn im2txt_recall(
    model: &Model,
    data: &PairData,
    images: &[u32],
    captions: &[u32],
    k: usize,
) -> f64 {
    let embed = |m, rows| {
        model
            .forward(m, &data.gather(m, rows, &Device::Cpu).unwrap(), None, true)
            .unwrap()
    };
    let s = embed(Modality::Image, images)
        .matmul(&embed(Modality::Text, captions).t().unwrap())
        .unwrap();
    let s = s.to_vec2::<f32>().unwrap();
    let hits = s
        .iter()
        .zip(images)
        .filter(|(row, &img)| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
            order[..k]
                .iter()
                .any(|&j| data.caption_image[captions[j] as usize] == img)
        })
        .count();
    100.0 * hits as f64 / images.len() as f64
}

impl Toy {
    fn data(&self) -> PairData<'_> {
        PairData {
            image_features: &self.images,
            image_dim: IMAGE_DIM,
            caption_features: &self.captions,
            text_dim: TEXT_DIM,
            caption_image: &self.caption_image,
        }
    }

    /// im2txt Recall@1 on a domain's test images (gallery: their captions).
    fn recall_at_1(&self, model: &Model, domain: usize) -> f64 {
        let images = &self.test[domain];
        let captions: Vec<u32> = (0..self.caption_image.len() as u32)
            .filter(|c| images.contains(&self.caption_image[*c as usize]))
            .collect();
        im2txt_recall(model, &self.data(), images, &captions, 1)
    }
}

fn specs(regularizer: Vec<RegularizerSpec>, share: usize) -> (ModelSpec, TrainSpec) {
    let branch = |hidden| BranchSpec {
        hidden,
        embed: 16,
        activation: Activation::Relu,
        dropout: 0.0,
    };
    (
        ModelSpec {
            image: branch(vec![32]),
            text: branch(vec![32]),
            share,
        },
        TrainSpec {
            loss: LossSpec::Triplet {
                margin: 0.2,
                negatives: TripletNegatives::Hardest,
                reduction: Reduction::Mean,
            },
            optimizer: OptimizerSpec::Adamw {
                lr: 2e-3,
                weight_decay: 1e-4,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            schedule_lr: LrSchedule::Constant,
            epochs: 15,
            batch: 32,
            negatives: Negatives::WithinTask,
            regularizer,
            decouple: false,
            grad_clip: Some(2.0),
            log: LogEvery::Epoch,
        },
    )
}

fn stage<'a>(toy: &'a Toy, m: &'a ModelSpec, t: &'a TrainSpec, k: usize, seed: u64) -> Stage<'a> {
    Stage {
        model: m,
        train: t,
        schedule: Schedule::Sequential,
        seed,
        stage: k + 1,
        label: format!("d{}", k + 1),
        regularizer: if k == 0 { &[] } else { &t.regularizer },
        data: toy.data(),
        pseudo_texts: None,
        tasks: vec![&toy.train[k]],
        past: (0..k).map(|j| ("past", toy.train[j].as_slice())).collect(),
        on_step: None,
    }
}

#[test]
fn training_learns_far_above_chance() {
    let toy = toy();
    let (m, t) = specs(vec![], 0);
    let trained = train_stage(&stage(&toy, &m, &t, 0, 1), None, &Device::Cpu).unwrap();
    let recall = toy.recall_at_1(&trained.model, 0);
    let chance = 100.0 / toy.test[0].len() as f64; // 16 test images: 6.25%
    assert!(
        recall > 6.0 * chance,
        "R@1 {recall:.1}% vs chance {chance:.1}%"
    );
    let first = trained.log.first().unwrap().loss;
    let last = trained.log.last().unwrap().loss;
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

fn distance(a: &Model, b: &Model) -> f64 {
    a.params()
        .iter()
        .zip(b.params())
        .map(|(x, y)| {
            (x.var.as_detached_tensor() - y.var.as_detached_tensor())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        })
        .sum()
}

#[test]
fn strong_ewc_keeps_old_weights_and_embeddings() {
    let toy = toy();
    let (m, ft) = specs(vec![], 0);
    let first = train_stage(&stage(&toy, &m, &ft, 0, 3), None, &Device::Cpu)
        .unwrap()
        .model;
    let fisher: Importance = importance::fisher(
        &first,
        &toy.data(),
        &toy.train[0],
        &ft.loss,
        ft.batch,
        3,
        None,
        Accumulate::Sum,
    )
    .unwrap();
    let (_, ewc) = specs(
        vec![RegularizerSpec::Ewc {
            lambda: 1e5,
            accumulate: Accumulate::Sum,
            on: Coverage::Both,
        }],
        0,
    );
    let previous = Previous {
        model: &first,
        importance: vec![&fisher],
    };
    let after_ft = train_stage(&stage(&toy, &m, &ft, 1, 3), Some(&previous), &Device::Cpu).unwrap();
    let after_ewc =
        train_stage(&stage(&toy, &m, &ewc, 1, 3), Some(&previous), &Device::Cpu).unwrap();
    let (d_ft, d_ewc) = (
        distance(&first, &after_ft.model),
        distance(&first, &after_ewc.model),
    );
    assert!(
        d_ewc < 0.3 * d_ft,
        "EWC moved {d_ewc:.4}, fine-tuning {d_ft:.4}"
    );
    assert!(after_ewc
        .log
        .iter()
        .all(|r| r.terms.len() == 1 && r.terms[0].0 == "ewc"));
    // Old-task embeddings drift less too.
    let drift = |model: &Model| image_drift(&first, model, &toy.data(), &toy.test[0]);
    assert!(drift(&after_ewc.model) < 0.5 * drift(&after_ft.model));
}

#[test]
fn every_regularizer_trains_and_logs_its_term() {
    let toy = toy();
    let (m, base) = specs(vec![], 0);
    let first = train_stage(&stage(&toy, &m, &base, 0, 4), None, &Device::Cpu)
        .unwrap()
        .model;
    let omega = importance::omega(&first, &toy.data(), &toy.train[0], None).unwrap();
    let regularizer = vec![
        RegularizerSpec::Mas {
            lambda: 1.0,
            on: Coverage::Image,
        },
        RegularizerSpec::Modx {
            alpha: 20.0,
            temperature: 1.0,
            correct: true,
        },
        RegularizerSpec::Distill {
            lambda: 1.0,
            temperature: 0.1,
        },
        RegularizerSpec::Replay {
            memory: 40,
            per_batch: 8,
            sampler: Sampler::Balanced,
        },
    ];
    let (_, mut t) = specs(regularizer, 0);
    t.epochs = 2;
    let previous = Previous {
        model: &first,
        importance: vec![&omega],
    };
    let out = train_stage(&stage(&toy, &m, &t, 1, 4), Some(&previous), &Device::Cpu).unwrap();
    let names: Vec<&str> = out.log[0].terms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["mas", "modx", "distill"]);
    assert!(out
        .log
        .iter()
        .any(|r| r.terms.iter().all(|(_, v)| *v > 0.0)));
}

#[test]
fn same_seed_gives_identical_checkpoint_bytes() {
    let toy = toy();
    let (m, mut t) = specs(vec![], 1);
    t.epochs = 3;
    let dir = tempfile::tempdir().unwrap();
    let save = |seed: u64, name: &str| {
        let trained = train_stage(&stage(&toy, &m, &t, 0, seed), None, &Device::Cpu).unwrap();
        let path = dir.path().join(name);
        let meta = CheckpointMeta::new(
            "model",
            "k",
            serde_json::json!({"seed": seed}),
            IMAGE_DIM,
            TEXT_DIM,
        );
        save_checkpoint(&path, &trained.model.named_tensors(), &meta).unwrap();
        std::fs::read(path).unwrap()
    };
    assert_eq!(save(5, "a"), save(5, "b"));
    assert_ne!(save(5, "c"), save(6, "d"));
}

#[test]
fn shared_layer_is_one_tensor_in_the_checkpoint_and_round_trips() {
    let (m, _) = specs(vec![], 1);
    let model = Model::new(&m, IMAGE_DIM, TEXT_DIM, 1, None, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let meta = CheckpointMeta::new("model", "key", serde_json::json!({}), IMAGE_DIM, TEXT_DIM);
    save_checkpoint(&path, &model.named_tensors(), &meta).unwrap();
    let (tensors, read_meta) = load_checkpoint(&path, "model", &Device::Cpu).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "image.0.bias",
            "image.0.weight",
            "shared.0.bias",
            "shared.0.weight",
            "text.0.bias",
            "text.0.weight"
        ]
    );
    assert_eq!(read_meta, meta);
    let back = Model::with_values(&m, IMAGE_DIM, TEXT_DIM, &tensors, &Device::Cpu).unwrap();
    assert_eq!(distance(&model, &back), 0.0);
    // Other shapes, or another kind of checkpoint, are clear errors.
    let (other, _) = specs(vec![], 0);
    let err = Model::with_values(&other, IMAGE_DIM, TEXT_DIM, &tensors, &Device::Cpu).unwrap_err();
    assert!(
        err.contains("is missing") || err.contains("unexpected"),
        "{err}"
    );
    let wrong_dims =
        Model::with_values(&m, IMAGE_DIM + 1, TEXT_DIM, &tensors, &Device::Cpu).unwrap_err();
    assert!(
        wrong_dims.contains("has shape [32, 24], the model expects [32, 25]"),
        "{wrong_dims}"
    );
    let err = load_checkpoint(&path, "importance", &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a `model` checkpoint, expected `importance`"),
        "{err}"
    );
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = load_checkpoint(&path, "model", &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a safetensors file"), "{err}");
}

#[test]
fn divergence_names_task_epoch_step_and_term() {
    let toy = toy();
    let (m, mut t) = specs(vec![], 0);
    t.optimizer = OptimizerSpec::Sgd {
        lr: 1e30,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    t.grad_clip = None;
    let err = match train_stage(&stage(&toy, &m, &t, 0, 1), None, &Device::Cpu) {
        Err(e) => e,
        Ok(_) => panic!("a learning rate of 1e30 must diverge"),
    };
    assert!(matches!(err, TrainError::NonFinite { .. }));
    let text = err.to_string();
    assert!(
        text.starts_with("training diverged at d1, epoch 1, step "),
        "{text}"
    );
    assert!(
        text.contains("task loss") || text.contains("gradient norm") || text.contains("total loss"),
        "{text}"
    );
}

/// The error each engine gives when `stage` is trained from `previous`.
fn failure_of_both_engines(stage: &Stage, previous: Option<&Previous>) -> [String; 2] {
    [Engine::Fused, Engine::Graph].map(|engine| {
        match train_stage_with(stage, previous, &Device::Cpu, engine) {
            Err(TrainError::MissingInput { term, input }) => format!("{term}: {input}"),
            Err(e) => panic!("{engine:?}: another error than a missing input: {e}"),
            Ok(_) => panic!("{engine:?}: trained without its regularizer's input"),
        }
    })
}

#[test]
fn a_regularizer_without_its_input_fails_the_stage_instead_of_being_dropped() {
    let toy = toy();
    let (m, mut first_spec) = specs(vec![], 0);
    first_spec.epochs = 1;
    let first = train_stage(&stage(&toy, &m, &first_spec, 0, 1), None, &Device::Cpu)
        .unwrap()
        .model;
    let omega = importance::omega(&first, &toy.data(), &toy.train[0], None).unwrap();
    let (_, ewc) = specs(
        vec![RegularizerSpec::Ewc {
            lambda: 1.0,
            accumulate: Accumulate::Sum,
            on: Coverage::Both,
        }],
        0,
    );
    // No importance at all, and only another method's (MAS's omega).
    for importance in [vec![], vec![&omega]] {
        let previous = Previous {
            model: &first,
            importance,
        };
        let errors = failure_of_both_engines(&stage(&toy, &m, &ewc, 1, 1), Some(&previous));
        assert_eq!(
            errors,
            ["ewc: a fisher importance estimate"; 2].map(String::from)
        );
    }
    // A distillation term with no previous model to distil from.
    let (_, modx) = specs(
        vec![RegularizerSpec::Modx {
            alpha: 1.0,
            temperature: 1.0,
            correct: false,
        }],
        0,
    );
    let errors = failure_of_both_engines(&stage(&toy, &m, &modx, 1, 1), None);
    assert_eq!(
        errors,
        ["modx: the previous stage's model"; 2].map(String::from)
    );
}

#[test]
fn on_the_small_synthetic_set_training_learns_and_strong_ewc_holds_the_old_task() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest =
        lethe::data::Manifest::load(&repo.join("datasets/synthetic/small.yaml")).unwrap();
    let split = lethe::data::load_split(&manifest, "domains").unwrap();
    let (mut m, mut ft) = specs(vec![], 0);
    // The architecture of pipelines/synthetic-small.pipe.
    m.image.hidden = vec![128];
    m.text.hidden = vec![128];
    m.image.embed = 64;
    m.text.embed = 64;
    ft.epochs = 10;
    ft.batch = 64;
    ft.optimizer = OptimizerSpec::Adamw {
        lr: 1e-3,
        weight_decay: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    fn stage<'a>(
        m: &'a ModelSpec,
        t: &'a TrainSpec,
        split: &'a lethe::data::LoadedSplit,
        k: usize,
        reg: &'a [RegularizerSpec],
    ) -> Stage<'a> {
        Stage {
            model: m,
            train: t,
            schedule: Schedule::Sequential,
            seed: 1,
            stage: k + 1,
            label: split.tasks[k].name.clone(),
            regularizer: reg,
            data: split.pairs(),
            pseudo_texts: None,
            tasks: vec![&split.tasks[k].train_captions],
            past: vec![],
            on_step: None,
        }
    }
    let first = train_stage(&stage(&m, &ft, &split, 0, &[]), None, &Device::Cpu)
        .unwrap()
        .model;
    // im2txt R@10 on d1's test images among all of d1's test captions.
    let d1 = &split.tasks[0];
    let recall = im2txt_recall(
        &first,
        &split.pairs(),
        &d1.test_images,
        &d1.test_captions,
        10,
    );
    // Each test image has 3 of the task's test captions: chance of a top-10 hit is about 17%.
    eprintln!("small synthetic set, d1 after stage 1: im2txt R@10 {recall:.1}%");
    assert!(recall > 60.0, "R@10 {recall:.1}%");

    let fisher = importance::fisher(
        &first,
        &split.pairs(),
        &d1.train_captions,
        &ft.loss,
        ft.batch,
        1,
        None,
        Accumulate::Sum,
    )
    .unwrap();
    let previous = Previous {
        model: &first,
        importance: vec![&fisher],
    };
    static EWC: [RegularizerSpec; 1] = [RegularizerSpec::Ewc {
        lambda: 1e7,
        accumulate: Accumulate::Sum,
        on: Coverage::Both,
    }];
    let after_ft = train_stage(
        &stage(&m, &ft, &split, 1, &[]),
        Some(&previous),
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let after_ewc = train_stage(
        &stage(&m, &ft, &split, 1, &EWC),
        Some(&previous),
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let (d_ft, d_ewc) = (distance(&first, &after_ft), distance(&first, &after_ewc));
    // What EWC bounds: the Fisher-weighted distance Σ F (θ − θ*)².
    let anchors = first.snapshot().unwrap();
    let weighted = |model: &Model| {
        let p = importance::penalty(model, &fisher, &anchors, Coverage::Both, 1.0).unwrap();
        p.to_scalar::<f32>().unwrap() as f64
    };
    let (w_ft, w_ewc) = (weighted(&after_ft), weighted(&after_ewc));
    eprintln!(
        "EWC moved {d_ewc:.4} (Fisher-weighted {w_ewc:.3e}), fine-tuning {d_ft:.4} ({w_ft:.3e})"
    );
    assert!(
        w_ewc < 0.05 * w_ft,
        "Fisher-weighted: EWC {w_ewc:.3e}, fine-tuning {w_ft:.3e}"
    );
    assert!(
        d_ewc < 0.5 * d_ft,
        "EWC moved {d_ewc:.4}, fine-tuning {d_ft:.4}"
    );
    let drift = |model: &Model| image_drift(&first, model, &split.pairs(), &d1.test_images);
    assert!(
        drift(&after_ewc) < 0.5 * drift(&after_ft),
        "{} vs {}",
        drift(&after_ewc),
        drift(&after_ft)
    );
}
