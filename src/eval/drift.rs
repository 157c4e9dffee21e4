//! Why it forgets (seed Figure 4, Mod-X's "spatial disorder"): for an old task j
//! after stage k, how far its embeddings moved, how well the modalities still
//! align, and how the geometry within and across modalities rotated.

use super::Embedded;
use crate::data::LoadedSplit;
use crate::lang::Direction;
use std::collections::HashMap;

/// Pairs compared for the rotation figures (deterministic, bounded).
const MAX_PAIRS: usize = 2000;

fn rows<'a>(e: &'a Embedded, m: &str) -> Option<(usize, &'a [f32])> {
    e.get(m)
        .map(|(n, v)| (v.len().checked_div(*n).unwrap_or(0), v.as_slice()))
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

fn angle(cos: f64) -> f64 {
    cos.clamp(-1.0, 1.0).acos()
}

/// Deterministic pairs (a, b) with a in 0..n, b in 0..m, a != b when `distinct`.
fn pairs(n: usize, m: usize, distinct: bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if n == 0 || m == 0 {
        return out;
    }
    let total = (n * m).min(MAX_PAIRS * 4);
    for p in 0..total {
        let a = (p * 7919) % n;
        let b = (p * 104_729 + 1) % m;
        if !(distinct && a == b) {
            out.push((a, b));
        }
        if out.len() == MAX_PAIRS {
            break;
        }
    }
    out
}

/// The gallery an old task's queries searched, for the mixed alignment.
pub struct Gallery<'a> {
    pub embedded: &'a Embedded,
    /// Embedded by an older model than the queries (a frozen index).
    pub older: bool,
    pub direction: Direction,
}

/// The diagnostics of task `task` (index into the split's tasks): `now` holds its
/// embeddings by the current model, `then` by the model that learned it (both
/// modalities), and `gallery` the gallery the policy searched. Returns
/// (metric, modality, value).
pub fn diagnostics(
    split: &LoadedSplit,
    task: usize,
    now: &Embedded,
    then: &Embedded,
    gallery: Gallery,
    overlap: Option<f64>,
) -> Result<Vec<(String, String, f64)>, String> {
    let t = &split.tasks[task];
    let mut out = Vec::new();
    let mut drift = HashMap::new();
    for m in ["image", "text"] {
        if let (Some((d, a)), Some((_, b))) = (rows(now, m), rows(then, m)) {
            let n = a.len() / d.max(1);
            let mean = (0..n)
                .map(|i| 1.0 - dot(&a[i * d..(i + 1) * d], &b[i * d..(i + 1) * d]))
                .sum::<f64>()
                / n.max(1) as f64;
            drift.insert(m, mean);
            out.push(("embedding_drift".to_string(), m.to_string(), mean));
        }
    }
    if let (Some(i), Some(x)) = (drift.get("image"), drift.get("text")) {
        out.push(("unequal_drift".to_string(), "image-text".to_string(), i - x));
    }
    let position: HashMap<u32, usize> = t
        .test_images
        .iter()
        .enumerate()
        .map(|(p, &r)| (r, p))
        .collect();
    let caption_pos: Vec<usize> = t
        .test_captions
        .iter()
        .map(|&c| position[&split.caption_image[c as usize]])
        .collect();
    let alignment = |images: (usize, &[f32]), texts: (usize, &[f32])| {
        let (d, im) = images;
        let (_, tx) = texts;
        caption_pos
            .iter()
            .enumerate()
            .map(|(c, &p)| dot(&im[p * d..(p + 1) * d], &tx[c * d..(c + 1) * d]))
            .sum::<f64>()
            / caption_pos.len().max(1) as f64
    };
    if let (Some(im), Some(tx)) = (rows(now, "image"), rows(now, "text")) {
        out.push((
            "alignment".to_string(),
            "cross".to_string(),
            alignment(im, tx),
        ));
    }
    if gallery.older {
        // New queries against the old gallery: what a frozen index actually
        // compares. im2txt: s(φ_k(i), ψ_j(c)); txt2im: s(ψ_k(c), φ_j(i)).
        let pair = match gallery.direction {
            Direction::Im2txt => (rows(now, "image"), rows(gallery.embedded, "text")),
            Direction::Txt2im => (rows(gallery.embedded, "image"), rows(now, "text")),
        };
        if let (Some(im), Some(tx)) = pair {
            out.push((
                "alignment_mixed".to_string(),
                "cross".to_string(),
                alignment(im, tx),
            ));
        }
    }
    if let Some(share) = overlap {
        out.push(("task_overlap".to_string(), "union".to_string(), share));
    }
    for m in ["image", "text"] {
        if let (Some((d, a)), Some((_, b))) = (rows(now, m), rows(then, m)) {
            let n = a.len() / d.max(1);
            let ps = pairs(n, n, true);
            let rot = ps
                .iter()
                .map(|&(x, y)| {
                    let now_angle = angle(dot(&a[x * d..(x + 1) * d], &a[y * d..(y + 1) * d]));
                    let then_angle = angle(dot(&b[x * d..(x + 1) * d], &b[y * d..(y + 1) * d]));
                    (now_angle - then_angle).abs()
                })
                .sum::<f64>()
                / ps.len().max(1) as f64;
            out.push(("intra_rotation".to_string(), m.to_string(), rot));
        }
    }
    if let (Some((d, ni)), Some((_, nt)), Some((_, ti)), Some((_, tt))) = (
        rows(now, "image"),
        rows(now, "text"),
        rows(then, "image"),
        rows(then, "text"),
    ) {
        let ps = pairs(ni.len() / d.max(1), nt.len() / d.max(1), false);
        let dev = ps
            .iter()
            .map(|&(x, y)| {
                let a = angle(dot(&ni[x * d..(x + 1) * d], &nt[y * d..(y + 1) * d]));
                let b = angle(dot(&ti[x * d..(x + 1) * d], &tt[y * d..(y + 1) * d]));
                (a - b).abs()
            })
            .sum::<f64>()
            / ps.len().max(1) as f64;
        out.push(("inter_deviation".to_string(), "cross".to_string(), dev));
    }
    Ok(out)
}
