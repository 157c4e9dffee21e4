//! Arrow columns read as text: the `id`, metadata columns that tasks select on,
//! and multi-valued (list) metadata columns. Every null or wrong type is an
//! error naming the file, the column and the row.

use super::error::DataError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::Array;
use arrow_schema::DataType;
use std::path::Path;

/// Whether a column can be read as text: strings, dictionary-encoded strings
/// (pandas and polars categoricals) and integers (written as decimals).
pub fn textual(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(key, value) => key.is_integer() && textual(value),
        t => t.is_integer(),
    }
}

/// Whether a column is a list of text values (a multi-valued metadata column:
/// COCO's categories of an image, one entry per annotated instance).
pub fn textual_list(t: &DataType) -> bool {
    match t {
        DataType::List(inner) | DataType::LargeList(inner) => textual(inner.data_type()),
        _ => false,
    }
}

/// Appends a column's values as text; a null is an error naming the row.
pub fn strings(
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

/// Appends a list column's rows as lists of text. A null list or a null value
/// inside one is an error naming the row; an empty list is a row with no values.
pub fn string_lists(
    path: &Path,
    column: &dyn Array,
    name: &str,
    first_row: usize,
    out: &mut Vec<Vec<String>>,
) -> Result<(), DataError> {
    if let Some(row) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(DataError::invalid(
            path,
            format!(
                "column `{name}` is empty (null) at row {}; an image without values has an empty list",
                first_row + row
            ),
        ));
    }
    let (offsets, values): (Vec<usize>, _) = match column.data_type() {
        DataType::List(_) => {
            let list = column.as_list::<i32>();
            (
                list.value_offsets().iter().map(|&o| o as usize).collect(),
                list.values().clone(),
            )
        }
        DataType::LargeList(_) => {
            let list = column.as_list::<i64>();
            (
                list.value_offsets().iter().map(|&o| o as usize).collect(),
                list.values().clone(),
            )
        }
        other => {
            return Err(DataError::invalid(
                path,
                format!("column `{name}` must hold lists of strings, found {other}"),
            ))
        }
    };
    let (start, end) = match (offsets.first(), offsets.last()) {
        (Some(&s), Some(&e)) if s <= e && e <= values.len() => (s, e),
        _ => {
            return Err(DataError::invalid(
                path,
                format!("column `{name}` has list offsets outside its values"),
            ))
        }
    };
    let used = values.slice(start, end - start);
    if let Some(i) = (0..used.len()).find(|&i| used.is_null(i)) {
        let row = offsets.partition_point(|&o| o <= start + i) - 1;
        return Err(DataError::invalid(
            path,
            format!(
                "column `{name}` holds a null value in the list of row {}",
                first_row + row
            ),
        ));
    }
    let mut flat = Vec::with_capacity(used.len());
    strings(path, used.as_ref(), name, 0, &mut flat)?;
    let mut flat = flat.into_iter();
    for pair in offsets.windows(2) {
        let n = pair[1].saturating_sub(pair[0]);
        out.push(flat.by_ref().take(n).collect());
    }
    Ok(())
}
