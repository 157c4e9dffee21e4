//! `--tasks labels.csv` of `lethe import precomp`: image metadata to select
//! tasks on. A header row names the columns; then one row per image, in the
//! order of the images (the `--images` files in the order given, rows in
//! order). A cell may hold several values separated by `|` (`dog|dog|person`),
//! which makes its column multi-valued (a list per image, one entry per
//! instance, for `match: dominant`). A `split` column (`train`, `val`, `test`)
//! decides the images' parts.

use super::ImportError;
use std::path::Path;

/// The largest labels file read.
const MAX_LABELS_BYTES: u64 = 1 << 30;

/// A metadata column.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelColumn {
    One(Vec<String>),
    Many(Vec<Vec<String>>),
}

/// Reads the labels of `images` images.
pub fn read(path: &Path, images: usize) -> Result<Vec<(String, LabelColumn)>, ImportError> {
    let bytes = crate::files::read_bounded(path, MAX_LABELS_BYTES)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes.as_slice());
    let line_of = |e: &csv::Error| e.position().map_or(0, |p| p.line());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| ImportError::at(path, &format!("line {}", line_of(&e).max(1)), e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for (i, name) in headers.iter().enumerate() {
        if name.is_empty() {
            return Err(ImportError::at(
                path,
                "line 1",
                format!("column {} has no name", i + 1),
            ));
        }
        if ["id", "file", "feature"].contains(&name.as_str()) {
            return Err(ImportError::at(
                path,
                "line 1",
                format!("column `{name}` is reserved (lethe names images itself)"),
            ));
        }
        if headers[..i].contains(name) {
            return Err(ImportError::at(
                path,
                "line 1",
                format!("column `{name}` appears twice"),
            ));
        }
    }
    let mut cells: Vec<Vec<String>> = vec![Vec::with_capacity(images); headers.len()];
    let mut rows = 0usize;
    for record in reader.records() {
        let record =
            record.map_err(|e| ImportError::at(path, &format!("line {}", line_of(&e)), e))?;
        let line = record.position().map_or(rows + 2, |p| p.line() as usize);
        rows += 1;
        if rows > images {
            return Err(ImportError::at(
                path,
                &format!("line {line}"),
                format!("more rows than the {images} images"),
            ));
        }
        for (column, cell) in cells.iter_mut().zip(record.iter()) {
            column.push(cell.trim().to_string());
        }
        if let Some(i) = headers.iter().position(|h| h == "split") {
            let value = record.get(i).unwrap_or_default().trim();
            if !["train", "val", "test"].contains(&value) {
                return Err(ImportError::at(
                    path,
                    &format!("line {line}"),
                    format!("`split` is `{value}`; expected train, val or test"),
                ));
            }
        }
    }
    if rows != images {
        return Err(ImportError::invalid(
            path,
            format!("has {rows} rows of labels for {images} images (one row per image, in order)"),
        ));
    }
    Ok(headers
        .into_iter()
        .zip(cells)
        .map(|(name, values)| {
            let many = name != "split" && values.iter().any(|v| v.contains('|'));
            let column = if many {
                LabelColumn::Many(
                    values
                        .iter()
                        .map(|v| {
                            v.split('|')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .collect(),
                )
            } else {
                LabelColumn::One(values)
            };
            (name, column)
        })
        .collect())
}
