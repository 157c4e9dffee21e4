//! The text encoder: all-MiniLM-L6-v2 (a 6-layer BERT); a sentence embedding
//! is the attention-masked mean of the last hidden states, L2-normalised
//! (384-d). On the CPU the forward is lethe's own ([`super::bert`]: no padding,
//! fused element-wise passes); on a GPU it is `candle_transformers`' graph,
//! which is also the reference the CPU forward is tested against.

use super::bert::{CpuBert, Tokens};
use super::Engine;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// Longest input in tokens (the model's sentence-transformers setting).
const MAX_TOKENS: usize = 256;
/// Sentences per forward pass of candle's graph (padded to the longest).
const BATCH: usize = 64;
/// Tokens per forward pass of the CPU forward (packed, no padding): large
/// enough for full-speed matrix products, small enough to stay in cache-sized
/// activations (about 10 MB for the widest layer).
const TOKENS_PER_PASS: usize = 1536;

enum Network {
    Cpu(CpuBert),
    Candle(BertModel),
}

pub struct TextEncoder {
    network: Network,
    tokenizer: Tokenizer,
    /// The token that fills a batch's shorter sentences (masked out).
    pad_id: u32,
    device: Device,
    pub dim: usize,
}

impl TextEncoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`
    /// (a sentence-transformers / Hugging Face snapshot of a BERT-family model),
    /// with lethe's CPU forward on the CPU and candle's graph elsewhere.
    pub fn load(dir: &Path, device: &Device) -> Result<TextEncoder, String> {
        TextEncoder::load_with(dir, device, Engine::for_device(device))
    }

    /// [`TextEncoder::load`] with the engine chosen.
    pub fn load_with(dir: &Path, device: &Device, engine: Engine) -> Result<TextEncoder, String> {
        engine.check(device)?;
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| format!("{}: {e}", dir.join("tokenizer.json").display()))?;
        // The shipped tokenizer pads every input to 128: no padding here; `encode`
        // pads each batch to its own longest sentence and pools with the mask.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| e.to_string())?;
        let weights_file = dir.join("model.safetensors");
        let tensors =
            candle_core::safetensors::load_buffer(&read("model.safetensors")?, &Device::Cpu)
                .map_err(|e| format!("{}: {e}", weights_file.display()))?;
        let network = match engine {
            Engine::Cpu => Network::Cpu(
                CpuBert::from_tensors(&tensors, &config)
                    .map_err(|e| format!("{}: {e}", weights_file.display()))?,
            ),
            Engine::Candle => {
                let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
                Network::Candle(
                    BertModel::load(vb, &config).map_err(|e| format!("{}: {e}", dir.display()))?,
                )
            }
        };
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        Ok(TextEncoder {
            network,
            tokenizer,
            pad_id,
            device: device.clone(),
            dim: config.hidden_size,
        })
    }

    /// Embeds sentences: `texts.len() x dim` floats, row-major, each row unit-norm.
    /// Sentences are batched by length, as sentence-transformers does, so a batch
    /// pads to a length close to each of its sentences' own; rows come back in
    /// the order given.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<f32>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| e.to_string())?;
        let model = match &self.network {
            Network::Cpu(bert) => return self.encode_packed(bert, &encodings),
            Network::Candle(model) => model,
        };
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![0f32; texts.len() * self.dim];
        let (mut ids, mut types, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for batch in order.chunks(BATCH) {
            let len = batch
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(0);
            ids.clear();
            types.clear();
            mask.clear();
            for &i in batch {
                let e = &encodings[i];
                let pad = len - e.get_ids().len();
                let padded = |to: &mut Vec<u32>, from: &[u32], fill: u32| {
                    to.extend(from.iter().copied().chain(std::iter::repeat_n(fill, pad)))
                };
                padded(&mut ids, e.get_ids(), self.pad_id);
                padded(&mut types, e.get_type_ids(), 0);
                padded(&mut mask, e.get_attention_mask(), 0);
            }
            let pooled = self.pooled(model, &ids, &types, &mask, (batch.len(), len))?;
            for (row, &i) in pooled.chunks_exact(self.dim).zip(batch) {
                out[i * self.dim..(i + 1) * self.dim].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    /// One padded batch through the model: the attention-masked mean of the
    /// last hidden states, L2-normalised, as `rows x dim` floats.
    fn pooled(
        &self,
        model: &BertModel,
        ids: &[u32],
        types: &[u32],
        mask: &[u32],
        shape: (usize, usize),
    ) -> Result<Vec<f32>, String> {
        (|| -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::from_slice(ids, shape, &self.device)?;
            let types = Tensor::from_slice(types, shape, &self.device)?;
            let mask = Tensor::from_slice(mask, shape, &self.device)?;
            let hidden = model.forward(&ids, &types, Some(&mask))?;
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
            crate::model::l2_normalize(&summed.broadcast_div(&counts)?)?
                .flatten_all()?
                .to_vec1::<f32>()
        })()
        .map_err(|e| e.to_string())
    }

    /// The CPU forward on passes of about `TOKENS_PER_PASS` tokens, sentences
    /// packed without padding.
    fn encode_packed(
        &self,
        bert: &CpuBert,
        encodings: &[tokenizers::Encoding],
    ) -> Result<Vec<f32>, String> {
        let mut out = Vec::with_capacity(encodings.len() * self.dim);
        let mut first = 0;
        while first < encodings.len() {
            let mut end = first;
            let mut tokens = 0;
            while end < encodings.len()
                && (end == first || tokens + encodings[end].len() <= TOKENS_PER_PASS)
            {
                tokens += encodings[end].len();
                end += 1;
            }
            let pass: Vec<Tokens> = encodings[first..end]
                .iter()
                .map(|e| Tokens {
                    ids: e.get_ids(),
                    types: e.get_type_ids(),
                })
                .collect();
            out.extend(bert.pooled(&pass)?);
            first = end;
        }
        Ok(out)
    }
}
