//! A dataset split held in memory for one run: features once, and per task the
//! rows each node reads. Loaded lazily, once per `load` key, shared by all nodes.

use crate::train::PairData;

/// The rows of one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRows {
    pub name: String,
    /// Training pairs, as caption rows.
    pub train_captions: Vec<u32>,
    /// The test gallery/query items, in the order searches use.
    pub test_images: Vec<u32>,
    pub test_captions: Vec<u32>,
}

/// Features and task rows of one split.
#[derive(Debug, Clone, Default)]
pub struct LoadedSplit {
    pub image_features: Vec<f32>,
    pub image_dim: usize,
    pub caption_features: Vec<f32>,
    pub text_dim: usize,
    pub caption_image: Vec<u32>,
    /// Stable identifiers of images and captions (for embeddings tables).
    pub image_ids: Vec<String>,
    pub caption_ids: Vec<String>,
    pub tasks: Vec<TaskRows>,
}

impl LoadedSplit {
    pub fn pairs(&self) -> PairData<'_> {
        PairData {
            image_features: &self.image_features,
            image_dim: self.image_dim,
            caption_features: &self.caption_features,
            text_dim: self.text_dim,
            caption_image: &self.caption_image,
        }
    }

    pub fn task(&self, name: &str) -> Result<&TaskRows, String> {
        self.tasks
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("the split has no task `{name}`"))
    }

    /// A summary for the `load` node's cache entry.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "image_dim": self.image_dim,
            "text_dim": self.text_dim,
            "images": self.image_ids.len(),
            "captions": self.caption_ids.len(),
            "tasks": self.tasks.iter().map(|t| serde_json::json!({
                "name": t.name,
                "train_captions": t.train_captions.len(),
                "test_images": t.test_images.len(),
                "test_captions": t.test_captions.len(),
            })).collect::<Vec<_>>(),
        })
    }
}
