//! The generated pseudo negative texts of a dataset (`pseudo.arrow`, written by
//! `lethe featurize`) as training reads them: their text features, and which of
//! them belong to each image row of a loaded split.
//!
//! The table has one row per negative: `id`, `image_id` (the image whose
//! captions it rewrites, and whose negative it is), `caption_id`, `text`,
//! `method` and `feature` (the text encoder's output, as caption features).

use super::error::DataError;
use super::features::Features;
use super::manifest::Manifest;
use super::read::read_table;
use std::collections::HashMap;

/// Pseudo negative texts by image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PseudoTexts {
    /// Row-major, `dim` floats per text, in table order.
    pub features: Features,
    pub dim: usize,
    /// The texts of image row i are `order[starts[i]..starts[i + 1]]` (table rows).
    order: Vec<u32>,
    starts: Vec<u32>,
}

impl PseudoTexts {
    /// Texts whose features are `features` (`dim` per text), text t negating
    /// image row `text_image[t]` of a split with `images` image rows.
    pub fn new(
        features: impl Into<Features>,
        dim: usize,
        text_image: &[u32],
        images: usize,
    ) -> Self {
        let mut counts = vec![0u32; images + 1];
        for &i in text_image {
            counts[i as usize + 1] += 1;
        }
        for i in 0..images {
            counts[i + 1] += counts[i];
        }
        let starts = counts;
        let mut next = starts.clone();
        let mut order = vec![0u32; text_image.len()];
        for (t, &i) in text_image.iter().enumerate() {
            order[next[i as usize] as usize] = t as u32;
            next[i as usize] += 1;
        }
        PseudoTexts {
            features: features.into(),
            dim,
            order,
            starts,
        }
    }

    /// The texts negating image row `image`, in table order.
    pub fn of_image(&self, image: u32) -> &[u32] {
        let i = image as usize;
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.order[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The features of text row `text`.
    pub fn feature(&self, text: u32) -> &[f32] {
        let t = text as usize;
        &self.features[t * self.dim..(t + 1) * self.dim]
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The manifest's pseudo negatives for a split whose image rows are
/// `image_ids` (a loaded split's, in table order) and whose caption features are
/// `text_dim` wide. A missing table, an image the split does not know or
/// features of another width are errors that say to featurize again.
pub fn read_pseudo_texts(
    manifest: &Manifest,
    image_ids: &[String],
    text_dim: usize,
) -> Result<PseudoTexts, DataError> {
    if manifest.pseudo_negatives().is_none() {
        return Err(DataError::invalid(
            &manifest.path,
            "generates no pseudo negative texts: add `pseudo_negatives: { per_image: 3 }` and run `lethe featurize`",
        ));
    }
    let path = manifest.pseudo_path();
    if !path.exists() {
        return Err(DataError::invalid(
            &path,
            format!(
                "missing: pseudo negative texts are written by `lethe featurize {}`",
                manifest.path.display()
            ),
        ));
    }
    let table = read_table(&path, &["image_id"])?;
    if table.dim != text_dim {
        return Err(DataError::invalid(
            &path,
            format!(
                "pseudo text features are {}-d but the captions' are {text_dim}-d: featurize both with the same text encoder",
                table.dim
            ),
        ));
    }
    let owners = table.columns.get("image_id").ok_or_else(|| {
        DataError::invalid(&path, "column `image_id` must hold one text value per row")
    })?;
    let row_of: HashMap<&str, u32> = image_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    let mut text_image = Vec::with_capacity(owners.len());
    for (row, owner) in owners.iter().enumerate() {
        let image = row_of.get(owner.as_str()).ok_or_else(|| {
            DataError::invalid(
                &path,
                format!(
                    "row {row} negates image `{owner}`, which the images table does not have: run `lethe featurize {}` again",
                    manifest.path.display()
                ),
            )
        })?;
        text_image.push(*image);
    }
    Ok(PseudoTexts::new(
        table.features,
        table.dim,
        &text_image,
        image_ids.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_grouped_by_image_in_table_order() {
        let features: Vec<f32> = (0..5).map(|x| x as f32).collect();
        let p = PseudoTexts::new(features, 1, &[2, 0, 2, 0, 1], 4);
        assert_eq!(p.of_image(0), &[1, 3]);
        assert_eq!(p.of_image(1), &[4]);
        assert_eq!(p.of_image(2), &[0, 2]);
        assert!(p.of_image(3).is_empty());
        assert!(p.of_image(9).is_empty());
        assert_eq!(p.feature(4), &[4.0]);
        assert_eq!(p.len(), 5);
    }
}
