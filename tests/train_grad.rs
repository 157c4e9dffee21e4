//! Gradients of every loss and regularizer against finite differences, and the
//! properties the methods promise (zero at the anchor, exact per-sample MAS, Mod-X
//! row correction). Loss checks run in f64 so differences are meaningful.

mod common;
use candle_core::{DType, Device, Tensor, Var};
use lethe::data::PairData;
use lethe::lang::{
    Activation, BranchSpec, Coverage, LossSpec, ModelSpec, Reduction, TripletNegatives,
};
use lethe::model::{Group, Modality, Model};
use lethe::rng::Rng;
use lethe::train::importance::{self, Importance, Method};
use lethe::train::loss;
use lethe::train::tensors::GatherRows;

fn random(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::derive(seed, &["test"]);
    (0..rows * cols).map(|_| r.next_f64() * 2.0 - 1.0).collect()
}

/// Positives of a batch whose pairs 1 and 2 share an image.
fn positives(b: usize) -> Tensor {
    let mut p = vec![0f64; b * b];
    for i in 0..b {
        p[i * b + i] = 1.0;
    }
    p[b + 2] = 1.0;
    p[2 * b + 1] = 1.0;
    Tensor::from_vec(p, (b, b), &Device::Cpu).unwrap()
}

/// Compares autograd with central differences for `f` at a random B x B matrix.
fn check_gradient(name: &str, f: impl Fn(&Tensor) -> Tensor) {
    let b = 5;
    let values = random(b, b, 42);
    let var = Var::from_vec(values.clone(), (b, b), &Device::Cpu).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let analytic: Vec<f64> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let h = 1e-6;
    let value = |v: &[f64]| -> f64 {
        let t = Tensor::from_vec(v.to_vec(), (b, b), &Device::Cpu).unwrap();
        f(&t).to_scalar::<f64>().unwrap()
    };
    let mut worst: f64 = 0.0;
    for i in 0..b * b {
        let mut plus = values.clone();
        plus[i] += h;
        let mut minus = values.clone();
        minus[i] -= h;
        let numeric = (value(&plus) - value(&minus)) / (2.0 * h);
        worst = worst.max((numeric - analytic[i]).abs());
    }
    assert!(worst < 1e-6, "{name}: largest gradient error {worst:e}");
    assert!(
        analytic.iter().any(|g| g.abs() > 1e-3),
        "{name}: gradient is all zero"
    );
}

#[test]
fn triplet_gradients() {
    let p = positives(5);
    for reduction in [Reduction::Sum, Reduction::Mean] {
        check_gradient("triplet hardest", |s| {
            loss::triplet(s, &p, 0.2, TripletNegatives::Hardest, reduction).unwrap()
        });
        check_gradient("triplet all", |s| {
            loss::triplet(s, &p, 0.2, TripletNegatives::All, reduction).unwrap()
        });
    }
}

/// VSE++ sums the hinge terms over the batch (`cost_s.sum() + cost_im.sum()`):
/// the default is B times the mean, so lr, clipping and λ keep VSE++'s meaning.
#[test]
fn triplet_sums_over_the_batch_by_default() {
    let p = positives(5);
    let s = Tensor::from_vec(random(5, 5, 13), (5, 5), &Device::Cpu).unwrap();
    let value = |r| {
        loss::triplet(&s, &p, 0.2, TripletNegatives::Hardest, r)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    assert!(value(Reduction::Sum) > 0.0);
    assert!((value(Reduction::Sum) - 5.0 * value(Reduction::Mean)).abs() < 1e-12);
    let checked = lethe::lang::load(
        &common::repo().join("pipelines/quickstart.pipe"),
        &mut lethe::diagnostics::SourceMap::new(),
        &mut lethe::lang::ManifestCache::default(),
    )
    .unwrap();
    assert!(matches!(
        checked.experiments[0].train.loss,
        LossSpec::Triplet {
            reduction: Reduction::Sum,
            ..
        }
    ));
}

/// An image drawn twice in a batch (two of its captions) gives two identical
/// rows of S. Its hardest-negative term must count once, as PyTorch's
/// `max(dim)` counts it, not once per tied copy.
#[test]
fn triplet_hardest_counts_a_tied_duplicate_image_once() {
    // Pairs 0 and 1 share image A; pair 2 is image B. Column 2 (B's caption)
    // sees A twice, with the same similarity 0.5 against S[2,2] = 0.1.
    let s = Var::from_vec(
        vec![0.9f64, 0.9, 0.5, 0.9, 0.9, 0.5, -0.5, -0.5, 0.1],
        (3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let mut p = vec![0f64; 9];
    for (i, j) in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 0)] {
        p[i * 3 + j] = 1.0;
    }
    let p = Tensor::from_vec(p, (3, 3), &Device::Cpu).unwrap();
    let loss = loss::triplet(
        s.as_tensor(),
        &p,
        0.2,
        TripletNegatives::Hardest,
        Reduction::Mean,
    )
    .unwrap();
    let g: Vec<Vec<f64>> = loss
        .backward()
        .unwrap()
        .get(s.as_tensor())
        .unwrap()
        .to_vec2()
        .unwrap();
    // Caption 2's hardest image: one of the two copies of A, with weight 1/B.
    assert!((g[0][2] + g[1][2] - 1.0 / 3.0).abs() < 1e-12, "{g:?}");
    assert!(g[0][2] == 0.0 || g[1][2] == 0.0, "{g:?}");
}

#[test]
fn infonce_gradients() {
    let p = positives(5);
    let scale = Tensor::new(1.0 / 0.3f64, &Device::Cpu).unwrap();
    check_gradient("infonce", |s| loss::infonce(s, &p, &scale).unwrap());
}

#[test]
fn distillation_gradients() {
    // An old model that ranks the right caption first (else every row is left out).
    let eye = Tensor::eye(5, DType::F64, &Device::Cpu).unwrap();
    let old = (Tensor::from_vec(random(5, 5, 7), (5, 5), &Device::Cpu).unwrap()
        + (eye * 3.0).unwrap())
    .unwrap();
    check_gradient("modx", |s| loss::modx(s, &old, 0.5, true).unwrap());
    check_gradient("modx uncorrected", |s| {
        loss::modx(s, &old, 0.5, false).unwrap()
    });
    check_gradient("distill", |s| loss::distill(s, &old, 0.5).unwrap());
}

#[test]
fn triplet_ignores_other_captions_of_the_same_image() {
    // Pairs 1 and 2 share an image: a high S[1,2] must cost nothing.
    let p = positives(3);
    let mut s = vec![0.9, 0.0, 0.0, 0.0, 0.9, 0.95, 0.0, 0.95, 0.9];
    let base = Tensor::from_vec(s.clone(), (3, 3), &Device::Cpu).unwrap();
    assert_eq!(
        loss::triplet(&base, &p, 0.2, TripletNegatives::All, Reduction::Sum)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap(),
        0.0
    );
    s[1] = 0.85; // a real negative above the margin: S[0,1]
    let hurt = Tensor::from_vec(s, (3, 3), &Device::Cpu).unwrap();
    assert!(
        loss::triplet(&hurt, &p, 0.2, TripletNegatives::All, Reduction::Sum)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            > 0.0
    );
}

#[test]
fn modx_is_zero_for_the_same_model_and_skips_wrong_rows() {
    let s = Tensor::from_vec(random(4, 4, 3), (4, 4), &Device::Cpu).unwrap();
    let same = loss::modx(&s, &s, 1.0, true)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(same.abs() < 1e-12, "{same}");
    // The old model ranks caption 3 first for image 0 (wrong) and is right elsewhere.
    let old = Tensor::from_vec(
        vec![
            0.1, 0.0, 0.0, 0.9, 0.0, 0.8, 0.1, 0.0, 0.0, 0.1, 0.7, 0.0, 0.0, 0.0, 0.1, 0.6f64,
        ],
        (4, 4),
        &Device::Cpu,
    )
    .unwrap();
    let corrected = loss::modx(&s, &old, 1.0, true)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let full = loss::modx(&s, &old, 1.0, false)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    // Row 0 and column 3 (argmax of old column 3 is row 0) are left out.
    let kl = |a: &[f64], b: &[f64]| {
        let sm = |v: &[f64]| {
            let z: f64 = v.iter().map(|x| x.exp()).sum();
            v.iter().map(|x| x.exp() / z).collect::<Vec<_>>()
        };
        let (pa, pb) = (sm(a), sm(b));
        pa.iter()
            .zip(&pb)
            .map(|(x, y)| x * (x / y).ln())
            .sum::<f64>()
    };
    let o = old.to_vec2::<f64>().unwrap();
    let n = s.to_vec2::<f64>().unwrap();
    let col = |m: &Vec<Vec<f64>>, j: usize| m.iter().map(|r| r[j]).collect::<Vec<_>>();
    let left_out = 0.5 * (kl(&o[0], &n[0]) + kl(&col(&o, 3), &col(&n, 3)));
    assert!(
        (full - corrected - left_out).abs() < 1e-9,
        "{full} - {corrected} != {left_out}"
    );
}

fn tiny_spec(share: usize) -> ModelSpec {
    let branch = |hidden: Vec<usize>| BranchSpec {
        hidden,
        embed: 4,
        activation: Activation::Tanh,
        dropout: 0.0,
    };
    ModelSpec {
        image: branch(vec![5]),
        text: branch(vec![5]),
        share,
    }
}

fn tiny_data() -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let images: Vec<f32> = random(6, 3, 11).into_iter().map(|x| x as f32).collect();
    let captions: Vec<f32> = random(9, 2, 12).into_iter().map(|x| x as f32).collect();
    (images, captions, vec![0, 0, 1, 2, 3, 3, 4, 5, 5])
}

fn importance_of(model: &Model, value: f32) -> Importance {
    Importance {
        method: Method::Fisher,
        tensors: model
            .params()
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    (p.var.as_detached_tensor().ones_like().unwrap() * value as f64).unwrap(),
                )
            })
            .collect(),
        tasks: 1,
    }
}

#[test]
fn penalty_is_zero_at_the_anchor_with_zero_gradient() {
    let model = Model::new(&tiny_spec(1), 3, 2, 1, None, &Device::Cpu).unwrap();
    let anchors = model.snapshot().unwrap();
    let imp = importance_of(&model, 2.0);
    let p = importance::penalty(&model, &imp, &anchors, Coverage::Both, 10.0).unwrap();
    assert_eq!(p.to_scalar::<f32>().unwrap(), 0.0);
    let grads = p.backward().unwrap();
    for param in model.params() {
        let g = grads.get(param.var.as_tensor()).unwrap();
        assert_eq!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0,
            "{}",
            param.name
        );
    }
}

#[test]
fn penalty_gradient_matches_finite_differences_and_respects_coverage() {
    let model = Model::new(&tiny_spec(1), 3, 2, 1, None, &Device::Cpu).unwrap();
    let anchors = model.snapshot().unwrap();
    let imp = importance_of(&model, 3.0);
    // Move every parameter away from its anchor.
    for p in model.params() {
        let moved = (p.var.as_detached_tensor() + 0.05).unwrap();
        p.var.set(&moved).unwrap();
    }
    let penalty = importance::penalty(&model, &imp, &anchors, Coverage::Image, 0.5).unwrap();
    let grads = penalty.backward().unwrap();
    for p in model.params() {
        let g = grads
            .get(p.var.as_tensor())
            .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        match p.group {
            Group::Text => assert!(
                g.is_none_or(|g| g.iter().all(|x| *x == 0.0)),
                "{} penalised",
                p.name
            ),
            _ => {
                // d/dθ [c Ω (θ−θ*)²] = 2 c Ω (θ−θ*) = 2 · 0.5 · 3 · 0.05, and the same numerically.
                let g = g.unwrap_or_else(|| panic!("{} unpenalised", p.name));
                assert!(
                    g.iter().all(|x| (x - 0.15).abs() < 1e-5),
                    "{}: {g:?}",
                    p.name
                );
                let v = p.var.as_detached_tensor().copy().unwrap();
                let h = 1e-2;
                let at = |delta: f64| {
                    p.var.set(&(&v + delta).unwrap()).unwrap();
                    let x =
                        importance::penalty(&model, &imp, &anchors, Coverage::Image, 0.5).unwrap();
                    x.to_scalar::<f32>().unwrap() as f64
                };
                // Moving every element of the tensor at once: the derivative is the gradient's sum.
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                p.var.set(&v).unwrap();
                let analytic: f64 = g.iter().map(|x| *x as f64).sum();
                assert!(
                    (numeric - analytic).abs() < 1e-2 * analytic.abs().max(1.0),
                    "{}: {numeric} vs {analytic}",
                    p.name
                );
            }
        }
    }
}

#[test]
fn mas_omega_is_the_exact_mean_of_per_sample_absolute_gradients() {
    let (images, captions, caption_image) = tiny_data();
    let data = PairData {
        image_features: &images,
        image_dim: 3,
        caption_features: &captions,
        text_dim: 2,
        caption_image: &caption_image,
    };
    let model = Model::new(&tiny_spec(1), 3, 2, 5, None, &Device::Cpu).unwrap();
    let rows: Vec<u32> = (0..9).collect();
    let omega = importance::omega(&model, &data, &rows, None).unwrap();
    // Brute force: one backward pass per sample.
    let mut sums: Vec<Tensor> = model
        .params()
        .iter()
        .map(|p| p.var.as_detached_tensor().zeros_like().unwrap())
        .collect();
    let mut counts = vec![0usize; sums.len()];
    for (m, n) in [(Modality::Image, 6u32), (Modality::Text, 9u32)] {
        for i in 0..n {
            let x = data.gather(m, &[i], &Device::Cpu).unwrap();
            let g = model.forward_raw(m, &x, None, false).unwrap();
            let grads = g.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            for (k, p) in model.params().iter().enumerate() {
                if let Some(gr) = grads.get(p.var.as_tensor()) {
                    sums[k] = (&sums[k] + gr.abs().unwrap()).unwrap();
                    counts[k] += 1;
                }
            }
        }
    }
    for ((p, sum), n) in model.params().iter().zip(sums).zip(counts) {
        let expected = (sum / n as f64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = omega
            .tensors
            .iter()
            .find(|(name, _)| *name == p.name)
            .unwrap()
            .1
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in expected.iter().zip(&got) {
            assert!(
                (a - b).abs() < 1e-5 * a.abs().max(1.0),
                "{}: {a} vs {b}",
                p.name
            );
        }
        assert!(got.iter().any(|x| *x > 0.0), "{}: omega is zero", p.name);
    }
}

#[test]
fn each_branch_uses_its_own_activation() {
    let (images, captions, _) = tiny_data();
    let relu = tiny_spec(0);
    let mut gelu_text = tiny_spec(0);
    gelu_text.text.activation = Activation::Gelu;
    let a = Model::new(&relu, 3, 2, 9, None, &Device::Cpu).unwrap();
    let b = Model::new(&gelu_text, 3, 2, 9, None, &Device::Cpu).unwrap();
    let img = Tensor::from_vec(images, (6, 3), &Device::Cpu).unwrap();
    let txt = Tensor::from_vec(captions, (9, 2), &Device::Cpu).unwrap();
    let same = |x: &Tensor, y: &Tensor| {
        (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            == 0.0
    };
    let (ia, ib) = (
        a.forward(Modality::Image, &img, None, true).unwrap(),
        b.forward(Modality::Image, &img, None, true).unwrap(),
    );
    let (ta, tb) = (
        a.forward(Modality::Text, &txt, None, true).unwrap(),
        b.forward(Modality::Text, &txt, None, true).unwrap(),
    );
    assert!(same(&ia, &ib), "the image branch keeps its activation");
    assert!(!same(&ta, &tb), "the text branch uses its own activation");
}

#[test]
fn modx_correction_requires_the_own_pair_not_another_caption_of_the_image() {
    // Pairs 1 and 2 are two captions of one image. The old model ranks caption 2
    // first for image 1: a positive, but not row 1's own pair. Mod-X's official
    // code (`cognition_align`) compares the argmax with the row index, so row 1 is
    // left out; so is column 2 (its argmax, row 1, is not 2).
    let s = Tensor::from_vec(random(3, 3, 11), (3, 3), &Device::Cpu).unwrap();
    let old = Tensor::from_vec(
        vec![0.9, 0.0, 0.0, 0.0, 0.5, 0.8, 0.0, 0.1, 0.4f64],
        (3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let value = |correct| {
        loss::modx(&s, &old, 1.0, correct)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let sm = |v: &[f64]| {
        let z: f64 = v.iter().map(|x| x.exp()).sum();
        v.iter().map(|x| x.exp() / z).collect::<Vec<_>>()
    };
    let kl = |a: &[f64], b: &[f64]| {
        let (pa, pb) = (sm(a), sm(b));
        pa.iter()
            .zip(&pb)
            .map(|(x, y)| x * (x / y).ln())
            .sum::<f64>()
    };
    let o = old.to_vec2::<f64>().unwrap();
    let n = s.to_vec2::<f64>().unwrap();
    let col = |m: &Vec<Vec<f64>>, j: usize| m.iter().map(|r| r[j]).collect::<Vec<_>>();
    // Kept: rows 0 and 2, columns 0 and 1.
    let kept = 0.5
        * (kl(&o[0], &n[0])
            + kl(&o[2], &n[2])
            + kl(&col(&o, 0), &col(&n, 0))
            + kl(&col(&o, 1), &col(&n, 1)));
    assert!(
        (value(true) - kept).abs() < 1e-9,
        "{} != {kept}",
        value(true)
    );
}

/// Pseudo texts of a batch of 5: row 1 has two, row 3 one, the others none.
fn pseudo_owner() -> Tensor {
    let (b, p) = (5, 3);
    let mut owner = vec![0f64; b * p];
    owner[p] = 1.0; // row 1, text 0
    owner[p + 1] = 1.0; // row 1, text 1
    owner[3 * p + 2] = 1.0; // row 3, text 2
    Tensor::from_vec(owner, (b, p), &Device::Cpu).unwrap()
}

/// Autograd against central differences for `f(S, q)`, in both arguments.
fn check_pseudo_gradient(name: &str, f: impl Fn(&Tensor, &Tensor) -> Tensor) {
    let (b, p) = (5, 3);
    let s0 = random(b, b, 42);
    // Scores near the diagonal's so the hinges are active.
    let q0: Vec<f64> = random(b, p, 7).iter().map(|x| x * 0.5 + 0.3).collect();
    let s = Var::from_vec(s0.clone(), (b, b), &Device::Cpu).unwrap();
    let q = Var::from_vec(q0.clone(), (b, p), &Device::Cpu).unwrap();
    let grads = f(s.as_tensor(), q.as_tensor()).backward().unwrap();
    let read = |v: &Var| -> Vec<f64> {
        grads
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (gs, gq) = (read(&s), read(&q));
    let value = |sv: &[f64], qv: &[f64]| -> f64 {
        let st = Tensor::from_vec(sv.to_vec(), (b, b), &Device::Cpu).unwrap();
        let qt = Tensor::from_vec(qv.to_vec(), (b, p), &Device::Cpu).unwrap();
        f(&st, &qt).to_scalar::<f64>().unwrap()
    };
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for i in 0..b * b {
        let (mut plus, mut minus) = (s0.clone(), s0.clone());
        plus[i] += h;
        minus[i] -= h;
        let numeric = (value(&plus, &q0) - value(&minus, &q0)) / (2.0 * h);
        worst = worst.max((numeric - gs[i]).abs());
    }
    for i in 0..b * p {
        let (mut plus, mut minus) = (q0.clone(), q0.clone());
        plus[i] += h;
        minus[i] -= h;
        let numeric = (value(&s0, &plus) - value(&s0, &minus)) / (2.0 * h);
        worst = worst.max((numeric - gq[i]).abs());
    }
    assert!(worst < 1e-6, "{name}: largest gradient error {worst:e}");
    assert!(
        gq.iter().any(|g| g.abs() > 1e-3),
        "{name}: no gradient reaches the pseudo texts"
    );
    // A text that negates no row's image gets no gradient from any row.
    let owner: Vec<f64> = pseudo_owner().flatten_all().unwrap().to_vec1().unwrap();
    for (g, o) in gq.iter().zip(&owner) {
        if *o == 0.0 {
            assert_eq!(*g, 0.0, "{name}: gradient on a text of another image");
        }
    }
}

#[test]
fn pseudo_text_gradients() {
    let (pos, owner) = (positives(5), pseudo_owner());
    let scale = Tensor::new(4.0f64, &Device::Cpu).unwrap();
    check_pseudo_gradient("pseudo text, infonce", |s, q| {
        loss::pseudo_text_infonce(s, &pos, &scale, q, &owner).unwrap()
    });
    for negatives in [TripletNegatives::All, TripletNegatives::Hardest] {
        for reduction in [Reduction::Sum, Reduction::Mean] {
            check_pseudo_gradient(&format!("pseudo text, triplet {negatives:?}"), |s, q| {
                loss::pseudo_text_triplet(s, q, &owner, 0.4, negatives, reduction).unwrap()
            });
        }
    }
}

/// At `weight` 1 the task loss plus the term is InfoNCE over rows widened by their
/// pseudo texts, computed here directly from its definition.
#[test]
fn pseudo_text_infonce_is_infonce_over_the_widened_rows() {
    let b = 5;
    let (pos, owner) = (positives(b), pseudo_owner());
    let s = Tensor::from_vec(random(b, b, 3), (b, b), &Device::Cpu).unwrap();
    let q = Tensor::from_vec(random(b, 3, 4), (b, 3), &Device::Cpu).unwrap();
    let tau = 0.25;
    let scale = Tensor::new(1.0 / tau, &Device::Cpu).unwrap();
    let ours = (loss::infonce(&s, &pos, &scale).unwrap()
        + loss::pseudo_text_infonce(&s, &pos, &scale, &q, &owner).unwrap())
    .unwrap()
    .to_scalar::<f64>()
    .unwrap();
    let sv: Vec<f64> = s.flatten_all().unwrap().to_vec1().unwrap();
    let qv: Vec<f64> = q.flatten_all().unwrap().to_vec1().unwrap();
    let ov: Vec<f64> = owner.flatten_all().unwrap().to_vec1().unwrap();
    let pv: Vec<f64> = pos.flatten_all().unwrap().to_vec1().unwrap();
    let mut total = 0.0;
    for r in 0..b {
        // Image r against the captions (other captions of its image left out)
        // and against its own pseudo texts.
        let mut row: Vec<f64> = (0..b)
            .filter(|&c| c == r || pv[r * b + c] == 0.0)
            .map(|c| sv[r * b + c] / tau)
            .collect();
        row.extend(
            (0..3)
                .filter(|&p| ov[r * 3 + p] == 1.0)
                .map(|p| qv[r * 3 + p] / tau),
        );
        let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
        total += lse - sv[r * b + r] / tau;
        // Caption r against the images: unchanged by pseudo texts.
        let col: Vec<f64> = (0..b)
            .filter(|&c| c == r || pv[c * b + r] == 0.0)
            .map(|c| sv[c * b + r] / tau)
            .collect();
        total += col.iter().map(|x| x.exp()).sum::<f64>().ln() - sv[r * b + r] / tau;
    }
    let expected = total / (2.0 * b as f64);
    assert!(
        (ours - expected).abs() < 1e-9,
        "{ours} vs {expected} from the definition"
    );
}
