//! `lethe import karpathy`: Karpathy's split files (`dataset_flickr30k.json`,
//! `dataset_flickr8k.json`, `dataset_coco.json`), what most retrieval code reads:
//! `images[]` with `filename` (and `filepath` for COCO), `split` (`train`,
//! `restval`, `val`, `test`), `sentences[]` with `raw` text and `sentid`, and an
//! id (`cocoid` for COCO, `imgid` otherwise). `train` and `restval` images are
//! trained on, `val` images are the validation part, `test` images the test part.

use super::json::{place, read};
use super::manifest::{caption_topics, write_checked, ManifestSpec};
use super::{absolute_dir, record, ImportError, Output, Record, Summary};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
pub struct KarpathyFile {
    pub images: Vec<KarpathyImage>,
    #[serde(default)]
    pub dataset: Option<String>,
}

#[derive(Deserialize)]
pub struct KarpathyImage {
    #[serde(default)]
    pub filepath: Option<String>,
    pub filename: String,
    #[serde(default)]
    pub imgid: Option<u64>,
    #[serde(default)]
    pub cocoid: Option<u64>,
    pub split: String,
    #[serde(default)]
    pub sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
pub struct Sentence {
    pub raw: String,
    #[serde(default)]
    pub sentid: Option<u64>,
}

/// The part a Karpathy `split` value means.
pub fn part(path: &Path, index: usize, split: &str) -> Result<&'static str, ImportError> {
    match split {
        "train" | "restval" => Ok("train"),
        "val" => Ok("val"),
        "test" => Ok("test"),
        other => Err(ImportError::at(
            path,
            &place("images", index, "split"),
            format!("`{other}` is not a Karpathy split (train, restval, val or test)"),
        )),
    }
}

/// What `lethe import karpathy` was given.
#[derive(Debug, Clone)]
pub struct KarpathyArgs {
    pub file: PathBuf,
    pub images: PathBuf,
    pub out: PathBuf,
}

pub fn import(args: &KarpathyArgs) -> Result<Summary, ImportError> {
    let path = &args.file;
    let root = absolute_dir(&args.images)?;
    let file: KarpathyFile = read(path)?;
    if file.images.is_empty() {
        return Err(ImportError::at(path, "images", "the list is empty"));
    }
    let mut image_records: Vec<Record> = Vec::with_capacity(file.images.len());
    let mut caption_records: Vec<Record> = Vec::new();
    let mut id_at: HashMap<String, usize> = HashMap::new();
    let mut sentence_at: HashMap<String, (usize, usize)> = HashMap::new();
    let mut parts: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, image) in file.images.iter().enumerate() {
        let id = match (image.cocoid, image.imgid) {
            (Some(cocoid), _) => cocoid.to_string(),
            _ => Path::new(&image.filename)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if id.is_empty() {
            return Err(ImportError::at(
                path,
                &place("images", i, "filename"),
                "is empty",
            ));
        }
        if let Some(j) = id_at.insert(id.clone(), i) {
            return Err(ImportError::at(
                path,
                &place("images", i, ""),
                format!("image id {id} is also images[{j}]"),
            ));
        }
        let relative: PathBuf = image
            .filepath
            .iter()
            .map(PathBuf::from)
            .chain(std::iter::once(PathBuf::from(&image.filename)))
            .collect();
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(ImportError::at(
                path,
                &place("images", i, "filename"),
                "must be a file name inside the --images folder",
            ));
        }
        if !root.join(&relative).is_file() {
            return Err(ImportError::at(
                path,
                &place("images", i, "filename"),
                format!(
                    "image file {} is not in {}",
                    relative.display(),
                    root.display()
                ),
            ));
        }
        let part = part(path, i, &image.split)?;
        *parts.entry(part).or_default() += 1;
        if image.sentences.is_empty() {
            return Err(ImportError::at(
                path,
                &place("images", i, "sentences"),
                "the image has no sentence",
            ));
        }
        let mut r = record([
            ("id", json!(id)),
            ("file", json!(relative.to_string_lossy())),
            ("filename", json!(image.filename)),
            ("split", json!(part)),
        ]);
        if let Some(cocoid) = image.cocoid {
            r.insert("cocoid".into(), json!(cocoid.to_string()));
        }
        image_records.push(r);
        for (k, sentence) in image.sentences.iter().enumerate() {
            let text = sentence.raw.trim();
            let here = format!("{}.sentences[{k}].raw", place("images", i, ""));
            if text.is_empty() {
                return Err(ImportError::at(path, &here, "the sentence is empty"));
            }
            let caption_id = match sentence.sentid {
                Some(s) => s.to_string(),
                None => format!("{id}#{k}"),
            };
            if let Some((a, b)) = sentence_at.insert(caption_id.clone(), (i, k)) {
                return Err(ImportError::at(
                    path,
                    &here,
                    format!("sentence id {caption_id} is also images[{a}].sentences[{b}]"),
                ));
            }
            caption_records.push(record([
                ("id", json!(caption_id)),
                ("image_id", json!(id)),
                ("text", json!(text)),
            ]));
        }
    }
    let name = file
        .dataset
        .clone()
        .unwrap_or_else(|| "karpathy".to_string());
    let mut out = Output::begin(&args.out)?;
    out.write_jsonl("raw/images.jsonl", &image_records)?;
    out.write_jsonl("raw/captions.jsonl", &caption_records)?;
    let spec = ManifestSpec {
        header: vec![
            format!(
                "Written by `lethe import karpathy` from {}.",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            "Karpathy's split decides: train and restval train, val validation, test test.".into(),
            "Run `lethe featurize` on this file to compute the feature tables.".into(),
        ],
        name: name.clone(),
        description: format!("{name} in Karpathy's split, with its captions"),
        image_encoder: "efficientnet-lite0".into(),
        text_encoder: "all-minilm-l6-v2".into(),
        test_fraction: None,
        val_fraction: 0.0,
        raw: vec![
            "images: raw/images.jsonl".into(),
            "captions: raw/captions.jsonl".into(),
            format!(
                "root: {}",
                crate::import::manifest::yaml_string(&root.to_string_lossy())
            ),
            "crop: center".into(),
        ],
        splits: vec![caption_topics(&["test_images: 1000"]), {
            let mut val = caption_topics(&["evaluate: val", "test_images: 1000"]);
            val.name = "topics-val".into();
            val.comment =
                vec!["The same tasks evaluated on the validation part (for choosing λ).".into()];
            val
        }],
    };
    let manifest_name = format!("{}.yaml", file_stem_safe(&name));
    let notes = write_checked(&mut out, &manifest_name, spec)?;
    let manifest = out.dir().join(&manifest_name);
    out.commit(&manifest_name)?;
    let mut lines = vec![
        format!(
            "{} images, {} captions",
            image_records.len(),
            caption_records.len()
        ),
        format!(
            "Karpathy split: {}",
            parts
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    lines.extend(notes);
    Ok(Summary {
        manifest,
        lines,
        needs_featurize: true,
    })
}

/// A file name made of the dataset's name (`flickr30k.yaml`).
fn file_stem_safe(name: &str) -> String {
    let stem: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if stem.is_empty() {
        "dataset".to_string()
    } else {
        stem
    }
}
