//! Synthetic cross-modal data with known structure, generated straight into the
//! final feature buffers.
//!
//! Each domain has a centre in a latent space (`overlap` pulls the centres toward
//! one shared point), each domain `concepts_per_domain` concepts around its centre,
//! each image a latent near one concept (`item_spread`), and each caption the
//! image's latent plus its own noise (`caption_noise`). Image features are
//! `tanh(A z + a)`, caption features `swish(B z + b)`, two different random
//! non-linear maps, plus `feature_noise`. Every row draws from its own stream
//! (seed, kind, row), so the bytes are identical whatever the thread count.

use super::manifest::SyntheticParams;
use super::tables::Table;
use crate::rng::Rng;
use rayon::prelude::*;

struct Structure {
    /// Concept latents, `domains * concepts_per_domain` rows of `latent_dim`.
    concepts: Vec<f64>,
    image_map: (Vec<f32>, Vec<f32>),
    text_map: (Vec<f32>, Vec<f32>),
}

fn structure(p: &SyntheticParams) -> Structure {
    let l = p.latent_dim;
    let mut rng = Rng::derive(p.seed, &["synthetic", "structure"]);
    let shared: Vec<f64> = (0..l).map(|_| 2.0 * rng.normal()).collect();
    let mut concepts = Vec::with_capacity(p.domains * p.concepts_per_domain * l);
    for _ in 0..p.domains {
        let own: Vec<f64> = (0..l).map(|_| 2.0 * rng.normal()).collect();
        let centre: Vec<f64> = own
            .iter()
            .zip(&shared)
            .map(|(o, s)| (1.0 - p.overlap) * o + p.overlap * s)
            .collect();
        for _ in 0..p.concepts_per_domain {
            concepts.extend(centre.iter().map(|c| c + rng.normal()));
        }
    }
    // Weights scaled so that pre-activations have unit-order variance.
    let scale = 1.0 / ((l as f64) * 5.0).sqrt();
    let mut map = |out: usize| {
        let w: Vec<f32> = (0..out * l)
            .map(|_| (rng.normal() * scale) as f32)
            .collect();
        let b: Vec<f32> = (0..out).map(|_| (rng.normal() * 0.1) as f32).collect();
        (w, b)
    };
    let image_map = map(p.image_dim);
    let text_map = map(p.text_dim);
    Structure {
        concepts,
        image_map,
        text_map,
    }
}

fn apply(
    map: &(Vec<f32>, Vec<f32>),
    z: &[f64],
    out: &mut [f32],
    image: bool,
    noise: f64,
    rng: &mut Rng,
) {
    let l = z.len();
    let z32: Vec<f32> = z.iter().map(|&x| x as f32).collect();
    for (o, value) in out.iter_mut().enumerate() {
        let row = &map.0[o * l..(o + 1) * l];
        let pre = row.iter().zip(&z32).map(|(w, x)| w * x).sum::<f32>() + map.1[o];
        let act = if image {
            pre.tanh()
        } else {
            pre / (1.0 + (-pre).exp())
        };
        *value = act + (noise * rng.normal()) as f32;
    }
}

/// The domain of image `i`: images are split into contiguous, near-equal blocks.
fn domain_of(i: usize, p: &SyntheticParams) -> usize {
    i * p.domains / p.images
}

/// Generates the images and captions tables. Images carry `domain` (`d1`..) and
/// `concept` columns; captions `image_id` and a `text` naming the concept.
pub fn generate(p: &SyntheticParams) -> (Table, Table) {
    let s = structure(p);
    let l = p.latent_dim;
    let seed = p.seed.to_string();
    let latent_of = |i: usize| -> (usize, Vec<f64>) {
        let mut rng = Rng::derive(
            p.seed,
            &["synthetic", &seed, "image-latent", &i.to_string()],
        );
        let d = domain_of(i, p);
        let concept = d * p.concepts_per_domain + rng.below(p.concepts_per_domain);
        let z = s.concepts[concept * l..(concept + 1) * l]
            .iter()
            .map(|c| c + p.item_spread * rng.normal())
            .collect();
        (concept, z)
    };
    let mut image_features = vec![0f32; p.images * p.image_dim];
    let concepts: Vec<usize> = image_features
        .par_chunks_mut(p.image_dim)
        .enumerate()
        .map(|(i, row)| {
            let (concept, z) = latent_of(i);
            let mut rng = Rng::derive(p.seed, &["synthetic", "image-noise", &i.to_string()]);
            apply(&s.image_map, &z, row, true, p.feature_noise, &mut rng);
            concept
        })
        .collect();
    let n_captions = p.images * p.captions_per_image;
    let mut caption_features = vec![0f32; n_captions * p.text_dim];
    caption_features
        .par_chunks_mut(p.text_dim)
        .enumerate()
        .for_each(|(c, row)| {
            let i = c / p.captions_per_image;
            let (_, z) = latent_of(i);
            let mut rng = Rng::derive(p.seed, &["synthetic", "caption", &c.to_string()]);
            let zc: Vec<f64> = z
                .iter()
                .map(|x| x + p.caption_noise * rng.normal())
                .collect();
            apply(&s.text_map, &zc, row, false, p.feature_noise, &mut rng);
        });
    let image_ids: Vec<String> = (0..p.images)
        .map(|i| format!("d{}-{i:07}", domain_of(i, p) + 1))
        .collect();
    let mut images = Table {
        ids: image_ids.clone(),
        features: image_features.into(),
        dim: p.image_dim,
        ..Table::default()
    };
    images.columns.insert(
        "domain".into(),
        (0..p.images)
            .map(|i| format!("d{}", domain_of(i, p) + 1))
            .collect(),
    );
    images.columns.insert(
        "concept".into(),
        concepts
            .iter()
            .map(|c| {
                format!(
                    "d{}-c{}",
                    c / p.concepts_per_domain + 1,
                    c % p.concepts_per_domain
                )
            })
            .collect(),
    );
    let mut captions = Table {
        ids: (0..n_captions)
            .map(|c| {
                format!(
                    "{}-{}",
                    image_ids[c / p.captions_per_image],
                    c % p.captions_per_image
                )
            })
            .collect(),
        features: caption_features.into(),
        dim: p.text_dim,
        ..Table::default()
    };
    captions.columns.insert(
        "image_id".into(),
        (0..n_captions)
            .map(|c| image_ids[c / p.captions_per_image].clone())
            .collect(),
    );
    captions.columns.insert(
        "text".into(),
        (0..n_captions)
            .map(|c| {
                format!(
                    "concept {} #{}",
                    images.columns["concept"][c / p.captions_per_image],
                    c % p.captions_per_image
                )
            })
            .collect(),
    );
    (images, captions)
}
