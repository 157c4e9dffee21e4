//! Checkpoints (model weights, importance tensors) as safetensors files with
//! provenance metadata.
//!
//! safetensors serialises its metadata from a `HashMap`, whose order changes from
//! process to process; all metadata therefore lives under one key, `lethe`, as
//! canonical JSON, which keeps checkpoint bytes identical across runs.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The checkpoint format; bump when the layout changes.
pub const FORMAT: &str = "lethe-checkpoint-v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    /// `model` or `importance`.
    pub kind: String,
    pub lethe_version: String,
    /// The key of the node that made it.
    pub node_key: String,
    /// The node's canonical settings.
    pub settings: serde_json::Value,
    pub image_dim: usize,
    pub text_dim: usize,
}

impl CheckpointMeta {
    pub fn new(
        kind: &str,
        node_key: &str,
        settings: serde_json::Value,
        image_dim: usize,
        text_dim: usize,
    ) -> Self {
        CheckpointMeta {
            format: FORMAT.to_string(),
            kind: kind.to_string(),
            lethe_version: env!("CARGO_PKG_VERSION").to_string(),
            node_key: node_key.to_string(),
            settings,
            image_dim,
            text_dim,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes tensors and metadata atomically (temporary file, then rename).
pub fn save_checkpoint(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
) -> Result<(), CheckpointError> {
    let json = serde_json::to_string(
        &serde_json::to_value(meta).map_err(|e| invalid(path, e.to_string()))?,
    )
    .map_err(|e| invalid(path, e.to_string()))?;
    let info = HashMap::from([("lethe".to_string(), json)]);
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()
        .map_err(|e| invalid(path, e.to_string()))?;
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(info))
        .map_err(|e| invalid(path, e.to_string()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| invalid(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| invalid(path, e.to_string()))
}

/// Reads a checkpoint, checking its format, kind and version.
pub fn load_checkpoint(
    path: &Path,
    kind: &str,
    device: &Device,
) -> Result<(Vec<(String, Tensor)>, CheckpointMeta), CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| invalid(path, format!("cannot read: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("lethe"))
        .ok_or_else(|| invalid(path, "not a lethe checkpoint (no `lethe` metadata)"))?;
    let meta: CheckpointMeta = serde_json::from_str(json)
        .map_err(|e| invalid(path, format!("unreadable lethe metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(invalid(
            path,
            format!("format `{}`, this lethe reads `{FORMAT}`", meta.format),
        ));
    }
    if meta.lethe_version != env!("CARGO_PKG_VERSION") {
        return Err(invalid(
            path,
            format!(
                "made by lethe {}, this is lethe {}: rerun the node (delete it from the cache)",
                meta.lethe_version,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    if meta.kind != kind {
        return Err(invalid(
            path,
            format!("a `{}` checkpoint, expected `{kind}`", meta.kind),
        ));
    }
    let map = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| invalid(path, e.to_string()))?;
    let mut tensors: Vec<(String, Tensor)> = map.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tensors, meta))
}
