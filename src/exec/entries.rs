//! Reading and writing the files of cache entries: JSON lines (evaluation rows,
//! training logs) and embeddings.

use super::cache::Cache;
use crate::eval::Embedded;
use crate::model::load_checkpoint;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Reads an `index`/`query` entry: modality name → (rows x dim) row-major floats.
pub fn read_embeddings(cache: &Cache, key: &str) -> Result<Embedded, String> {
    let path = cache.entry(key).join("embeddings.safetensors");
    let (tensors, _) =
        load_checkpoint(&path, "embeddings", &Device::Cpu).map_err(|e| e.to_string())?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let rows = t.dim(0).map_err(|e| e.to_string())?;
            let data = t
                .flatten_all()
                .and_then(|f| f.to_vec1::<f32>())
                .map_err(|e| e.to_string())?;
            Ok((name, (rows, data)))
        })
        .collect()
}

/// Writes one JSON object per line.
pub fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), String> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    for r in rows {
        writeln!(
            w,
            "{}",
            serde_json::to_string(r).map_err(|e| e.to_string())?
        )
        .map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

/// Reads one JSON object per line.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}
