//! The manifest an import writes: the dataset's files, and default splits that
//! are checked against the imported data before anything is committed. A task
//! the data cannot support (no image, or no training or held-out image) is left
//! out with a comment saying why, so the manifest always validates.

use super::{ImportError, Output};
use crate::data::read::Read;
use crate::data::split::{cut, tables_or_raw_with};
use crate::data::Manifest;

/// A task of a default split, as written in YAML (`{ supercategory: [animal] }`).
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    pub rule: String,
}

impl TaskSpec {
    pub fn new(name: &str, rule: impl Into<String>) -> TaskSpec {
        TaskSpec {
            name: name.to_string(),
            rule: rule.into(),
        }
    }
}

/// A default split.
#[derive(Debug, Clone)]
pub struct SplitSpec {
    pub name: String,
    /// Comment lines above the split.
    pub comment: Vec<String>,
    /// Split options, as YAML lines (`test_images: 1000`).
    pub options: Vec<String>,
    pub tasks: Vec<TaskSpec>,
}

/// Everything a manifest of an import says.
#[derive(Debug, Clone)]
pub struct ManifestSpec {
    pub header: Vec<String>,
    pub name: String,
    pub description: String,
    pub image_encoder: String,
    pub text_encoder: String,
    /// Omitted when the images carry a `split` column (which decides instead).
    pub test_fraction: Option<f64>,
    pub val_fraction: f64,
    /// The `raw:` section's lines (without the `raw:` key), if any.
    pub raw: Vec<String>,
    pub splits: Vec<SplitSpec>,
}

impl ManifestSpec {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("name: {}\n", yaml_string(&self.name)));
        out.push_str(&format!(
            "description: {}\n",
            yaml_string(&self.description)
        ));
        out.push_str("images: images.arrow\ncaptions: captions.arrow\n");
        out.push_str(&format!(
            "features: {{ image: {}, text: {} }}\n",
            self.image_encoder, self.text_encoder
        ));
        if let Some(f) = self.test_fraction {
            out.push_str(&format!("test_fraction: {f}\n"));
        }
        if self.val_fraction > 0.0 {
            out.push_str(&format!("val_fraction: {}\n", self.val_fraction));
        }
        if !self.raw.is_empty() {
            out.push_str("raw:\n");
            for line in &self.raw {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out.push_str("splits:\n");
        for split in &self.splits {
            for line in &split.comment {
                out.push_str(&format!("  # {line}\n"));
            }
            out.push_str(&format!("  {}:\n", split.name));
            for option in &split.options {
                out.push_str(&format!("    {option}\n"));
            }
            let width = split.tasks.iter().map(|t| t.name.len()).max().unwrap_or(0) + 1;
            for task in &split.tasks {
                out.push_str(&format!(
                    "    {:<width$} {}\n",
                    format!("{}:", task.name),
                    task.rule
                ));
            }
        }
        out
    }
}

/// A YAML scalar: plain when safe, double-quoted otherwise.
pub fn yaml_string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || " -_./()".contains(c))
        && !s.starts_with([' ', '-'])
        && !s.ends_with(' ');
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Writes the manifest into the import's folder, after checking each default
/// split against the data written so far: tasks the data cannot support are left
/// out (named in a comment and in the returned notes), and a split left with no
/// task is dropped. Fails only when no split at all can be made.
pub fn write_checked(
    out: &mut Output,
    file_name: &str,
    mut spec: ManifestSpec,
) -> Result<Vec<String>, ImportError> {
    let path = out.file(file_name);
    let write = |text: &str| {
        std::fs::write(&path, text).map_err(|e| {
            ImportError::Write(format!(
                "{}: {}",
                path.display(),
                crate::files::io_message(&e)
            ))
        })
    };
    write(&spec.render())?;
    let manifest = Manifest::load(&path)?;
    // The split check selects rows: features are not read (a COCO-size
    // import would otherwise hold them twice).
    let (images, captions, _) = tables_or_raw_with(&manifest, Read::MetadataOnly)?;
    let mut notes = Vec::new();
    let mut splits = Vec::new();
    let mut last_error = None;
    for split in std::mem::take(&mut spec.splits) {
        // Tasks are added one by one, each kept when the split with it still
        // cuts: a task may fail alone (no test image) or beside the earlier
        // ones (`overlap: first` leaves it nothing).
        let mut kept = SplitSpec {
            tasks: Vec::new(),
            ..split.clone()
        };
        for task in &split.tasks {
            let mut with = kept.clone();
            with.tasks.push(task.clone());
            let trial = ManifestSpec {
                splits: vec![with.clone()],
                ..spec.clone()
            };
            write(&trial.render())?;
            let outcome = Manifest::load(&path)
                .and_then(|m| cut(&m, &split.name, &images, &captions).map(|_| ()));
            match outcome {
                Ok(()) => kept.tasks = with.tasks,
                Err(e) => {
                    let why = e.to_string();
                    let why = why
                        .split_once(": ")
                        .map_or(why.as_str(), |(_, m)| m)
                        .to_string();
                    kept.comment
                        .push(format!("left out `{}`: {why}", task.name));
                    notes.push(format!(
                        "split `{}`: task `{}` left out: {why}",
                        split.name, task.name
                    ));
                    last_error = Some(e);
                }
            }
        }
        if kept.tasks.is_empty() {
            notes.push(format!(
                "split `{}` left out: none of its tasks fits the data",
                split.name
            ));
        } else {
            splits.push(kept);
        }
    }
    if splits.is_empty() {
        // No rule fits (captions without the topic words, say): one task of
        // every image still makes a valid dataset to run joint training on.
        let whole = whole_split();
        let trial = ManifestSpec {
            splits: vec![whole.clone()],
            ..spec.clone()
        };
        write(&trial.render())?;
        if Manifest::load(&path)
            .and_then(|m| cut(&m, &whole.name, &images, &captions))
            .is_ok()
        {
            notes.push(format!(
                "no default split fits the data: split `{}` holds every image in one task",
                whole.name
            ));
            splits.push(whole);
        }
    }
    if splits.is_empty() {
        let why = last_error.map(|e| e.to_string()).unwrap_or_default();
        let why = why.split_once(": ").map_or(why.as_str(), |(_, m)| m);
        return Err(ImportError::invalid(
            &path,
            format!("no default split fits the data (the last task tried: {why}); the raw lists are fine, but too few images have a part to train and to test on"),
        ));
    }
    spec.splits = splits;
    write(&spec.render())?;
    // The manifest as written, whole.
    let manifest = Manifest::load(&path)?;
    for split in manifest.split_names() {
        cut(&manifest, split, &images, &captions)?;
    }
    Ok(notes)
}

/// One task of every image (an empty expression matches every caption).
pub fn whole_split() -> SplitSpec {
    SplitSpec {
        name: "whole".to_string(),
        comment: vec!["Every image in one task: no default rule fitted the data.".to_string()],
        options: Vec::new(),
        tasks: vec![TaskSpec::new("all", r#"{ caption: "" }"#)],
    }
}

/// Caption rules for a rough default split when images carry no labels: images
/// whose captions name animals, vehicles or food (COCO's own words for its
/// categories). Edit freely; `overlap: first` keeps an image in the first task
/// whose words its captions use.
pub fn caption_topics(options: &[&str]) -> SplitSpec {
    SplitSpec {
        name: "topics".to_string(),
        comment: vec![
            "A rough default: images by the words of their captions. An image whose".to_string(),
            "captions name several topics stays in the first task that names one.".to_string(),
        ],
        options: std::iter::once("overlap: first")
            .chain(options.iter().copied())
            .map(str::to_string)
            .collect(),
        tasks: vec![
            TaskSpec::new(
                "animals",
                r#"{ caption: "(?i)\\b(dogs?|cats?|horses?|birds?|cows?|sheep|elephants?|bears?|zebras?|giraffes?|puppy|puppies|kittens?)\\b" }"#,
            ),
            TaskSpec::new(
                "vehicles",
                r#"{ caption: "(?i)\\b(cars?|bus|buses|trucks?|trains?|motorcycles?|bicycles?|bikes?|airplanes?|planes?|boats?)\\b" }"#,
            ),
            TaskSpec::new(
                "food",
                r#"{ caption: "(?i)\\b(pizzas?|sandwich(es)?|cakes?|donuts?|bananas?|apples?|oranges?|broccoli|carrots?|food|meal)\\b" }"#,
            ),
        ],
    }
}
