//! The fused CPU step computes what candle's autograd computes: for every loss,
//! activation, dropout, layer sharing, regularizer and optimizer, its gradients
//! (read off one plain SGD step) and its loss trajectory match the graph step's,
//! whose gradients `tests/train_grad.rs` checks against finite differences.

use candle_core::Device;
use lethe::data::{PairData, PseudoTexts};
use lethe::lang::*;
use lethe::model::Model;
use lethe::rng::Rng;
use lethe::train::importance;
use lethe::train::{train_stage_with, Engine, Previous, Stage, Trained};

const IMAGES: usize = 96;
const IMAGE_DIM: usize = 20;
const TEXT_DIM: usize = 12;

struct Data {
    images: Vec<f32>,
    captions: Vec<f32>,
    caption_image: Vec<u32>,
    tasks: [Vec<u32>; 2],
    /// Three pseudo negative texts per image (two for every fifth), caption-like.
    pseudo: PseudoTexts,
}

/// Two captions per image, features correlated through a shared latent.
fn data() -> Data {
    let mut rng = Rng::derive(5, &["fused-test"]);
    let mut d = Data {
        images: Vec::new(),
        captions: Vec::new(),
        caption_image: Vec::new(),
        tasks: [Vec::new(), Vec::new()],
        pseudo: PseudoTexts::default(),
    };
    let (mut pseudo, mut pseudo_image) = (Vec::new(), Vec::new());
    for i in 0..IMAGES {
        let latent: Vec<f32> = (0..4).map(|_| rng.normal() as f32).collect();
        for k in 0..IMAGE_DIM {
            d.images.push(latent[k % 4] + 0.3 * rng.normal() as f32);
        }
        for _ in 0..2 {
            let c = d.caption_image.len() as u32;
            for k in 0..TEXT_DIM {
                d.captions
                    .push(latent[(k + 1) % 4] * 0.8 + 0.3 * rng.normal() as f32);
            }
            d.caption_image.push(i as u32);
            d.tasks[i * 2 / IMAGES].push(c);
        }
        for _ in 0..if i % 5 == 0 { 2 } else { 3 } {
            for k in 0..TEXT_DIM {
                pseudo.push(latent[(k + 2) % 4] * 0.8 + 0.3 * rng.normal() as f32);
            }
            pseudo_image.push(i as u32);
        }
    }
    d.pseudo = PseudoTexts::new(pseudo, TEXT_DIM, &pseudo_image, IMAGES);
    d
}

impl Data {
    fn pairs(&self) -> PairData<'_> {
        PairData {
            image_features: &self.images,
            image_dim: IMAGE_DIM,
            caption_features: &self.captions,
            text_dim: TEXT_DIM,
            caption_image: &self.caption_image,
        }
    }
}

struct Case {
    name: &'static str,
    model: ModelSpec,
    train: TrainSpec,
}

fn branch(activation: Activation, dropout: f64) -> BranchSpec {
    BranchSpec {
        hidden: vec![24, 16],
        embed: 8,
        activation,
        dropout,
    }
}

fn train_spec(
    loss: LossSpec,
    optimizer: OptimizerSpec,
    regularizer: Vec<RegularizerSpec>,
) -> TrainSpec {
    TrainSpec {
        loss,
        optimizer,
        schedule_lr: LrSchedule::Constant,
        epochs: 2,
        batch: 24,
        negatives: Negatives::WithinTask,
        regularizer,
        decouple: false,
        grad_clip: Some(1.0),
        log: LogEvery::Step,
    }
}

const ADAMW: OptimizerSpec = OptimizerSpec::Adamw {
    lr: 1e-3,
    weight_decay: 1e-2,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
};

fn cases() -> Vec<Case> {
    let hardest = LossSpec::Triplet {
        margin: 0.2,
        negatives: TripletNegatives::Hardest,
        reduction: Reduction::Sum,
    };
    let all = LossSpec::Triplet {
        margin: 0.3,
        negatives: TripletNegatives::All,
        reduction: Reduction::Mean,
    };
    let infonce = |learnable| LossSpec::Infonce {
        temperature: 0.1,
        learnable,
    };
    let two = |a, b, share| ModelSpec {
        image: a,
        text: b,
        share,
    };
    vec![
        Case {
            name: "triplet-hardest, relu",
            model: two(
                branch(Activation::Relu, 0.0),
                branch(Activation::Relu, 0.0),
                0,
            ),
            train: train_spec(hardest.clone(), ADAMW, vec![]),
        },
        Case {
            name: "triplet-all, gelu, dropout, one shared layer",
            model: two(
                branch(Activation::Gelu, 0.2),
                branch(Activation::Gelu, 0.1),
                1,
            ),
            train: train_spec(all, ADAMW, vec![]),
        },
        Case {
            name: "infonce fixed, relu image, tanh text",
            model: two(
                branch(Activation::Relu, 0.0),
                branch(Activation::Tanh, 0.0),
                0,
            ),
            train: train_spec(infonce(false), ADAMW, vec![]),
        },
        Case {
            name: "infonce learnable, ewc on both, distill",
            model: two(
                branch(Activation::Relu, 0.0),
                branch(Activation::Relu, 0.0),
                2,
            ),
            train: train_spec(
                infonce(true),
                ADAMW,
                vec![
                    RegularizerSpec::Ewc {
                        lambda: 50.0,
                        accumulate: Accumulate::Sum,
                        on: Coverage::Both,
                    },
                    RegularizerSpec::Distill {
                        lambda: 2.0,
                        temperature: 0.2,
                    },
                ],
            ),
        },
        Case {
            name: "triplet-hardest, mas on image, modx correct, replay",
            model: two(
                branch(Activation::Tanh, 0.0),
                branch(Activation::Tanh, 0.0),
                0,
            ),
            train: train_spec(
                hardest.clone(),
                ADAMW,
                vec![
                    RegularizerSpec::Mas {
                        lambda: 5.0,
                        on: Coverage::Image,
                    },
                    RegularizerSpec::Modx {
                        alpha: 3.0,
                        temperature: 0.5,
                        correct: true,
                    },
                    RegularizerSpec::Replay {
                        memory: 20,
                        per_batch: 6,
                        sampler: Sampler::Balanced,
                    },
                ],
            ),
        },
        Case {
            name: "sgd with momentum, ewc on text, modx without correction",
            model: two(
                branch(Activation::Relu, 0.1),
                branch(Activation::Gelu, 0.0),
                0,
            ),
            train: train_spec(
                hardest,
                OptimizerSpec::Sgd {
                    lr: 0.05,
                    momentum: 0.9,
                    weight_decay: 1e-3,
                },
                vec![
                    RegularizerSpec::Ewc {
                        lambda: 20.0,
                        accumulate: Accumulate::Sum,
                        on: Coverage::Text,
                    },
                    RegularizerSpec::Modx {
                        alpha: 1.0,
                        temperature: 1.0,
                        correct: false,
                    },
                ],
            ),
        },
        Case {
            name: "replay + pseudo text, triplet-hardest with dropout",
            model: two(
                branch(Activation::Relu, 0.1),
                branch(Activation::Gelu, 0.1),
                1,
            ),
            train: train_spec(
                LossSpec::Triplet {
                    margin: 0.2,
                    negatives: TripletNegatives::Hardest,
                    reduction: Reduction::Sum,
                },
                ADAMW,
                vec![
                    RegularizerSpec::PseudoText {
                        per_image: 2,
                        weight: 2.0,
                    },
                    RegularizerSpec::Replay {
                        memory: 30,
                        per_batch: 8,
                        sampler: Sampler::Reservoir,
                    },
                ],
            ),
        },
        Case {
            name: "replay + pseudo text + distill, triplet-all mean",
            model: two(
                branch(Activation::Tanh, 0.0),
                branch(Activation::Relu, 0.0),
                0,
            ),
            train: train_spec(
                LossSpec::Triplet {
                    margin: 0.5,
                    negatives: TripletNegatives::All,
                    reduction: Reduction::Mean,
                },
                ADAMW,
                vec![
                    RegularizerSpec::Replay {
                        memory: 30,
                        per_batch: 8,
                        sampler: Sampler::Balanced,
                    },
                    RegularizerSpec::Distill {
                        lambda: 1.0,
                        temperature: 0.5,
                    },
                    RegularizerSpec::PseudoText {
                        per_image: 3,
                        weight: 1.0,
                    },
                ],
            ),
        },
        Case {
            name: "replay + pseudo text, infonce with a learnable temperature",
            model: two(
                branch(Activation::Gelu, 0.1),
                branch(Activation::Gelu, 0.0),
                0,
            ),
            train: train_spec(
                LossSpec::Infonce {
                    temperature: 0.1,
                    learnable: true,
                },
                ADAMW,
                vec![
                    RegularizerSpec::Replay {
                        memory: 40,
                        per_batch: 10,
                        sampler: Sampler::Reservoir,
                    },
                    RegularizerSpec::PseudoText {
                        per_image: 3,
                        weight: 0.5,
                    },
                ],
            ),
        },
    ]
}

fn stage<'a>(d: &'a Data, c: &'a Case, train: &'a TrainSpec, k: usize) -> Stage<'a> {
    Stage {
        model: &c.model,
        train,
        schedule: Schedule::Sequential,
        seed: 11,
        stage: k + 1,
        label: format!("task{}", k + 1),
        regularizer: if k == 0 { &[] } else { &train.regularizer },
        data: d.pairs(),
        pseudo_texts: Some(&d.pseudo),
        tasks: vec![&d.tasks[k]],
        past: (0..k).map(|j| ("past", d.tasks[j].as_slice())).collect(),
        on_step: None,
    }
}

fn flat(model: &Model) -> Vec<f32> {
    model
        .named_tensors()
        .iter()
        .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Trains the second task of `case` with `train` from the same first model and
/// importance, once per engine.
fn both_engines(d: &Data, case: &Case, train: &TrainSpec) -> (Model, Trained, Trained) {
    let first = train_stage_with(
        &stage(d, case, &case.train, 0),
        None,
        &Device::Cpu,
        Engine::Graph,
    )
    .unwrap()
    .model;
    let data = d.pairs();
    let fisher = importance::fisher(
        &first,
        &data,
        &d.tasks[0],
        &case.train.loss,
        24,
        11,
        None,
        Accumulate::Sum,
    )
    .unwrap();
    let omega = importance::omega(&first, &data, &d.tasks[0], None).unwrap();
    let previous = Previous {
        model: &first,
        importance: vec![&fisher, &omega],
    };
    let run = |engine| {
        train_stage_with(
            &stage(d, case, train, 1),
            Some(&previous),
            &Device::Cpu,
            engine,
        )
        .unwrap()
    };
    let graph = run(Engine::Graph);
    let fused = run(Engine::Fused);
    (first, graph, fused)
}

#[test]
fn one_sgd_step_reads_the_same_gradient_from_both_engines() {
    let d = data();
    for case in cases() {
        // One plain SGD step: θ₁ − θ₀ = −lr · ∇L, parameter by parameter.
        let mut train = case.train.clone();
        train.optimizer = OptimizerSpec::Sgd {
            lr: 1e-2,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        train.grad_clip = None;
        train.epochs = 1;
        train.batch = d.tasks[1].len();
        let (first, graph, fused) = both_engines(&d, &case, &train);
        assert_eq!(graph.log.len(), 1, "{}", case.name);
        let start = flat(&first);
        let step =
            |m: &Model| -> Vec<f32> { flat(m).iter().zip(&start).map(|(a, b)| a - b).collect() };
        let (g, f) = (step(&graph.model), step(&fused.model));
        let diff: Vec<f32> = g.iter().zip(&f).map(|(a, b)| a - b).collect();
        assert!(max_abs(&g) > 1e-6, "{}: the step moved nothing", case.name);
        assert!(
            max_abs(&diff) <= 2e-4 * max_abs(&g),
            "{}: gradients differ by {} (largest step {})",
            case.name,
            max_abs(&diff),
            max_abs(&g)
        );
        let (lg, lf) = (&graph.log[0], &fused.log[0]);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(1e-3);
        assert!(
            close(lg.task_loss, lf.task_loss),
            "{}: task loss {} vs {}",
            case.name,
            lg.task_loss,
            lf.task_loss
        );
        assert!(
            close(lg.grad_norm, lf.grad_norm),
            "{}: grad norm {} vs {}",
            case.name,
            lg.grad_norm,
            lf.grad_norm
        );
        assert_eq!(lg.terms.len(), lf.terms.len(), "{}", case.name);
        for ((name, a), (other, b)) in lg.terms.iter().zip(&lf.terms) {
            assert_eq!(name, other);
            assert!(close(*a, *b), "{}: {name} term {a} vs {b}", case.name);
            // The replayed pairs met their pseudo texts: the term is not idle.
            if name == "pseudo_text" {
                assert!(*a > 1e-6, "{}: pseudo_text term {a}", case.name);
            }
        }
    }
}

#[test]
fn training_runs_follow_the_same_trajectory_on_both_engines() {
    let d = data();
    for case in cases() {
        let (_, graph, fused) = both_engines(&d, &case, &case.train);
        assert_eq!(graph.log.len(), fused.log.len(), "{}", case.name);
        assert!(graph.log.len() >= 4, "{}", case.name);
        for (a, b) in graph.log.iter().zip(&fused.log) {
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-3 * x.abs().max(1e-2);
            assert!(
                close(a.loss, b.loss),
                "{} step {}: loss {} vs {}",
                case.name,
                a.step,
                a.loss,
                b.loss
            );
            assert!(
                close(a.grad_norm, b.grad_norm),
                "{} step {}: grad norm",
                case.name,
                a.step
            );
            assert_eq!(a.lr, b.lr);
        }
        let (g, f) = (flat(&graph.model), flat(&fused.model));
        let diff: Vec<f32> = g.iter().zip(&f).map(|(a, b)| a - b).collect();
        assert!(
            max_abs(&diff) < 1e-3,
            "{}: final weights differ by {}",
            case.name,
            max_abs(&diff)
        );
    }
}

#[test]
fn pseudo_text_at_weight_zero_trains_exactly_as_replay_alone() {
    let d = data();
    let replay = RegularizerSpec::Replay {
        memory: 30,
        per_batch: 8,
        sampler: Sampler::Reservoir,
    };
    let pseudo = RegularizerSpec::PseudoText {
        per_image: 3,
        weight: 0.0,
    };
    for loss in [
        LossSpec::Triplet {
            margin: 0.2,
            negatives: TripletNegatives::Hardest,
            reduction: Reduction::Sum,
        },
        LossSpec::Infonce {
            temperature: 0.1,
            learnable: true,
        },
    ] {
        // No dropout: the pseudo texts' forward pass would draw masks from the
        // stream the next batch's masks come from.
        let case = Case {
            name: "weight zero",
            model: ModelSpec {
                image: branch(Activation::Relu, 0.0),
                text: branch(Activation::Relu, 0.0),
                share: 1,
            },
            train: train_spec(loss, ADAMW, vec![replay.clone()]),
        };
        let mut with_term = case.train.clone();
        with_term.regularizer.push(pseudo.clone());
        let (_, graph_alone, fused_alone) = both_engines(&d, &case, &case.train);
        let (_, graph, fused) = both_engines(&d, &case, &with_term);
        for (alone, with) in [(&graph_alone, &graph), (&fused_alone, &fused)] {
            assert_eq!(flat(&alone.model), flat(&with.model));
            for (a, w) in alone.log.iter().zip(&with.log) {
                assert_eq!(a.loss, w.loss);
                assert_eq!(w.terms, vec![("pseudo_text".to_string(), 0.0)]);
            }
        }
    }
}
