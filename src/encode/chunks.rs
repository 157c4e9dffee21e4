//! Resumable featurization: a table's features are computed in chunks of rows,
//! each written whole (a temporary file renamed into place) to
//! `<table>.partial/chunk-NNNNNN.arrow` as soon as it is done. A killed run
//! leaves only whole chunks; the next run with the same inputs (the same hash,
//! recorded in `<table>.partial/hash`) keeps every chunk whose row ids still
//! match and computes the rest. The finished table is assembled from the chunks
//! (one record batch each) and the folder removed.

use arrow_array::builder::{FixedSizeListBuilder, Float16Builder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The chunks of one table being computed.
pub struct ChunkStore {
    dir: PathBuf,
}

/// The largest chunk file read back (a chunk is at most a few hundred MB).
const MAX_CHUNK_BYTES: u64 = 16 << 30;

impl ChunkStore {
    /// Opens (or starts) the chunk folder of `table` for inputs with `hash`;
    /// chunks made from other inputs are removed.
    pub fn open(table: &Path, hash: &str) -> Result<ChunkStore, String> {
        let name = table
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = table.with_file_name(format!("{name}.partial"));
        let hash_file = dir.join("hash");
        let same = std::fs::read_to_string(&hash_file).is_ok_and(|h| h.trim() == hash);
        if !same && dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("{}: cannot remove stale chunks: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("{}: {}", dir.display(), crate::files::io_message(&e)))?;
        if !same {
            std::fs::write(&hash_file, hash).map_err(|e| {
                format!("{}: {}", hash_file.display(), crate::files::io_message(&e))
            })?;
        }
        Ok(ChunkStore { dir })
    }

    fn chunk_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("chunk-{index:06}.arrow"))
    }

    /// The feature column of chunk `index` when it exists whole and holds
    /// exactly the rows `ids` with `dim` features each.
    pub fn read(&self, index: usize, ids: &[&str], dim: Option<usize>) -> Option<ArrayRef> {
        let path = self.chunk_path(index);
        if !path.exists() {
            return None;
        }
        let file = crate::files::read_ipc(&path, MAX_CHUNK_BYTES).ok()?;
        let batch = match file.batches.as_slice() {
            [one] => one,
            _ => return None,
        };
        let stored = batch.column_by_name("id")?.as_string_opt::<i32>()?;
        if stored.len() != ids.len() || stored.iter().zip(ids).any(|(a, b)| a != Some(*b)) {
            return None;
        }
        let feature = batch.column_by_name("feature")?.clone();
        match feature.data_type() {
            DataType::FixedSizeList(inner, width)
                if inner.data_type() == &DataType::Float16
                    && dim.is_none_or(|d| d == *width as usize)
                    && feature.null_count() == 0 =>
            {
                Some(feature)
            }
            _ => None,
        }
    }

    /// How many chunks from the first on are whole and hold the rows `ids_of(i)`.
    pub fn resumable<'a>(&self, chunks: usize, ids_of: impl Fn(usize) -> Vec<&'a str>) -> usize {
        (0..chunks)
            .take_while(|&i| self.read(i, &ids_of(i), None).is_some())
            .count()
    }

    /// Writes chunk `index` whole: its row ids and f16 features.
    pub fn write(
        &self,
        index: usize,
        ids: &[&str],
        features: &[f32],
        dim: usize,
    ) -> Result<(), String> {
        let feature = f16_column(features, dim);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("feature", feature.data_type().clone(), false),
        ]));
        let ids: ArrayRef = Arc::new(ids.iter().map(|s| Some(*s)).collect::<StringArray>());
        let batch =
            RecordBatch::try_new(schema.clone(), vec![ids, feature]).map_err(|e| e.to_string())?;
        write_whole(&self.chunk_path(index), &schema, std::iter::once(Ok(batch)))
    }

    /// Removes the chunk folder (after the table is assembled).
    pub fn remove(self) -> Result<(), String> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))
    }
}

/// Row-major f32 features as an Arrow FixedSizeList<f16> column.
pub fn f16_column(features: &[f32], dim: usize) -> ArrayRef {
    let mut list = FixedSizeListBuilder::with_capacity(
        Float16Builder::with_capacity(features.len()),
        dim as i32,
        features.len() / dim.max(1),
    );
    for row in features.chunks(dim.max(1)) {
        for v in row {
            list.values().append_value(half::f16::from_f32(*v));
        }
        list.append(true);
    }
    Arc::new(list.finish())
}

/// Writes record batches to `path` through a temporary file renamed into place:
/// the file exists whole or not at all.
pub fn write_whole(
    path: &Path,
    schema: &Arc<Schema>,
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)
            .map_err(|e| format!("{}: {}", tmp.display(), crate::files::io_message(&e)))?;
        let mut writer = FileWriter::try_new(std::io::BufWriter::new(file), schema)
            .map_err(|e| e.to_string())?;
        for batch in batches {
            writer
                .write(&batch?)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        writer
            .finish()
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let file = writer.into_inner().map_err(|e| e.to_string())?;
        file.into_inner()
            .map_err(|e| e.to_string())?
            .sync_all()
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether the table exists and was made from the same inputs.
pub fn up_to_date(path: &Path, hash: &str) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(reader) = arrow_ipc::reader::FileReader::try_new(file, None) else {
        return false;
    };
    reader
        .schema()
        .metadata()
        .get("lethe.raw_hash")
        .map(String::as_str)
        == Some(hash)
}

/// Writes a small table whole: text `columns` (name, one value per row), then
/// `feature` as f16 rows of `dim`, with the input `hash` in the schema's metadata
/// (what [`up_to_date`] reads). The prompts and pseudo negatives tables.
pub fn write_text_table(
    path: &Path,
    columns: &[(&str, Vec<String>)],
    features: &[f32],
    dim: usize,
    hash: &str,
) -> Result<(), String> {
    let feature = f16_column(features, dim);
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|(name, _)| Field::new(*name, DataType::Utf8, false))
        .collect();
    fields.push(Field::new("feature", feature.data_type().clone(), false));
    let metadata = HashMap::from([("lethe.raw_hash".to_string(), hash.to_string())]);
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    let mut arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(_, values)| {
            Arc::new(
                values
                    .iter()
                    .map(|v| Some(v.as_str()))
                    .collect::<StringArray>(),
            ) as ArrayRef
        })
        .collect();
    arrays.push(feature);
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())?;
    write_whole(path, &schema, std::iter::once(Ok(batch)))
}
