//! Instance-incremental streams: a split written `random: { tasks: n, seed: s }`
//! deals every image into n equal random chunks (`chunk1` .. `chunkn`).

use lethe::data::{load_split, LoadedSplit, Manifest};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn emoji_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/emoji")
}

/// A manifest over the shipped emoji tables with one split `s` (YAML lines, 4 spaces in).
fn manifest(dir: &Path, split: &str) -> Result<Manifest, String> {
    let emoji = emoji_dir();
    let text = format!(
        "name: t\nimages: {}\ncaptions: {}\nfeatures: {{ image: efficientnet-lite0, text: all-minilm-l6-v2 }}\ntest_fraction: 0.2\nval_fraction: 0.15\nsplits:\n  s:\n{split}",
        emoji.join("images.arrow").display(),
        emoji.join("captions.arrow").display()
    );
    let path = dir.join("m.yaml");
    std::fs::write(&path, text).unwrap();
    Manifest::load(&path).map_err(|e| e.to_string())
}

/// Per chunk: its train, validation and test image rows.
fn parts(split: &LoadedSplit) -> Vec<[BTreeSet<u32>; 3]> {
    split
        .tasks
        .iter()
        .map(|t| {
            let train = t
                .train_captions
                .iter()
                .map(|&c| split.caption_image[c as usize])
                .collect();
            let val = t.val_images.iter().copied().collect();
            let test = t.test_images.iter().copied().collect();
            [train, val, test]
        })
        .collect()
}

fn spread(sizes: impl Iterator<Item = usize>) -> usize {
    let sizes: Vec<usize> = sizes.collect();
    sizes.iter().max().unwrap() - sizes.iter().min().unwrap()
}

#[test]
fn the_shipped_stream_deals_every_image_into_three_balanced_chunks() {
    let m = Manifest::load(&emoji_dir().join("emoji.yaml")).unwrap();
    let split = load_split(&m, "stream").unwrap();
    let names: Vec<&str> = split.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["chunk1", "chunk2", "chunk3"]);
    let chunks = parts(&split);
    // Every image in exactly one chunk.
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for chunk in &chunks {
        for part in chunk {
            total += part.len();
            seen.extend(part.iter().copied());
        }
    }
    assert_eq!(total, split.image_ids.len());
    assert_eq!(seen.len(), split.image_ids.len());
    // Equal sizes, overall and within each part.
    assert!(spread(chunks.iter().map(|c| c.iter().map(BTreeSet::len).sum())) <= 1);
    for part in 0..3 {
        assert!(
            spread(chunks.iter().map(|c| c[part].len())) <= 1,
            "part {part} unbalanced: {:?}",
            chunks.iter().map(|c| c[part].len()).collect::<Vec<_>>()
        );
    }
    // Not the table order cut in three: the chunks interleave.
    let first: Vec<u32> = chunks[0][0].iter().copied().take(20).collect();
    assert!(first.windows(2).any(|w| w[1] > w[0] + 1), "{first:?}");
}

#[test]
fn the_deal_is_fixed_by_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let deal = |seed: u64| {
        let m = manifest(
            dir.path(),
            &format!("    random: {{ tasks: 4, seed: {seed} }}\n"),
        )
        .unwrap();
        let split = load_split(&m, "s").unwrap();
        assert_eq!(split.tasks.len(), 4);
        parts(&split)
    };
    assert_eq!(deal(3), deal(3));
    assert_ne!(deal(3), deal(4));
}

#[test]
fn random_split_mistakes_name_their_path() {
    let dir = tempfile::tempdir().unwrap();
    for (split, needle) in [
        (
            "    random: { tasks: 3 }\n",
            "splits.s.random: missing `seed`",
        ),
        (
            "    random: { seed: 1 }\n",
            "splits.s.random: missing `tasks`",
        ),
        (
            "    random: { tasks: 0, seed: 1 }\n",
            "splits.s.random.tasks: expected a number of chunks from 1 to 1000, found `0`",
        ),
        (
            "    random: { tasks: 2, seed: -1 }\n",
            "splits.s.random.seed: expected a whole number",
        ),
        (
            "    random: { tasks: 2, seed: 1, shuffle: yes }\n",
            "splits.s.random.shuffle: unknown key",
        ),
        (
            "    random: 3\n",
            "splits.s.random: expected `{ tasks: n, seed: s }`",
        ),
        (
            "    animals: { subgroup: [animal-mammal] }\n    random: { tasks: 2, seed: 1 }\n",
            "splits.s.animals: a `random` split cuts its tasks itself",
        ),
    ] {
        let e = manifest(dir.path(), split).unwrap_err();
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
    }
}
