//! The YAML dataset manifest (format: `datasets/README.md`).
//!
//! Parsing checks the manifest alone (cheap: `lethe validate` on a pipeline reads
//! nothing else); [`super::load_split`] reads and checks the tables.

use super::error::DataError;
use super::rules::{parse_split, SplitRules};
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Largest manifest accepted: manifests are small; anything bigger is a mistake.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Image and text feature sizes of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDims {
    pub image: usize,
    pub text: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Feature tables on disk.
    #[default]
    Tables,
    /// Generated in memory from the `synthetic` parameters.
    Synthetic,
}

/// Parameters of a synthetic dataset (documented in `datasets/README.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticParams {
    pub seed: u64,
    /// Images in all, split evenly over the domains.
    pub images: usize,
    pub captions_per_image: usize,
    pub image_dim: usize,
    pub text_dim: usize,
    /// Domains `d1 .. dN` (the `domain` column).
    #[serde(default = "defaults::domains")]
    pub domains: usize,
    /// Latent concepts per domain (the `concept` column).
    #[serde(default = "defaults::concepts")]
    pub concepts_per_domain: usize,
    #[serde(default = "defaults::latent")]
    pub latent_dim: usize,
    /// 0: domain centres are independent; 1: all domains share one centre.
    #[serde(default = "defaults::overlap")]
    pub overlap: f64,
    /// Spread of an image's latent around its concept.
    #[serde(default = "defaults::item_spread")]
    pub item_spread: f64,
    /// Per-caption latent noise (captions of one image differ by this much).
    #[serde(default = "defaults::caption_noise")]
    pub caption_noise: f64,
    /// Additive noise on the features.
    #[serde(default = "defaults::feature_noise")]
    pub feature_noise: f64,
}

mod defaults {
    pub fn domains() -> usize {
        3
    }
    pub fn concepts() -> usize {
        24
    }
    pub fn latent() -> usize {
        32
    }
    pub fn overlap() -> f64 {
        0.2
    }
    pub fn item_spread() -> f64 {
        0.6
    }
    pub fn caption_noise() -> f64 {
        0.3
    }
    pub fn feature_noise() -> f64 {
        0.05
    }
}

/// Where `lethe featurize` finds the raw images and captions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSection {
    /// JSON lines: `id`, `file` (relative to `root`), metadata (strings or lists
    /// of strings). Absent when the images table is given as it is (precomputed
    /// features imported by `lethe import precomp`).
    #[serde(default)]
    pub images: Option<String>,
    /// JSON lines: `id`, `image_id`, `text`.
    pub captions: String,
    /// Folder of the image files, relative to the manifest (a build script may
    /// pass another with `--raw-root`).
    #[serde(default)]
    pub root: Option<String>,
    /// How an image becomes the encoder's square input.
    #[serde(default)]
    pub crop: Crop,
}

/// How `lethe featurize` fits an image into the encoder's 224x224 input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// The whole image resized to the square (icons and drawings, already square
    /// or meant to be seen whole).
    #[default]
    None,
    /// ImageNet's evaluation crop, as EfficientNet was trained and evaluated:
    /// the central square of 224/256 of the shorter side, resized to 224 (photos).
    Center,
}

/// A class set for zero-shot classification: the class names are the values of
/// an images column, each put into a prompt that the text encoder embeds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSetDecl {
    /// The images column whose values are the classes (one value per image).
    pub column: String,
    /// The prompt, with `{}` where the class name goes (`"an emoji of {}"`).
    pub template: String,
}

impl ClassSetDecl {
    /// The prompt of one class.
    pub fn prompt(&self, class: &str) -> String {
        self.template.replacen("{}", class, 1)
    }
}

/// `pseudo_negatives:` of a manifest: how many generated hard negative captions
/// `lethe featurize` writes per image (`pseudo.arrow`), and the seed that picks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudoNegatives {
    pub per_image: usize,
    #[serde(default)]
    pub seed: u64,
}

/// The most pseudo negatives generated per image.
pub const MAX_PSEUDO_PER_IMAGE: usize = 100;

/// Where `lethe featurize` writes pseudo negatives when no `pseudo:` table is named.
pub const DEFAULT_PSEUDO: &str = "pseudo.arrow";

/// Where `lethe featurize` writes the class prompts' features when the manifest
/// declares `classes:` and names no `prompts:` table.
pub const DEFAULT_PROMPTS: &str = "prompts.arrow";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    images: Option<String>,
    #[serde(default)]
    captions: Option<String>,
    #[serde(default)]
    features: Option<IndexMap<String, String>>,
    #[serde(default = "default_test_fraction")]
    test_fraction: f64,
    #[serde(default)]
    val_fraction: f64,
    #[serde(default)]
    synthetic: Option<SyntheticParams>,
    #[serde(default)]
    raw: Option<RawSection>,
    /// Zero-shot class sets, by name.
    #[serde(default)]
    classes: IndexMap<String, ClassSetDecl>,
    /// The class prompts' feature table (default `prompts.arrow`).
    #[serde(default)]
    prompts: Option<String>,
    /// Generated hard negative captions per image (`lethe featurize`).
    #[serde(default)]
    pseudo_negatives: Option<PseudoNegatives>,
    /// Their table (default `pseudo.arrow`).
    #[serde(default)]
    pseudo: Option<String>,
    /// Parsed by [`parse_split`] (tasks and split options share the map).
    splits: IndexMap<String, IndexMap<String, serde_json::Value>>,
}

fn default_test_fraction() -> f64 {
    0.2
}

/// A parsed and checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub kind: Kind,
    pub test_fraction: f64,
    /// Images whose id hash falls in `[test_fraction, test_fraction + val_fraction)`
    /// form the validation part (when the images table has no `split` column).
    pub val_fraction: f64,
    pub synthetic: Option<SyntheticParams>,
    pub raw: Option<RawSection>,
    splits: IndexMap<String, SplitRules>,
    text: String,
    file: ManifestFile,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, DataError> {
        let text = crate::files::read_text_bounded(path, MAX_MANIFEST_BYTES)?;
        let file: ManifestFile = serde_saphyr::from_str(&text).map_err(|e| {
            DataError::invalid(path, format!("invalid manifest: {}", yaml_error(&e)))
        })?;
        let bad = |m: String| Err(DataError::invalid(path, m));
        if !(0.0..1.0).contains(&file.test_fraction) {
            return bad(format!(
                "`test_fraction` must be at least 0 and below 1, found {}",
                file.test_fraction
            ));
        }
        match (file.kind, &file.synthetic) {
            (Kind::Synthetic, None) => {
                return bad("`kind: synthetic` needs a `synthetic:` section".into())
            }
            (Kind::Tables, Some(_)) => {
                return bad("a `synthetic:` section needs `kind: synthetic`".into())
            }
            (Kind::Tables, None) if file.images.is_none() || file.captions.is_none() => {
                return bad("a manifest of tables names `images:` and `captions:` files".into())
            }
            (Kind::Synthetic, Some(s)) => {
                if let Err(m) = check_synthetic(s) {
                    return bad(m);
                }
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&file.val_fraction) || file.test_fraction + file.val_fraction >= 1.0
        {
            return bad(format!(
                "`val_fraction` must be at least 0 and leave room for training: test_fraction + val_fraction = {} must be below 1",
                file.test_fraction + file.val_fraction
            ));
        }
        if let Err(m) = check_generated(&file) {
            return bad(m);
        }
        if file.splits.is_empty() {
            return bad("`splits` is empty: define at least one split".into());
        }
        let mut splits = IndexMap::new();
        for (split, entries) in &file.splits {
            splits.insert(
                split.clone(),
                parse_split(split, entries).map_err(|m| DataError::invalid(path, m))?,
            );
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            name: file.name.clone(),
            description: file.description.clone(),
            kind: file.kind,
            test_fraction: file.test_fraction,
            val_fraction: file.val_fraction,
            synthetic: file.synthetic.clone(),
            raw: file.raw.clone(),
            splits,
            text,
            file,
        })
    }

    pub fn split_names(&self) -> impl Iterator<Item = &str> {
        self.splits.keys().map(String::as_str)
    }

    /// Task names of a split, in manifest order.
    pub fn split_tasks(&self, split: &str) -> Option<Vec<&str>> {
        self.splits
            .get(split)
            .map(|rules| rules.tasks.keys().map(String::as_str).collect())
    }

    /// The rules of a split: its tasks' selectors and its options.
    pub fn split(&self, split: &str) -> Option<&SplitRules> {
        self.splits.get(split)
    }

    /// Feature dimensions when known without reading the tables' data: from the
    /// synthetic parameters, or from the tables' Arrow schemas.
    pub fn feature_dims(&self) -> Option<FeatureDims> {
        if let Some(s) = &self.synthetic {
            return Some(FeatureDims {
                image: s.image_dim,
                text: s.text_dim,
            });
        }
        let [images, captions] = [self.images_path()?, self.captions_path()?];
        Some(FeatureDims {
            image: super::read::feature_width(&images).ok()?,
            text: super::read::feature_width(&captions).ok()?,
        })
    }

    /// Changes whenever the data the manifest denotes can: its text, and the bytes
    /// of its tables when they exist.
    pub fn content_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.text.as_bytes());
        let pseudo = self.pseudo_negatives().map(|_| self.pseudo_path());
        for path in [
            self.images_path(),
            self.captions_path(),
            self.prompts_path(),
            pseudo,
        ]
        .into_iter()
        .flatten()
        {
            match std::fs::File::open(&path) {
                Ok(mut f) => {
                    let _ = std::io::copy(&mut f, &mut h);
                }
                Err(_) => {
                    h.update(b"missing");
                }
            }
        }
        h.finalize().to_hex().to_string()
    }

    pub fn is_synthetic(&self) -> bool {
        self.kind == Kind::Synthetic
    }

    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn images_path(&self) -> Option<PathBuf> {
        self.file.images.as_ref().map(|p| self.base_dir().join(p))
    }

    pub fn captions_path(&self) -> Option<PathBuf> {
        self.file.captions.as_ref().map(|p| self.base_dir().join(p))
    }

    pub fn encoders(&self) -> Option<&IndexMap<String, String>> {
        self.file.features.as_ref()
    }

    /// The zero-shot class sets, in manifest order.
    pub fn class_sets(&self) -> impl Iterator<Item = (&str, &ClassSetDecl)> {
        self.file.classes.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn class_set(&self, name: &str) -> Option<&ClassSetDecl> {
        self.file.classes.get(name)
    }

    /// What `lethe featurize` generates as pseudo negatives, if anything.
    pub fn pseudo_negatives(&self) -> Option<PseudoNegatives> {
        self.file.pseudo_negatives
    }

    /// The pseudo negatives table.
    pub fn pseudo_path(&self) -> PathBuf {
        let name = self.file.pseudo.as_deref().unwrap_or(DEFAULT_PSEUDO);
        self.base_dir().join(name)
    }

    /// The class prompts' feature table, when the manifest declares classes.
    pub fn prompts_path(&self) -> Option<PathBuf> {
        if self.file.classes.is_empty() {
            return None;
        }
        let name = self.file.prompts.as_deref().unwrap_or(DEFAULT_PROMPTS);
        Some(self.base_dir().join(name))
    }
}

/// Generated tables: pseudo negatives need captions (1 to 100 per image); class
/// sets are named like tasks (a pipeline names them), need feature tables
/// (a synthetic set has no text encoder for prompts) and one `{}` per template.
fn check_generated(file: &ManifestFile) -> Result<(), String> {
    if file.prompts.is_some() && file.classes.is_empty() {
        return Err(
            "`prompts` names a table of class prompts, but no `classes` are declared".into(),
        );
    }
    if let Some(p) = file.pseudo_negatives {
        if !(1..=MAX_PSEUDO_PER_IMAGE).contains(&p.per_image) {
            return Err(format!(
                "`pseudo_negatives.per_image` must be 1 to {MAX_PSEUDO_PER_IMAGE}, found {}",
                p.per_image
            ));
        }
        if file.kind == Kind::Synthetic {
            return Err(
                "`pseudo_negatives` needs captions to rewrite: a synthetic set has none".into(),
            );
        }
    }
    if !file.classes.is_empty() && file.kind == Kind::Synthetic {
        return Err("`classes` needs feature tables: a synthetic set has no text encoder to embed prompts with".into());
    }
    for (name, decl) in &file.classes {
        let identifier = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !identifier {
            return Err(format!(
                "`classes.{name}`: a class set's name is a word a pipeline can name (letters, digits, `_`, `-`)"
            ));
        }
        let holes = decl.template.matches("{}").count();
        if holes != 1 {
            return Err(format!(
                "`classes.{name}.template` must hold `{{}}` exactly once, where the class name goes; \"{}\" holds it {holes} times",
                decl.template
            ));
        }
        if decl.column.is_empty() {
            return Err(format!("`classes.{name}.column` is empty"));
        }
    }
    Ok(())
}

/// A YAML error without the quoted source: the location and what is wrong, on
/// one line (a manifest path that names someone else's file must not print it).
fn yaml_error(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.chars().take(200).collect()
}

/// The most memory a synthetic set may take (its features as f32): COCO's size
/// is 2.5 GiB; the budget stops a typo from allocating terabytes.
pub const MAX_SYNTHETIC_BYTES: u64 = 32 << 30;

fn check_synthetic(s: &SyntheticParams) -> Result<(), String> {
    let positive = [
        ("images", s.images),
        ("captions_per_image", s.captions_per_image),
        ("image_dim", s.image_dim),
        ("text_dim", s.text_dim),
        ("domains", s.domains),
        ("concepts_per_domain", s.concepts_per_domain),
        ("latent_dim", s.latent_dim),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(format!("synthetic `{name}` must be at least 1"));
        }
    }
    if s.images > 10_000_000
        || s.captions_per_image > 100
        || s.image_dim > 65_536
        || s.text_dim > 65_536
        || s.latent_dim > 4096
    {
        return Err("synthetic sizes are beyond what lethe generates (at most 10M images, 100 captions each, 65536-d)".into());
    }
    let bytes = (s.images as u128)
        * (s.image_dim as u128 + s.captions_per_image as u128 * s.text_dim as u128)
        * 4;
    if bytes > MAX_SYNTHETIC_BYTES as u128 {
        return Err(format!(
            "the synthetic set would take {} of features; at most {} are generated",
            crate::files::bytes(bytes.min(u64::MAX as u128) as u64),
            crate::files::bytes(MAX_SYNTHETIC_BYTES)
        ));
    }
    if s.images < s.domains {
        return Err(format!(
            "synthetic `images` ({}) must be at least `domains` ({})",
            s.images, s.domains
        ));
    }
    for (name, v) in [("overlap", s.overlap)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!(
                "synthetic `{name}` must be between 0 and 1, found {v}"
            ));
        }
    }
    for (name, v) in [
        ("item_spread", s.item_spread),
        ("caption_noise", s.caption_noise),
        ("feature_noise", s.feature_noise),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(format!("synthetic `{name}` must be 0 or more, found {v}"));
        }
    }
    Ok(())
}
