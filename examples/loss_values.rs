//! Loss and penalty values through lethe's own code, on inputs given as JSON: the
//! Rust half of the numpy reference check in `tests/python/test_losses.py`.
//!
//! Input (stdin): `{"s": [[..]], "old": [[..]], "positives": [[0|1 ..]],
//! "margin": m, "scale": 1/τ, "temperature": τd, "lambda": λ}` with B x B matrices.
//! Output (stdout): JSON with every loss value, and for the weight penalties the
//! parameters they were computed from (`params`: name, group, θ, θ*, Ω) so the
//! reference can recompute them from scratch.
//! Run: `cargo run --release --example loss_values < case.json`.

use candle_core::{Device, Tensor};
use lethe::lang::{
    Accumulate, Activation, BranchSpec, Coverage, ModelSpec, Reduction, RegularizerSpec,
    TripletNegatives,
};
use lethe::model::Model;
use lethe::train::importance::{self, Importance};
use lethe::train::{loss, terms};
use serde_json::{json, Value};
use std::io::Read;

fn matrix(v: &Value, name: &str) -> Result<Tensor, Box<dyn std::error::Error>> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v[name].clone())?;
    let b = rows.len();
    let flat: Vec<f64> = rows.into_iter().flatten().collect();
    let cols = flat.len() / b.max(1);
    Ok(Tensor::from_vec(flat, (b, cols), &Device::Cpu)?)
}

fn scalar(t: candle_core::Result<Tensor>) -> Result<f64, Box<dyn std::error::Error>> {
    Ok(t?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let case: Value = serde_json::from_str(&input)?;
    let s = matrix(&case, "s")?;
    let old = matrix(&case, "old")?;
    let positives = matrix(&case, "positives")?;
    let margin = case["margin"].as_f64().ok_or("margin")?;
    let scale = Tensor::new(case["scale"].as_f64().ok_or("scale")?, &Device::Cpu)?;
    let temperature = case["temperature"].as_f64().ok_or("temperature")?;
    let lambda = case["lambda"].as_f64().ok_or("lambda")?;

    let mut out = serde_json::Map::new();
    for (negatives, n) in [
        (TripletNegatives::Hardest, "hardest"),
        (TripletNegatives::All, "all"),
    ] {
        for (reduction, r) in [(Reduction::Sum, "sum"), (Reduction::Mean, "mean")] {
            let v = scalar(loss::triplet(&s, &positives, margin, negatives, reduction))?;
            out.insert(format!("triplet_{n}_{r}"), json!(v));
        }
    }
    out.insert(
        "infonce".into(),
        json!(scalar(loss::infonce(&s, &positives, &scale))?),
    );
    for (correct, name) in [(true, "modx_corrected"), (false, "modx_uncorrected")] {
        let v = scalar(loss::modx(&s, &old, temperature, correct))?;
        out.insert(name.into(), json!(v));
    }
    out.insert(
        "distill".into(),
        json!(scalar(loss::distill(&s, &old, temperature))?),
    );

    // Weight penalties on a small two-branch model with one shared layer: θ* from
    // one seed, θ from another, Ω fixed; coefficients from the training code.
    let branch = BranchSpec {
        hidden: vec![4],
        embed: 3,
        activation: Activation::Relu,
        dropout: 0.0,
    };
    let spec = ModelSpec {
        image: branch.clone(),
        text: branch,
        share: 1,
    };
    let anchor_model = Model::new(&spec, 6, 5, 1, None, &Device::Cpu)?;
    let current = Model::new(&spec, 6, 5, 2, None, &Device::Cpu)?;
    let anchors = anchor_model.snapshot()?;
    let mut omegas = Vec::new();
    let mut params = Vec::new();
    for (i, (p, anchor)) in current.params().iter().zip(&anchors).enumerate() {
        let theta = p.var.as_detached_tensor();
        let n = theta.elem_count();
        let omega: Vec<f32> = (0..n)
            .map(|k| ((i * 31 + k) as f32 * 0.7).sin().abs())
            .collect();
        let omega = Tensor::from_vec(omega, theta.shape(), &Device::Cpu)?;
        params.push(json!({
            "name": p.name,
            "group": format!("{:?}", p.group).to_lowercase(),
            "theta": theta.flatten_all()?.to_vec1::<f32>()?,
            "anchor": anchor.flatten_all()?.to_vec1::<f32>()?,
            "omega": omega.flatten_all()?.to_vec1::<f32>()?,
        }));
        omegas.push((p.name.clone(), omega));
    }
    for (name, on) in [
        ("ewc", Coverage::Both),
        ("mas", Coverage::Both),
        ("mas_image", Coverage::Image),
    ] {
        let term = if name == "ewc" {
            RegularizerSpec::Ewc {
                lambda,
                accumulate: Accumulate::Sum,
                on,
            }
        } else {
            RegularizerSpec::Mas { lambda, on }
        };
        let (method, coefficient) =
            terms::penalty_coefficient(&term).ok_or("not a weight penalty")?;
        let importance = Importance {
            method,
            tensors: omegas.clone(),
            tasks: 1,
        };
        let v = scalar(importance::penalty(
            &current,
            &importance,
            &anchors,
            on,
            coefficient,
        ))?;
        out.insert(format!("{name}_penalty"), json!(v));
    }
    out.insert("params".into(), Value::Array(params));
    println!("{}", Value::Object(out));
    Ok(())
}
