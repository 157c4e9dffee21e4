//! `lethe import precomp`: VSE++ / SCAN precomputed features. Each pair of
//! files is `*_ims.npy` (one row per image; SCAN's regions averaged; or one row
//! per caption, each image's row repeated) and `*_caps.txt` (one caption per
//! line, image i owning lines `k*i .. k*i + k - 1` for `--captions-per-image k`).
//!
//! The image features go straight into `images.arrow`. The precomp format has
//! no caption features (VSE++ and SCAN learn their text encoder from words), so
//! the captions go into `raw/captions.jsonl` and `lethe featurize` embeds them
//! with all-MiniLM-L6-v2, lethe's frozen text encoder; a user who has sentence
//! features already passes them with `--caption-features caps.npy` (one row per
//! caption) and the dataset is complete at once.

use super::labels::{self, LabelColumn};
use super::manifest::{caption_topics, write_checked, ManifestSpec, SplitSpec, TaskSpec};
use super::npy::{self, Dtype, Matrix};
use super::{record, ImportError, Output, Record, Summary};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float16Array, Float32Array, RecordBatch, StringArray,
};
use arrow_schema::{Field, Schema};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `lethe import precomp` was given. Lists pair up by position.
#[derive(Debug, Clone)]
pub struct PrecompArgs {
    pub images: Vec<PathBuf>,
    pub captions: Vec<PathBuf>,
    pub parts: Vec<String>,
    pub caption_features: Vec<PathBuf>,
    pub captions_per_image: usize,
    pub tasks: Option<PathBuf>,
    pub out: PathBuf,
}

/// One pair of files, read and checked.
struct Pair {
    prefix: String,
    part: Option<&'static str>,
    images: Matrix,
    captions: Vec<String>,
    caption_features: Option<Matrix>,
}

pub fn import(args: &PrecompArgs) -> Result<Summary, ImportError> {
    let first = args
        .images
        .first()
        .ok_or_else(|| ImportError::Write("give at least one --images file".into()))?;
    let usage = |m: String| ImportError::invalid(first, m);
    if args.images.len() != args.captions.len() {
        return Err(usage(format!(
            "{} --images files and {} --captions files: give them in pairs",
            args.images.len(),
            args.captions.len()
        )));
    }
    for (name, n) in [
        ("--part", args.parts.len()),
        ("--caption-features", args.caption_features.len()),
    ] {
        if n != 0 && n != args.images.len() {
            return Err(usage(format!(
                "{n} {name} values for {} pairs of files: give one per pair, or none",
                args.images.len()
            )));
        }
    }
    if args.captions_per_image == 0 {
        return Err(usage("--captions-per-image must be at least 1".into()));
    }
    let mut pairs = Vec::new();
    for (p, (images, captions)) in args.images.iter().zip(&args.captions).enumerate() {
        pairs.push(read_pair(args, p, images, captions)?);
    }
    let dim = pairs[0].images.dim;
    for (p, pair) in pairs.iter().enumerate() {
        if pair.images.dim != dim {
            return Err(ImportError::invalid(
                &args.images[p],
                format!(
                    "has {}-d features; {} has {dim}-d",
                    pair.images.dim,
                    args.images[0].display()
                ),
            ));
        }
    }
    let text_dim = pairs[0].caption_features.as_ref().map(|m| m.dim);
    for (p, pair) in pairs.iter().enumerate() {
        if pair.caption_features.as_ref().map(|m| m.dim) != text_dim {
            return Err(ImportError::invalid(
                &args.caption_features[p],
                "caption features of another width than the first file's",
            ));
        }
    }
    let mut ids = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (p, pair) in pairs.iter().enumerate() {
        if let Some(q) = seen.insert(pair.prefix.clone(), p) {
            return Err(ImportError::invalid(
                &args.images[p],
                format!(
                    "names its images `{}/…` like {}: rename one file",
                    pair.prefix,
                    args.images[q].display()
                ),
            ));
        }
        ids.extend((0..pair.images.rows).map(|i| format!("{}/{i}", pair.prefix)));
    }
    let label_columns = match &args.tasks {
        Some(path) => labels::read(path, ids.len())?,
        None => Vec::new(),
    };
    // A `split` label decides the parts; otherwise --part or the file names do.
    if label_columns.iter().any(|(n, _)| n == "split") {
        if let (Some(path), false) = (&args.tasks, args.parts.is_empty()) {
            return Err(ImportError::invalid(
                path,
                "has a `split` column, and --part gives parts too: keep one",
            ));
        }
        for pair in &mut pairs {
            pair.part = None;
        }
    } else {
        let known = pairs.iter().filter(|p| p.part.is_some()).count();
        if known != 0 && known != pairs.len() {
            let unknown = pairs.iter().position(|p| p.part.is_none()).unwrap_or(0);
            return Err(ImportError::invalid(&args.images[unknown], "the file name says no part (train, dev/val or test) while others do: give every pair a --part"));
        }
    }
    let known = pairs.iter().filter(|p| p.part.is_some()).count();
    let mut out = Output::begin(&args.out)?;
    write_images(&mut out, &mut pairs, &ids, &label_columns, dim)?;
    let caption_records = caption_records(&pairs, args.captions_per_image);
    out.write_jsonl("raw/captions.jsonl", &caption_records)?;
    if text_dim.is_some() {
        write_captions(&mut out, &mut pairs, &caption_records)?;
    }
    let parts_known = known > 0 || label_columns.iter().any(|(n, _)| n == "split");
    let spec = spec(
        args,
        &pairs,
        &label_columns,
        parts_known,
        text_dim.is_some(),
    );
    let notes = write_checked(&mut out, "precomp.yaml", spec)?;
    let manifest = out.dir().join("precomp.yaml");
    out.commit("precomp.yaml")?;
    let mut lines = vec![format!(
        "{} images x {dim}, {} captions",
        ids.len(),
        caption_records.len()
    )];
    for (p, pair) in pairs.iter().enumerate() {
        lines.push(format!(
            "{}: {} images{}{}",
            args.images[p].display(),
            pair.images.rows,
            pair.part.map(|s| format!(" ({s})")).unwrap_or_default(),
            if pair.images.regions > 1 {
                format!(", {} regions averaged", pair.images.regions)
            } else {
                String::new()
            }
        ));
    }
    lines.extend(notes);
    Ok(Summary {
        manifest,
        lines,
        needs_featurize: text_dim.is_none(),
    })
}

fn read_pair(
    args: &PrecompArgs,
    p: usize,
    images: &Path,
    captions: &Path,
) -> Result<Pair, ImportError> {
    let k = args.captions_per_image;
    let text = crate::files::read_text_bounded(captions, 4 << 30)?;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').trim().to_string())
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    if let Some(i) = lines.iter().position(String::is_empty) {
        return Err(ImportError::at(
            captions,
            &format!("line {}", i + 1),
            "the caption is empty",
        ));
    }
    if lines.is_empty() {
        return Err(ImportError::invalid(captions, "holds no caption"));
    }
    if !lines.len().is_multiple_of(k) {
        let last_image = lines.len() / k;
        return Err(ImportError::at(
            captions,
            &format!("line {}", lines.len()),
            format!(
                "{} captions is not a multiple of --captions-per-image {k}: image {last_image} would have {} (lines {}-{})",
                lines.len(),
                lines.len() % k,
                last_image * k + 1,
                lines.len()
            ),
        ));
    }
    let expected = lines.len() / k;
    let shape = npy::shape(images)?;
    let rows = shape.first().copied().unwrap_or(0);
    let repeat = if rows == expected {
        1
    } else if rows == lines.len() && k > 1 {
        k
    } else {
        return Err(ImportError::invalid(images, format!(
            "has {rows} rows; {} has {} captions, so {expected} images at {k} captions each (or {} rows, one per caption)",
            captions.display(), lines.len(), lines.len()
        )));
    };
    let matrix = npy::read(images, repeat)?;
    let caption_features = match args.caption_features.get(p) {
        Some(path) => {
            let m = npy::read(path, 1)?;
            if m.rows != lines.len() || m.regions != 1 {
                return Err(ImportError::invalid(
                    path,
                    format!(
                        "has {} rows of {}; expected one row per caption of {} ({})",
                        m.rows,
                        if m.regions > 1 { "regions" } else { "features" },
                        captions.display(),
                        lines.len()
                    ),
                ));
            }
            Some(m)
        }
        None => None,
    };
    let stem = images
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = stem.strip_suffix("_ims").unwrap_or(&stem).to_string();
    let part = match args.parts.get(p).map(String::as_str) {
        Some("train") => Some("train"),
        Some("val") => Some("val"),
        Some("test") => Some("test"),
        Some(other) => {
            return Err(ImportError::invalid(
                images,
                format!("--part `{other}`: expected train, val or test"),
            ))
        }
        None => guess_part(&prefix),
    };
    Ok(Pair {
        prefix,
        part,
        images: matrix,
        captions: lines,
        caption_features,
    })
}

/// VSE++'s file names: `train_ims.npy`, `dev_ims.npy`, `test_ims.npy`, `testall_ims.npy`.
fn guess_part(prefix: &str) -> Option<&'static str> {
    let p = prefix.to_ascii_lowercase();
    if p.starts_with("train") {
        Some("train")
    } else if p.starts_with("dev") || p.starts_with("val") {
        Some("val")
    } else if p.starts_with("test") {
        Some("test")
    } else {
        None
    }
}

fn caption_records(pairs: &[Pair], k: usize) -> Vec<Record> {
    let mut records = Vec::new();
    for pair in pairs {
        for (c, text) in pair.captions.iter().enumerate() {
            let image = format!("{}/{}", pair.prefix, c / k);
            records.push(record([
                ("id", json!(format!("{image}#{}", c % k))),
                ("image_id", json!(image)),
                ("text", json!(text)),
            ]));
        }
    }
    records
}

/// Features as a FixedSizeList column, f16 when every input was f16.
fn feature_column(values: Vec<f32>, dim: usize, f16: bool) -> Result<ArrayRef, ImportError> {
    let array: ArrayRef = if f16 {
        Arc::new(
            values
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect::<Float16Array>(),
        )
    } else {
        Arc::new(Float32Array::from(values))
    };
    let item = Arc::new(Field::new("item", array.data_type().clone(), false));
    let list = FixedSizeListArray::try_new(item, dim as i32, array, None)
        .map_err(|e| ImportError::Write(e.to_string()))?;
    Ok(Arc::new(list))
}

fn write_table(
    out: &mut Output,
    name: &str,
    columns: Vec<(String, ArrayRef)>,
) -> Result<(), ImportError> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(n, a.data_type().clone(), false))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|e| ImportError::Write(e.to_string()))?;
    // Written as zero-copy slices of `WRITE_BATCH` rows: Arrow's IPC writer
    // encodes each batch in memory before writing it, so one whole-table
    // batch would hold the features twice (1.84x at COCO size).
    let rows = batch.num_rows();
    let slices = (0..rows.div_ceil(WRITE_BATCH).max(1)).map(|i| {
        let start = i * WRITE_BATCH;
        Ok(batch.slice(start, WRITE_BATCH.min(rows - start)))
    });
    let path = out.file(name);
    crate::encode::chunks::write_whole(&path, &schema, slices).map_err(ImportError::Write)
}

/// Rows per record batch of an imported table (as `lethe featurize` writes).
const WRITE_BATCH: usize = 8192;

fn write_images(
    out: &mut Output,
    pairs: &mut [Pair],
    ids: &[String],
    labels: &[(String, LabelColumn)],
    dim: usize,
) -> Result<(), ImportError> {
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "id".into(),
        Arc::new(
            ids.iter()
                .map(|s| Some(s.as_str()))
                .collect::<StringArray>(),
        ),
    )];
    if pairs[0].part.is_some() {
        let parts: StringArray = pairs
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.part, p.images.rows))
            .collect();
        columns.push(("split".into(), Arc::new(parts)));
    }
    for (name, column) in labels {
        if name == "split" && pairs[0].part.is_some() {
            return Err(ImportError::Write(
                "a `split` column in --tasks and parts from the file names or --part: keep one"
                    .into(),
            ));
        }
        let array: ArrayRef = match column {
            LabelColumn::One(values) => Arc::new(
                values
                    .iter()
                    .map(|s| Some(s.as_str()))
                    .collect::<StringArray>(),
            ),
            LabelColumn::Many(values) => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for row in values {
                    for v in row {
                        b.values().append_value(v);
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
        };
        columns.push((name.clone(), array));
    }
    let f16 = pairs.iter().all(|p| p.images.dtype == Dtype::F16);
    let values = concat(
        pairs
            .iter_mut()
            .map(|p| std::mem::take(&mut p.images.values)),
    );
    columns.push(("feature".into(), feature_column(values, dim, f16)?));
    write_table(out, "images.arrow", columns)
}

/// The pairs' features in one vector, taken (not copied) when there is one pair,
/// each freed as soon as it is copied otherwise: the features are held once.
fn concat(parts: impl Iterator<Item = Vec<f32>>) -> Vec<f32> {
    let mut parts: Vec<Vec<f32>> = parts.collect();
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        all.extend_from_slice(&part);
    }
    all
}

fn write_captions(
    out: &mut Output,
    pairs: &mut [Pair],
    records: &[Record],
) -> Result<(), ImportError> {
    let text = |key: &str| -> ArrayRef {
        Arc::new(
            records
                .iter()
                .map(|r| r.get(key).and_then(|v| v.as_str()))
                .collect::<StringArray>(),
        )
    };
    let dim = pairs[0].caption_features.as_ref().map_or(0, |m| m.dim);
    let f16 = pairs.iter().all(|p| {
        p.caption_features
            .as_ref()
            .is_some_and(|m| m.dtype == Dtype::F16)
    });
    let values = concat(pairs.iter_mut().filter_map(|p| {
        p.caption_features
            .as_mut()
            .map(|m| std::mem::take(&mut m.values))
    }));
    let columns = vec![
        ("id".to_string(), text("id")),
        ("image_id".to_string(), text("image_id")),
        ("text".to_string(), text("text")),
        ("feature".to_string(), feature_column(values, dim, f16)?),
    ];
    write_table(out, "captions.arrow", columns)
}

fn spec(
    args: &PrecompArgs,
    pairs: &[Pair],
    labels: &[(String, LabelColumn)],
    parts_known: bool,
    caption_features: bool,
) -> ManifestSpec {
    let has_val = pairs.iter().any(|p| p.part == Some("val"))
        || !parts_known
        || labels.iter().any(|(n, c)| {
            n == "split" && matches!(c, LabelColumn::One(v) if v.iter().any(|s| s == "val"))
        });
    let base = match labels.iter().find(|(n, _)| n != "split") {
        Some((name, column)) => label_split(name, column),
        None => caption_topics(&[]),
    };
    let mut splits = vec![base.clone()];
    if has_val {
        let mut val = base;
        val.name = format!("{}-val", val.name);
        val.options.insert(0, "evaluate: val".into());
        val.comment =
            vec!["The same tasks evaluated on the validation part (for choosing λ).".into()];
        splits.push(val);
    }
    let files: Vec<String> = args
        .images
        .iter()
        .chain(&args.captions)
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    ManifestSpec {
        header: vec![
            format!(
                "Written by `lethe import precomp` from {}.",
                files.join(", ")
            ),
            if caption_features {
                "Image and caption features are given as they are.".into()
            } else {
                "Image features are given; `lethe featurize` embeds the captions (MiniLM).".into()
            },
        ],
        name: "precomp".into(),
        description: "precomputed image features with their captions".into(),
        image_encoder: "precomputed".into(),
        text_encoder: if caption_features {
            "precomputed".into()
        } else {
            "all-minilm-l6-v2".into()
        },
        test_fraction: (!parts_known).then_some(0.1),
        val_fraction: if parts_known { 0.0 } else { 0.05 },
        raw: if caption_features {
            Vec::new()
        } else {
            vec!["captions: raw/captions.jsonl".into()]
        },
        splits,
    }
}

/// One task per value of a label column (the 12 most frequent), in order of
/// frequency; a multi-valued column selects by `match: dominant`.
fn label_split(name: &str, column: &LabelColumn) -> SplitSpec {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut bump = |v: &str| match counts.iter_mut().find(|(k, _)| k == v) {
        Some((_, n)) => *n += 1,
        None => counts.push((v.to_string(), 1)),
    };
    let many = matches!(column, LabelColumn::Many(_));
    match column {
        LabelColumn::One(values) => values.iter().for_each(|v| bump(v)),
        LabelColumn::Many(values) => values.iter().flatten().for_each(|v| bump(v)),
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.truncate(12);
    let key = super::manifest::yaml_string(name);
    let mut names: Vec<String> = Vec::new();
    let tasks = counts
        .iter()
        .enumerate()
        .map(|(i, (value, _))| {
            // A task name is a word of the pipeline language: letters, digits, `_`.
            let task: String = value
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            let mut task =
                if task.is_empty() || !task.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    format!("task{}_{task}", i + 1)
                } else {
                    task
                };
            if names.contains(&task) {
                task = format!("{task}_{}", i + 1);
            }
            names.push(task.clone());
            let rule = if many {
                format!(
                    "{{ {key}: [{}], match: dominant }}",
                    super::manifest::yaml_string(value)
                )
            } else {
                format!("{{ {key}: [{}] }}", super::manifest::yaml_string(value))
            };
            TaskSpec::new(&task, rule)
        })
        .collect();
    SplitSpec {
        name: "labels".into(),
        comment: vec![format!(
            "One task per value of the `{name}` label (the most frequent first)."
        )],
        options: Vec::new(),
        tasks,
    }
}
