//! The front door of feature tables: Arrow IPC (`.arrow`, read from a memory
//! map) or Parquet (`.parquet`, streamed), chosen by the file's extension; both
//! are assembled by [`super::tables::TableBuilder`].

use super::error::DataError;
use super::tables::{
    feature_type, first_list_length, FeatureType, Table, TableBuilder, MAX_TABLE_BYTES,
};
use crate::files::{read_ipc, IpcFile};
use std::path::Path;

/// Whether a path names a Parquet file (by its extension).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

fn open_ipc(path: &Path) -> Result<IpcFile, DataError> {
    Ok(read_ipc(path, MAX_TABLE_BYTES)?)
}

/// The width of the `feature` column: from the schema when it is a fixed-size
/// list, otherwise from the first row.
pub fn feature_width(path: &Path) -> Result<usize, DataError> {
    if is_parquet(path) {
        return super::parquet::feature_width(path);
    }
    let file = open_ipc(path)?;
    match feature_type(path, &file.schema)? {
        FeatureType::Fixed(width) => Ok(width),
        FeatureType::Variable => file
            .batches
            .first()
            .and_then(|b| b.column_by_name("feature"))
            .and_then(|c| first_list_length(c.as_ref()))
            .ok_or_else(|| DataError::invalid(path, "the table has no rows")),
    }
}

/// Reads a table, requiring `id`, `feature` and the `required` columns; every
/// other text column (strings, categoricals, integers, lists of them) is kept
/// as metadata. Parquet files are streamed batch by batch into the result; an
/// Arrow file's f32 features stay in its memory map when it has one batch.
///
/// A file of several batches is copied batch by batch, and each batch's pages of
/// the map are released once copied, so the table is not resident twice (the
/// copy and the map's pages) at the end of the read.
pub fn read_table(path: &Path, required: &[&str]) -> Result<Table, DataError> {
    read_table_with(path, required, Read::Everything)
}

pub use super::tables::Read;

pub fn read_table_with(path: &Path, required: &[&str], read: Read) -> Result<Table, DataError> {
    if is_parquet(path) {
        return super::parquet::read_table(path, required, read);
    }
    let file = open_ipc(path)?;
    let mut builder = TableBuilder::new(path, &file.schema, required, file.rows())?;
    if read == Read::MetadataOnly {
        builder.metadata_only();
    }
    builder.keep_mapped = file.batches.len() == 1;
    for (i, batch) in file.batches.iter().enumerate() {
        builder.append(batch)?;
        if !builder.keep_mapped {
            file.release(i);
        }
    }
    builder.finish()
}
