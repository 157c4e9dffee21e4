//! BERT's encoder forward written out for the CPU, for sentence embeddings:
//! the model of `candle_transformers::models::bert` (and of Hugging Face's
//! `BertModel`), with two changes that do not alter its pooled output:
//!
//! - **No padding.** Attention is the only place tokens meet, and padded keys
//!   are masked out of it; so each sentence's tokens are packed one after the
//!   other and attend only to their own sentence. Every dense layer then runs
//!   on real tokens only, in one matrix product for a whole group of sentences.
//! - **Fused element-wise passes.** Bias, GELU, residual and layer norm are
//!   folded into the rows the matrix products write, vectorised
//!   ([`crate::linalg::vectorized`]); GELU's erf is a rational f32 form
//!   ([`crate::linalg::functions::erf`], within 4e-7 of erf), where candle
//!   evaluates erf in f64 one element at a time.
//!
//! `tests/encode.rs` checks the rows against candle's graph on the same weights.

use crate::linalg::functions::{dot, exp, gelu, sum};
use crate::linalg::{affine, vectorized};
use candle_core::Tensor;
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;
use std::collections::HashMap;

/// A linear layer stored input-major (`inputs x outputs`), so that
/// `x · weight` is a plain row-major product.
struct Dense {
    weight: Vec<f32>,
    /// One value per output.
    bias: Vec<f32>,
}

impl Dense {
    /// `out = x · weight + bias` for `rows` rows of `x`.
    fn apply(&self, x: &[f32], rows: usize, out: &mut Vec<f32>) {
        affine(out, x, rows, &self.weight, &self.bias);
    }
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Normalises one row in place: (x − mean) / √(var + eps) · γ + β, the
    /// variance the mean of squared deviations (as Hugging Face's BERT).
    #[inline(always)]
    fn row(&self, x: &mut [f32]) {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        for v in x.iter_mut() {
            *v -= mean;
        }
        let variance = dot(x, x) / n;
        let inv = 1.0 / (variance + self.eps).sqrt();
        for ((v, g), b) in x.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *v = *v * inv * g + b;
        }
    }
}

struct Layer {
    /// Query, key and value in one product: outputs `[q | k | v]`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    up: Dense,
    down: Dense,
    output_norm: LayerNorm,
}

pub(super) struct CpuBert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    max_positions: usize,
    type_vocab: usize,
    vocab: usize,
}

/// One sentence's tokens: ids and token-type ids, of equal length.
pub(super) struct Tokens<'a> {
    pub ids: &'a [u32],
    pub types: &'a [u32],
}

/// Rows one parallel element-wise task handles.
const ROWS_PER_TASK: usize = 16;

impl CpuBert {
    /// Takes the weights of a Hugging Face `BertModel` checkpoint (names with or
    /// without the `bert.` prefix).
    pub(super) fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        config: &Config,
    ) -> Result<CpuBert, String> {
        if config.hidden_act != HiddenAct::Gelu {
            return Err(format!(
                "hidden_act {:?}: the CPU encoder implements BERT's exact `gelu` only",
                config.hidden_act
            ));
        }
        let (d, ff) = (config.hidden_size, config.intermediate_size);
        if config.num_attention_heads == 0 || d % config.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {d} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            ));
        }
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            let full = format!("{prefix}{name}");
            let t = tensors
                .get(&full)
                .ok_or_else(|| format!("no tensor `{full}`"))?;
            if t.dims() != shape {
                return Err(format!(
                    "`{full}` has shape {:?}, expected {shape:?}",
                    t.dims()
                ));
            }
            t.to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("`{full}`: {e}"))
        };
        let eps = config.layer_norm_eps as f32;
        let norm = |name: &str| -> Result<LayerNorm, String> {
            Ok(LayerNorm {
                gamma: get(&format!("{name}.weight"), &[d])?,
                beta: get(&format!("{name}.bias"), &[d])?,
                eps,
            })
        };
        // Checkpoints store linear weights output-major (`outputs x inputs`).
        let dense = |names: &[String], inputs: usize, outputs: usize| -> Result<Dense, String> {
            let mut weight = vec![0f32; inputs * outputs * names.len()];
            let mut bias = Vec::with_capacity(outputs * names.len());
            let width = outputs * names.len();
            for (part, name) in names.iter().enumerate() {
                let w = get(&format!("{name}.weight"), &[outputs, inputs])?;
                for (o, row) in w.chunks_exact(inputs).enumerate() {
                    for (i, v) in row.iter().enumerate() {
                        weight[i * width + part * outputs + o] = *v;
                    }
                }
                bias.extend(get(&format!("{name}.bias"), &[outputs])?);
            }
            Ok(Dense { weight, bias })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let at = |s: &str| format!("encoder.layer.{l}.{s}");
            layers.push(Layer {
                qkv: dense(
                    &[
                        at("attention.self.query"),
                        at("attention.self.key"),
                        at("attention.self.value"),
                    ],
                    d,
                    d,
                )?,
                attention_out: dense(&[at("attention.output.dense")], d, d)?,
                attention_norm: norm(&at("attention.output.LayerNorm"))?,
                up: dense(&[at("intermediate.dense")], d, ff)?,
                down: dense(&[at("output.dense")], ff, d)?,
                output_norm: norm(&at("output.LayerNorm"))?,
            });
        }
        Ok(CpuBert {
            word: get("embeddings.word_embeddings.weight", &[config.vocab_size, d])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, d],
            )?,
            token_type: get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, d],
            )?,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            hidden: d,
            heads: config.num_attention_heads,
            max_positions: config.max_position_embeddings,
            type_vocab: config.type_vocab_size,
            vocab: config.vocab_size,
        })
    }

    /// Sentence embeddings: the mean of each sentence's last hidden states,
    /// L2-normalised; `sentences.len() x hidden` floats, in the order given.
    pub(super) fn pooled(&self, sentences: &[Tokens]) -> Result<Vec<f32>, String> {
        let d = self.hidden;
        let mut starts = Vec::with_capacity(sentences.len() + 1);
        starts.push(0);
        for (s, t) in sentences.iter().enumerate() {
            if t.ids.len() != t.types.len() || t.ids.is_empty() {
                return Err(format!(
                    "sentence {s}: {} ids, {} type ids",
                    t.ids.len(),
                    t.types.len()
                ));
            }
            if t.ids.len() > self.max_positions {
                return Err(format!(
                    "sentence {s}: {} tokens, more than the model's {} positions",
                    t.ids.len(),
                    self.max_positions
                ));
            }
            if let Some(&bad) = t.ids.iter().find(|&&i| i as usize >= self.vocab) {
                return Err(format!(
                    "sentence {s}: token id {bad} outside the vocabulary"
                ));
            }
            if let Some(&bad) = t.types.iter().find(|&&i| i as usize >= self.type_vocab) {
                return Err(format!(
                    "sentence {s}: token type {bad} outside the model's"
                ));
            }
            starts.push(starts[s] + t.ids.len());
        }
        let rows = starts[sentences.len()];
        let mut x = vec![0f32; rows * d];
        self.embed(sentences, &mut x);
        let (mut qkv, mut context, mut projected, mut wide) =
            (Vec::new(), vec![0f32; rows * d], Vec::new(), Vec::new());
        for layer in &self.layers {
            layer.qkv.apply(&x, rows, &mut qkv);
            self.attend(&qkv, &starts, &mut context);
            layer.attention_out.apply(&context, rows, &mut projected);
            residual_norm(&mut x, &projected, &layer.attention_norm, d);
            layer.up.apply(&x, rows, &mut wide);
            wide.par_chunks_mut(ROWS_PER_TASK * layer.up.bias.len())
                .for_each(|c| {
                    vectorized(
                        #[inline(always)]
                        || c.iter_mut().for_each(|v| *v = gelu(*v)),
                    )
                });
            layer.down.apply(&wide, rows, &mut projected);
            residual_norm(&mut x, &projected, &layer.output_norm, d);
        }
        let mut out = vec![0f32; sentences.len() * d];
        out.par_chunks_mut(d).enumerate().for_each(|(s, o)| {
            vectorized(
                #[inline(always)]
                || {
                    for row in x[starts[s] * d..starts[s + 1] * d].chunks_exact(d) {
                        for (a, v) in o.iter_mut().zip(row) {
                            *a += v;
                        }
                    }
                    let count = (starts[s + 1] - starts[s]) as f32;
                    for a in o.iter_mut() {
                        *a /= count;
                    }
                    let norm = dot(o, o).sqrt().max(1e-12);
                    for a in o.iter_mut() {
                        *a /= norm;
                    }
                },
            )
        });
        Ok(out)
    }

    /// Word + position + token-type embeddings, layer-normalised.
    fn embed(&self, sentences: &[Tokens], x: &mut [f32]) {
        let d = self.hidden;
        let rows: Vec<(usize, usize)> = sentences
            .iter()
            .enumerate()
            .flat_map(|(s, t)| (0..t.ids.len()).map(move |p| (s, p)))
            .collect();
        debug_assert_eq!(rows.len() * d, x.len());
        x.par_chunks_mut(d).zip(&rows).for_each(|(row, &(s, p))| {
            vectorized(
                #[inline(always)]
                || {
                    let (id, ty) = (sentences[s].ids[p] as usize, sentences[s].types[p] as usize);
                    let word = &self.word[id * d..(id + 1) * d];
                    let position = &self.position[p * d..(p + 1) * d];
                    let token_type = &self.token_type[ty * d..(ty + 1) * d];
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = word[k] + position[k] + token_type[k];
                    }
                    self.embedding_norm.row(row);
                },
            )
        });
    }

    /// Scaled dot-product attention of every head, each sentence over its own
    /// tokens; `context` gets the heads side by side, as BERT concatenates them.
    fn attend(&self, qkv: &[f32], starts: &[usize], context: &mut [f32]) {
        let d = self.hidden;
        let head = d / self.heads;
        let scale = 1.0 / (head as f32).sqrt();
        let mut spans: Vec<&mut [f32]> = Vec::with_capacity(starts.len() - 1);
        let mut rest = context;
        for w in starts.windows(2) {
            let (this, tail) = rest.split_at_mut((w[1] - w[0]) * d);
            spans.push(this);
            rest = tail;
        }
        spans.into_par_iter().enumerate().for_each(|(s, out)| {
            vectorized(
                #[inline(always)]
                || {
                    let (first, len) = (starts[s], starts[s + 1] - starts[s]);
                    let at = |t: usize, part: usize, h: usize| {
                        let base = (first + t) * 3 * d + part * d + h * head;
                        &qkv[base..base + head]
                    };
                    let mut weights = vec![0f32; len];
                    for h in 0..self.heads {
                        for i in 0..len {
                            let q = at(i, 0, h);
                            for (j, w) in weights.iter_mut().enumerate() {
                                *w = dot(q, at(j, 1, h)) * scale;
                            }
                            let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                            let mut total = 0f32;
                            for w in weights.iter_mut() {
                                *w = exp(*w - max);
                                total += *w;
                            }
                            let o = &mut out[i * d + h * head..i * d + (h + 1) * head];
                            o.fill(0.0);
                            for (j, w) in weights.iter().enumerate() {
                                let p = w / total;
                                for (a, v) in o.iter_mut().zip(at(j, 2, h)) {
                                    *a += p * v;
                                }
                            }
                        }
                    }
                },
            )
        });
    }
}

/// x ← LayerNorm(x + added), row by row.
fn residual_norm(x: &mut [f32], added: &[f32], norm: &LayerNorm, d: usize) {
    x.par_chunks_mut(ROWS_PER_TASK * d)
        .zip(added.par_chunks(ROWS_PER_TASK * d))
        .for_each(|(xs, adds)| {
            vectorized(
                #[inline(always)]
                || {
                    for (row, add) in xs.chunks_exact_mut(d).zip(adds.chunks_exact(d)) {
                        for (v, a) in row.iter_mut().zip(add) {
                            *v += a;
                        }
                        norm.row(row);
                    }
                },
            )
        });
}
