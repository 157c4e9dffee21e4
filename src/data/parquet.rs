//! Parquet feature tables (what Hugging Face datasets and pandas write): the same
//! columns as an Arrow table, read without conversion. The file is streamed one
//! batch at a time into the table, so its features are held once (the decoded
//! batch in flight is a few thousand rows). Snappy-compressed and uncompressed
//! files are read; other codecs are named in the error with the way out.

use super::error::DataError;
use super::tables::{
    feature_type, first_list_length, FeatureType, Read, Table, TableBuilder, MAX_TABLE_BYTES,
};
use crate::files::{contain, io_message, regular_file};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use std::fs::File;
use std::path::Path;

/// Rows decoded at a time: large enough to amortise the reader, small enough
/// that the batch in flight is negligible beside the table.
const BATCH_ROWS: usize = 4096;

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, DataError> {
    let size = regular_file(path)?;
    if size > MAX_TABLE_BYTES {
        return Err(DataError::invalid(
            path,
            format!(
                "is larger than the limit of {}",
                crate::files::bytes(MAX_TABLE_BYTES)
            ),
        ));
    }
    let file = File::open(path).map_err(|e| DataError::invalid(path, io_message(&e)))?;
    let builder = contain(path, || ParquetRecordBatchReaderBuilder::try_new(file))?
        .map_err(|e| DataError::invalid(path, format!("is not a readable Parquet file: {e}")))?;
    for group in builder.metadata().row_groups() {
        for chunk in group.columns() {
            // `ZSTD(ZstdLevel(1))` -> `ZSTD`: the codec, not its settings.
            let codec = format!("{:?}", chunk.compression());
            let codec = codec.split('(').next().unwrap_or_default().to_string();
            if !matches!(
                chunk.compression(),
                Compression::UNCOMPRESSED | Compression::SNAPPY
            ) {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "column `{}` is compressed with {codec}; lethe reads Snappy or uncompressed Parquet (rewrite it with `pyarrow.parquet.write_table(table, path, compression=\"snappy\")`)",
                        chunk.column_path().string()
                    ),
                ));
            }
        }
    }
    Ok(builder)
}

/// The width of the `feature` column: from the schema for a fixed-size list,
/// otherwise from the first row.
pub fn feature_width(path: &Path) -> Result<usize, DataError> {
    let builder = open(path)?;
    match feature_type(path, builder.schema())? {
        FeatureType::Fixed(width) => Ok(width),
        FeatureType::Variable => {
            let mut reader = builder
                .with_batch_size(1)
                .build()
                .map_err(|e| DataError::invalid(path, e.to_string()))?;
            let batch = contain(path, || reader.next())?
                .transpose()
                .map_err(|e| DataError::invalid(path, format!("unreadable row 0 ({e})")))?;
            batch
                .as_ref()
                .and_then(|b| b.column_by_name("feature"))
                .and_then(|c| first_list_length(c.as_ref()))
                .ok_or_else(|| DataError::invalid(path, "the table has no rows"))
        }
    }
}

/// Reads a Parquet table with the same rules as an Arrow one.
pub fn read_table(path: &Path, required: &[&str], read: Read) -> Result<Table, DataError> {
    let builder = open(path)?;
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let schema = builder.schema().clone();
    let mut table = TableBuilder::new(path, &schema, required, rows)?;
    if read == Read::MetadataOnly {
        table.metadata_only();
    }
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| DataError::invalid(path, e.to_string()))?;
    let mut reader = reader.into_iter();
    let mut done = 0usize;
    loop {
        let next = contain(path, || reader.next())?;
        match next {
            None => break,
            Some(Ok(batch)) => {
                done += batch.num_rows();
                table.append(&batch)?;
            }
            Some(Err(e)) => {
                return Err(DataError::invalid(
                    path,
                    format!("unreadable after row {done} ({e})"),
                ))
            }
        }
    }
    table.finish()
}
