//! The text encoder: all-MiniLM-L6-v2 (a 6-layer BERT) through
//! `candle_transformers::models::bert`; a sentence embedding is the
//! attention-masked mean of the last hidden states, L2-normalised (384-d).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Longest input in tokens (the model's sentence-transformers setting).
const MAX_TOKENS: usize = 256;
/// Sentences per forward pass.
const BATCH: usize = 64;

pub struct TextEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
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
        // The shipped tokenizer pads every input to 128: pad to the batch's longest
        // instead, and pool with the attention mask.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
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
        Ok(TextEncoder {
            model,
            tokenizer,
            device: device.clone(),
            dim: config.hidden_size,
        })
    }

    /// Embeds sentences: `texts.len() x dim` floats, row-major, each row unit-norm.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<f32>, String> {
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        for chunk in texts.chunks(BATCH) {
            let encodings = self
                .tokenizer
                .encode_batch(chunk.to_vec(), true)
                .map_err(|e| e.to_string())?;
            let len = encodings.first().map_or(0, |e| e.get_ids().len());
            let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
                encodings
                    .iter()
                    .flat_map(|e| f(e).iter().copied())
                    .collect()
            };
            let shape = (encodings.len(), len);
            let ids = Tensor::from_vec(flat(&|e| e.get_ids()), shape, &self.device)
                .map_err(|e| e.to_string())?;
            let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), shape, &self.device)
                .map_err(|e| e.to_string())?;
            let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), shape, &self.device)
                .map_err(|e| e.to_string())?;
            let pooled = (|| -> candle_core::Result<Tensor> {
                let hidden = self.model.forward(&ids, &types, Some(&mask))?;
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                crate::model::l2_normalize(&summed.broadcast_div(&counts)?)
            })()
            .map_err(|e| e.to_string())?;
            out.extend(
                pooled
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(out)
    }
}
