//! Feature tables: Arrow IPC files with an `id` column, a `feature` column
//! (FixedSizeList of f32 or f16) and string metadata columns. Every problem is
//! reported with the file, the row or column, and what was expected.

use super::error::DataError;
use crate::files::{read_ipc, FileError, IpcFile};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, FixedSizeListArray, Float16Array, Float32Array};
use arrow_schema::{DataType, Schema};
use std::collections::HashMap;
use std::path::Path;

/// The largest feature table read: far above COCO's (113k images x 2048 f32 is
/// 0.9 GiB), far below what would make a typo'd path hang the machine.
pub const MAX_TABLE_BYTES: u64 = 256 << 30;

/// A table read into memory: features row-major as f32, string columns by name.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub ids: Vec<String>,
    pub features: Vec<f32>,
    pub dim: usize,
    pub columns: HashMap<String, Vec<String>>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.ids.len()
    }
}

impl From<FileError> for DataError {
    fn from(e: FileError) -> Self {
        DataError::invalid(&e.path, e.message)
    }
}

fn open(path: &Path) -> Result<IpcFile, DataError> {
    Ok(read_ipc(path, MAX_TABLE_BYTES)?)
}

/// The width of the `feature` column, from the schema alone.
pub fn feature_width(path: &Path) -> Result<usize, DataError> {
    feature_type(path, &open(path)?.schema).map(|(w, _)| w)
}

fn feature_type(path: &Path, schema: &Schema) -> Result<(usize, DataType), DataError> {
    let field = schema.field_with_name("feature").map_err(|_| {
        DataError::invalid(
            path,
            "missing column `feature` (a FixedSizeList of f32 or f16)",
        )
    })?;
    match field.data_type() {
        DataType::FixedSizeList(inner, width)
            if matches!(inner.data_type(), DataType::Float32 | DataType::Float16) && *width > 0 =>
        {
            Ok((*width as usize, inner.data_type().clone()))
        }
        other => Err(DataError::invalid(
            path,
            format!("column `feature` must be a FixedSizeList of f32 or f16, found {other}"),
        )),
    }
}

/// Whether a column can be read as text: strings, dictionary-encoded strings
/// (pandas and polars categoricals) and integers (written as decimals).
fn textual(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(key, value) => key.is_integer() && textual(value),
        t => t.is_integer(),
    }
}

/// Appends a column's values as text; a null is an error naming the row.
fn strings(
    path: &Path,
    column: &dyn Array,
    name: &str,
    first_row: usize,
    out: &mut Vec<String>,
) -> Result<(), DataError> {
    if let Some(row) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(DataError::invalid(
            path,
            format!("column `{name}` is empty (null) at row {}", first_row + row),
        ));
    }
    macro_rules! ints {
        ($t:ty) => {
            out.extend(
                column
                    .as_primitive::<$t>()
                    .values()
                    .iter()
                    .map(|v| v.to_string()),
            )
        };
    }
    match column.data_type() {
        DataType::Utf8 => out.extend(
            column
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string),
        ),
        DataType::LargeUtf8 => out.extend(
            column
                .as_string::<i64>()
                .iter()
                .flatten()
                .map(str::to_string),
        ),
        DataType::Utf8View => {
            out.extend(column.as_string_view().iter().flatten().map(str::to_string))
        }
        DataType::Dictionary(_, _) => {
            let dictionary = column.as_any_dictionary();
            let mut values = Vec::new();
            strings(path, dictionary.values().as_ref(), name, 0, &mut values)?;
            for key in dictionary.normalized_keys() {
                let value = values.get(key).ok_or_else(|| {
                    DataError::invalid(
                        path,
                        format!("column `{name}` has a key outside its dictionary"),
                    )
                })?;
                out.push(value.clone());
            }
        }
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        other => {
            return Err(DataError::invalid(
                path,
                format!("column `{name}` must hold strings, found {other}"),
            ))
        }
    }
    Ok(())
}

/// Reads a table, requiring `id`, `feature` and the `required` columns; every
/// other text column (strings, categoricals, integers) is kept as metadata.
pub fn read_table(path: &Path, required: &[&str]) -> Result<Table, DataError> {
    let file = open(path)?;
    let schema = &file.schema;
    let (dim, _) = feature_type(path, schema)?;
    for name in std::iter::once("id").chain(required.iter().copied()) {
        if schema.field_with_name(name).is_err() {
            return Err(DataError::invalid(path, format!("missing column `{name}`")));
        }
    }
    let id_type = schema.field_with_name("id").map(|f| f.data_type().clone());
    if let Ok(t) = &id_type {
        if !matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Err(DataError::invalid(
                path,
                format!("column `id` must hold strings, found {t}"),
            ));
        }
    }
    let mut string_columns = Vec::new();
    for f in schema.fields() {
        if f.name() == "id" || f.name() == "feature" {
            continue;
        }
        if textual(f.data_type()) {
            string_columns.push(f.name().clone());
        } else if required.contains(&f.name().as_str()) || f.name() == "split" {
            return Err(DataError::invalid(
                path,
                format!(
                    "column `{}` must hold strings, found {}",
                    f.name(),
                    f.data_type()
                ),
            ));
        }
    }
    if file.rows() == 0 {
        return Err(DataError::invalid(path, "the table has no rows"));
    }
    let mut table = Table {
        dim,
        columns: string_columns
            .iter()
            .map(|n| (n.clone(), Vec::new()))
            .collect(),
        ..Table::default()
    };
    table.features.reserve_exact(file.rows() * dim);
    for batch in &file.batches {
        let first_row = table.ids.len();
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                DataError::invalid(path, format!("a record batch lacks column `{name}`"))
            })
        };
        strings(
            path,
            column("id")?.as_ref(),
            "id",
            first_row,
            &mut table.ids,
        )?;
        for name in &string_columns {
            let out = table.columns.entry(name.clone()).or_default();
            strings(path, column(name)?.as_ref(), name, first_row, out)?;
        }
        let list = column("feature")?
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| DataError::invalid(path, "column `feature` is not a FixedSizeList"))?;
        if let Some(row) = (0..list.len()).find(|&i| list.is_null(i)) {
            return Err(DataError::invalid(
                path,
                format!("`feature` is empty (null) at row {}", first_row + row),
            ));
        }
        let start = list.value_offset_at(0);
        let count = list.len() * dim;
        let values = list.values().slice(start, count);
        if let Some(i) = (0..values.len()).find(|&i| values.is_null(i)) {
            return Err(DataError::invalid(
                path,
                format!(
                    "`feature` of row {} holds a null value at position {}",
                    first_row + i / dim,
                    i % dim
                ),
            ));
        }
        if let Some(f) = values.as_any().downcast_ref::<Float32Array>() {
            table.features.extend_from_slice(f.values());
        } else if let Some(f) = values.as_any().downcast_ref::<Float16Array>() {
            table.features.extend(f.values().iter().map(|h| h.to_f32()));
        }
        if let Some(bad) = table.features[first_row * dim..]
            .iter()
            .position(|x| !x.is_finite())
        {
            let row = first_row + bad / dim;
            return Err(DataError::invalid(
                path,
                format!(
                    "`feature` of row {row} (id \"{}\") holds a NaN or infinite value",
                    table.ids[row]
                ),
            ));
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(table.ids.len());
    for (row, id) in table.ids.iter().enumerate() {
        if let Some(first) = seen.insert(id, row) {
            return Err(DataError::invalid(
                path,
                format!("duplicate id \"{id}\" at rows {first} and {row}"),
            ));
        }
    }
    Ok(table)
}
