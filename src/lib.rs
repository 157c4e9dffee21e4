//! lethe: a declarative engine for continual cross-modal retrieval experiments.
//!
//! The stages, each a module with one public entry point:
//! [`lang`] (parse, resolve, check: `.pipe` text to typed experiments),
//! [`plan`] (lower experiments into a keyed DAG), [`exec`] (run the DAG, write the
//! result tables) and [`report`] (read a run's tables back as the paper's tables and
//! plots); [`data`] holds manifests, tables, splits and synthetic data, [`train`],
//! [`model`], [`eval`] and [`encode`] the numerics. [`diagnostics`] is shared by all.
//! See `ARCHITECTURE.md` for the map.

// A `Diagnostic` (message, spans, hints) is the error type of every stage; it
// travels only on the failure path, where its size costs nothing worth boxing.
#![allow(clippy::result_large_err)]

pub mod data;
pub mod diagnostics;
pub mod encode;
pub mod eval;
pub mod exec;
pub mod files;
pub mod import;
pub mod interrupt;
pub mod lang;
pub mod linalg;
pub mod model;
pub mod plan;
pub mod report;
pub mod results;
pub mod rng;
pub mod train;
