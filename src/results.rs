//! Result tables as Arrow IPC files (the `.arrow` file format, which pandas,
//! polars, pyarrow and DuckDB read). Long format: one row per measurement.
//! Schemas: `docs/results.md`.

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{
    Array, ArrayRef, Float64Array, RecordBatch, RecordBatchOptions, StringArray, UInt64Array,
};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A value of one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Str(String),
    U64(u64),
    F64(f64),
    Null,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Str(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Str(s)
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::U64(v)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::U64(v as u64)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::F64(v)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    U64,
    F64,
}

/// A table built row by row; columns appear in first-use order and are typed by
/// their first non-null value (or declared up front, so empty tables have a schema).
#[derive(Debug, Default)]
pub struct Table {
    columns: IndexMap<String, (Option<Kind>, Vec<Cell>)>,
    rows: usize,
    /// The row being built, in the order its cells were set.
    current: IndexMap<String, Cell>,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares columns (name, example cell) so they exist even with no rows.
    pub fn declare(mut self, columns: &[(&str, Cell)]) -> Self {
        for (name, example) in columns {
            let kind = kind_of(example);
            self.columns
                .entry(name.to_string())
                .or_insert((kind, Vec::new()));
        }
        self
    }

    pub fn set(&mut self, name: &str, value: impl Into<Cell>) -> &mut Self {
        self.current.insert(name.to_string(), value.into());
        self
    }

    pub fn end_row(&mut self) {
        let mut current = std::mem::take(&mut self.current);
        for (name, (kind, cells)) in self.columns.iter_mut() {
            let cell = current.shift_remove(name).unwrap_or(Cell::Null);
            if kind.is_none() {
                *kind = kind_of(&cell);
            }
            cells.push(cell);
        }
        // New columns, in the order they were set: earlier rows get nulls.
        for (name, cell) in current {
            let mut cells = vec![Cell::Null; self.rows];
            let kind = kind_of(&cell);
            cells.push(cell);
            self.columns.insert(name, (kind, cells));
        }
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn batch(
        &self,
        metadata: &HashMap<String, String>,
    ) -> Result<(Arc<Schema>, RecordBatch), String> {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (name, (kind, cells)) in &self.columns {
            let kind = kind.unwrap_or(Kind::Str);
            let (field, array): (Field, ArrayRef) = match kind {
                Kind::Str => (
                    Field::new(name, DataType::Utf8, true),
                    Arc::new(
                        cells
                            .iter()
                            .map(|c| {
                                if let Cell::Str(s) = c {
                                    Some(s.as_str())
                                } else {
                                    None
                                }
                            })
                            .collect::<StringArray>(),
                    ),
                ),
                Kind::U64 => (
                    Field::new(name, DataType::UInt64, true),
                    Arc::new(
                        cells
                            .iter()
                            .map(|c| if let Cell::U64(v) = c { Some(*v) } else { None })
                            .collect::<UInt64Array>(),
                    ),
                ),
                Kind::F64 => (
                    Field::new(name, DataType::Float64, true),
                    Arc::new(
                        cells
                            .iter()
                            .map(|c| if let Cell::F64(v) = c { Some(*v) } else { None })
                            .collect::<Float64Array>(),
                    ),
                ),
            };
            fields.push(field);
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata.clone()));
        // The row count is explicit so a table with no columns (nothing to report,
        // nothing declared) still writes: Arrow cannot infer it from zero arrays.
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = RecordBatch::try_new_with_options(schema.clone(), arrays, &options)
            .map_err(|e| e.to_string())?;
        Ok((schema, batch))
    }

    /// Writes the table atomically (temporary file, then rename).
    pub fn write(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<(), String> {
        let (schema, batch) = self.batch(metadata)?;
        write_batches(path, &schema, &[batch])
    }
}

fn kind_of(cell: &Cell) -> Option<Kind> {
    match cell {
        Cell::Str(_) => Some(Kind::Str),
        Cell::U64(_) => Some(Kind::U64),
        Cell::F64(_) => Some(Kind::F64),
        Cell::Null => None,
    }
}

pub fn write_batches(
    path: &Path,
    schema: &Arc<Schema>,
    batches: &[RecordBatch],
) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut writer =
        FileWriter::try_new(std::io::BufWriter::new(file), schema).map_err(|e| e.to_string())?;
    for b in batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A table of embedding vectors: string and integer columns plus `vector`.
pub struct VectorTable {
    pub table: Table,
    pub dim: usize,
    vectors: FixedSizeListBuilder<Float32Builder>,
}

impl VectorTable {
    pub fn new(dim: usize) -> Self {
        VectorTable {
            table: Table::new(),
            dim,
            vectors: FixedSizeListBuilder::new(Float32Builder::new(), dim as i32),
        }
    }

    pub fn push_vector(&mut self, v: &[f32]) {
        self.vectors.values().append_slice(v);
        self.vectors.append(true);
        self.table.end_row();
    }

    pub fn write(mut self, path: &Path, metadata: &HashMap<String, String>) -> Result<(), String> {
        let (schema, batch) = self.table.batch(metadata)?;
        let vectors = self.vectors.finish();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("vector", vectors.data_type().clone(), false));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(vectors));
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata.clone()));
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
        write_batches(path, &schema, &[batch])
    }
}
