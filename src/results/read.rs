//! Reading a result table back through its schema. Every failure names the file
//! and, where it is about a column, the column (and the row of a stray null), so a
//! truncated or foreign file is easy to place.

use super::schema::{axis_of_column, Cells, Column, Identity, ResultRow, IDENTITY};
use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::DataType;
use std::path::{Path, PathBuf};

/// A table that cannot be read: which file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ReadError {}

/// A row read back, with the identifying columns it was written with.
#[derive(Debug, Clone, PartialEq)]
pub struct Identified<R> {
    pub identity: Identity,
    pub row: R,
}

/// Every row of the `R` table at `path`. A table with no rows reads as empty
/// whatever its columns (tables written before every table kept its schema had none).
/// The largest result table read (a run's tables are megabytes).
pub const MAX_RESULT_BYTES: u64 = 16 << 30;

pub fn read_table<R: ResultRow>(path: &Path) -> Result<Vec<Identified<R>>, ReadError> {
    let fail = |message: String| ReadError {
        path: path.to_path_buf(),
        message,
    };
    // Validated, bounded and panic-free: a damaged or foreign file is an error.
    let batches = crate::files::read_ipc(path, MAX_RESULT_BYTES)
        .map_err(|e| fail(e.message))?
        .batches;
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        // Every column of the wrong type is reported before a missing one: it says
        // more about the file (another table's, or another program's).
        let identity = Sources::resolve(batch, IDENTITY).map_err(fail)?;
        let own = Sources::resolve(batch, R::COLUMNS).map_err(fail)?;
        let (identity, own) = match (identity, own) {
            (Ok(identity), Ok(own)) => (identity, own),
            (Err(name), _) | (_, Err(name)) => return Err(fail(missing_column(batch, name))),
        };
        let axes = axis_columns::<R>(batch);
        for i in 0..batch.num_rows() {
            let at = out.len();
            let mut row = Identified {
                identity: Identity::default(),
                row: R::default(),
            };
            identity.fill(&mut row.identity, i, at).map_err(fail)?;
            own.fill(&mut row.row, i, at).map_err(fail)?;
            for (axis, labels) in &axes {
                if labels.is_valid(i) {
                    let label = labels.value(i).to_string();
                    row.identity.axes.push((axis.clone(), label));
                }
            }
            out.push(row);
        }
    }
    Ok(out)
}

/// The swept settings' columns: the text columns no declaration names.
fn axis_columns<R: ResultRow>(batch: &RecordBatch) -> Vec<(String, &StringArray)> {
    let declared = |name: &str| {
        IDENTITY.iter().any(|c| c.name == name)
            || R::COLUMNS.iter().any(|c| match c.cells {
                Cells::Named(..) => name.starts_with(c.name),
                _ => c.name == name,
            })
    };
    batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(field, _)| !declared(field.name()))
        .filter_map(|(field, array)| {
            let labels = array.as_any().downcast_ref::<StringArray>()?;
            Some((axis_of_column(field.name()).to_string(), labels))
        })
        .collect()
}

/// One batch's arrays for a list of declared columns, typed.
struct Sources<'a, R: 'static> {
    columns: &'static [Column<R>],
    arrays: Vec<Source<'a>>,
}

enum Source<'a> {
    Text(&'a StringArray),
    UInt64(&'a UInt64Array),
    Float64(&'a Float64Array),
    /// (name without the family's prefix, its column).
    Named(Vec<(String, &'a Float64Array)>),
    Vector(&'a FixedSizeListArray),
}

impl<'a, R> Sources<'a, R> {
    /// Finds and types every column of `columns` in `batch`: an error for a column
    /// of the wrong type, else the sources or the first column missing.
    fn resolve(
        batch: &'a RecordBatch,
        columns: &'static [Column<R>],
    ) -> Result<Result<Self, &'static str>, String> {
        let mut arrays = Vec::with_capacity(columns.len());
        let mut missing = None;
        for column in columns {
            if let Cells::Named(..) = column.cells {
                arrays.push(Source::Named(named_family(batch, column.name)?));
                continue;
            }
            let Some(array) = batch.column_by_name(column.name) else {
                missing.get_or_insert(column.name);
                continue;
            };
            let any = array.as_any();
            let source = match column.cells {
                Cells::Text(..) => any.downcast_ref().map(Source::Text),
                Cells::UInt64(..) | Cells::OptionalUInt64(..) => {
                    any.downcast_ref().map(Source::UInt64)
                }
                Cells::Float64(..) | Cells::OptionalFloat64(..) => {
                    any.downcast_ref().map(Source::Float64)
                }
                Cells::Vector(..) => any
                    .downcast_ref::<FixedSizeListArray>()
                    .filter(|list| list.value_type() == DataType::Float32)
                    .map(Source::Vector),
                Cells::Named(..) => unreachable!("families are resolved above"),
            };
            arrays.push(
                source.ok_or_else(|| {
                    wrong_type(column.name, array.data_type(), column.type_name())
                })?,
            );
        }
        Ok(match missing {
            Some(name) => Err(name),
            None => Ok(Sources { columns, arrays }),
        })
    }

    /// Sets `row` from row `i` of the batch; `at` numbers the row in the file.
    fn fill(&self, row: &mut R, i: usize, at: usize) -> Result<(), String> {
        for (column, source) in self.columns.iter().zip(&self.arrays) {
            let null = || format!("row {at}: `{}` is null", column.name);
            let present = |array: &dyn Array| array.is_valid(i).then_some(());
            match (&column.cells, source) {
                (Cells::Text(_, set), Source::Text(a)) => {
                    present(*a).ok_or_else(null)?;
                    set(row, a.value(i).to_string());
                }
                (Cells::UInt64(_, set), Source::UInt64(a)) => {
                    present(*a).ok_or_else(null)?;
                    set(row, a.value(i));
                }
                (Cells::OptionalUInt64(_, set), Source::UInt64(a)) => {
                    set(row, present(*a).map(|_| a.value(i)));
                }
                (Cells::Float64(_, set), Source::Float64(a)) => {
                    present(*a).ok_or_else(null)?;
                    set(row, a.value(i));
                }
                (Cells::OptionalFloat64(_, set), Source::Float64(a)) => {
                    set(row, present(*a).map(|_| a.value(i)));
                }
                (Cells::Named(_, set), Source::Named(family)) => {
                    let values = family
                        .iter()
                        .filter(|(_, a)| a.is_valid(i))
                        .map(|(name, a)| (name.clone(), a.value(i)))
                        .collect();
                    set(row, values);
                }
                (Cells::Vector(_, set), Source::Vector(list)) => {
                    present(*list).ok_or_else(null)?;
                    let vector = list.value(i);
                    let floats = vector.as_any().downcast_ref::<Float32Array>();
                    set(row, floats.map_or_else(Vec::new, |f| f.values().to_vec()));
                }
                _ => unreachable!("Sources::resolve types each source by its column"),
            }
        }
        Ok(())
    }
}

/// The columns of a family (`term_ewc`, `term_mas`, ...), in file order.
fn named_family<'a>(
    batch: &'a RecordBatch,
    prefix: &str,
) -> Result<Vec<(String, &'a Float64Array)>, String> {
    let mut family = Vec::new();
    for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let Some(name) = field.name().strip_prefix(prefix) else {
            continue;
        };
        let values = array
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| wrong_type(field.name(), field.data_type(), "float64"))?;
        family.push((name.to_string(), values));
    }
    Ok(family)
}

fn missing_column(batch: &RecordBatch, name: &str) -> String {
    let present: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let present = if present.is_empty() {
        "none".to_string()
    } else {
        present.join(", ")
    };
    format!("has no column `{name}` (it has: {present})")
}

fn wrong_type(column: &str, holds: &DataType, expected: &str) -> String {
    format!("column `{column}` holds {holds}, expected {expected}")
}
