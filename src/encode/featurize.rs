//! `lethe featurize MANIFEST`: turns a manifest's `raw:` lists of images and
//! captions into its feature tables, with the frozen encoders.
//!
//! `raw.images` is JSON lines, one object per image: `id`, `file` (relative to the
//! raw root) and metadata, strings or lists of strings (`data::raw`);
//! `raw.captions` one object per caption: `id`, `image_id`, `text`. Features are
//! stored as f16. Work is saved in chunks of rows as it goes (`chunks.rs`), so a
//! killed run continues where it stopped; a table whose schema records the same
//! input hash is not computed again. Images are decoded in parallel, the next
//! batch while the encoder runs on the current one.

use super::chunks::{up_to_date, write_whole, ChunkStore};
use super::image::{load_rgb, ImageEncoder, SIZE};
use super::preprocess::load_photo;
use super::text::TextEncoder;
use crate::data::manifest::Crop;
use crate::data::raw::{read_raw_list, RawList, RawValue};
use crate::data::Manifest;
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use candle_core::Device;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Images per forward pass of the image encoder.
const IMAGE_BATCH: usize = 16;
/// Captions per call of the text encoder: it sorts them by length and batches by
/// 64 inside, so a larger call wastes less on padding.
const CAPTION_BATCH: usize = 1024;
/// A version of what the input hash covers; bump when features change meaning.
const HASH_SCHEMA: &str = "lethe featurize v2";

/// How to featurize.
#[derive(Debug, Clone)]
pub struct FeaturizeOptions {
    /// Where the image files are, instead of the manifest's `raw.root`.
    pub raw_root: Option<PathBuf>,
    /// Images per saved chunk (a multiple of the encoder batch keeps the batches
    /// of a resumed run the same as an uninterrupted one's).
    pub image_chunk: usize,
    /// Captions per saved chunk.
    pub caption_chunk: usize,
    /// Where the encoders run. Not the CPU's features to the last bit (the
    /// kernels round differently), so a table's chunks are never mixed across
    /// devices: the device is part of the chunks' input hash.
    pub device: Device,
    /// Pseudo negative captions per image, instead of the manifest's
    /// `pseudo_negatives.per_image` (0: none).
    pub pseudo_negatives: Option<usize>,
    /// The WordNet database the pseudo negatives are drawn from.
    pub wordnet: PathBuf,
}

impl Default for FeaturizeOptions {
    fn default() -> Self {
        FeaturizeOptions {
            raw_root: None,
            image_chunk: 64 * IMAGE_BATCH,
            caption_chunk: 8 * CAPTION_BATCH,
            device: Device::Cpu,
            pseudo_negatives: None,
            wordnet: PathBuf::from(super::wordnet::DEFAULT_DIR),
        }
    }
}

/// Computes the manifest's feature tables. `raw_root` overrides where image files
/// are; `progress` is told (table, done, total) as rows are done.
pub fn featurize(
    manifest_path: &Path,
    encoders: &Path,
    raw_root: Option<&Path>,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<String, String> {
    let options = FeaturizeOptions {
        raw_root: raw_root.map(Path::to_path_buf),
        ..FeaturizeOptions::default()
    };
    featurize_with(manifest_path, encoders, &options, progress)
}

/// [`featurize`] with every option.
pub fn featurize_with(
    manifest_path: &Path,
    encoders: &Path,
    options: &FeaturizeOptions,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<String, String> {
    let manifest = Manifest::load(manifest_path).map_err(|e| e.to_string())?;
    let raw = manifest.raw.clone().ok_or_else(|| {
        format!(
            "{}: no `raw:` section to featurize",
            manifest_path.display()
        )
    })?;
    if options.image_chunk == 0 || options.caption_chunk == 0 {
        return Err("chunks must hold at least one row".to_string());
    }
    let base = manifest.base_dir().to_path_buf();
    let mut report = String::new();
    if let Some(images) = &raw.images {
        let out = manifest
            .images_path()
            .ok_or("the manifest names no images table")?;
        let root = options
            .raw_root
            .clone()
            .unwrap_or_else(|| base.join(raw.root.as_deref().unwrap_or(".")));
        let list_path = base.join(images);
        let list = read_raw_list(&list_path, &["file"]).map_err(|e| e.to_string())?;
        let files = image_files(&list, &list_path, &root)?;
        let crop = raw.crop;
        let hash = input_hash(
            &list_path,
            &format!(
                "efficientnet-lite0 crop={crop:?}{}",
                device_tag(&options.device)
            ),
        )?;
        let job = Job {
            list: &list,
            out: &out,
            hash: &hash,
            chunk: options.image_chunk,
            what: "images",
        };
        let line = job.run(
            &["file"],
            progress,
            |rows: &[usize], encoder: &mut Option<ImageEncoder>| {
                if encoder.is_none() {
                    *encoder = Some(ImageEncoder::load(
                        &encoders.join("efficientnet-lite0.pth"),
                        &options.device,
                    )?);
                }
                let encoder = encoder.as_ref().ok_or("the image encoder is not loaded")?;
                encode_images(encoder, &files, rows, crop, &|done| {
                    progress("images", done, list.records.len())
                })
            },
        )?;
        report.push_str(&format!("{line} (EfficientNet-Lite0)\n"));
    } else if let Some(out) = manifest.images_path() {
        report.push_str(&format!(
            "{}: given as it is (no raw image list)\n",
            out.display()
        ));
    }
    let out = manifest
        .captions_path()
        .ok_or("the manifest names no captions table")?;
    let list_path = base.join(&raw.captions);
    let list = read_raw_list(&list_path, &["image_id", "text"]).map_err(|e| e.to_string())?;
    let hash = input_hash(
        &list_path,
        &format!("all-minilm-l6-v2{}", device_tag(&options.device)),
    )?;
    let job = Job {
        list: &list,
        out: &out,
        hash: &hash,
        chunk: options.caption_chunk,
        what: "captions",
    };
    // One text encoder for captions and prompts, loaded when first needed.
    let text_encoder: std::sync::OnceLock<Arc<TextEncoder>> = std::sync::OnceLock::new();
    let load_text = || -> Result<Arc<TextEncoder>, String> {
        if let Some(e) = text_encoder.get() {
            return Ok(e.clone());
        }
        let e = Arc::new(TextEncoder::load(
            &encoders.join("all-minilm-l6-v2"),
            &options.device,
        )?);
        Ok(text_encoder.get_or_init(|| e).clone())
    };
    let line = job.run(
        &[],
        progress,
        |rows: &[usize], encoder: &mut Option<Arc<TextEncoder>>| {
            if encoder.is_none() {
                *encoder = Some(load_text()?);
            }
            let encoder = encoder.as_ref().ok_or("the text encoder is not loaded")?;
            let mut features = Vec::with_capacity(rows.len() * encoder.dim);
            for batch in rows.chunks(CAPTION_BATCH) {
                let texts: Vec<&str> = batch.iter().map(|&r| list.text(r, "text")).collect();
                features.extend(encoder.encode(&texts)?);
                progress(
                    "captions",
                    batch.last().map_or(0, |r| r + 1),
                    list.records.len(),
                );
            }
            Ok((features, encoder.dim))
        },
    )?;
    report.push_str(&format!("{line} (all-MiniLM-L6-v2)\n"));
    let prompts_hash = format!(
        "{HASH_SCHEMA} prompts all-minilm-l6-v2{}",
        device_tag(&options.device)
    );
    if let Some(line) = super::prompts::featurize_prompts(&manifest, &load_text, &prompts_hash)? {
        report.push_str(&format!("{line} (all-MiniLM-L6-v2)\n"));
    }
    let asked = manifest.pseudo_negatives();
    let per_image = options
        .pseudo_negatives
        .or(asked.map(|p| p.per_image))
        .unwrap_or(0);
    if per_image > 0 {
        let seed = asked.map_or(0, |p| p.seed);
        let hash = format!(
            "{HASH_SCHEMA} pseudo all-minilm-l6-v2{}",
            device_tag(&options.device)
        );
        let line = super::pseudo::featurize_pseudo(
            &manifest,
            &list,
            &options.wordnet,
            per_image,
            seed,
            &load_text,
            &hash,
        )?;
        report.push_str(&format!("{line} (all-MiniLM-L6-v2)\n"));
    }
    Ok(report)
}

/// The device's part of the input hash: nothing for the CPU, so tables made
/// before devices were chosen stay valid.
fn device_tag(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "",
        Device::Cuda(_) => " device=cuda",
        Device::Metal(_) => " device=metal",
    }
}

/// What features depend on: the raw list's bytes and the encoder with its
/// preprocessing (not the manifest's splits, so editing a task recomputes nothing).
fn input_hash(list: &Path, encoder: &str) -> Result<String, String> {
    let mut h = blake3::Hasher::new();
    h.update(HASH_SCHEMA.as_bytes());
    h.update(encoder.as_bytes());
    let mut file = std::fs::File::open(list).map_err(|e| format!("{}: {e}", list.display()))?;
    std::io::copy(&mut file, &mut h).map_err(|e| format!("{}: {e}", list.display()))?;
    Ok(h.finalize().to_hex().to_string())
}

/// Every image's file, checked to exist before hours of work start.
fn image_files(list: &RawList, list_path: &Path, root: &Path) -> Result<Vec<PathBuf>, String> {
    (0..list.records.len())
        .map(|i| {
            let path = root.join(list.text(i, "file"));
            crate::files::regular_file(&path).map_err(|e| {
                format!(
                    "{}: line {}: image file {}: {}",
                    list_path.display(),
                    list.lines[i],
                    path.display(),
                    e.message
                )
            })?;
            Ok(path)
        })
        .collect()
}

/// Decodes, crops and encodes the image rows, decoding the next batch in
/// parallel while the encoder runs on the current one.
fn encode_images(
    encoder: &ImageEncoder,
    files: &[PathBuf],
    rows: &[usize],
    crop: Crop,
    progress: &dyn Fn(usize),
) -> Result<(Vec<f32>, usize), String> {
    let decode = |batch: &[usize]| -> Result<Vec<u8>, String> {
        let pixels: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|&r| match crop {
                Crop::None => load_rgb(&files[r]),
                Crop::Center => load_photo(&files[r]),
            })
            .collect::<Result<_, _>>()?;
        Ok(pixels.concat())
    };
    let batches: Vec<&[usize]> = rows.chunks(IMAGE_BATCH).collect();
    let mut features = Vec::with_capacity(rows.len() * 1280);
    let mut next = batches.first().map(|b| decode(b)).transpose()?;
    for (k, batch) in batches.iter().enumerate() {
        let rgb = next.take().ok_or("a decoded batch is missing")?;
        debug_assert_eq!(rgb.len(), batch.len() * SIZE * SIZE * 3);
        let (encoded, decoded) = rayon::join(
            || encoder.forward(&rgb, batch.len()),
            || batches.get(k + 1).map(|b| decode(b)).transpose(),
        );
        features.extend(encoded?.0);
        next = decoded?;
        progress(batch.last().map_or(0, |r| r + 1));
    }
    Ok((features, 1280))
}

/// One table to compute chunk by chunk and assemble.
struct Job<'a> {
    list: &'a RawList,
    out: &'a Path,
    hash: &'a str,
    chunk: usize,
    what: &'a str,
}

impl Job<'_> {
    /// Computes the missing chunks with `encode(rows, encoder)` -> (features,
    /// dim), then writes the table; returns the report line.
    fn run<E>(
        &self,
        skip: &[&str],
        progress: &dyn Fn(&str, usize, usize),
        encode: impl Fn(&[usize], &mut Option<E>) -> Result<(Vec<f32>, usize), String>,
    ) -> Result<String, String> {
        let rows = self.list.records.len();
        if up_to_date(self.out, self.hash) {
            return Ok(format!("{}: up to date", self.out.display()));
        }
        let store = ChunkStore::open(self.out, self.hash)?;
        let chunks = rows.div_ceil(self.chunk);
        let range = |i: usize| i * self.chunk..((i + 1) * self.chunk).min(rows);
        let ids_of =
            |i: usize| -> Vec<&str> { range(i).map(|r| self.list.text(r, "id")).collect() };
        let resumed = store.resumable(chunks, ids_of);
        progress(self.what, (resumed * self.chunk).min(rows), rows);
        let mut encoder = None;
        let mut dim = None;
        for i in resumed..chunks {
            let chunk_rows: Vec<usize> = range(i).collect();
            let (features, d) = encode(&chunk_rows, &mut encoder)?;
            if features.len() != chunk_rows.len() * d {
                return Err(format!(
                    "the encoder returned {} values for {} {}",
                    features.len(),
                    chunk_rows.len(),
                    self.what
                ));
            }
            dim = Some(d);
            store.write(i, &ids_of(i), &features, d)?;
        }
        let schema = self.schema(skip, &store, &ids_of(0), dim)?;
        let batches = (0..chunks).map(|i| {
            let feature = store.read(i, &ids_of(i), None).ok_or_else(|| {
                format!(
                    "{}: chunk {i} disappeared while assembling",
                    self.out.display()
                )
            })?;
            let mut columns = self.columns(skip, range(i));
            columns.push(feature);
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
        });
        write_whole(self.out, &schema, batches)?;
        store.remove()?;
        let width = match schema
            .field_with_name("feature")
            .map(|f| f.data_type().clone())
        {
            Ok(DataType::FixedSizeList(_, w)) => w,
            _ => 0,
        };
        Ok(format!(
            "{}: {rows} {} x {width}{}",
            self.out.display(),
            self.what,
            if resumed > 0 {
                format!(", resumed after {} rows", (resumed * self.chunk).min(rows))
            } else {
                String::new()
            }
        ))
    }

    /// The table's schema: `id`, the metadata fields in the raw list's order
    /// (lists as List<Utf8>), `feature` as FixedSizeList<f16>, the input hash.
    fn schema(
        &self,
        skip: &[&str],
        store: &ChunkStore,
        first_ids: &[&str],
        dim: Option<usize>,
    ) -> Result<Arc<Schema>, String> {
        let feature = store
            .read(0, first_ids, dim)
            .ok_or_else(|| format!("{}: the first chunk is missing", self.out.display()))?;
        let mut fields = Vec::new();
        for key in self.keys(skip) {
            if self.list.list_keys.contains(key) {
                let item = Field::new("item", DataType::Utf8, true);
                fields.push(Field::new(key, DataType::List(Arc::new(item)), false));
            } else {
                fields.push(Field::new(key, DataType::Utf8, false));
            }
        }
        fields.push(Field::new("feature", feature.data_type().clone(), false));
        let metadata = HashMap::from([("lethe.raw_hash".to_string(), self.hash.to_string())]);
        Ok(Arc::new(Schema::new_with_metadata(fields, metadata)))
    }

    fn keys<'k>(&'k self, skip: &'k [&str]) -> impl Iterator<Item = &'k String> + 'k {
        self.list
            .keys
            .iter()
            .filter(move |k| !skip.contains(&k.as_str()))
    }

    /// The metadata columns of a range of rows.
    fn columns(&self, skip: &[&str], rows: std::ops::Range<usize>) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        for key in self.keys(skip) {
            if self.list.list_keys.contains(key) {
                let mut builder = ListBuilder::new(StringBuilder::new());
                for r in rows.clone() {
                    if let Some(RawValue::Many(values)) = self.list.records[r].get(key) {
                        for v in values {
                            builder.values().append_value(v);
                        }
                    }
                    builder.append(true);
                }
                columns.push(Arc::new(builder.finish()));
            } else {
                let values: StringArray =
                    rows.clone().map(|r| Some(self.list.text(r, key))).collect();
                columns.push(Arc::new(values));
            }
        }
        columns
    }
}
