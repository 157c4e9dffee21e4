//! Building a result table row by row through its schema, and writing it as an
//! Arrow IPC file.

use super::schema::{axis_column, Cells, Column, Identity, ResultRow, IDENTITY};
use arrow_array::builder::{
    FixedSizeListBuilder, Float32Builder, Float64Builder, StringBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{Field, Schema};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

/// A table of `R` rows, each with its [`Identity`], built column by column as rows
/// arrive. Columns: the identifying ones, one per swept setting, then `R`'s own.
pub struct TableWriter<R: ResultRow> {
    rows: usize,
    identity: Vec<Builder>,
    /// Swept setting → its column, in axis order.
    axes: IndexMap<String, StringBuilder>,
    own: Vec<Builder>,
    /// The first row whose vector is not as wide as the first one's.
    width_error: Option<String>,
    row_type: PhantomData<R>,
}

/// The builder of one declared column.
enum Builder {
    Text(StringBuilder),
    UInt64(UInt64Builder),
    Float64(Float64Builder),
    /// Name → its column, in the order the names first appeared.
    Named(IndexMap<String, Float64Builder>),
    /// Created by the first row, which sets the width.
    Vector(Option<(usize, FixedSizeListBuilder<Float32Builder>)>),
}

impl Builder {
    fn new<R>(column: &Column<R>) -> Self {
        match column.cells {
            Cells::Text(..) => Builder::Text(StringBuilder::new()),
            Cells::UInt64(..) | Cells::OptionalUInt64(..) => Builder::UInt64(UInt64Builder::new()),
            Cells::Float64(..) | Cells::OptionalFloat64(..) => {
                Builder::Float64(Float64Builder::new())
            }
            Cells::Named(..) => Builder::Named(IndexMap::new()),
            Cells::Vector(..) => Builder::Vector(None),
        }
    }
}

impl<R: ResultRow> TableWriter<R> {
    /// A table whose swept settings are `axes` (in order): their columns exist even
    /// when no row is added.
    pub fn new(axes: &[String]) -> Self {
        TableWriter {
            rows: 0,
            identity: IDENTITY.iter().map(Builder::new).collect(),
            axes: axes
                .iter()
                .map(|axis| (axis.clone(), StringBuilder::new()))
                .collect(),
            own: R::COLUMNS.iter().map(Builder::new).collect(),
            width_error: None,
            row_type: PhantomData,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push(&mut self, identity: &Identity, row: &R) {
        for (column, builder) in IDENTITY.iter().zip(&mut self.identity) {
            append(column, builder, identity, self.rows, &mut self.width_error);
        }
        for (axis, _) in &identity.axes {
            if !self.axes.contains_key(axis) {
                let mut builder = StringBuilder::new();
                builder.append_nulls(self.rows);
                self.axes.insert(axis.clone(), builder);
            }
        }
        for (axis, builder) in &mut self.axes {
            let label = identity.axes.iter().find(|(a, _)| a == axis);
            builder.append_option(label.map(|(_, l)| l));
        }
        for (column, builder) in R::COLUMNS.iter().zip(&mut self.own) {
            append(column, builder, row, self.rows, &mut self.width_error);
        }
        self.rows += 1;
    }

    /// Writes the table atomically (temporary file, then rename), with `metadata`
    /// on its schema.
    pub fn write(self, path: &Path, metadata: &HashMap<String, String>) -> Result<(), String> {
        if let Some(e) = self.width_error {
            return Err(format!("{}: {e}", path.display()));
        }
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        let mut add = |name: &str, nullable: bool, array: ArrayRef| {
            fields.push(Field::new(name, array.data_type().clone(), nullable));
            arrays.push(array);
        };
        for (column, builder) in IDENTITY.iter().zip(self.identity) {
            finish(column, builder, &mut add);
        }
        for (axis, mut builder) in self.axes {
            add(axis_column(&axis), true, Arc::new(builder.finish()));
        }
        for (column, builder) in R::COLUMNS.iter().zip(self.own) {
            finish(column, builder, &mut add);
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata.clone()));
        // The row count is explicit so a table with no columns still writes: Arrow
        // cannot infer it from zero arrays.
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = RecordBatch::try_new_with_options(schema.clone(), arrays, &options)
            .map_err(|e| e.to_string())?;
        write_batches(path, &schema, &[batch])
    }
}

/// Appends `row`'s cell of `column`; `rows_before` rows are already in.
fn append<R>(
    column: &Column<R>,
    builder: &mut Builder,
    row: &R,
    rows_before: usize,
    width_error: &mut Option<String>,
) {
    match (&column.cells, builder) {
        (Cells::Text(get, _), Builder::Text(b)) => b.append_value(get(row)),
        (Cells::UInt64(get, _), Builder::UInt64(b)) => b.append_value(get(row)),
        (Cells::OptionalUInt64(get, _), Builder::UInt64(b)) => b.append_option(get(row)),
        (Cells::Float64(get, _), Builder::Float64(b)) => b.append_value(get(row)),
        (Cells::OptionalFloat64(get, _), Builder::Float64(b)) => b.append_option(get(row)),
        (Cells::Named(get, _), Builder::Named(family)) => {
            let values = get(row);
            for (name, _) in values {
                if !family.contains_key(name) {
                    let mut b = Float64Builder::new();
                    b.append_nulls(rows_before);
                    family.insert(name.clone(), b);
                }
            }
            for (name, b) in family.iter_mut() {
                b.append_option(values.iter().find(|(n, _)| n == name).map(|(_, v)| *v));
            }
        }
        (Cells::Vector(get, _), Builder::Vector(state)) => {
            let vector = get(row);
            let (width, b) = state.get_or_insert_with(|| {
                (
                    vector.len(),
                    FixedSizeListBuilder::new(Float32Builder::new(), vector.len() as i32),
                )
            });
            if vector.len() == *width {
                b.values().append_slice(vector);
            } else {
                // Keep the columns aligned; `write` refuses the table.
                width_error.get_or_insert_with(|| {
                    format!(
                        "`{}` of row {rows_before} has {} values, the first row's {width}",
                        column.name,
                        vector.len()
                    )
                });
                b.values().append_nulls(*width);
            }
            b.append(true);
        }
        _ => unreachable!("Builder::new makes the builder of the column's kind"),
    }
}

/// The finished array(s) of one declared column, passed to `add`.
fn finish<R>(column: &Column<R>, builder: Builder, add: &mut impl FnMut(&str, bool, ArrayRef)) {
    let nullable = column.arrow_nullable();
    match builder {
        Builder::Text(mut b) => add(column.name, nullable, Arc::new(b.finish())),
        Builder::UInt64(mut b) => add(column.name, nullable, Arc::new(b.finish())),
        Builder::Float64(mut b) => add(column.name, nullable, Arc::new(b.finish())),
        Builder::Named(family) => {
            for (name, mut b) in family {
                add(
                    &format!("{}{name}", column.name),
                    nullable,
                    Arc::new(b.finish()),
                );
            }
        }
        Builder::Vector(state) => {
            let (_, mut b) =
                state.unwrap_or_else(|| (0, FixedSizeListBuilder::new(Float32Builder::new(), 0)));
            add(column.name, nullable, Arc::new(b.finish()));
        }
    }
}

/// Writes `batches` to `path` as an Arrow IPC file, atomically (a temporary file
/// beside it, then a rename).
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
