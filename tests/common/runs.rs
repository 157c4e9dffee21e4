//! Running the `lethe` binary in a folder, and reading what it wrote.

use super::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lethe(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run lethe")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A pipeline over the small synthetic set, written into `dir`.
pub fn pipeline(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.pipe"));
    let text = format!(
        "pipeline \"{name}\" {{\n    dataset = \"{}\"\n    split = \"domains\"\n    tasks = [d1, d2, d3]\n    model {{ image = mlp(hidden = [64], embed = 32); text = mlp(hidden = [64], embed = 32) }}\n{body}\n}}\n",
        repo().join("datasets/synthetic/small.yaml").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn run_json(dir: &Path, pipeline: &str) -> serde_json::Value {
    let runs = dir.join("runs").join(pipeline);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let last = entries.last().expect("a run directory");
    serde_json::from_str(&std::fs::read_to_string(last.join("run.json")).unwrap()).unwrap()
}

pub fn latest_run(dir: &Path, pipeline: &str) -> PathBuf {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir.join("runs").join(pipeline))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries.pop().unwrap()
}

/// The rows of an Arrow file without its `run_id` column, as text.
pub fn rows_without_run_id(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| batch.schema().field(i).name() != "run_id")
            .collect();
        let batch = batch.project(&keep).unwrap();
        for r in 0..batch.num_rows() {
            let cells: Vec<String> = (0..batch.num_columns())
                .map(|c| arrow_cast_free(batch.column(c), r))
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// A cell as text, for the column types our tables use.
pub fn arrow_cast_free(column: &arrow_array::ArrayRef, row: usize) -> String {
    use arrow_array::{Array, Float64Array, StringArray, UInt64Array};
    if column.is_null(row) {
        return "null".into();
    }
    if let Some(a) = column.as_any().downcast_ref::<StringArray>() {
        return a.value(row).to_string();
    }
    if let Some(a) = column.as_any().downcast_ref::<UInt64Array>() {
        return a.value(row).to_string();
    }
    if let Some(a) = column.as_any().downcast_ref::<Float64Array>() {
        return format!("{:?}", a.value(row));
    }
    "?".into()
}
