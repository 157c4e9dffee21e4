//! `lethe data inspect`: what a manifest holds, split by split: per task the
//! images and captions of each part, and how many images each rule turned
//! away and why. Works before featurization too, from the raw lists.

use super::error::DataError;
use super::manifest::Manifest;
use super::rules::{Overlap, Part};
use super::select::TaskReport;
use super::split::{cut, tables_or_raw, Origin};
use std::fmt::Write;

/// Loads a manifest's tables once (or its raw lists when the tables are not
/// built yet), cuts every split (checking everything) and describes them.
pub fn inspect(manifest: &Manifest) -> Result<String, DataError> {
    let (images, captions, origins) = tables_or_raw(manifest)?;
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
    if origins.contains(&Origin::RawList) {
        let _ = writeln!(
            out,
            "  {} images, {} captions; features not built yet ({} from the raw list{}): run `lethe featurize {}`",
            images.rows(),
            captions.rows(),
            match origins {
                [Origin::RawList, Origin::RawList] => "images and captions",
                [Origin::RawList, _] => "images",
                _ => "captions",
            },
            if origins == [Origin::RawList; 2] { "s" } else { "" },
            manifest.path.display()
        );
    } else {
        let bytes = (images.features.len() + captions.features.len()) * 4;
        let _ = writeln!(
            out,
            "  {} images x {}-d, {} captions x {}-d; features {:.1} MiB in memory (f32)",
            images.rows(),
            images.dim,
            captions.rows(),
            captions.dim,
            bytes as f64 / (1 << 20) as f64
        );
    }
    for (name, decl) in manifest.class_sets() {
        let classes: std::collections::BTreeSet<&String> = (0..images.rows())
            .flat_map(|r| images.values(&decl.column, r).unwrap_or_default())
            .collect();
        let prompts = manifest.prompts_path().is_some_and(|p| p.exists());
        let _ = writeln!(
            out,
            "  class set `{name}`: {} classes of column `{}`, prompts \"{}\"{}",
            classes.len(),
            decl.column,
            decl.template,
            if prompts {
                ""
            } else {
                " (not embedded yet: run `lethe featurize`)"
            }
        );
    }
    if let Some(p) = manifest.pseudo_negatives() {
        let _ = writeln!(
            out,
            "  pseudo negatives: {} per image, seed {}{}",
            p.per_image,
            p.seed,
            if manifest.pseudo_path().exists() {
                String::new()
            } else {
                " (not generated yet: run `lethe featurize`)".to_string()
            }
        );
    }
    for split in manifest.split_names() {
        let rules = manifest
            .split(split)
            .ok_or_else(|| DataError::invalid(&manifest.path, format!("no split `{split}`")))?;
        let cut = cut(manifest, split, &images, &captions)?;
        let mut options = vec![format!("evaluates on {}", rules.evaluate.name())];
        if let Some(r) = rules.random {
            options.push(format!(
                "{} random chunks of equal size, seed {} (instance-incremental)",
                r.tasks, r.seed
            ));
        }
        if let Some(n) = rules.test_images {
            options.push(format!("at most {n} held-out images per task and part"));
        }
        if rules.overlap == Overlap::First {
            options.push("overlap: first".to_string());
        }
        let _ = writeln!(out, "\nsplit `{split}` ({})", options.join("; "));
        let _ = writeln!(
            out,
            "  {:<16} {:>12} {:>14} {:>11} {:>13} {:>10} {:>12} {:>8} {:>9}",
            "task",
            "train images",
            "train captions",
            "test images",
            "test captions",
            "val images",
            "val captions",
            "images",
            "captions"
        );
        for t in &cut.tasks {
            let mut train_images: Vec<u32> = t
                .train_captions
                .iter()
                .map(|&c| cut.caption_image[c as usize])
                .collect();
            train_images.sort_unstable();
            train_images.dedup();
            let (test_images, test_captions) = match cut.evaluated {
                Part::Test => (
                    t.test_images.len().to_string(),
                    t.test_captions.len().to_string(),
                ),
                Part::Val => ("-".to_string(), "-".to_string()),
            };
            let held_out_images = t.val_images.len()
                + if cut.evaluated == Part::Test {
                    t.test_images.len()
                } else {
                    0
                };
            let held_out_captions = t.val_captions.len()
                + if cut.evaluated == Part::Test {
                    t.test_captions.len()
                } else {
                    0
                };
            let _ = writeln!(
                out,
                "  {:<16} {:>12} {:>14} {:>11} {:>13} {:>10} {:>12} {:>8} {:>9}",
                t.name,
                train_images.len(),
                t.train_captions.len(),
                test_images,
                test_captions,
                t.val_images.len(),
                t.val_captions.len(),
                train_images.len() + held_out_images,
                t.train_captions.len() + held_out_captions
            );
        }
        let _ = writeln!(out, "  rules:");
        for (t, report) in cut.tasks.iter().zip(&cut.reports) {
            let _ = writeln!(out, "    {:<16} {}", t.name, describe(report));
        }
        let _ = writeln!(out, "  images in no task: {}", cut.unused_images);
    }
    Ok(out)
}

/// One line: candidates, selected, and every reason an image was turned away.
fn describe(r: &TaskReport) -> String {
    let mut dropped = Vec::new();
    for (n, why) in [
        (r.other_values, "match: all (other values too)"),
        (
            r.not_dominant,
            "match: dominant (another value has more instances)",
        ),
        (r.tied, "match: dominant (tied with an unlisted value)"),
        (r.no_caption, "caption (no caption matches)"),
        (r.taken, "overlap: first (in an earlier task)"),
        (r.beyond_limit, "test_images (held out beyond the limit)"),
    ] {
        if n > 0 {
            dropped.push(format!("{n} by {why}"));
        }
    }
    format!(
        "{} candidates, {} selected; dropped: {}",
        r.candidates,
        r.selected(),
        if dropped.is_empty() {
            "none".to_string()
        } else {
            dropped.join(", ")
        }
    )
}

/// Checks a manifest whole, as `lethe validate` does: its tables (or, before
/// featurization, its raw lists) and every split. Returns a note when features
/// are not built yet.
pub fn check(manifest: &Manifest) -> Result<Option<String>, DataError> {
    let (images, captions, origins) = tables_or_raw(manifest)?;
    for split in manifest.split_names() {
        cut(manifest, split, &images, &captions)?;
    }
    Ok(origins.contains(&Origin::RawList).then(|| {
        format!(
            "features not built yet: `lethe featurize {}` computes them",
            manifest.path.display()
        )
    }))
}
