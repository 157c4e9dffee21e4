//! `lethe featurize MANIFEST`: turns a manifest's `raw:` lists of images and
//! captions into its feature tables, with the frozen encoders.
//!
//! `raw.images` is JSON lines, one object per image: `id`, `file` (relative to the
//! raw root) and any string metadata (`group`, `subgroup`, ...); `raw.captions` one
//! object per caption: `id`, `image_id`, `text`. Features are stored as f16. A
//! table whose schema records the same raw-list hash is not computed again, so an
//! interrupted featurization resumes with the table it had not finished.

use super::image::{load_rgb, ImageEncoder, SIZE};
use super::text::TextEncoder;
use crate::data::Manifest;
use arrow_array::builder::{FixedSizeListBuilder, Float16Builder};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use candle_core::Device;
use indexmap::IndexMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const IMAGE_BATCH: usize = 16;

/// One JSON-lines record: string fields in file order.
type Record = IndexMap<String, String>;

fn read_jsonl(path: &Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: IndexMap<String, serde_json::Value> = serde_json::from_str(l)
                .map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))?;
            v.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    other => Err(format!(
                        "{}: line {}: `{k}` must be a string, found {other}",
                        path.display(),
                        i + 1
                    )),
                })
                .collect()
        })
        .collect()
}

fn field<'a>(r: &'a Record, name: &str, path: &Path, row: usize) -> Result<&'a str, String> {
    r.get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("{}: record {row} has no `{name}`", path.display()))
}

/// Writes a table of string columns plus an f16 `feature` column, atomically,
/// with the raw-list hash in the schema metadata.
fn write(
    path: &Path,
    columns: &[(String, Vec<String>)],
    features: &[f32],
    dim: usize,
    hash: &str,
) -> Result<(), String> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, values) in columns {
        fields.push(Field::new(name, arrow_schema::DataType::Utf8, false));
        arrays.push(Arc::new(
            values
                .iter()
                .map(|s| Some(s.as_str()))
                .collect::<StringArray>(),
        ));
    }
    let mut list = FixedSizeListBuilder::new(Float16Builder::new(), dim as i32);
    for row in features.chunks(dim) {
        for v in row {
            list.values().append_value(half::f16::from_f32(*v));
        }
        list.append(true);
    }
    let list = list.finish();
    fields.push(Field::new("feature", list.data_type().clone(), false));
    arrays.push(Arc::new(list));
    let metadata = HashMap::from([("lethe.raw_hash".to_string(), hash.to_string())]);
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())?;
    crate::results::write_batches(path, &schema, &[batch])
}

fn up_to_date(path: &Path, hash: &str) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(reader) = arrow_ipc::reader::FileReader::try_new(file, None) else {
        return false;
    };
    reader
        .schema()
        .metadata()
        .get("lethe.raw_hash")
        .map(String::as_str)
        == Some(hash)
}

/// Computes the manifest's feature tables. `raw_root` overrides where image files
/// are; `progress` is told (done, total) per table.
pub fn featurize(
    manifest_path: &Path,
    encoders: &Path,
    raw_root: Option<&Path>,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<String, String> {
    let text = std::fs::read_to_string(manifest_path)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let manifest = Manifest::load(manifest_path).map_err(|e| e.to_string())?;
    let raw = manifest.raw.clone().ok_or_else(|| {
        format!(
            "{}: no `raw:` section to featurize",
            manifest_path.display()
        )
    })?;
    let base = manifest.base_dir().to_path_buf();
    let root: PathBuf = raw_root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| base.join(raw.root.as_deref().unwrap_or(".")));
    let (images_path, captions_path) = (base.join(&raw.images), base.join(&raw.captions));
    let images = read_jsonl(&images_path)?;
    let captions = read_jsonl(&captions_path)?;
    let out_images = manifest
        .images_path()
        .ok_or("the manifest names no images table")?;
    let out_captions = manifest
        .captions_path()
        .ok_or("the manifest names no captions table")?;
    let hash = |list: &Path, encoder: &str| {
        let mut h = blake3::Hasher::new();
        h.update(std::fs::read(list).unwrap_or_default().as_slice());
        h.update(encoder.as_bytes());
        h.update(text.as_bytes());
        h.finalize().to_hex().to_string()
    };
    let mut report = String::new();
    let image_hash = hash(&images_path, "efficientnet-lite0");
    if up_to_date(&out_images, &image_hash) {
        report.push_str(&format!("{}: up to date\n", out_images.display()));
    } else {
        let encoder = ImageEncoder::load(&encoders.join("efficientnet-lite0.pth"), &Device::Cpu)?;
        let mut columns: Vec<(String, Vec<String>)> = images[0]
            .keys()
            .filter(|k| *k != "file")
            .map(|k| (k.clone(), Vec::new()))
            .collect();
        let mut features = Vec::with_capacity(images.len() * 1280);
        for (start, chunk) in images
            .chunks(IMAGE_BATCH)
            .enumerate()
            .map(|(i, c)| (i * IMAGE_BATCH, c))
        {
            let mut rgb = Vec::with_capacity(chunk.len() * SIZE * SIZE * 3);
            for (i, r) in chunk.iter().enumerate() {
                rgb.extend(load_rgb(&root.join(field(
                    r,
                    "file",
                    &images_path,
                    start + i,
                )?))?);
                for (name, values) in columns.iter_mut() {
                    values.push(field(r, name, &images_path, start + i)?.to_string());
                }
            }
            features.extend(encoder.forward(&rgb, chunk.len())?.0);
            progress("images", start + chunk.len(), images.len());
        }
        write(&out_images, &columns, &features, 1280, &image_hash)?;
        report.push_str(&format!(
            "{}: {} images x 1280 (EfficientNet-Lite0)\n",
            out_images.display(),
            images.len()
        ));
    }
    let caption_hash = hash(&captions_path, "all-minilm-l6-v2");
    if up_to_date(&out_captions, &caption_hash) {
        report.push_str(&format!("{}: up to date\n", out_captions.display()));
    } else {
        let encoder = TextEncoder::load(&encoders.join("all-minilm-l6-v2"), &Device::Cpu)?;
        let mut columns: Vec<(String, Vec<String>)> = captions[0]
            .keys()
            .map(|k| (k.clone(), Vec::new()))
            .collect();
        let mut features = Vec::with_capacity(captions.len() * encoder.dim);
        for (start, chunk) in captions.chunks(256).enumerate().map(|(i, c)| (i * 256, c)) {
            let mut texts = Vec::with_capacity(chunk.len());
            for (i, r) in chunk.iter().enumerate() {
                texts.push(field(r, "text", &captions_path, start + i)?);
                for (name, values) in columns.iter_mut() {
                    values.push(field(r, name, &captions_path, start + i)?.to_string());
                }
            }
            features.extend(encoder.encode(&texts)?);
            progress("captions", start + chunk.len(), captions.len());
        }
        write(
            &out_captions,
            &columns,
            &features,
            encoder.dim,
            &caption_hash,
        )?;
        report.push_str(&format!(
            "{}: {} captions x {} (all-MiniLM-L6-v2)\n",
            out_captions.display(),
            captions.len(),
            encoder.dim
        ));
    }
    Ok(report)
}
