//! A split of a dataset in memory: features once, and per task the rows that
//! training and evaluation read.
//!
//! Tasks select images by the split's rules ([`super::select`]); a caption
//! belongs to the task of its image. Every image is in one of three parts: the
//! images table's `split` column says `train`, `val` or `test`; without it, a
//! stable hash of the id decides (blake3 of the id read as a number in [0, 1):
//! below `test_fraction` test, below `test_fraction + val_fraction` val, else
//! train), so the choice never depends on row order or on the other items.
//! Training reads train images only; evaluation reads the test part, or the
//! validation part in a split that says `evaluate: val` (for choosing settings
//! such as λ without looking at test data). `test_images: N` keeps at most N
//! held-out images per task and part, the first by id hash. Rows keep table
//! order, so a manifest always gives the same items in the same order.

use super::error::DataError;
use super::features::Features;
use super::manifest::{Kind, Manifest};
use super::pairs::PairData;
use super::raw::{raw_table, read_raw_list};
use super::read::{read_table, read_table_with, Read};
use super::rules::Part;
use super::select::{random_chunks, select, TaskReport};
use super::tables::Table;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The rows of one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRows {
    pub name: String,
    /// Training pairs, as caption rows.
    pub train_captions: Vec<u32>,
    /// The evaluated gallery/query items, in the order searches use: the test
    /// part, or the validation part when the split says `evaluate: val`.
    pub test_images: Vec<u32>,
    pub test_captions: Vec<u32>,
    /// The validation part: neither trained on nor reported as test.
    pub val_images: Vec<u32>,
    pub val_captions: Vec<u32>,
}

/// Features and task rows of one split.
#[derive(Debug, Clone, Default)]
pub struct LoadedSplit {
    pub image_features: Features,
    pub image_dim: usize,
    pub caption_features: Features,
    pub text_dim: usize,
    pub caption_image: Vec<u32>,
    /// Stable identifiers of images and captions (for embeddings tables).
    pub image_ids: Vec<String>,
    pub caption_ids: Vec<String>,
    pub tasks: Vec<TaskRows>,
    /// The part `test_images`/`test_captions` hold.
    pub evaluated: Part,
}

impl LoadedSplit {
    pub fn pairs(&self) -> PairData<'_> {
        PairData {
            image_features: &self.image_features,
            image_dim: self.image_dim,
            caption_features: &self.caption_features,
            text_dim: self.text_dim,
            caption_image: &self.caption_image,
        }
    }

    pub fn task(&self, name: &str) -> Result<&TaskRows, String> {
        self.tasks
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("the split has no task `{name}`"))
    }

    /// A summary for the `load` node's cache entry.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "image_dim": self.image_dim,
            "text_dim": self.text_dim,
            "images": self.image_ids.len(),
            "captions": self.caption_ids.len(),
            "evaluated": self.evaluated.name(),
            "tasks": self.tasks.iter().map(|t| serde_json::json!({
                "name": t.name,
                "train_captions": t.train_captions.len(),
                "test_images": t.test_images.len(),
                "test_captions": t.test_captions.len(),
                "val_images": t.val_images.len(),
                "val_captions": t.val_captions.len(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// An image id's stable position in [0, 1): blake3 of the id.
pub fn id_hash(id: &str) -> f64 {
    let h = blake3::hash(id.as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    x as f64 / u64::MAX as f64
}

/// Whether an image id falls in the test split.
pub fn is_test(id: &str, test_fraction: f64) -> bool {
    id_hash(id) < test_fraction
}

/// The image and caption tables of a manifest, read or generated.
pub fn tables(manifest: &Manifest) -> Result<(Table, Table), DataError> {
    match manifest.kind {
        Kind::Synthetic => {
            let p = manifest
                .synthetic
                .as_ref()
                .ok_or_else(|| DataError::invalid(&manifest.path, "no synthetic parameters"))?;
            Ok(super::synthetic::generate(p))
        }
        Kind::Tables => {
            let (images, captions) = table_paths(manifest)?;
            Ok((
                read_table(&images, &[])?,
                read_table(&captions, &["image_id"])?,
            ))
        }
    }
}

fn table_paths(manifest: &Manifest) -> Result<(PathBuf, PathBuf), DataError> {
    let missing = || DataError::invalid(&manifest.path, "names no images or captions table");
    Ok((
        manifest.images_path().ok_or_else(missing)?,
        manifest.captions_path().ok_or_else(missing)?,
    ))
}

/// Where a table's rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Table,
    /// The manifest's raw list: the table is not featurized yet (no features).
    RawList,
}

/// The tables, or for a table not built yet, its raw list (what `lethe
/// validate` and `lethe data inspect` check before `lethe featurize`).
pub fn tables_or_raw(manifest: &Manifest) -> Result<(Table, Table, [Origin; 2]), DataError> {
    tables_or_raw_with(manifest, Read::Everything)
}

/// [`tables_or_raw`], reading only ids and metadata from tables with
/// [`Read::MetadataOnly`] (synthetic data is generated whole).
pub fn tables_or_raw_with(
    manifest: &Manifest,
    what: Read,
) -> Result<(Table, Table, [Origin; 2]), DataError> {
    if manifest.kind == Kind::Synthetic {
        let (i, c) = tables(manifest)?;
        return Ok((i, c, [Origin::Table; 2]));
    }
    let (images_path, captions_path) = table_paths(manifest)?;
    let raw = manifest.raw.as_ref();
    let base = manifest.base_dir();
    // Raw lists need more fields than tables: `file` and `text` go into features.
    let read =
        |path: &Path, list: Option<&String>, table: &[&str], raw: &[&str], skip: &[&str]| match (
            path.exists(),
            list,
        ) {
            (false, Some(list)) => {
                let list = read_raw_list(&base.join(list), raw)?;
                Ok((raw_table(&list, skip), Origin::RawList))
            }
            _ => read_table_with(path, table, what).map(|t| (t, Origin::Table)),
        };
    let images_list = raw.and_then(|r| r.images.as_ref());
    let (images, a) = read(&images_path, images_list, &[], &["file"], &["file"])?;
    let captions_list = raw.map(|r| &r.captions);
    let (captions, b) = read(
        &captions_path,
        captions_list,
        &["image_id"],
        &["image_id", "text"],
        &[],
    )?;
    Ok((images, captions, [a, b]))
}

/// Loads one split of a manifest, checking every cross-table rule.
pub fn load_split(manifest: &Manifest, split: &str) -> Result<LoadedSplit, DataError> {
    let (images, captions) = tables(manifest)?;
    let cut = cut(manifest, split, &images, &captions)?;
    Ok(LoadedSplit {
        image_features: images.features,
        image_dim: images.dim,
        caption_features: captions.features,
        text_dim: captions.dim,
        caption_image: cut.caption_image,
        image_ids: images.ids,
        caption_ids: captions.ids,
        tasks: cut.tasks,
        evaluated: cut.evaluated,
    })
}

/// A split's task rows over tables, with what each rule selected and dropped.
#[derive(Debug, Clone)]
pub struct Cut {
    pub caption_image: Vec<u32>,
    pub tasks: Vec<TaskRows>,
    pub reports: Vec<TaskReport>,
    pub evaluated: Part,
    /// Images of the tables in no task of the split.
    pub unused_images: usize,
}

/// Cuts tables into a split's tasks and parts.
pub fn cut(
    manifest: &Manifest,
    split: &str,
    images: &Table,
    captions: &Table,
) -> Result<Cut, DataError> {
    let rules = manifest
        .split(split)
        .ok_or_else(|| DataError::invalid(&manifest.path, format!("no split `{split}`")))?;
    let captions_path = manifest
        .captions_path()
        .unwrap_or_else(|| manifest.path.clone());
    let images_path = manifest
        .images_path()
        .unwrap_or_else(|| manifest.path.clone());
    let caption_image = caption_images(&captions_path, &images_path, images, captions)?;
    let parts = parts(manifest, &images_path, images)?;
    let mut selection = match rules.random {
        Some(chunks) => {
            let group: Vec<u8> = parts.iter().map(|&p| p as u8).collect();
            random_chunks(chunks, &images.ids, &group)
        }
        None => select(
            &manifest.path,
            split,
            rules,
            images,
            captions.columns.get("text").map(Vec::as_slice),
            &caption_image,
        )?,
    };
    let mut tasks: Vec<TaskRows> = rules
        .tasks
        .keys()
        .map(|name| TaskRows {
            name: name.clone(),
            ..TaskRows::default()
        })
        .collect();
    // What each image is for; held-out images beyond `test_images` are unused.
    let mut role: Vec<Option<ImagePart>> = selection
        .task_of
        .iter()
        .zip(&parts)
        .map(|(t, p)| t.map(|_| *p))
        .collect();
    if let Some(limit) = rules.test_images {
        for (t, report) in selection.reports.iter_mut().enumerate() {
            for part in [ImagePart::Val, ImagePart::Test] {
                let mut rows: Vec<(f64, usize)> = (0..images.rows())
                    .filter(|&r| selection.task_of[r] == Some(t) && parts[r] == part)
                    .map(|r| (id_hash(&images.ids[r]), r))
                    .collect();
                if rows.len() > limit {
                    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
                    for &(_, r) in &rows[limit..] {
                        role[r] = None;
                    }
                    report.beyond_limit += rows.len() - limit;
                }
            }
        }
    }
    let evaluated = match rules.evaluate {
        Part::Test => ImagePart::Test,
        Part::Val => ImagePart::Val,
    };
    for (row, t) in selection.task_of.iter().enumerate() {
        let (Some(t), Some(part)) = (t, role[row]) else {
            continue;
        };
        if part == evaluated {
            tasks[*t].test_images.push(row as u32);
        }
        if part == ImagePart::Val {
            tasks[*t].val_images.push(row as u32);
        }
    }
    for (c, &image) in caption_image.iter().enumerate() {
        let image = image as usize;
        let (Some(t), Some(part)) = (selection.task_of[image], role[image]) else {
            continue;
        };
        let task = &mut tasks[t];
        match part {
            ImagePart::Train => task.train_captions.push(c as u32),
            _ if part == evaluated => task.test_captions.push(c as u32),
            _ => {}
        }
        if part == ImagePart::Val {
            task.val_captions.push(c as u32);
        }
    }
    for task in &tasks {
        if task.train_captions.is_empty()
            && task.test_images.is_empty()
            && task.val_images.is_empty()
        {
            return Err(DataError::invalid(
                &manifest.path,
                format!("task `{}` of split `{split}` selects no image", task.name),
            ));
        }
        if task.train_captions.is_empty() || task.test_images.is_empty() {
            let part = rules.evaluate.name();
            return Err(DataError::invalid(
                &manifest.path,
                format!(
                    "task `{}` of split `{split}` has {} training pairs and {} {part} images; it needs both (adjust `test_fraction`{})",
                    task.name,
                    task.train_captions.len(),
                    task.test_images.len(),
                    if rules.evaluate == Part::Val { " and `val_fraction`, or the `split` column" } else { " or the `split` column" }
                ),
            ));
        }
    }
    let unused_images = selection.task_of.iter().filter(|t| t.is_none()).count();
    Ok(Cut {
        caption_image,
        tasks,
        reports: selection.reports,
        evaluated: rules.evaluate,
        unused_images,
    })
}

/// Which part an image is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImagePart {
    Train,
    Val,
    Test,
}

/// Every image's part: the `split` column, or the id hash.
fn parts(
    manifest: &Manifest,
    images_path: &Path,
    images: &Table,
) -> Result<Vec<ImagePart>, DataError> {
    if images.lists.contains_key("split") {
        return Err(DataError::invalid(
            images_path,
            "column `split` must hold one string per image, found lists",
        ));
    }
    match images.columns.get("split") {
        Some(column) => column
            .iter()
            .enumerate()
            .map(|(row, value)| match value.as_str() {
                "train" => Ok(ImagePart::Train),
                "val" => Ok(ImagePart::Val),
                "test" => Ok(ImagePart::Test),
                other => Err(DataError::invalid(
                    images_path,
                    format!(
                        "column `split` holds `{}` at row {row}; it must be `train`, `val` or `test`",
                        other.chars().take(40).collect::<String>()
                    ),
                )),
            })
            .collect(),
        None => Ok(images
            .ids
            .iter()
            .map(|id| {
                let h = id_hash(id);
                if h < manifest.test_fraction {
                    ImagePart::Test
                } else if h < manifest.test_fraction + manifest.val_fraction {
                    ImagePart::Val
                } else {
                    ImagePart::Train
                }
            })
            .collect()),
    }
}

/// The image row of every caption; every image must have a caption.
fn caption_images(
    captions_path: &Path,
    images_path: &Path,
    images: &Table,
    captions: &Table,
) -> Result<Vec<u32>, DataError> {
    let row_of: HashMap<&str, u32> = images
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    let image_ids = captions
        .columns
        .get("image_id")
        .ok_or_else(|| DataError::invalid(captions_path, "missing column `image_id`"))?;
    let mut caption_image = Vec::with_capacity(captions.rows());
    for (row, image_id) in image_ids.iter().enumerate() {
        let image = row_of.get(image_id.as_str()).ok_or_else(|| {
            DataError::invalid(
                captions_path,
                format!("caption row {row} (id \"{}\") points at image \"{image_id}\", which the images table lacks", captions.ids[row]),
            )
        })?;
        caption_image.push(*image);
    }
    let mut captions_of = vec![0usize; images.rows()];
    for &i in &caption_image {
        captions_of[i as usize] += 1;
    }
    if let Some(row) = captions_of.iter().position(|&n| n == 0) {
        return Err(DataError::invalid(
            images_path,
            format!(
                "image row {row} (id \"{}\") has no caption",
                images.ids[row]
            ),
        ));
    }
    Ok(caption_image)
}
