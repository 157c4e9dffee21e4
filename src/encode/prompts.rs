//! The class prompts of a manifest's zero-shot class sets, embedded by the text
//! encoder into the prompts table (`data::classes` reads it). A set's classes
//! are the distinct values of its column over the whole images table, sorted;
//! each becomes the set's template with the class name in place of `{}`.

use super::chunks::{up_to_date, write_text_table};
use super::text::TextEncoder;
use crate::data::read::read_table;
use crate::data::Manifest;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One prompt to embed.
struct Prompt {
    class_set: String,
    class: String,
    text: String,
}

/// Writes the prompts table of `manifest` (nothing when it declares no classes);
/// returns the report line. `hash_prefix` names the encoder and device, as the
/// caption table's input hash does.
pub fn featurize_prompts(
    manifest: &Manifest,
    encoder: &dyn Fn() -> Result<Arc<TextEncoder>, String>,
    hash_prefix: &str,
) -> Result<Option<String>, String> {
    let Some(out) = manifest.prompts_path() else {
        return Ok(None);
    };
    let images = manifest
        .images_path()
        .ok_or("the manifest names no images table")?;
    let table = read_table(&images, &[]).map_err(|e| e.to_string())?;
    let mut prompts = Vec::new();
    for (name, decl) in manifest.class_sets() {
        if !table.has_column(&decl.column) {
            return Err(format!(
                "{}: class set `{name}` reads column `{}`, which {} does not have",
                manifest.path.display(),
                decl.column,
                images.display()
            ));
        }
        let classes: BTreeSet<&str> = (0..table.rows())
            .flat_map(|r| table.values(&decl.column, r).unwrap_or_default())
            .map(String::as_str)
            .collect();
        if classes.is_empty() {
            return Err(format!(
                "{}: class set `{name}`: column `{}` holds no values",
                manifest.path.display(),
                decl.column
            ));
        }
        prompts.extend(classes.into_iter().map(|class| Prompt {
            class_set: name.to_string(),
            class: class.to_string(),
            text: decl.prompt(class),
        }));
    }
    let mut h = blake3::Hasher::new();
    h.update(hash_prefix.as_bytes());
    for p in &prompts {
        for part in [&p.class_set, &p.class, &p.text] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
    }
    let hash = h.finalize().to_hex().to_string();
    if up_to_date(&out, &hash) {
        return Ok(Some(format!("{}: up to date", out.display())));
    }
    let encoder = encoder()?;
    let texts: Vec<&str> = prompts.iter().map(|p| p.text.as_str()).collect();
    let features = encoder.encode(&texts)?;
    let column = |f: &dyn Fn(&Prompt) -> String| prompts.iter().map(f).collect::<Vec<_>>();
    write_text_table(
        &out,
        &[
            ("id", column(&|p| format!("{}/{}", p.class_set, p.class))),
            ("class_set", column(&|p| p.class_set.clone())),
            ("class", column(&|p| p.class.clone())),
            ("prompt", column(&|p| p.text.clone())),
        ],
        &features,
        encoder.dim,
        &hash,
    )?;
    let sets = manifest.class_sets().count();
    Ok(Some(format!(
        "{}: {} prompts of {sets} class set{} x {}",
        out.display(),
        prompts.len(),
        if sets == 1 { "" } else { "s" },
        encoder.dim
    )))
}
