//! Feature tables: Arrow IPC files with an `id` column, a `feature` column
//! (FixedSizeList of f32 or f16) and string metadata columns. Every problem is
//! reported with the file, the row or column, and what was expected.

use super::error::DataError;
use arrow_array::{
    Array, FixedSizeListArray, Float16Array, Float32Array, LargeStringArray, RecordBatch,
    StringArray,
};
use arrow_ipc::reader::FileReader;
use arrow_schema::{DataType, Schema};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

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

fn open(path: &Path) -> Result<FileReader<BufReader<File>>, DataError> {
    let file = File::open(path)
        .map_err(|e| DataError::invalid(path, format!("cannot read the table: {e}")))?;
    FileReader::try_new(BufReader::new(file), None).map_err(|e| {
        DataError::invalid(
            path,
            format!("not an Arrow IPC file (the `.arrow` file format): {e}"),
        )
    })
}

/// The width of the `feature` column, from the schema alone.
pub fn feature_width(path: &Path) -> Result<usize, DataError> {
    let reader = open(path)?;
    feature_type(path, &reader.schema()).map(|(w, _)| w)
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

fn strings(
    path: &Path,
    column: &dyn Array,
    name: &str,
    out: &mut Vec<String>,
) -> Result<(), DataError> {
    let start = out.len();
    let null = |row: usize| {
        DataError::invalid(
            path,
            format!("column `{name}` is empty (null) at row {}", start + row),
        )
    };
    if let Some(a) = column.as_any().downcast_ref::<StringArray>() {
        for i in 0..a.len() {
            if a.is_null(i) {
                return Err(null(i));
            }
            out.push(a.value(i).to_string());
        }
    } else if let Some(a) = column.as_any().downcast_ref::<LargeStringArray>() {
        for i in 0..a.len() {
            if a.is_null(i) {
                return Err(null(i));
            }
            out.push(a.value(i).to_string());
        }
    } else {
        return Err(DataError::invalid(
            path,
            format!(
                "column `{name}` must hold strings, found {}",
                column.data_type()
            ),
        ));
    }
    Ok(())
}

/// Reads a table, requiring `id`, `feature` and the `required` string columns;
/// every other string column is kept as metadata.
pub fn read_table(path: &Path, required: &[&str]) -> Result<Table, DataError> {
    let reader = open(path)?;
    let schema = reader.schema();
    let (dim, _) = feature_type(path, &schema)?;
    for name in std::iter::once("id").chain(required.iter().copied()) {
        if schema.field_with_name(name).is_err() {
            return Err(DataError::invalid(path, format!("missing column `{name}`")));
        }
    }
    let string_columns: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != "id" && f.name() != "feature")
        .filter(|f| {
            matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8)
                || required.contains(&f.name().as_str())
        })
        .map(|f| f.name().clone())
        .collect();
    let mut table = Table {
        dim,
        ..Table::default()
    };
    for batch in reader {
        let batch: RecordBatch =
            batch.map_err(|e| DataError::invalid(path, format!("unreadable record batch: {e}")))?;
        let first_row = table.ids.len();
        strings(
            path,
            batch.column_by_name("id").expect("checked above"),
            "id",
            &mut table.ids,
        )?;
        for name in &string_columns {
            let column = batch.column_by_name(name).expect("from the schema");
            strings(
                path,
                column,
                name,
                table.columns.entry(name.clone()).or_default(),
            )?;
        }
        let list = batch
            .column_by_name("feature")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .ok_or_else(|| DataError::invalid(path, "column `feature` is not a FixedSizeList"))?;
        if list.null_count() > 0 {
            let row = (0..list.len()).find(|&i| list.is_null(i)).unwrap_or(0);
            return Err(DataError::invalid(
                path,
                format!("`feature` is empty (null) at row {}", first_row + row),
            ));
        }
        let values = list.values();
        let start = list.value_offset_at(0);
        let count = list.len() * dim;
        if let Some(f) = values.as_any().downcast_ref::<Float32Array>() {
            table
                .features
                .extend_from_slice(&f.values()[start..start + count]);
        } else if let Some(f) = values.as_any().downcast_ref::<Float16Array>() {
            table
                .features
                .extend(f.values()[start..start + count].iter().map(|h| h.to_f32()));
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
