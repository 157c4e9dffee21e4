//! Stage 6: `lethe report RUN_DIR`. Reads a run directory's Arrow tables back
//! ([`load`]), arranges them the way the seed paper prints its tables
//! ([`model`]), and prints them as text, Markdown ([`text`]) or a self-contained
//! HTML page with inline SVG plots ([`html`]). The headline `lethe run` prints
//! ([`headline`]) comes from the same code.

pub mod html;
pub mod load;
pub mod model;
pub mod table;
pub mod terms;
pub mod text;
pub mod zeroshot;

use crate::results::ReadError;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Html,
}

/// A run directory that cannot be reported on: which file, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportError {
    pub path: PathBuf,
    pub message: String,
}

impl ReportError {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ReportError {}

impl From<ReadError> for ReportError {
    fn from(e: ReadError) -> Self {
        Self {
            path: e.path,
            message: e.message,
        }
    }
}

/// The report of the run in `dir` at Recall@`k` (the largest K measured when
/// `None`), in `format`.
pub fn report(dir: &Path, format: Format, k: Option<u64>) -> Result<String, ReportError> {
    let results = load::load(dir)?;
    let report = model::build(&results, k)?;
    match format {
        Format::Text => Ok(text::render(&report, text::Style::Text)),
        Format::Markdown => Ok(text::render(&report, text::Style::Markdown)),
        Format::Html => html::render(&report).map_err(|e| ReportError::new(dir, e)),
    }
}

/// The table `lethe run` prints at its end and keeps as `headline.txt`: per
/// variant, the average recall with the task known and the union total at the
/// largest K. Read from the run's `summary.arrow` alone, so `lethe run` can print it
/// before writing the rest of its provenance.
pub fn headline(dir: &Path) -> Result<String, ReportError> {
    Ok(text::headline(&headline_table(dir)?))
}

/// The figures of [`headline`], before they are laid out as text.
pub fn headline_table(dir: &Path) -> Result<model::Headline, ReportError> {
    let summary = load::read_summary(dir)?;
    let variants = load::load_variants(&dir.join("pipeline.json")).unwrap_or_default();
    let asked = |label: &str| {
        variants
            .iter()
            .find(|v| v.label == label)
            .map_or(0, |v| v.seeds.len())
    };
    Ok(model::headline(&summary, &asked))
}

/// The regularizer terms of a run that weighed less than 1% of the loss over a
/// stage: each an inert regularizer, which `lethe run` warns about.
pub fn inert_warnings(dir: &Path) -> Result<Vec<String>, ReportError> {
    let results = load::load(dir)?;
    let shares = terms::shares(&results.train_log, &results.variants);
    Ok(terms::inert_warnings(&shares, &results.variants))
}
