//! Stage 5: executing a plan. [`cache`] stores node outputs by key; [`schedule`]
//! runs the needed nodes in dependency order, in parallel, with failures
//! confined to their dependents.

pub mod cache;
mod entries;
pub mod explain;
pub mod housekeeping;
pub mod nodes;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod slurm;
pub mod tables;

pub use cache::Cache;
pub use schedule::{execute, needed, Events, ExecOptions, Outcome, Runner};
