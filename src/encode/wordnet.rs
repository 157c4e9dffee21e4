//! Confusable words from WordNet 3.0 (Debian's `wordnet-base`, the database files
//! `index.noun`, `data.noun`, `index.adj`, `data.adj`; format: wndb(5WN)).
//!
//! A noun's confusables are its co-hyponyms: the other hyponyms of the hypernyms of
//! its most frequent sense (`face` → `head`, `neck`, `arm`, ...). An adjective's
//! are its antonyms: those of its most frequent sense, or, for a satellite, those
//! of the head adjective of its cluster (`happy` → `unhappy`). Only single words
//! are offered, so a replacement keeps the sentence's shape.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Where Debian's `wordnet-base` installs the database.
pub const DEFAULT_DIR: &str = "/usr/share/wordnet";

/// One synset: its words and its pointers (symbol, target offset).
struct Synset {
    words: Vec<String>,
    pointers: Vec<(String, u64)>,
}

/// One part of speech: lemma → synset offsets (most frequent first), offset → synset.
#[derive(Default)]
struct Part {
    index: HashMap<String, Vec<u64>>,
    data: HashMap<u64, Synset>,
}

/// The noun and adjective databases.
pub struct WordNet {
    nouns: Part,
    adjectives: Part,
}

impl WordNet {
    /// Reads the database in `dir`; a missing or malformed file names itself.
    pub fn load(dir: &Path) -> Result<WordNet, String> {
        let part = |pos: &str| -> Result<Part, String> {
            let index = dir.join(format!("index.{pos}"));
            let data = dir.join(format!("data.{pos}"));
            Ok(Part {
                index: read_index(&index)?,
                data: read_data(&data)?,
            })
        };
        Ok(WordNet {
            nouns: part("noun")?,
            adjectives: part("adj")?,
        })
    }

    /// The confusable words of `word` (lower case), sorted; empty when WordNet has
    /// none (or does not know the word).
    pub fn confusables(&self, word: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        if let Some(sense) = self.nouns.index.get(word).and_then(|s| s.first()) {
            let part = &self.nouns;
            for hypernym in part.targets(*sense, &["@", "@i"]) {
                for sibling in part.targets(hypernym, &["~", "~i"]) {
                    if sibling != *sense {
                        out.extend(part.words(sibling));
                    }
                }
            }
        }
        if let Some(sense) = self.adjectives.index.get(word).and_then(|s| s.first()) {
            let part = &self.adjectives;
            let mut heads = vec![*sense];
            heads.extend(part.targets(*sense, &["&"]));
            for head in heads {
                for antonym in part.targets(head, &["!"]) {
                    out.extend(part.words(antonym));
                }
            }
        }
        out.remove(word);
        out.into_iter().collect()
    }
}

impl Part {
    fn targets(&self, offset: u64, symbols: &[&str]) -> Vec<u64> {
        self.data.get(&offset).map_or_else(Vec::new, |s| {
            s.pointers
                .iter()
                .filter(|(symbol, _)| symbols.contains(&symbol.as_str()))
                .map(|(_, target)| *target)
                .collect()
        })
    }

    /// The synset's single-word lemmas, lower case.
    fn words(&self, offset: u64) -> Vec<String> {
        self.data.get(&offset).map_or_else(Vec::new, |s| {
            s.words
                .iter()
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .cloned()
                .collect()
        })
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {} (the WordNet database: install Debian's wordnet-base, or give --wordnet DIR)",
            path.display(),
            crate::files::io_message(&e)
        )
    })
}

fn malformed(path: &Path, line: usize, what: &str) -> String {
    format!("{}: line {line}: {what}", path.display())
}

/// `lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt offset...`;
/// lines starting with a space are the licence.
fn read_index(path: &Path) -> Result<HashMap<String, Vec<u64>>, String> {
    let text = read(path)?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with(' '))
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || malformed(path, n + 1, "not an index line of wndb(5WN)");
        let count = |i: usize| {
            f.get(i)
                .and_then(|x| x.parse::<usize>().ok())
                .ok_or_else(bad)
        };
        let synsets = count(2)?;
        let pointers = count(3)?;
        let first = 4 + pointers + 2;
        let offsets = f
            .get(first..first + synsets)
            .ok_or_else(bad)?
            .iter()
            .map(|o| o.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(f[0].to_string(), offsets);
    }
    Ok(out)
}

/// `offset lex_filenum ss_type w_cnt (word lex_id)... p_cnt (symbol offset pos
/// source/target)... | gloss`; w_cnt is hexadecimal, p_cnt decimal.
fn read_data(path: &Path) -> Result<HashMap<u64, Synset>, String> {
    let text = read(path)?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with(' '))
    {
        let head = line.split(" | ").next().unwrap_or_default();
        let f: Vec<&str> = head.split_whitespace().collect();
        let bad = || malformed(path, n + 1, "not a data line of wndb(5WN)");
        let offset = f
            .first()
            .and_then(|x| x.parse::<u64>().ok())
            .ok_or_else(bad)?;
        let words = f
            .get(3)
            .and_then(|x| usize::from_str_radix(x, 16).ok())
            .ok_or_else(bad)?;
        let mut synset = Synset {
            words: Vec::with_capacity(words),
            pointers: Vec::new(),
        };
        for w in 0..words {
            let word = f.get(4 + 2 * w).ok_or_else(bad)?;
            // Adjectives may carry a syntactic marker: `galore(ip)`.
            let word = word.split('(').next().unwrap_or(word);
            synset.words.push(word.to_ascii_lowercase());
        }
        let at = 4 + 2 * words;
        let pointers = f
            .get(at)
            .and_then(|x| x.parse::<usize>().ok())
            .ok_or_else(bad)?;
        for p in 0..pointers {
            let symbol = f.get(at + 1 + 4 * p).ok_or_else(bad)?;
            let target = f
                .get(at + 2 + 4 * p)
                .and_then(|x| x.parse::<u64>().ok())
                .ok_or_else(bad)?;
            synset.pointers.push((symbol.to_string(), target));
        }
        out.insert(offset, synset);
    }
    Ok(out)
}
