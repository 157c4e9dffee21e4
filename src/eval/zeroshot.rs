//! Zero-shot classification (CLIP's protocol, as IncCLIP evaluates it): an image
//! is classified by the class whose prompt's embedding is nearest to the image's
//! embedding (cosine; both are L2-normalised); top-K accuracy is the share of
//! images whose own class is among the K nearest. Definitions: `docs/methods.md`
//! ("Zero-shot classification").

/// The 0-based rank of each image's own class among all classes: how many
/// classes score higher, ties going to the class listed first (as retrieval
/// ties go to the earlier gallery item). Scores are accumulated in f64 so the
/// ranks do not depend on a summation order.
pub fn class_ranks(images: &[f32], prompts: &[f32], dim: usize, labels: &[u32]) -> Vec<usize> {
    assert!(dim > 0, "zero-width embeddings");
    let scores = |image: &[f32]| -> Vec<f64> {
        prompts
            .chunks_exact(dim)
            .map(|p| {
                image
                    .iter()
                    .zip(p)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            })
            .collect()
    };
    images
        .chunks_exact(dim)
        .zip(labels)
        .map(|(image, &label)| {
            let s = scores(image);
            let own = s[label as usize];
            s.iter()
                .enumerate()
                .filter(|&(c, &x)| x > own || (x == own && c < label as usize))
                .count()
        })
        .collect()
}

/// Top-K accuracy in percent from 0-based class ranks.
pub fn top_k_accuracy(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_better_classes_and_break_ties_by_order() {
        // Two 2-d images, three classes.
        let prompts = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let images = [0.8, 0.6, 0.0, 1.0];
        // Image 0 scores 0.8, 0.6, 0.96: own class 1 ranks behind classes 0 and 2.
        // Image 1 scores 0, 1, 0.8: own class 2 ranks behind class 1.
        assert_eq!(class_ranks(&images, &prompts, 2, &[1, 2]), vec![2, 1]);
        // A tie goes to the class listed first.
        let tied = [1.0, 0.0, 1.0, 0.0];
        assert_eq!(class_ranks(&[1.0, 0.0], &tied, 2, &[1]), vec![1]);
        assert_eq!(class_ranks(&[1.0, 0.0], &tied, 2, &[0]), vec![0]);
        assert_eq!(top_k_accuracy(&[0, 1, 2, 5], 1), 25.0);
        assert_eq!(top_k_accuracy(&[0, 1, 2, 5], 5), 75.0);
    }
}
