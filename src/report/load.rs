//! Reading a run directory back: `recall.arrow`, `summary.arrow`, `drift.arrow` and
//! `pipeline.json`, into plain rows. Every failure names the file and, where it is
//! about a column, the column, so a truncated or foreign file is easy to place.

use super::ReportError;
use arrow_array::{Array, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_ipc::reader::FileReader;
use std::path::{Path, PathBuf};

/// One row of `recall.arrow` (the columns the report uses).
#[derive(Debug, Clone, PartialEq)]
pub struct RecallRecord {
    pub variant: String,
    pub seed: u64,
    pub stage: u64,
    pub stage_task: String,
    pub eval_task: String,
    pub gallery: String,
    pub direction: String,
    pub k: u64,
    pub recall: f64,
}

/// One `mean` or `std` row of `summary.arrow`.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRecord {
    pub variant: String,
    pub statistic: String,
    pub n_seeds: u64,
    pub direction: String,
    pub gallery: String,
    pub k: u64,
    pub metric: String,
    pub formula: String,
    pub value: Option<f64>,
}

/// One row of `drift.arrow`.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftRecord {
    pub variant: String,
    pub seed: u64,
    pub stage: u64,
    pub task: String,
    pub direction: String,
    pub metric: String,
    pub modality: String,
    pub value: f64,
}

/// What `pipeline.json` says about one variant (its first seed stands for all).
#[derive(Debug, Clone, PartialEq)]
pub struct VariantInfo {
    pub label: String,
    /// Swept setting → value label, in axis order (`variant` is the variant-line axis).
    pub axes: Vec<(String, String)>,
    pub tasks: Vec<String>,
    /// `sequential` or `joint`.
    pub schedule: String,
    /// `frozen` or `reindex`.
    pub index: String,
    pub seeds: Vec<u64>,
}

/// Everything the report is made from.
#[derive(Debug, Clone)]
pub struct RunResults {
    pub dir: PathBuf,
    pub pipeline: String,
    pub run_id: String,
    /// Variants in the pipeline's order, one per label.
    pub variants: Vec<VariantInfo>,
    pub recall: Vec<RecallRecord>,
    pub summary: Vec<SummaryRecord>,
    pub drift: Vec<DriftRecord>,
    pub wall_seconds: Option<f64>,
}

pub fn load(dir: &Path) -> Result<RunResults, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::new(
            dir,
            "is not a run directory (expected the folder `lethe run` printed as `results:`)",
        ));
    }
    let variants = load_variants(&dir.join("pipeline.json"))?;
    let run = read_json(&dir.join("run.json")).ok();
    let recall_path = dir.join("recall.arrow");
    let recall = Columns::read(&recall_path)?;
    let recall = recall_records(&recall)?;
    let summary = summary_records(&Columns::read(&dir.join("summary.arrow"))?)?;
    // Joint-only runs have no drift rows; an empty table has no columns.
    let drift_table = Columns::read(&dir.join("drift.arrow"))?;
    let drift = if drift_table.rows == 0 {
        Vec::new()
    } else {
        drift_records(&drift_table)?
    };
    for r in &recall {
        if !variants.iter().any(|v| v.label == r.variant) {
            return Err(ReportError::new(
                &recall_path,
                format!(
                    "variant \"{}\" is not in pipeline.json; the files come from different runs",
                    r.variant
                ),
            ));
        }
    }
    let text = |key: &str| {
        run.as_ref()
            .and_then(|r| r.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Ok(RunResults {
        dir: dir.to_path_buf(),
        pipeline: text("pipeline").unwrap_or_else(|| "pipeline".to_string()),
        run_id: text("run_id").unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        variants,
        recall,
        summary,
        drift,
        wall_seconds: run
            .as_ref()
            .and_then(|r| r.get("wall_seconds"))
            .and_then(|v| v.as_f64()),
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::new(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| ReportError::new(path, format!("not valid JSON: {e}")))
}

fn load_variants(path: &Path) -> Result<Vec<VariantInfo>, ReportError> {
    let json = read_json(path)?;
    let list = json
        .as_array()
        .ok_or_else(|| ReportError::new(path, "expected a list of variants"))?;
    let mut out: Vec<VariantInfo> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let field = |name: &str| {
            v.get(name)
                .ok_or_else(|| ReportError::new(path, format!("variant {i} has no `{name}` field")))
        };
        let string = |name: &str| -> Result<String, ReportError> {
            field(name)?.as_str().map(str::to_string).ok_or_else(|| {
                ReportError::new(path, format!("variant {i}: `{name}` is not a string"))
            })
        };
        let label = string("label")?;
        let seed = field("seed")?.as_u64().ok_or_else(|| {
            ReportError::new(path, format!("variant {i}: `seed` is not an integer"))
        })?;
        if let Some(known) = out.iter_mut().find(|k| k.label == label) {
            known.seeds.push(seed);
            continue;
        }
        let pairs = |name: &str| -> Result<Vec<(String, String)>, ReportError> {
            let bad = || ReportError::new(path, format!("variant {i}: `{name}` is malformed"));
            let mut pairs = Vec::new();
            for pair in field(name)?.as_array().ok_or_else(bad)? {
                let p = pair.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
                let (Some(a), Some(b)) = (p[0].as_str(), p[1].as_str()) else {
                    return Err(bad());
                };
                pairs.push((a.to_string(), b.to_string()));
            }
            Ok(pairs)
        };
        let tasks = field("tasks")?
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .ok_or_else(|| ReportError::new(path, format!("variant {i}: `tasks` is not a list")))?;
        out.push(VariantInfo {
            label,
            axes: pairs("axes")?,
            tasks,
            schedule: string("schedule")?,
            index: string("index")?,
            seeds: vec![seed],
        });
    }
    Ok(out)
}

/// The columns of one Arrow file, all batches concatenated by name.
struct Columns {
    path: PathBuf,
    batches: Vec<RecordBatch>,
    rows: usize,
}

impl Columns {
    fn read(path: &Path) -> Result<Self, ReportError> {
        let file = std::fs::File::open(path).map_err(|e| ReportError::new(path, e.to_string()))?;
        let reader = FileReader::try_new(file, None)
            .map_err(|e| ReportError::new(path, format!("not an Arrow IPC file: {e}")))?;
        let mut batches = Vec::new();
        for batch in reader {
            batches
                .push(batch.map_err(|e| ReportError::new(path, format!("unreadable batch: {e}")))?);
        }
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        Ok(Self {
            path: path.to_path_buf(),
            batches,
            rows,
        })
    }

    fn missing(&self, name: &str) -> ReportError {
        let present: Vec<String> = self
            .batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            })
            .unwrap_or_default();
        ReportError::new(
            &self.path,
            format!(
                "has no column `{name}` (it has: {})",
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ),
        )
    }

    /// The values of one column, converted cell by cell by `get`.
    fn column<A: Array + 'static, T>(
        &self,
        name: &str,
        type_name: &str,
        get: impl Fn(&A, usize) -> T,
    ) -> Result<Vec<Option<T>>, ReportError> {
        let mut out = Vec::with_capacity(self.rows);
        if self.rows == 0 {
            return Ok(out);
        }
        for batch in &self.batches {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| self.missing(name))?;
            let typed = array.as_any().downcast_ref::<A>().ok_or_else(|| {
                ReportError::new(
                    &self.path,
                    format!(
                        "column `{name}` holds {}, expected {type_name}",
                        array.data_type()
                    ),
                )
            })?;
            for i in 0..typed.len() {
                out.push(typed.is_valid(i).then(|| get(typed, i)));
            }
        }
        Ok(out)
    }

    fn strings(&self, name: &str) -> Result<Vec<Option<String>>, ReportError> {
        self.column::<StringArray, _>(name, "utf8", |a, i| a.value(i).to_string())
    }

    fn u64s(&self, name: &str) -> Result<Vec<Option<u64>>, ReportError> {
        self.column::<UInt64Array, _>(name, "uint64", |a, i| a.value(i))
    }

    fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>, ReportError> {
        self.column::<Float64Array, _>(name, "float64", |a, i| a.value(i))
    }

    /// A cell that must be present: a null names its row.
    fn required<T>(&self, name: &str, row: usize, cell: Option<T>) -> Result<T, ReportError> {
        cell.ok_or_else(|| ReportError::new(&self.path, format!("row {row}: `{name}` is null")))
    }
}

fn recall_records(t: &Columns) -> Result<Vec<RecallRecord>, ReportError> {
    let (variant, seed, stage) = (t.strings("variant")?, t.u64s("seed")?, t.u64s("stage")?);
    let (eval_task, gallery) = (t.strings("eval_task")?, t.strings("gallery")?);
    let stage_task = t.strings("stage_task")?;
    let (direction, k, recall) = (t.strings("direction")?, t.u64s("k")?, t.f64s("recall")?);
    let mut out = Vec::with_capacity(t.rows);
    for row in 0..t.rows {
        out.push(RecallRecord {
            variant: t.required("variant", row, variant[row].clone())?,
            seed: t.required("seed", row, seed[row])?,
            stage: t.required("stage", row, stage[row])?,
            stage_task: t.required("stage_task", row, stage_task[row].clone())?,
            eval_task: t.required("eval_task", row, eval_task[row].clone())?,
            gallery: t.required("gallery", row, gallery[row].clone())?,
            direction: t.required("direction", row, direction[row].clone())?,
            k: t.required("k", row, k[row])?,
            recall: t.required("recall", row, recall[row])?,
        });
    }
    Ok(out)
}

fn summary_records(t: &Columns) -> Result<Vec<SummaryRecord>, ReportError> {
    let (variant, statistic, n_seeds) = (
        t.strings("variant")?,
        t.strings("statistic")?,
        t.u64s("n_seeds")?,
    );
    let (direction, gallery, k) = (t.strings("direction")?, t.strings("gallery")?, t.u64s("k")?);
    let (metric, formula, value) = (
        t.strings("metric")?,
        t.strings("formula")?,
        t.f64s("value")?,
    );
    let mut out = Vec::new();
    for row in 0..t.rows {
        let statistic = t.required("statistic", row, statistic[row].clone())?;
        // Per-seed rows repeat what recall.arrow holds; the report wants mean and std.
        if statistic == "value" {
            continue;
        }
        out.push(SummaryRecord {
            variant: t.required("variant", row, variant[row].clone())?,
            statistic,
            n_seeds: t.required("n_seeds", row, n_seeds[row])?,
            direction: t.required("direction", row, direction[row].clone())?,
            gallery: t.required("gallery", row, gallery[row].clone())?,
            k: t.required("k", row, k[row])?,
            metric: t.required("metric", row, metric[row].clone())?,
            formula: formula[row].clone().unwrap_or_default(),
            value: value[row],
        });
    }
    Ok(out)
}

fn drift_records(t: &Columns) -> Result<Vec<DriftRecord>, ReportError> {
    let (variant, seed, stage) = (t.strings("variant")?, t.u64s("seed")?, t.u64s("stage")?);
    let (task, direction) = (t.strings("task")?, t.strings("direction")?);
    let (metric, modality, value) = (
        t.strings("metric")?,
        t.strings("modality")?,
        t.f64s("value")?,
    );
    let mut out = Vec::with_capacity(t.rows);
    for row in 0..t.rows {
        // A diagnostic that could not be measured (no pairs, say) is null: skip it.
        let Some(value) = value[row] else { continue };
        out.push(DriftRecord {
            variant: t.required("variant", row, variant[row].clone())?,
            seed: t.required("seed", row, seed[row])?,
            stage: t.required("stage", row, stage[row])?,
            task: t.required("task", row, task[row].clone())?,
            direction: t.required("direction", row, direction[row].clone())?,
            metric: t.required("metric", row, metric[row].clone())?,
            modality: t.required("modality", row, modality[row].clone())?,
            value,
        });
    }
    Ok(out)
}
