//! Datasets: manifests, feature tables, task splits and synthetic data.
//!
//! [`Manifest::load`] reads a manifest alone (what the language checker needs);
//! [`load_split`] reads or generates the tables and cuts them into tasks.

pub mod classes;
mod columns;
mod error;
pub mod features;
pub mod inspect;
pub mod manifest;
pub mod pairs;
mod parquet;
pub mod pseudo;
pub mod raw;
pub mod read;
pub mod rules;
pub mod select;
pub mod split;
pub mod synthetic;
pub mod tables;

pub use classes::ClassSet;
pub use error::DataError;
pub use features::Features;
pub use inspect::inspect;
pub use manifest::{FeatureDims, Manifest};
pub use pairs::PairData;
pub use pseudo::{read_pseudo_texts, PseudoTexts};
pub use split::{load_split, LoadedSplit, TaskRows};
