//! `lethe import coco`: MS-COCO's own annotation files.
//!
//! - `captions_*.json`: `images[]` (`id`, `file_name`) and `annotations[]`
//!   (`id`, `image_id`, `caption`); several files (train and val) are merged;
//! - `instances_*.json` (optional): `categories[]` (`id`, `name`,
//!   `supercategory`) and `annotations[]` (`image_id`, `category_id`): each image
//!   gets the list columns `category` and `supercategory`, one entry per
//!   annotated instance (so `match: dominant` can count them);
//! - Karpathy's `dataset_coco.json` (optional) decides each image's part:
//!   `train` and `restval` train, `val` validation, `test` test.
//!
//! Images are found by `file_name` in the `--images` folders, in the order given.

use super::json::{place, read};
use super::karpathy::{self, KarpathyFile};
use super::manifest::{caption_topics, write_checked, ManifestSpec, SplitSpec, TaskSpec};
use super::{absolute_dir, common_root, record, ImportError, Output, Record, Summary};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct CaptionsFile {
    images: Vec<Image>,
    annotations: Vec<Caption>,
}

#[derive(Deserialize)]
struct Image {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct Caption {
    id: u64,
    image_id: u64,
    caption: String,
}

#[derive(Deserialize)]
struct InstancesFile {
    annotations: Vec<Instance>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Instance {
    image_id: u64,
    category_id: u64,
}

#[derive(Deserialize)]
struct Category {
    id: u64,
    name: String,
    supercategory: String,
}

/// What `lethe import coco` was given.
#[derive(Debug, Clone)]
pub struct CocoArgs {
    pub captions: Vec<PathBuf>,
    pub instances: Vec<PathBuf>,
    pub images: Vec<PathBuf>,
    pub karpathy: Option<PathBuf>,
    pub out: PathBuf,
}

/// An image as imported: where it came from, for messages.
struct Found {
    id: u64,
    file: PathBuf,
    file_name: String,
    source: (PathBuf, usize),
}

pub fn import(args: &CocoArgs) -> Result<Summary, ImportError> {
    let dirs: Vec<PathBuf> = args
        .images
        .iter()
        .map(|d| absolute_dir(d))
        .collect::<Result<_, _>>()?;
    let mut images: Vec<Found> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut captions: Vec<(u64, u64, String)> = Vec::new();
    let mut caption_at: HashMap<u64, (PathBuf, usize)> = HashMap::new();
    for path in &args.captions {
        let file: CaptionsFile = read(path)?;
        for (i, image) in file.images.iter().enumerate() {
            if let Some(&known) = index.get(&image.id) {
                if images[known].file_name != image.file_name {
                    let (other, j) = &images[known].source;
                    return Err(ImportError::at(
                        path,
                        &place("images", i, "id"),
                        format!(
                            "image {} is also {}[{j}] with another file name ({} there, {} here)",
                            image.id,
                            other.display(),
                            images[known].file_name,
                            image.file_name
                        ),
                    ));
                }
                continue;
            }
            let found = locate(&dirs, &image.file_name).ok_or_else(|| {
                ImportError::at(
                    path,
                    &place("images", i, "file_name"),
                    format!(
                        "image file {} is in none of the --images folders ({})",
                        image.file_name,
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            index.insert(image.id, images.len());
            images.push(Found {
                id: image.id,
                file: found,
                file_name: image.file_name.clone(),
                source: (path.clone(), i),
            });
        }
        for (i, c) in file.annotations.iter().enumerate() {
            if !index.contains_key(&c.image_id) {
                return Err(ImportError::at(
                    path,
                    &place("annotations", i, "image_id"),
                    format!(
                        "caption {} points at image {}, which no captions file lists in `images`",
                        c.id, c.image_id
                    ),
                ));
            }
            if let Some((other, j)) = caption_at.insert(c.id, (path.clone(), i)) {
                return Err(ImportError::at(
                    path,
                    &place("annotations", i, "id"),
                    format!("caption id {} is also {}[{j}]", c.id, other.display()),
                ));
            }
            let text = c.caption.trim();
            if text.is_empty() {
                return Err(ImportError::at(
                    path,
                    &place("annotations", i, "caption"),
                    "the caption is empty",
                ));
            }
            captions.push((c.id, c.image_id, text.to_string()));
        }
    }
    // Instances: every annotated instance's category, in file order.
    let mut categories_of: HashMap<u64, (Vec<String>, Vec<String>)> = HashMap::new();
    let mut skipped_instances = 0usize;
    for path in &args.instances {
        let file: InstancesFile = read(path)?;
        let mut category: HashMap<u64, &Category> = HashMap::new();
        for c in &file.categories {
            category.insert(c.id, c);
        }
        for (i, a) in file.annotations.iter().enumerate() {
            let c = category.get(&a.category_id).ok_or_else(|| {
                ImportError::at(
                    path,
                    &place("annotations", i, "category_id"),
                    format!("category {} is not in `categories`", a.category_id),
                )
            })?;
            if !index.contains_key(&a.image_id) {
                skipped_instances += 1;
                continue;
            }
            let entry = categories_of.entry(a.image_id).or_default();
            entry.0.push(c.name.clone());
            entry.1.push(c.supercategory.clone());
        }
    }
    let parts = match &args.karpathy {
        Some(path) => Some(karpathy_parts(path, &images)?),
        None => None,
    };
    let mut captions_per_image: HashMap<u64, usize> = HashMap::new();
    for (_, image, _) in &captions {
        *captions_per_image.entry(*image).or_default() += 1;
    }
    let without_captions = images
        .iter()
        .filter(|i| !captions_per_image.contains_key(&i.id))
        .count();
    images.retain(|i| captions_per_image.contains_key(&i.id));
    if images.is_empty() {
        return Err(ImportError::invalid(
            &args.captions[0],
            "no image has a caption",
        ));
    }
    let root = common_root(
        &images
            .iter()
            .map(|i| i.file.parent().map(Path::to_path_buf).unwrap_or_default())
            .collect::<Vec<_>>(),
    );
    let image_records: Vec<Record> = images
        .iter()
        .map(|image| {
            let mut r = record([
                ("id", json!(image.id.to_string())),
                (
                    "file",
                    json!(image
                        .file
                        .strip_prefix(&root)
                        .unwrap_or(&image.file)
                        .to_string_lossy()),
                ),
                ("cocoid", json!(image.id.to_string())),
                ("filename", json!(image.file_name)),
            ]);
            if let Some(parts) = &parts {
                r.insert("split".into(), json!(parts[&image.id]));
            }
            if !args.instances.is_empty() {
                let (names, supers) = categories_of.get(&image.id).cloned().unwrap_or_default();
                r.insert("category".into(), Value::from(names));
                r.insert("supercategory".into(), Value::from(supers));
            }
            r
        })
        .collect();
    let caption_records: Vec<Record> = captions
        .iter()
        .map(|(id, image, text)| {
            record([
                ("id", json!(id.to_string())),
                ("image_id", json!(image.to_string())),
                ("text", json!(text)),
            ])
        })
        .collect();
    let mut out = Output::begin(&args.out)?;
    out.write_jsonl("raw/images.jsonl", &image_records)?;
    out.write_jsonl("raw/captions.jsonl", &caption_records)?;
    let spec = spec(args, &root, parts.is_some());
    let notes = write_checked(&mut out, "coco.yaml", spec)?;
    let manifest = out.dir().join("coco.yaml");
    out.commit("coco.yaml")?;
    let mut lines = vec![format!(
        "{} images, {} captions",
        images.len(),
        captions.len()
    )];
    if let Some(parts) = &parts {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for image in &images {
            *counts.entry(parts[&image.id]).or_default() += 1;
        }
        lines.push(format!(
            "Karpathy split: {}",
            counts
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if without_captions > 0 {
        lines.push(format!(
            "left out {without_captions} images without captions"
        ));
    }
    if skipped_instances > 0 {
        lines.push(format!(
            "skipped {skipped_instances} instance annotations of images not imported"
        ));
    }
    lines.extend(notes);
    Ok(Summary {
        manifest,
        lines,
        needs_featurize: true,
    })
}

/// The first `--images` folder holding the file (COCO 2014 names say which
/// folder, 2017 ones do not: both work).
fn locate(dirs: &[PathBuf], file_name: &str) -> Option<PathBuf> {
    let name = Path::new(file_name);
    if name.is_absolute()
        || name
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return None;
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Each image's part from Karpathy's file, joined by `cocoid`.
fn karpathy_parts(
    path: &Path,
    images: &[Found],
) -> Result<HashMap<u64, &'static str>, ImportError> {
    let file: KarpathyFile = read(path)?;
    let mut part_of: HashMap<u64, &'static str> = HashMap::new();
    for (i, image) in file.images.iter().enumerate() {
        let cocoid = image.cocoid.ok_or_else(|| {
            ImportError::at(
                path,
                &place("images", i, "cocoid"),
                "missing: this is not COCO's Karpathy file (dataset_coco.json)",
            )
        })?;
        part_of.insert(cocoid, karpathy::part(path, i, &image.split)?);
    }
    let mut parts = HashMap::new();
    for image in images {
        let part = part_of.get(&image.id).ok_or_else(|| {
            let (file, i) = &image.source;
            ImportError::at(
                file,
                &place("images", *i, "id"),
                format!(
                    "image {} is not in the Karpathy split file {}",
                    image.id,
                    path.display()
                ),
            )
        })?;
        parts.insert(image.id, *part);
    }
    Ok(parts)
}

/// The manifest: SeCOCO's three supercategory tasks when categories are known,
/// evaluated on test and (for choosing λ) on the validation part; the
/// 1k-image protocol caps each task's held-out images at 1,000.
fn spec(args: &CocoArgs, root: &Path, karpathy: bool) -> ManifestSpec {
    let files: Vec<String> = args
        .captions
        .iter()
        .chain(&args.instances)
        .chain(&args.karpathy)
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut splits = Vec::new();
    if !args.instances.is_empty() {
        let tasks = vec![
            TaskSpec::new("animals", "{ supercategory: [animal], match: dominant }"),
            TaskSpec::new("vehicles", "{ supercategory: [vehicle], match: dominant }"),
            TaskSpec::new("food", "{ supercategory: [food], match: dominant }"),
        ];
        splits.push(SplitSpec {
            name: "secoco".into(),
            comment: vec![
                "SeCOCO: three tasks by COCO supercategory, learned in this order. An image".into(),
                "belongs to the supercategory with the most annotated instances in it (a tie"
                    .into(),
                "with another supercategory leaves it out). At most 1,000 test images per task:"
                    .into(),
                "the 1k-image protocol of COCO retrieval papers.".into(),
            ],
            options: vec!["test_images: 1000".into()],
            tasks: tasks.clone(),
        });
        splits.push(SplitSpec {
            name: "secoco-val".into(),
            comment: vec![
                "The same tasks evaluated on the validation part (for choosing λ).".into(),
            ],
            options: vec!["evaluate: val".into(), "test_images: 1000".into()],
            tasks,
        });
    }
    splits.push(caption_topics(&["test_images: 1000"]));
    let mut header = vec![
        format!("Written by `lethe import coco` from {}.", files.join(", ")),
        "Run `lethe featurize` on this file to compute the feature tables.".into(),
    ];
    if !karpathy {
        header.push(
            "No Karpathy split file: the id hash picks 4% test and 4% validation images.".into(),
        );
    }
    ManifestSpec {
        header,
        name: "coco".into(),
        description: "MS-COCO photos with their five captions".into(),
        image_encoder: "efficientnet-lite0".into(),
        text_encoder: "all-minilm-l6-v2".into(),
        test_fraction: (!karpathy).then_some(0.04),
        val_fraction: if karpathy { 0.0 } else { 0.04 },
        raw: vec![
            "images: raw/images.jsonl".into(),
            "captions: raw/captions.jsonl".into(),
            format!(
                "root: {}",
                super::manifest::yaml_string(&root.to_string_lossy())
            ),
            "crop: center".into(),
        ],
        splits,
    }
}
