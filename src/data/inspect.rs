//! `lethe data inspect`: what a manifest holds, split by split.

use super::error::DataError;
use super::manifest::Manifest;
use super::split::load_split;
use std::fmt::Write;

/// Loads every split of a manifest (checking everything) and describes it.
pub fn inspect(manifest: &Manifest) -> Result<String, DataError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dataset `{}` ({})",
        manifest.name,
        manifest.path.display()
    );
    if let Some(d) = &manifest.description {
        let _ = writeln!(out, "  {d}");
    }
    for split in manifest.split_names() {
        let data = load_split(manifest, split)?;
        if out.lines().count() <= 2 {
            let bytes = (data.image_features.len() + data.caption_features.len()) * 4;
            let _ = writeln!(
                out,
                "  {} images x {}-d, {} captions x {}-d; features {:.1} MiB in memory (f32)",
                data.image_ids.len(),
                data.image_dim,
                data.caption_ids.len(),
                data.text_dim,
                bytes as f64 / (1 << 20) as f64
            );
        }
        let _ = writeln!(out, "\nsplit `{split}`");
        let _ = writeln!(
            out,
            "  {:<16} {:>12} {:>14} {:>11} {:>13}",
            "task", "train images", "train captions", "test images", "test captions"
        );
        for t in &data.tasks {
            let mut train_images: Vec<u32> = t
                .train_captions
                .iter()
                .map(|&c| data.caption_image[c as usize])
                .collect();
            train_images.sort_unstable();
            train_images.dedup();
            let _ = writeln!(
                out,
                "  {:<16} {:>12} {:>14} {:>11} {:>13}",
                t.name,
                train_images.len(),
                t.train_captions.len(),
                t.test_images.len(),
                t.test_captions.len()
            );
        }
    }
    Ok(out)
}
