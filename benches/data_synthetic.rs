//! Generation time and peak resident memory of the COCO-scale synthetic dataset
//! (113,287 images x 5 captions, 2048-d and 768-d), against the bytes of the
//! features themselves. Goal: peak below twice the feature bytes.
//! Run: `cargo bench --bench data_synthetic`.

use lethe::data::{load_split, Manifest};
use std::time::Instant;

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest =
        Manifest::load(&repo.join("datasets/synthetic/coco-scale.yaml")).expect("manifest");
    let before = peak_rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let split = load_split(&manifest, "domains").expect("split");
    let seconds = started.elapsed().as_secs_f64();
    let feature_bytes = ((split.image_features.len() + split.caption_features.len()) * 4) as f64;
    let peak = peak_rss_bytes().unwrap_or(0) as f64;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    println!(
        "data_synthetic coco-scale: {} images, {} captions, generated and split in {seconds:.1} s on {} threads",
        split.image_ids.len(),
        split.caption_ids.len(),
        rayon::current_num_threads()
    );
    println!(
        "  features {:.2} GiB; peak resident {:.2} GiB (before: {:.2} GiB); ratio peak/features = {:.2} (goal < 2)",
        gib(feature_bytes),
        gib(peak),
        gib(before as f64),
        peak / feature_bytes
    );
}
