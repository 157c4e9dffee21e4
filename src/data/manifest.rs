//! The YAML dataset manifest (see `datasets/README.md`).

use indexmap::IndexMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Largest manifest accepted: manifests are small; anything bigger is a mistake.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl DataError {
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Image and text feature sizes of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDims {
    pub image: usize,
    pub text: usize,
}

/// A task selects items whose metadata column takes one of the listed values.
pub type TaskSelector = IndexMap<String, Vec<String>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    images: Option<String>,
    #[serde(default)]
    captions: Option<String>,
    #[serde(default)]
    features: Option<IndexMap<String, String>>,
    #[serde(default)]
    test_fraction: Option<f64>,
    #[serde(default)]
    synthetic: Option<IndexMap<String, serde_json::Value>>,
    splits: IndexMap<String, IndexMap<String, TaskSelector>>,
}

/// A parsed manifest.
#[derive(Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    text: String,
    file: ManifestFile,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, DataError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| DataError::invalid(path, format!("cannot read the manifest: {e}")))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(DataError::invalid(
                path,
                format!(
                    "the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} are accepted",
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| DataError::invalid(path, format!("cannot read the manifest: {e}")))?;
        let file: ManifestFile = serde_saphyr::from_str(&text)
            .map_err(|e| DataError::invalid(path, format!("invalid manifest: {e}")))?;
        Ok(Manifest {
            path: path.to_path_buf(),
            name: file.name.clone(),
            description: file.description.clone(),
            text,
            file,
        })
    }

    pub fn split_names(&self) -> impl Iterator<Item = &str> {
        self.file.splits.keys().map(String::as_str)
    }

    /// Task names of a split, in manifest order.
    pub fn split_tasks(&self, split: &str) -> Option<Vec<&str>> {
        self.file
            .splits
            .get(split)
            .map(|tasks| tasks.keys().map(String::as_str).collect())
    }

    /// Feature dimensions when known without reading the tables.
    pub fn feature_dims(&self) -> Option<FeatureDims> {
        let s = self.file.synthetic.as_ref()?;
        let image = s.get("image_dim")?.as_u64()? as usize;
        let text = s.get("text_dim")?.as_u64()? as usize;
        Some(FeatureDims { image, text })
    }

    /// A hash of the manifest text: part of the key of every node that reads it.
    pub fn content_hash(&self) -> String {
        blake3::hash(self.text.as_bytes()).to_hex().to_string()
    }

    pub fn is_synthetic(&self) -> bool {
        self.file.kind.as_deref() == Some("synthetic")
    }

    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn test_fraction(&self) -> Option<f64> {
        self.file.test_fraction
    }

    pub fn table_paths(&self) -> Vec<PathBuf> {
        [&self.file.images, &self.file.captions]
            .into_iter()
            .flatten()
            .map(|p| self.base_dir().join(p))
            .collect()
    }

    pub fn encoders(&self) -> Option<&IndexMap<String, String>> {
        self.file.features.as_ref()
    }
}
