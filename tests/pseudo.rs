//! Generated pseudo negative captions (IncCLIP's pseudo text replay, our generator):
//! WordNet confusables, and negatives that are deterministic, new and present for
//! every image with captions. Needs Debian's wordnet-base (scripts/test installs it).

mod common;
use common::repo;
use lethe::data::raw::read_raw_list;
use lethe::encode::pseudo::Generator;
use lethe::encode::wordnet::{WordNet, DEFAULT_DIR};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn wordnet() -> WordNet {
    WordNet::load(Path::new(DEFAULT_DIR)).expect("Debian's wordnet-base")
}

#[test]
fn confusables_are_co_hyponyms_and_antonyms() {
    let w = wordnet();
    let face = w.confusables("face");
    assert!(face.iter().any(|x| x == "head"), "{face:?}");
    assert!(!face.contains(&"face".to_string()));
    assert!(face.windows(2).all(|p| p[0] < p[1]), "sorted, distinct");
    assert!(w.confusables("happy").contains(&"unhappy".to_string()));
    assert!(w.confusables("zzzz").is_empty());
}

/// The shipped emoji captions, grouped by image in list order.
fn emoji_captions() -> BTreeMap<String, Vec<String>> {
    let list = read_raw_list(
        &repo().join("datasets/emoji/raw/captions.jsonl"),
        &["image_id", "text"],
    )
    .unwrap();
    let mut by_image: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..list.records.len() {
        by_image
            .entry(list.text(i, "image_id").to_string())
            .or_default()
            .push(list.text(i, "text").to_string());
    }
    by_image
}

fn generate(seed: u64) -> BTreeMap<String, Vec<String>> {
    let w = wordnet();
    let captions = emoji_captions();
    let mut g = Generator::new(&w, captions.values().flatten().map(String::as_str), seed);
    captions
        .iter()
        .map(|(image, texts)| {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let made = g.negatives(image, &texts, 3);
            (image.clone(), made.into_iter().map(|n| n.text).collect())
        })
        .collect()
}

#[test]
fn every_image_gets_new_distinct_negatives_deterministically() {
    let captions = emoji_captions();
    let a = generate(0);
    assert_eq!(a, generate(0), "the same seed gives the same negatives");
    let b = generate(1);
    let same = a.iter().filter(|(k, v)| b[*k] == **v).count();
    assert!(
        same < a.len() / 2,
        "another seed draws other negatives ({same} alike)"
    );
    for (image, negatives) in &a {
        assert_eq!(negatives.len(), 3, "image {image}: {negatives:?}");
        let own: BTreeSet<String> = captions[image].iter().map(|c| c.to_lowercase()).collect();
        let distinct: BTreeSet<String> = negatives.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(distinct.len(), 3, "image {image}: {negatives:?}");
        for n in negatives {
            assert!(
                !own.contains(&n.to_lowercase()),
                "{image}: {n} is a caption"
            );
        }
    }
}

#[test]
fn a_negative_changes_one_word_of_one_caption() {
    let w = wordnet();
    let mut g = Generator::new(&w, ["grinning face", "red apple"].into_iter(), 0);
    let made = g.negatives("x", &["grinning face"], 2);
    assert_eq!(made.len(), 2);
    for n in &made {
        let old: Vec<&str> = "grinning face".split(' ').collect();
        let new: Vec<&str> = n.text.split(' ').collect();
        assert_eq!(old.len(), new.len(), "{n:?}");
        assert_eq!(
            old.iter().zip(&new).filter(|(a, b)| a != b).count(),
            1,
            "{n:?}"
        );
        assert!(n.method.starts_with("wordnet: ") || n.method.starts_with("vocabulary: "));
    }
}

#[test]
fn a_missing_or_malformed_wordnet_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = WordNet::load(dir.path()).err().unwrap();
    assert!(
        e.contains("index.noun") && e.contains("wordnet-base"),
        "{e}"
    );
    for f in ["index.noun", "data.noun", "index.adj", "data.adj"] {
        std::fs::copy(Path::new(DEFAULT_DIR).join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("data.adj"),
        "  licence line\n00001740 00 a zz\n",
    )
    .unwrap();
    let e = WordNet::load(dir.path()).err().unwrap();
    assert!(e.contains("data.adj: line 2: not a data line"), "{e}");
}
