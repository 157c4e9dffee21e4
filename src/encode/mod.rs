//! Frozen pretrained encoders, loaded from local files (nothing is downloaded at
//! run time): all-MiniLM-L6-v2 for text, EfficientNet-Lite0 for images.

pub mod chunks;
pub mod featurize;
pub mod image;
pub mod preprocess;
pub mod prompts;
pub mod pseudo;
pub mod text;
pub mod torch_legacy;
pub mod wordnet;
