//! The `.pipe` language: parse, resolve, check.
//!
//! [`load`] is the one entry point: a file path in, one typed [`Experiment`] per
//! variant out, or every error found, each located in its source file.

pub mod ast;
mod check;
pub mod experiment;
pub mod parse;
pub mod resolve;
pub mod schema;
mod values;

pub use check::ManifestCache;
pub use experiment::*;

use crate::diagnostics::{Diagnostic, SourceMap};
use std::path::{Path, PathBuf};

/// A checked pipeline: its name and one experiment per variant, in grid order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub path: PathBuf,
    pub experiments: Vec<Experiment>,
}

/// Parses, resolves and checks the pipeline at `path`. Files read along the way
/// (the `extends` chain) are added to `sources` so diagnostics can quote them.
pub fn load(
    path: &Path,
    sources: &mut SourceMap,
    manifests: &mut ManifestCache,
) -> Result<Pipeline, Vec<Diagnostic>> {
    let resolved = resolve::resolve(path, sources)?;
    let variants = resolve::expand(&resolved).map_err(|d| vec![d])?;
    let experiments = check::check(&resolved.name, &variants, sources, manifests)?;
    Ok(Pipeline {
        name: resolved.name.node,
        path: path.to_path_buf(),
        experiments,
    })
}
