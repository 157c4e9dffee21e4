//! Datasets: manifests, feature tables, task splits and synthetic data.
//!
//! The public entry point is [`Manifest::load`]; the language checker only needs
//! split and task names and (when cheaply known) feature dimensions from it.

pub mod manifest;

pub use manifest::{DataError, FeatureDims, Manifest};
