//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod runs;

use lethe::diagnostics::{Diagnostic, SourceMap};
use lethe::lang::{self, ManifestCache, Pipeline};
use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.pipe` file under `pipelines/`, subfolders (`ablations/`) included.
pub fn shipped_pipelines() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "pipe") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("pipelines"), &mut out);
    out.sort();
    out
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// A pipeline over the toy fixture: header lines 1-4, `body` from line 5.
pub fn with_header(body: &str) -> String {
    format!(
        "pipeline \"t\" {{\n    dataset = \"{}\"\n    split = \"domains\"\n    tasks = [d1, d2, d3]\n{body}\n}}\n",
        fixture("toy.yaml").display()
    )
}

/// The shipped emoji manifest.
pub fn emoji() -> PathBuf {
    repo().join("datasets/emoji/emoji.yaml")
}

/// A pipeline `e` over the shipped emoji set's `sevige` split with `extra` in its
/// body (from line 5).
pub fn emoji_pipeline(extra: &str) -> String {
    format!(
        "pipeline \"e\" {{\n    dataset = \"{}\"\n    split = \"sevige\"\n    tasks = [animals, vehicles, clothes]\n{extra}\n}}\n",
        emoji().display()
    )
}

/// Checks a pipeline whose `‸` marks where `message` must be located; returns
/// the rendered diagnostics.
pub fn error_at(text_with_marker: &str, message: &str) -> String {
    let at = text_with_marker.find('‸').expect("a ‸ marker");
    let before = &text_with_marker[..at];
    let expected = (
        before.matches('\n').count() + 1,
        before[before.rfind('\n').map_or(0, |i| i + 1)..]
            .chars()
            .count()
            + 1,
    );
    let outcome = check(&text_with_marker.replacen('‸', "", 1));
    assert_eq!(outcome.located(message), expected, "{}", outcome.rendered());
    outcome.rendered()
}

/// The outcome of checking a file: the pipeline, or the diagnostics and sources.
pub struct Outcome {
    pub result: Result<Pipeline, Vec<Diagnostic>>,
    pub sources: SourceMap,
}

impl Outcome {
    pub fn errors(&self) -> &[Diagnostic] {
        match &self.result {
            Ok(_) => &[],
            Err(d) => d,
        }
    }
    pub fn pipeline(&self) -> &Pipeline {
        match &self.result {
            Ok(p) => p,
            Err(d) => panic!(
                "expected a valid pipeline, got:\n{}",
                lethe::diagnostics::render_all(d, &self.sources)
            ),
        }
    }
    /// The (line, column) of the first error whose message contains `needle`.
    pub fn located(&self, needle: &str) -> (usize, usize) {
        let d = self
            .errors()
            .iter()
            .find(|d| d.message.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no error contains {needle:?}; got:\n{}",
                    lethe::diagnostics::render_all(self.errors(), &self.sources)
                )
            });
        let (span, _) = d.primary.as_ref().expect("a located error");
        self.sources.line_col(span.file, span.start)
    }
    pub fn rendered(&self) -> String {
        lethe::diagnostics::render_all(self.errors(), &self.sources)
    }
}

pub fn check_file(path: &Path) -> Outcome {
    let mut sources = SourceMap::new();
    let mut manifests = ManifestCache::default();
    let result = lang::load(path, &mut sources, &mut manifests);
    Outcome { result, sources }
}

/// Writes `bytes` to a fresh file and checks it.
pub fn check_bytes(bytes: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("test.pipe");
    std::fs::write(&path, bytes).expect("write");
    check_file(&path)
}

pub fn check(text: &str) -> Outcome {
    check_bytes(text.as_bytes())
}
