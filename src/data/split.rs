//! A split of a dataset in memory: features once, and per task the rows that
//! training and evaluation read.
//!
//! Tasks select images by metadata (`{ column: [values] }`); a caption belongs to
//! the task of its image. An image is a test item if the images table has a
//! `split` column saying `test`, otherwise if a stable hash of its id falls below
//! `test_fraction` (blake3 of the id, so the choice never depends on row order or
//! on the other items). Rows keep table order, so a manifest always gives the
//! same items in the same order.

use super::error::DataError;
use super::manifest::{Kind, Manifest};
use super::pairs::PairData;
use super::tables::{read_table, Table};
use std::collections::HashMap;

/// The rows of one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRows {
    pub name: String,
    /// Training pairs, as caption rows.
    pub train_captions: Vec<u32>,
    /// The test gallery/query items, in the order searches use.
    pub test_images: Vec<u32>,
    pub test_captions: Vec<u32>,
}

/// Features and task rows of one split.
#[derive(Debug, Clone, Default)]
pub struct LoadedSplit {
    pub image_features: Vec<f32>,
    pub image_dim: usize,
    pub caption_features: Vec<f32>,
    pub text_dim: usize,
    pub caption_image: Vec<u32>,
    /// Stable identifiers of images and captions (for embeddings tables).
    pub image_ids: Vec<String>,
    pub caption_ids: Vec<String>,
    pub tasks: Vec<TaskRows>,
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
            "tasks": self.tasks.iter().map(|t| serde_json::json!({
                "name": t.name,
                "train_captions": t.train_captions.len(),
                "test_images": t.test_images.len(),
                "test_captions": t.test_captions.len(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Whether an image id falls in the test split.
pub fn is_test(id: &str, test_fraction: f64) -> bool {
    let h = blake3::hash(id.as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    (x as f64 / u64::MAX as f64) < test_fraction
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
            let missing =
                || DataError::invalid(&manifest.path, "names no images or captions table");
            let images = read_table(&manifest.images_path().ok_or_else(missing)?, &[])?;
            let captions = read_table(
                &manifest.captions_path().ok_or_else(missing)?,
                &["image_id"],
            )?;
            Ok((images, captions))
        }
    }
}

/// Loads one split of a manifest, checking every cross-table rule.
pub fn load_split(manifest: &Manifest, split: &str) -> Result<LoadedSplit, DataError> {
    let selectors = manifest
        .split(split)
        .ok_or_else(|| DataError::invalid(&manifest.path, format!("no split `{split}`")))?;
    let (images, captions) = tables(manifest)?;
    let captions_path = manifest
        .captions_path()
        .unwrap_or_else(|| manifest.path.clone());
    let images_path = manifest
        .images_path()
        .unwrap_or_else(|| manifest.path.clone());
    let row_of: HashMap<&str, u32> = images
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    let image_ids = captions
        .columns
        .get("image_id")
        .ok_or_else(|| DataError::invalid(&captions_path, "missing column `image_id`"))?;
    let mut caption_image = Vec::with_capacity(captions.rows());
    for (row, image_id) in image_ids.iter().enumerate() {
        let image = row_of.get(image_id.as_str()).ok_or_else(|| {
            DataError::invalid(
                &captions_path,
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
            &images_path,
            format!(
                "image row {row} (id \"{}\") has no caption",
                images.ids[row]
            ),
        ));
    }
    // Which task each image belongs to.
    let mut task_of: Vec<Option<usize>> = vec![None; images.rows()];
    for (t, (task, selector)) in selectors.iter().enumerate() {
        for column in selector.keys() {
            if !images.columns.contains_key(column) {
                return Err(DataError::invalid(
                    &manifest.path,
                    format!("task `{task}` of split `{split}` selects on column `{column}`, which the images table lacks"),
                ));
            }
        }
        for (row, slot) in task_of.iter_mut().enumerate() {
            let selected = selector
                .iter()
                .all(|(column, values)| values.contains(&images.columns[column][row]));
            if !selected {
                continue;
            }
            if let Some(other) = *slot {
                let other_name = selectors
                    .get_index(other)
                    .map(|(n, _)| n.as_str())
                    .unwrap_or_default();
                return Err(DataError::invalid(
                    &manifest.path,
                    format!("image \"{}\" is in two tasks of split `{split}`: `{other_name}` and `{task}`", images.ids[row]),
                ));
            }
            *slot = Some(t);
        }
    }
    let test: Vec<bool> = match images.columns.get("split") {
        Some(column) => column
            .iter()
            .enumerate()
            .map(|(row, value)| match value.as_str() {
                "train" => Ok(false),
                "test" => Ok(true),
                other => Err(DataError::invalid(
                    &images_path,
                    format!(
                        "column `split` holds `{}` at row {row}; it must be `train` or `test`",
                        other.chars().take(40).collect::<String>()
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
        None => (0..images.rows())
            .map(|row| is_test(&images.ids[row], manifest.test_fraction))
            .collect(),
    };
    let mut tasks: Vec<TaskRows> = selectors
        .keys()
        .map(|name| TaskRows {
            name: name.clone(),
            ..TaskRows::default()
        })
        .collect();
    for (row, t) in task_of.iter().enumerate() {
        if let (Some(t), true) = (t, test[row]) {
            tasks[*t].test_images.push(row as u32);
        }
    }
    for (c, &image) in caption_image.iter().enumerate() {
        if let Some(t) = task_of[image as usize] {
            if test[image as usize] {
                tasks[t].test_captions.push(c as u32);
            } else {
                tasks[t].train_captions.push(c as u32);
            }
        }
    }
    for task in &tasks {
        if task.train_captions.is_empty() && task.test_images.is_empty() {
            return Err(DataError::invalid(
                &manifest.path,
                format!("task `{}` of split `{split}` selects no image", task.name),
            ));
        }
        if task.train_captions.is_empty() || task.test_images.is_empty() {
            return Err(DataError::invalid(
                &manifest.path,
                format!(
                    "task `{}` of split `{split}` has {} training pairs and {} test images; it needs both (adjust `test_fraction`)",
                    task.name,
                    task.train_captions.len(),
                    task.test_images.len()
                ),
            ));
        }
    }
    Ok(LoadedSplit {
        image_features: images.features,
        image_dim: images.dim,
        caption_features: captions.features,
        text_dim: captions.dim,
        caption_image,
        image_ids: images.ids,
        caption_ids: captions.ids,
        tasks,
    })
}
