//! Frozen pretrained encoders, loaded from local files (nothing is downloaded at
//! run time): all-MiniLM-L6-v2 for text, EfficientNet-Lite0 for images.

mod bert;
pub mod chunks;
mod convnet;
pub mod featurize;
pub mod image;
pub mod preprocess;
pub mod prompts;
pub mod pseudo;
pub mod text;
pub mod torch_legacy;
pub mod wordnet;

/// Which implementation of an encoder's network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// lethe's own CPU forward (`bert`, `convnet`): no padding, channels-last
    /// convolutions, fused element-wise passes; CPU only.
    Cpu,
    /// candle's graph (`candle_transformers`' BERT, [`image`]'s network), on
    /// any device; the reference the CPU forwards are tested against.
    Candle,
}

impl Engine {
    /// The CPU forward on the CPU, candle's graph elsewhere.
    pub fn for_device(device: &candle_core::Device) -> Engine {
        if device.is_cpu() {
            Engine::Cpu
        } else {
            Engine::Candle
        }
    }

    /// An error when this engine cannot run on `device`.
    pub fn check(self, device: &candle_core::Device) -> Result<(), String> {
        if self == Engine::Cpu && !device.is_cpu() {
            return Err("lethe's own encoder forwards run on the CPU only".into());
        }
        Ok(())
    }
}
