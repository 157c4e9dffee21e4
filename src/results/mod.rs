//! The result tables of a run directory, as Arrow IPC files (the `.arrow` file
//! format, which pandas, polars, pyarrow and DuckDB read). Long format: one row per
//! measurement.
//!
//! Each table has one row type ([`rows`]) whose columns are declared once
//! ([`schema`]): after the identifying columns every table starts with
//! ([`Identity`]), the row's own. `exec` writes the tables through
//! [`TableWriter`], `report` reads them back through [`read_table`], and
//! `docs/results.md` lists the same columns (`tests/results.rs` compares them).

pub mod read;
pub mod rows;
pub mod schema;
pub mod write;

pub use read::{read_table, Identified, ReadError};
pub use rows::{DriftRow, EmbeddingRow, LogRow, RecallRow, SummaryRow, TrainLogRow, ZeroshotRow};
pub use schema::{axis_column, Identity, ResultRow, TableColumns};
pub use write::{write_batches, TableWriter};

/// Every result table's columns, in the order `docs/results.md` documents them.
pub fn tables() -> Vec<TableColumns> {
    vec![
        TableColumns::of::<RecallRow>(),
        TableColumns::of::<SummaryRow>(),
        TableColumns::of::<TrainLogRow>(),
        TableColumns::of::<DriftRow>(),
        TableColumns::of::<EmbeddingRow>(),
        TableColumns::of::<ZeroshotRow>(),
    ]
}
