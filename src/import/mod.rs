//! `lethe import`: datasets in the layouts cross-modal retrieval code reads,
//! turned into a lethe dataset folder: raw lists (`raw/images.jsonl`,
//! `raw/captions.jsonl`, what `lethe featurize` reads) or feature tables, and a
//! manifest with a default split that `lethe validate` accepts as written.
//!
//! - [`coco`]: COCO's annotation JSON (captions, instances), optionally with
//!   Karpathy's split file;
//! - [`karpathy`]: Karpathy's `dataset_*.json` alone (Flickr30K, Flickr8K, COCO);
//! - [`precomp`]: VSE++/SCAN precomputed features (`.npy`) and caption text.
//!
//! Every input is checked before anything is written, and every error names the
//! file and the place in it (a JSON path such as `annotations[57].image_id`, a
//! line, a row). The folder's files are written into a temporary folder inside
//! it and renamed into place at the end, the manifest last: an import that fails
//! leaves the folder as it was.

pub mod coco;
pub mod json;
pub mod karpathy;
pub mod labels;
pub mod manifest;
pub mod npy;
pub mod precomp;

use crate::data::DataError;
use indexmap::IndexMap;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an import failed: bad input (exit 2) or a folder that cannot be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(#[from] DataError),
    #[error("{0}")]
    Write(String),
}

impl ImportError {
    /// An input error at a place in a file.
    pub fn at(path: &Path, place: &str, message: impl std::fmt::Display) -> ImportError {
        ImportError::Invalid(DataError::invalid(path, format!("{place}: {message}")))
    }

    pub fn invalid(path: &Path, message: impl Into<String>) -> ImportError {
        ImportError::Invalid(DataError::invalid(path, message))
    }
}

impl From<crate::files::FileError> for ImportError {
    fn from(e: crate::files::FileError) -> Self {
        ImportError::Invalid(e.into())
    }
}

/// One record of a raw list, fields in the order written.
pub type Record = IndexMap<String, Value>;

/// A dataset folder being written: files go to a temporary folder inside it and
/// are renamed into place by [`Output::commit`].
pub struct Output {
    dir: PathBuf,
    staging: PathBuf,
    files: Vec<String>,
}

impl Output {
    pub fn begin(dir: &Path) -> Result<Output, ImportError> {
        let write = |e: std::io::Error, p: &Path| {
            ImportError::Write(format!("{}: {}", p.display(), crate::files::io_message(&e)))
        };
        if dir.exists() && !dir.is_dir() {
            return Err(ImportError::Write(format!(
                "{}: is not a folder",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| write(e, dir))?;
        let staging = dir.join(format!(".lethe-import.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| write(e, &staging))?;
        }
        std::fs::create_dir_all(staging.join("raw")).map_err(|e| write(e, &staging))?;
        Ok(Output {
            dir: dir.to_path_buf(),
            staging,
            files: Vec::new(),
        })
    }

    /// The folder the dataset ends up in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where to write `name` (relative to the dataset folder) for now; the file
    /// is moved into place at commit.
    pub fn file(&mut self, name: &str) -> PathBuf {
        if !self.files.iter().any(|f| f == name) {
            self.files.push(name.to_string());
        }
        self.staging.join(name)
    }

    /// Writes a raw list, one JSON object per line.
    pub fn write_jsonl(&mut self, name: &str, records: &[Record]) -> Result<(), ImportError> {
        let path = self.file(name);
        let result = (|| -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            for r in records {
                serde_json::to_writer(&mut out, r)?;
                out.write_all(b"\n")?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        result.map_err(|e| {
            ImportError::Write(format!(
                "{}: {}",
                path.display(),
                crate::files::io_message(&e)
            ))
        })
    }

    /// Moves every file into the dataset folder, `last` after the others (the
    /// manifest: a folder with a manifest is a whole import), then removes the
    /// temporary folder.
    pub fn commit(self, last: &str) -> Result<(), ImportError> {
        let mut order: Vec<&String> = self.files.iter().filter(|f| *f != last).collect();
        order.extend(self.files.iter().filter(|f| *f == last));
        for name in order {
            let (from, to) = (self.staging.join(name), self.dir.join(name));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    ImportError::Write(format!(
                        "{}: {}",
                        parent.display(),
                        crate::files::io_message(&e)
                    ))
                })?;
            }
            std::fs::rename(&from, &to).map_err(|e| {
                ImportError::Write(format!(
                    "{}: {}",
                    to.display(),
                    crate::files::io_message(&e)
                ))
            })?;
        }
        let _ = std::fs::remove_dir_all(&self.staging);
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // After a commit the folder is gone already; after a failure, this is
        // what leaves the dataset folder as it was.
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// A record with string fields, in order.
pub fn record<'a>(fields: impl IntoIterator<Item = (&'a str, Value)>) -> Record {
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The deepest folder holding every path (for a raw list's `root`).
pub fn common_root(paths: &[PathBuf]) -> PathBuf {
    let mut root = match paths.first() {
        Some(p) => p.clone(),
        None => return PathBuf::from("/"),
    };
    for p in &paths[1..] {
        while !p.starts_with(&root) {
            if !root.pop() {
                return PathBuf::from("/");
            }
        }
    }
    root
}

/// An absolute, normalised form of a folder given on the command line.
pub fn absolute_dir(dir: &Path) -> Result<PathBuf, ImportError> {
    if !dir.is_dir() {
        return Err(ImportError::invalid(
            dir,
            if dir.exists() {
                "is not a folder"
            } else {
                "no such folder"
            },
        ));
    }
    std::fs::canonicalize(dir).map_err(|e| ImportError::invalid(dir, crate::files::io_message(&e)))
}

/// What an import wrote, for the command's output.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub manifest: PathBuf,
    pub lines: Vec<String>,
    /// Whether `lethe featurize` still has to run.
    pub needs_featurize: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        writeln!(f, "manifest: {}", self.manifest.display())?;
        if self.needs_featurize {
            writeln!(f, "next: lethe featurize {}", self.manifest.display())?;
        } else {
            writeln!(f, "next: lethe data inspect {}", self.manifest.display())?;
        }
        Ok(())
    }
}
