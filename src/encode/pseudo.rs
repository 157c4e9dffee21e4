//! Pseudo negative texts (IncCLIP's pseudo text replay, our generator): for every
//! image, N captions that are almost its own but wrong. Each rewrites one of the
//! image's captions by replacing one content word with a confusable one: a WordNet
//! co-hyponym of a noun or an antonym of an adjective (`wordnet.rs`); when the
//! image's captions offer too few, a noun from the captions of other images that
//! none of its own captions uses. Never one of the image's captions, never twice
//! the same text, deterministic per seed and image. IncCLIP generates its
//! negatives with a text generator conditioned on the image; ours is conditioned on
//! the image through its captions (docs/methods.md).

use super::wordnet::WordNet;
use crate::rng::Rng;
use std::collections::{BTreeSet, HashMap};

/// The generator's version, in the table's input hash: bump when what it
/// generates changes.
const GENERATOR: &str =
    "pseudo negatives v1: wordnet co-hyponyms and antonyms, words of 3+ letters";

/// Words shorter than this are not replaced (`e` of `e-mail`, country codes).
const MIN_WORD: usize = 3;

/// One generated negative.
#[derive(Debug, Clone, PartialEq)]
pub struct Negative {
    /// The caption rewritten (an index into the image's captions).
    pub caption: usize,
    pub text: String,
    /// How it was made: `wordnet: face -> head` or `vocabulary: face -> dog`.
    pub method: String,
}

/// The ASCII words of a text, lower case, with their byte ranges.
fn words(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_ascii_alphabetic(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s..i, text[s..i].to_ascii_lowercase()));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Generates negatives for many images with one WordNet and a cache of its answers.
pub struct Generator<'a> {
    wordnet: &'a WordNet,
    confusables: HashMap<String, Vec<String>>,
    /// Nouns used by any caption, sorted: the fallback vocabulary.
    vocabulary: Vec<String>,
    seed: u64,
}

impl<'a> Generator<'a> {
    /// `all_captions`: every caption of the dataset, for the fallback vocabulary.
    pub fn new<'t>(
        wordnet: &'a WordNet,
        all_captions: impl Iterator<Item = &'t str>,
        seed: u64,
    ) -> Self {
        let mut g = Generator {
            wordnet,
            confusables: HashMap::new(),
            vocabulary: Vec::new(),
            seed,
        };
        let mut vocabulary = BTreeSet::new();
        for text in all_captions {
            for (_, w) in words(text) {
                if w.len() >= MIN_WORD && !g.confusables_of(&w).is_empty() {
                    vocabulary.insert(w);
                }
            }
        }
        g.vocabulary = vocabulary.into_iter().collect();
        g
    }

    fn confusables_of(&mut self, word: &str) -> &[String] {
        if !self.confusables.contains_key(word) {
            let found = self.wordnet.confusables(word);
            self.confusables.insert(word.to_string(), found);
        }
        &self.confusables[word]
    }

    /// Up to `n` negatives for the image `image_id` with `captions`; fewer only
    /// when no rewrite of its captions is new (an image without words).
    pub fn negatives(&mut self, image_id: &str, captions: &[&str], n: usize) -> Vec<Negative> {
        // The texts a negative must not be: the image's captions, then every
        // negative kept so far (without case).
        let mut seen: BTreeSet<String> = captions.iter().map(|c| c.to_lowercase()).collect();
        // Every (caption, word range, word, replacement) WordNet offers, in order.
        let mut offers: Vec<(usize, std::ops::Range<usize>, String, String)> = Vec::new();
        let mut content: Vec<(usize, std::ops::Range<usize>, String)> = Vec::new();
        for (c, text) in captions.iter().enumerate() {
            for (range, w) in words(text).into_iter().filter(|(_, w)| w.len() >= MIN_WORD) {
                let found = self.confusables_of(&w).to_vec();
                if !found.is_empty() {
                    content.push((c, range.clone(), w.clone()));
                }
                for r in found {
                    offers.push((c, range.clone(), w.clone(), r));
                }
            }
        }
        let mut rng = Rng::derive(self.seed, &["pseudo negatives", image_id]);
        rng.shuffle(&mut offers);
        let mut out: Vec<Negative> = Vec::new();
        let mut take = |caption: usize,
                        range: &std::ops::Range<usize>,
                        from: &str,
                        to: &str,
                        how: &str,
                        out: &mut Vec<Negative>| {
            let text = format!(
                "{}{to}{}",
                &captions[caption][..range.start],
                &captions[caption][range.end..]
            );
            if seen.insert(text.to_lowercase()) {
                out.push(Negative {
                    caption,
                    text,
                    method: format!("{how}: {from} -> {to}"),
                });
            }
        };
        for (c, range, from, to) in &offers {
            if out.len() == n {
                return out;
            }
            take(*c, range, from, to, "wordnet", &mut out);
        }
        // Too few: a noun of other captions in place of a content word (or of any
        // word, for captions WordNet knows nothing of).
        let targets: Vec<(usize, std::ops::Range<usize>, String)> = if content.is_empty() {
            captions
                .iter()
                .enumerate()
                .flat_map(|(c, t)| words(t).into_iter().map(move |(r, w)| (c, r, w)))
                .collect()
        } else {
            content
        };
        let used: BTreeSet<String> = captions
            .iter()
            .flat_map(|t| words(t))
            .map(|(_, w)| w)
            .collect();
        let pool: Vec<&String> = self
            .vocabulary
            .iter()
            .filter(|w| !used.contains(*w))
            .collect();
        if targets.is_empty() || pool.is_empty() {
            return out;
        }
        // A bounded number of draws: each is new with high probability.
        for _ in 0..(20 * n) {
            if out.len() == n {
                break;
            }
            let (c, range, from) = &targets[rng.below(targets.len())];
            let to = pool[rng.below(pool.len())];
            take(*c, range, from, to, "vocabulary", &mut out);
        }
        out
    }
}

/// Writes the pseudo negatives table of a manifest: `per_image` negatives for every
/// image with captions, in images-table order, with their text encoder features.
/// Returns the report line.
pub fn featurize_pseudo(
    manifest: &crate::data::Manifest,
    captions: &crate::data::raw::RawList,
    wordnet_dir: &std::path::Path,
    per_image: usize,
    seed: u64,
    encoder: &dyn Fn() -> Result<std::sync::Arc<super::text::TextEncoder>, String>,
    hash_prefix: &str,
) -> Result<String, String> {
    let out = manifest.pseudo_path();
    let mut h = blake3::Hasher::new();
    h.update(hash_prefix.as_bytes());
    h.update(GENERATOR.as_bytes());
    h.update(&(per_image as u64).to_le_bytes());
    h.update(&seed.to_le_bytes());
    for i in 0..captions.records.len() {
        for key in ["id", "image_id", "text"] {
            h.update(captions.text(i, key).as_bytes());
            h.update(&[0]);
        }
    }
    for file in ["index.noun", "data.noun", "index.adj", "data.adj"] {
        let path = wordnet_dir.join(file);
        std::fs::File::open(&path)
            .and_then(|mut f| std::io::copy(&mut f, &mut h))
            .map_err(|e| {
                format!(
                    "{}: {} (the WordNet database: install Debian's wordnet-base, or give --wordnet DIR)",
                    path.display(),
                    crate::files::io_message(&e)
                )
            })?;
    }
    let hash = h.finalize().to_hex().to_string();
    if super::chunks::up_to_date(&out, &hash) {
        return Ok(format!("{}: up to date", out.display()));
    }
    let wordnet = WordNet::load(wordnet_dir)?;
    // The image order of the images table; each image's captions in list order.
    let images_path = manifest
        .images_path()
        .ok_or("the manifest names no images table")?;
    let images = crate::data::read::read_table(&images_path, &[]).map_err(|e| e.to_string())?;
    let mut by_image: HashMap<&str, Vec<usize>> = HashMap::new();
    for i in 0..captions.records.len() {
        by_image
            .entry(captions.text(i, "image_id"))
            .or_default()
            .push(i);
    }
    let mut generator = Generator::new(
        &wordnet,
        (0..captions.records.len()).map(|i| captions.text(i, "text")),
        seed,
    );
    // (id, image_id, caption_id, text, method) per negative.
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut short = 0usize;
    for image in &images.ids {
        let Some(own) = by_image.get(image.as_str()) else {
            continue;
        };
        let texts: Vec<&str> = own.iter().map(|&i| captions.text(i, "text")).collect();
        let made = generator.negatives(image, &texts, per_image);
        short += usize::from(made.len() < per_image);
        for (k, n) in made.into_iter().enumerate() {
            rows.push([
                format!("{image}#pseudo{k}"),
                image.clone(),
                captions.text(own[n.caption], "id").to_string(),
                n.text,
                n.method,
            ]);
        }
    }
    let encoder = encoder()?;
    let texts: Vec<&str> = rows.iter().map(|r| r[3].as_str()).collect();
    let features = encoder.encode(&texts)?;
    let names = ["id", "image_id", "caption_id", "text", "method"];
    let columns: Vec<(&str, Vec<String>)> = names
        .iter()
        .enumerate()
        .map(|(c, name)| (*name, rows.iter().map(|r| r[c].clone()).collect()))
        .collect();
    super::chunks::write_text_table(&out, &columns, &features, encoder.dim, &hash)?;
    Ok(format!(
        "{}: {} pseudo negative captions, {per_image} per image{} x {}",
        out.display(),
        rows.len(),
        if short > 0 {
            format!(" ({short} images with fewer: no new rewrite)")
        } else {
            String::new()
        },
        encoder.dim
    ))
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn words_are_ascii_runs_with_their_ranges() {
        let w = words("Grinning face, big-eyes!");
        let names: Vec<&str> = w.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(names, ["grinning", "face", "big", "eyes"]);
        assert_eq!(w[1].0, 9..13);
    }
}
