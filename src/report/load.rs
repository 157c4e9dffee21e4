//! Reading a run directory back: `recall.arrow`, `summary.arrow` and `drift.arrow`
//! through their schemas ([`crate::results`]), and `pipeline.json`. Every failure
//! names the file and, where it is about a column, the column, so a truncated or
//! foreign file is easy to place.

use super::ReportError;
use crate::results::{
    read_table, DriftRow, Identified, RecallRow, ResultRow, SummaryRow, TrainLogRow, ZeroshotRow,
};
use std::path::{Path, PathBuf};

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
    /// Each regularizer term's strength as the pipeline wrote it (`ewc` → `lambda = 1000`).
    pub strengths: Vec<(String, String)>,
}

/// Everything the report is made from.
#[derive(Debug, Clone)]
pub struct RunResults {
    pub dir: PathBuf,
    pub pipeline: String,
    pub run_id: String,
    /// Variants in the pipeline's order, one per label.
    pub variants: Vec<VariantInfo>,
    pub recall: Vec<Identified<RecallRow>>,
    /// The `mean` and `std` rows (the per-seed `value` rows repeat `recall.arrow`).
    pub summary: Vec<Identified<SummaryRow>>,
    pub drift: Vec<Identified<DriftRow>>,
    pub train_log: Vec<Identified<TrainLogRow>>,
    /// Empty when the run classified nothing zero-shot (no `zeroshot.arrow`).
    pub zeroshot: Vec<Identified<ZeroshotRow>>,
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
    let recall_path = dir.join(RecallRow::FILE);
    let recall = read_table::<RecallRow>(&recall_path)?;
    let mut summary = read_summary(dir)?;
    summary.retain(|s| s.row.statistic != "value");
    let drift = read_table::<DriftRow>(&dir.join(DriftRow::FILE))?;
    let train_log = read_table::<TrainLogRow>(&dir.join(TrainLogRow::FILE))?;
    let zeroshot_path = dir.join(ZeroshotRow::FILE);
    let zeroshot = if zeroshot_path.exists() {
        read_table::<ZeroshotRow>(&zeroshot_path)?
    } else {
        Vec::new()
    };
    for r in &recall {
        if !variants.iter().any(|v| v.label == r.identity.variant) {
            return Err(ReportError::new(
                &recall_path,
                format!(
                    "variant \"{}\" is not in pipeline.json; the files come from different runs",
                    r.identity.variant
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
        train_log,
        drift,
        zeroshot,
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

pub fn load_variants(path: &Path) -> Result<Vec<VariantInfo>, ReportError> {
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
            strengths: strengths(v),
        });
    }
    Ok(out)
}

/// The strength of each regularizer term of a variant in `pipeline.json`.
fn strengths(variant: &serde_json::Value) -> Vec<(String, String)> {
    let terms = variant["train"]["regularizer"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    terms
        .iter()
        .filter_map(|t| {
            let kind = t["kind"].as_str()?;
            let (name, value) = ["lambda", "alpha", "weight"]
                .iter()
                .find_map(|p| Some((*p, t.get(*p)?.as_f64()?)))?;
            let symbol = match name {
                "lambda" => "λ",
                "alpha" => "α",
                other => other,
            };
            Some((kind.to_string(), format!("{symbol} = {value}")))
        })
        .collect()
}

/// Every row of `summary.arrow`: per seed, and mean and std over seeds.
pub fn read_summary(dir: &Path) -> Result<Vec<Identified<SummaryRow>>, ReportError> {
    Ok(read_table::<SummaryRow>(&dir.join(SummaryRow::FILE))?)
}
