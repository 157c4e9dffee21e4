//! Feature tables: Arrow IPC (`.arrow`) or Parquet (`.parquet`) files with an
//! `id` column, a `feature` column (a list of f32, f16 or f64 of one length) and
//! text metadata columns, single-valued or lists. Every problem is reported
//! with the file, the row or column, and what was expected.

use super::columns::{string_lists, strings, textual, textual_list};
use super::error::DataError;
use super::features::Features;
use crate::files::FileError;
use arrow_array::{Array, FixedSizeListArray, Float16Array, Float32Array, Float64Array};
use arrow_array::{ArrayRef, LargeListArray, ListArray, RecordBatch};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Schema};
use std::collections::HashMap;
use std::path::Path;

/// The largest feature table read: far above COCO's (113k images x 2048 f32 is
/// 0.9 GiB), far below what would make a typo'd path hang the machine.
pub const MAX_TABLE_BYTES: u64 = 256 << 30;

/// A table read into memory: features row-major as f32, text columns by name.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub ids: Vec<String>,
    pub features: Features,
    /// Floats per row; 0 for a table read from a raw list (no features yet).
    pub dim: usize,
    /// Single-valued text columns.
    pub columns: HashMap<String, Vec<String>>,
    /// Multi-valued text columns (lists of strings), one list per row.
    pub lists: HashMap<String, Vec<Vec<String>>>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The values of a metadata column at a row: one for a plain column, any
    /// number for a list column; `None` when the table has no such column.
    pub fn values(&self, column: &str, row: usize) -> Option<&[String]> {
        if let Some(c) = self.columns.get(column) {
            return c.get(row).map(std::slice::from_ref);
        }
        self.lists
            .get(column)
            .and_then(|c| c.get(row))
            .map(Vec::as_slice)
    }

    pub fn has_column(&self, column: &str) -> bool {
        self.columns.contains_key(column) || self.lists.contains_key(column)
    }
}

impl From<FileError> for DataError {
    fn from(e: FileError) -> Self {
        DataError::invalid(&e.path, e.message)
    }
}

/// The length of a list column's first row.
pub(crate) fn first_list_length(column: &dyn Array) -> Option<usize> {
    if column.is_empty() {
        return None;
    }
    if let Some(l) = column.as_any().downcast_ref::<ListArray>() {
        return Some(l.value_length(0) as usize);
    }
    if let Some(l) = column.as_any().downcast_ref::<LargeListArray>() {
        return Some(l.value_length(0) as usize);
    }
    None
}

/// What the schema says of the `feature` column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FeatureType {
    /// A FixedSizeList of this width.
    Fixed(usize),
    /// A List or LargeList: every row must have the length of the first.
    Variable,
}

const FEATURE_TYPES: &str = "a list (FixedSizeList, List or LargeList) of f32, f16 or f64";

pub(crate) fn feature_type(path: &Path, schema: &Schema) -> Result<FeatureType, DataError> {
    let field = schema.field_with_name("feature").map_err(|_| {
        DataError::invalid(path, format!("missing column `feature` ({FEATURE_TYPES})"))
    })?;
    let float =
        |t: &DataType| matches!(t, DataType::Float32 | DataType::Float16 | DataType::Float64);
    match field.data_type() {
        DataType::FixedSizeList(inner, width) if float(inner.data_type()) && *width > 0 => {
            Ok(FeatureType::Fixed(*width as usize))
        }
        DataType::List(inner) | DataType::LargeList(inner) if float(inner.data_type()) => {
            Ok(FeatureType::Variable)
        }
        other => Err(DataError::invalid(
            path,
            format!("column `feature` must be {FEATURE_TYPES}, found {other}"),
        )),
    }
}

/// What a table reader reads (`read::read_table_with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Everything,
    /// Ids and metadata; the features stay empty (`dim` is set).
    MetadataOnly,
}

/// A table assembled batch by batch (Arrow IPC and Parquet alike).
pub(crate) struct TableBuilder<'a> {
    path: &'a Path,
    table: Table,
    text_columns: Vec<String>,
    list_columns: Vec<String>,
    dim: Option<usize>,
    owned: Vec<f32>,
    mapped: Option<ScalarBuffer<f32>>,
    /// Keep an f32 feature column as it is (a single batch of a mapped file).
    pub keep_mapped: bool,
    /// Read ids and metadata only; the table's features stay empty (its `dim`
    /// is still set). For checks that only select rows, such as an importer's
    /// split check: a COCO-size table's features are not read at all.
    metadata_only: bool,
}

impl<'a> TableBuilder<'a> {
    /// Checks the schema; `rows` is used to reserve memory once.
    pub fn new(
        path: &'a Path,
        schema: &Schema,
        required: &[&str],
        rows: usize,
    ) -> Result<TableBuilder<'a>, DataError> {
        let dim = match feature_type(path, schema)? {
            FeatureType::Fixed(width) => Some(width),
            FeatureType::Variable => None,
        };
        for name in std::iter::once("id").chain(required.iter().copied()) {
            if schema.field_with_name(name).is_err() {
                return Err(DataError::invalid(path, format!("missing column `{name}`")));
            }
        }
        if let Ok(f) = schema.field_with_name("id") {
            if !matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Err(DataError::invalid(
                    path,
                    format!("column `id` must hold strings, found {}", f.data_type()),
                ));
            }
        }
        let (mut text_columns, mut list_columns) = (Vec::new(), Vec::new());
        for f in schema.fields() {
            if f.name() == "id" || f.name() == "feature" {
                continue;
            }
            if textual(f.data_type()) {
                text_columns.push(f.name().clone());
            } else if textual_list(f.data_type()) && f.name() != "split" {
                list_columns.push(f.name().clone());
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
        if rows == 0 {
            return Err(DataError::invalid(path, "the table has no rows"));
        }
        let table = Table {
            ids: Vec::with_capacity(rows),
            columns: text_columns
                .iter()
                .map(|n| (n.clone(), Vec::with_capacity(rows)))
                .collect(),
            lists: list_columns
                .iter()
                .map(|n| (n.clone(), Vec::with_capacity(rows)))
                .collect(),
            ..Table::default()
        };
        let mut owned = Vec::new();
        if let Some(d) = dim {
            owned.reserve_exact(rows.saturating_mul(d));
        }
        Ok(TableBuilder {
            path,
            table,
            text_columns,
            list_columns,
            dim,
            owned,
            mapped: None,
            keep_mapped: false,
            metadata_only: false,
        })
    }

    /// Reads ids and metadata only (see the field).
    pub fn metadata_only(&mut self) {
        self.metadata_only = true;
        self.owned = Vec::new();
    }

    pub fn append(&mut self, batch: &RecordBatch) -> Result<(), DataError> {
        let path = self.path;
        let first_row = self.table.ids.len();
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
            &mut self.table.ids,
        )?;
        for name in &self.text_columns {
            let out = self.table.columns.entry(name.clone()).or_default();
            strings(path, column(name)?.as_ref(), name, first_row, out)?;
        }
        for name in &self.list_columns {
            let out = self.table.lists.entry(name.clone()).or_default();
            string_lists(path, column(name)?.as_ref(), name, first_row, out)?;
        }
        if self.metadata_only && self.dim.is_some() {
            return Ok(());
        }
        let values = feature_values(path, column("feature")?.as_ref(), first_row, &mut self.dim)?;
        if self.metadata_only {
            return Ok(());
        }
        let dim = self.dim.unwrap_or(1);
        let bad_row = |position: usize| {
            let row = first_row + position / dim;
            DataError::invalid(
                path,
                format!(
                    "`feature` of row {row} (id \"{}\") holds a NaN or infinite value",
                    self.table
                        .ids
                        .get(row)
                        .map(String::as_str)
                        .unwrap_or_default()
                ),
            )
        };
        match values {
            Values::F32(v) => {
                if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                    return Err(bad_row(p));
                }
                if self.keep_mapped && self.mapped.is_none() && self.owned.is_empty() {
                    self.mapped = Some(v);
                } else {
                    self.owned.extend_from_slice(&v);
                }
            }
            Values::F16(v) => {
                let start = self.owned.len();
                self.owned.extend(v.iter().map(|h| h.to_f32()));
                if let Some(p) = self.owned[start..].iter().position(|x| !x.is_finite()) {
                    return Err(bad_row(p));
                }
            }
            Values::F64(v) => {
                let start = self.owned.len();
                self.owned.extend(v.iter().map(|&x| x as f32));
                if let Some(p) = self.owned[start..].iter().position(|x| !x.is_finite()) {
                    return Err(bad_row(p));
                }
            }
        }
        Ok(())
    }

    /// The table, with its ids checked for duplicates.
    pub fn finish(mut self) -> Result<Table, DataError> {
        if self.table.ids.is_empty() {
            return Err(DataError::invalid(self.path, "the table has no rows"));
        }
        self.table.dim = self.dim.unwrap_or(0);
        self.table.features = match self.mapped {
            Some(v) => Features::mapped(v),
            None => Features::from(self.owned),
        };
        check_unique_ids(self.path, &self.table.ids)?;
        Ok(self.table)
    }
}

pub(crate) fn check_unique_ids(path: &Path, ids: &[String]) -> Result<(), DataError> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (row, id) in ids.iter().enumerate() {
        if let Some(first) = seen.insert(id, row) {
            return Err(DataError::invalid(
                path,
                format!("duplicate id \"{id}\" at rows {first} and {row}"),
            ));
        }
    }
    Ok(())
}

/// The feature values of a batch's rows, contiguous, in their stored type.
enum Values {
    F32(ScalarBuffer<f32>),
    F16(ScalarBuffer<half::f16>),
    F64(ScalarBuffer<f64>),
}

/// The offsets and values of a List or LargeList array.
fn list_parts(column: &dyn Array) -> Option<(Vec<usize>, ArrayRef)> {
    if let Some(l) = column.as_any().downcast_ref::<ListArray>() {
        return Some((
            l.value_offsets().iter().map(|&o| o as usize).collect(),
            l.values().clone(),
        ));
    }
    let l = column.as_any().downcast_ref::<LargeListArray>()?;
    Some((
        l.value_offsets().iter().map(|&o| o as usize).collect(),
        l.values().clone(),
    ))
}

/// The values of a `feature` column, checked: no null row, no null value, every
/// row of length `dim` (set from the first row of a variable-length list).
fn feature_values(
    path: &Path,
    column: &dyn Array,
    first_row: usize,
    dim: &mut Option<usize>,
) -> Result<Values, DataError> {
    if let Some(row) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(DataError::invalid(
            path,
            format!("`feature` is empty (null) at row {}", first_row + row),
        ));
    }
    let (values, start, end) = if let Some(list) =
        column.as_any().downcast_ref::<FixedSizeListArray>()
    {
        let width = list.value_length() as usize;
        let start = if list.is_empty() {
            0
        } else {
            list.value_offset_at(0)
        };
        (list.values().clone(), start, start + list.len() * width)
    } else {
        let (offsets, values) = list_parts(column).ok_or_else(|| {
            DataError::invalid(path, format!("column `feature` must be {FEATURE_TYPES}"))
        })?;
        for (row, pair) in offsets.windows(2).enumerate() {
            let length = pair[1].saturating_sub(pair[0]);
            let expected = *dim.get_or_insert(length);
            if length != expected || length == 0 {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "`feature` of row {} has {length} values; every row must have {} (the length of the first row)",
                        first_row + row,
                        expected.max(1)
                    ),
                ));
            }
        }
        let (start, end) = (
            offsets.first().copied().unwrap_or(0),
            offsets.last().copied().unwrap_or(0),
        );
        (values, start, end)
    };
    if end > values.len() || start > end {
        return Err(DataError::invalid(
            path,
            "`feature` has rows outside its values",
        ));
    }
    let width = match (column.data_type(), *dim) {
        (DataType::FixedSizeList(_, w), _) => *w as usize,
        (_, Some(d)) => d,
        _ => 1,
    };
    let values = values.slice(start, end - start);
    if let Some(i) = (0..values.len()).find(|&i| values.is_null(i)) {
        return Err(DataError::invalid(
            path,
            format!(
                "`feature` of row {} holds a null value at position {}",
                first_row + i / width,
                i % width
            ),
        ));
    }
    if let Some(f) = values.as_any().downcast_ref::<Float32Array>() {
        Ok(Values::F32(f.values().clone()))
    } else if let Some(f) = values.as_any().downcast_ref::<Float16Array>() {
        Ok(Values::F16(f.values().clone()))
    } else if let Some(f) = values.as_any().downcast_ref::<Float64Array>() {
        Ok(Values::F64(f.values().clone()))
    } else {
        Err(DataError::invalid(
            path,
            format!(
                "column `feature` must be {FEATURE_TYPES}, found {}",
                column.data_type()
            ),
        ))
    }
}
