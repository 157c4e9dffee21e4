//! Zero-shot class sets: the classes of an images column, the features of their
//! prompts (the `prompts.arrow` table `lethe featurize` writes) and each image's
//! class.
//!
//! The prompts table has one row per class of every declared set: `id`
//! (`<set>/<class>`), `class_set`, `class`, `prompt` and `feature` (the text
//! encoder's output, as caption features are). A set's classes are the distinct
//! values of its column over the whole images list, sorted, so every split of a
//! dataset classifies against the same classes.

use super::error::DataError;
use super::manifest::Manifest;
use super::read::read_table;
use super::tables::Table;
use std::collections::HashMap;

/// One class set, ready to classify the images of a split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassSet {
    pub name: String,
    /// Class names in the prompts table's order.
    pub classes: Vec<String>,
    /// The prompts' features, `classes.len() x dim`, row-major.
    pub features: Vec<f32>,
    pub dim: usize,
    /// Each image row's class; `None` when its column holds no value or several
    /// (zero-shot evaluation names such an image if it is evaluated).
    pub image_class: Vec<Option<u32>>,
}

/// The class set `name` of a manifest of feature tables, for the images of its
/// images table in table order (the order of a loaded split's `image_ids`).
pub fn read_class_set(
    manifest: &Manifest,
    name: &str,
    text_dim: usize,
) -> Result<ClassSet, DataError> {
    let path = manifest.images_path().ok_or_else(|| {
        DataError::invalid(
            &manifest.path,
            "zero-shot classification needs an images table (a synthetic set has no prompts)",
        )
    })?;
    let images = read_table(&path, &[])?;
    load_class_set(manifest, name, &images, text_dim)
}

/// The columns a prompts table must have besides `id` and `feature`.
pub const PROMPT_COLUMNS: [&str; 3] = ["class_set", "class", "prompt"];

/// The class set `name` of the manifest over the split's images table. Prompts that
/// no longer match the manifest (another template, a class the table lacks) are
/// an error that says to featurize again, never a silently different number.
pub fn load_class_set(
    manifest: &Manifest,
    name: &str,
    images: &Table,
    text_dim: usize,
) -> Result<ClassSet, DataError> {
    let decl = manifest.class_set(name).ok_or_else(|| {
        DataError::invalid(&manifest.path, format!("declares no class set `{name}`"))
    })?;
    let path = manifest
        .prompts_path()
        .ok_or_else(|| DataError::invalid(&manifest.path, "declares no `classes`"))?;
    if !path.exists() {
        return Err(DataError::invalid(
            &path,
            format!(
                "missing: the class prompts are embedded by `lethe featurize {}`",
                manifest.path.display()
            ),
        ));
    }
    let table = read_table(&path, &PROMPT_COLUMNS)?;
    let column = |c: &str| {
        table.columns.get(c).ok_or_else(|| {
            DataError::invalid(
                &path,
                format!("column `{c}` must hold one text value per row"),
            )
        })
    };
    let (sets, classes, prompts) = (column("class_set")?, column("class")?, column("prompt")?);
    if table.dim != text_dim {
        return Err(DataError::invalid(
            &path,
            format!(
                "prompt features are {}-d but the captions' are {text_dim}-d: featurize both with the same text encoder",
                table.dim
            ),
        ));
    }
    let mut set = ClassSet {
        name: name.to_string(),
        dim: table.dim,
        ..ClassSet::default()
    };
    for row in (0..table.rows()).filter(|&r| sets[r] == name) {
        let expected = decl.prompt(&classes[row]);
        if prompts[row] != expected {
            return Err(DataError::invalid(
                &path,
                format!(
                    "row {row}: the prompt of class `{}` is \"{}\" but the manifest's template makes \"{expected}\": run `lethe featurize` again",
                    classes[row], prompts[row]
                ),
            ));
        }
        set.classes.push(classes[row].clone());
        set.features
            .extend_from_slice(&table.features[row * table.dim..(row + 1) * table.dim]);
    }
    if set.classes.is_empty() {
        return Err(DataError::invalid(
            &path,
            format!("has no prompts of class set `{name}`: run `lethe featurize` again"),
        ));
    }
    let index: HashMap<&str, u32> = set
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    if !images.has_column(&decl.column) {
        return Err(DataError::invalid(
            &manifest.path,
            format!(
                "class set `{name}` reads column `{}`, which the images table does not have",
                decl.column
            ),
        ));
    }
    for row in 0..images.rows() {
        let class = match images.values(&decl.column, row).unwrap_or_default() {
            [value] => Some(*index.get(value.as_str()).ok_or_else(|| {
                DataError::invalid(
                    &path,
                    format!(
                        "has no prompt for class `{value}` of image `{}`: run `lethe featurize` again",
                        images.ids[row]
                    ),
                )
            })?),
            _ => None,
        };
        set.image_class.push(class);
    }
    Ok(set)
}
