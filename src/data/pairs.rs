//! The features of a loaded dataset, borrowed: what training, importance
//! estimates and embedding read.

/// The features of a dataset, borrowed: enough to train and to embed.
#[derive(Debug, Clone, Copy)]
pub struct PairData<'a> {
    /// Row-major, `image_dim` floats per image.
    pub image_features: &'a [f32],
    pub image_dim: usize,
    /// Row-major, `text_dim` floats per caption.
    pub caption_features: &'a [f32],
    pub text_dim: usize,
    /// The image row of every caption row.
    pub caption_image: &'a [u32],
}

impl<'a> PairData<'a> {
    /// The features of image row `row`.
    pub fn image(&self, row: u32) -> &'a [f32] {
        let r = row as usize;
        &self.image_features[r * self.image_dim..(r + 1) * self.image_dim]
    }

    /// The features of caption row `row`.
    pub fn caption(&self, row: u32) -> &'a [f32] {
        let r = row as usize;
        &self.caption_features[r * self.text_dim..(r + 1) * self.text_dim]
    }

    /// The image row of each caption row.
    pub fn images_of(&self, captions: &[u32]) -> Vec<u32> {
        captions
            .iter()
            .map(|&c| self.caption_image[c as usize])
            .collect()
    }
}
