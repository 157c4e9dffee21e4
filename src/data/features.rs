//! Feature storage: row-major f32 features, either owned or borrowed from the
//! memory map of the Arrow file they were read from.
//!
//! A COCO-size table is gigabytes; copying it out of the map would hold it twice
//! while loading (the mapped pages and the copy). An f32 `feature` column of a
//! single record batch is therefore kept where the map put it; everything else
//! (f16 or f64 values, several batches, Parquet, generated data) is converted
//! once into an owned vector.

use arrow_buffer::ScalarBuffer;
use std::ops::Deref;

/// Row-major f32 features; dereferences to `[f32]`.
#[derive(Clone, Default)]
pub struct Features {
    storage: Storage,
}

#[derive(Clone)]
enum Storage {
    Owned(Vec<f32>),
    /// Values inside a memory-mapped Arrow file (the buffer keeps the map alive).
    Mapped(ScalarBuffer<f32>),
}

impl Default for Storage {
    fn default() -> Self {
        Storage::Owned(Vec::new())
    }
}

impl Features {
    /// Features borrowed from an Arrow buffer (no copy).
    pub fn mapped(values: ScalarBuffer<f32>) -> Features {
        Features {
            storage: Storage::Mapped(values),
        }
    }

    /// Whether the values live in a file's memory map rather than in a copy.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }
}

impl From<Vec<f32>> for Features {
    fn from(values: Vec<f32>) -> Features {
        Features {
            storage: Storage::Owned(values),
        }
    }
}

impl Deref for Features {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped(b) => b,
        }
    }
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Features({} values, {})",
            self.len(),
            if self.is_mapped() { "mapped" } else { "owned" }
        )
    }
}

impl PartialEq for Features {
    fn eq(&self, other: &Features) -> bool {
        self[..] == other[..]
    }
}
