//! Annotation JSON read into typed records, with errors that name the file, the
//! JSON path of the bad value (`annotations[57].image_id`) and what was expected.
//! Fields the importers do not use (COCO's segmentation polygons) are skipped
//! without being built.

use super::ImportError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// The largest annotation file read: COCO's instances_train2014.json is 332 MB.
pub const MAX_JSON_BYTES: u64 = 4 << 30;

/// Reads and decodes a JSON file into `T`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, ImportError> {
    let bytes = crate::files::read_bounded(path, MAX_JSON_BYTES)?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let value: T =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| located(path, &e))?;
    deserializer.end().map_err(|e| {
        ImportError::invalid(path, format!("unexpected data after the JSON value ({e})"))
    })?;
    Ok(value)
}

fn located(path: &Path, e: &serde_path_to_error::Error<serde_json::Error>) -> ImportError {
    let inner = e.inner();
    let place = e.path().to_string();
    let what = match inner.classify() {
        serde_json::error::Category::Eof => {
            format!("the file ends too early: it is truncated ({inner})")
        }
        serde_json::error::Category::Syntax => format!("not valid JSON ({inner})"),
        _ => inner.to_string(),
    };
    if place.is_empty() || place == "." {
        ImportError::invalid(path, what)
    } else {
        ImportError::at(path, &place, what)
    }
}

/// A JSON path for messages: `images[12].file_name`.
pub fn place(list: &str, index: usize, field: &str) -> String {
    if field.is_empty() {
        format!("{list}[{index}]")
    } else {
        format!("{list}[{index}].{field}")
    }
}
