//! The text encoder: all-MiniLM-L6-v2 (a 6-layer BERT) through
//! `candle_transformers::models::bert`; a sentence embedding is the
//! attention-masked mean of the last hidden states, L2-normalised (384-d).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// Longest input in tokens (the model's sentence-transformers setting).
const MAX_TOKENS: usize = 256;
/// Sentences per forward pass.
const BATCH: usize = 64;

pub struct TextEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// The token that fills a batch's shorter sentences (masked out).
    pad_id: u32,
    device: Device,
    pub dim: usize,
}

impl TextEncoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`
    /// (a sentence-transformers / Hugging Face snapshot of a BERT-family model).
    pub fn load(dir: &Path, device: &Device) -> Result<TextEncoder, String> {
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
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device)
            .map_err(|e| e.to_string())?;
        let model = BertModel::load(vb, &config).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        Ok(TextEncoder {
            model,
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
            let pooled = self.pooled(&ids, &types, &mask, (batch.len(), len))?;
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
        ids: &[u32],
        types: &[u32],
        mask: &[u32],
        shape: (usize, usize),
    ) -> Result<Vec<f32>, String> {
        (|| -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::from_slice(ids, shape, &self.device)?;
            let types = Tensor::from_slice(types, shape, &self.device)?;
            let mask = Tensor::from_slice(mask, shape, &self.device)?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
            crate::model::l2_normalize(&summed.broadcast_div(&counts)?)?
                .flatten_all()?
                .to_vec1::<f32>()
        })()
        .map_err(|e| e.to_string())
    }
}
