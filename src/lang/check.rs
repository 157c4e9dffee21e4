//! Stage 3: each variant's settings to a typed [`Experiment`], with every mistake
//! reported at the place it was written.
//!
//! Errors of all variants are gathered; one that several variants share is
//! reported once, with a note naming the variants when not all of them have it.

use super::ast::{Spanned, Value, ValueKind};
use super::experiment::*;
use super::resolve::{Setting, Settings, Variant};
use super::schema::{self, BranchCall, CallTable, Choice, MAX_LAYERS};
use super::values::{Args, Reader};
use crate::data::Manifest;
use crate::diagnostics::{did_you_mean, Diagnostic, SourceMap, Span};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Manifests read so far, by path: a 1,000-variant sweep reads each once.
#[derive(Default)]
pub struct ManifestCache {
    loaded: HashMap<PathBuf, Result<Rc<Manifest>, Diagnostic>>,
}

impl ManifestCache {
    /// The manifest at `path`, or why it cannot be read: a diagnostic without a
    /// place, which the caller gives the span that named the manifest.
    pub fn get(&mut self, path: &Path) -> Result<Rc<Manifest>, Diagnostic> {
        self.loaded
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                Manifest::load(path)
                    .map(Rc::new)
                    .map_err(|e| Diagnostic::error(format!("invalid dataset manifest: {e}")))
            })
            .clone()
    }
}

/// Checks every variant; returns the experiments, or every distinct error.
pub fn check(
    pipeline: &Spanned<String>,
    variants: &[Variant],
    sources: &SourceMap,
    manifests: &mut ManifestCache,
) -> Result<Vec<Experiment>, Vec<Diagnostic>> {
    let mut experiments = Vec::with_capacity(variants.len());
    // (diagnostic, labels of the variants that have it), in first-seen order.
    let mut found: Vec<(Diagnostic, Vec<String>)> = Vec::new();
    for variant in variants {
        let mut cx = VariantChecker {
            reader: Reader::default(),
            settings: &variant.settings,
            sources,
            manifests,
            pipeline,
        };
        let experiment = cx.experiment(pipeline, variant);
        if experiment.is_none() && cx.reader.errors.is_empty() {
            // A variant dropped without a message would silently vanish from the grid.
            cx.reader.error(
                Diagnostic::error("internal error: a variant failed to check without a message")
                    .at(pipeline.span, "this pipeline")
                    .note("this is a bug in lethe, not in the pipeline"),
            );
        }
        match experiment {
            Some(e) if cx.reader.errors.is_empty() => experiments.push(e),
            _ => {
                for d in cx.reader.errors {
                    match found.iter_mut().find(|(f, _)| *f == d) {
                        Some((_, labels)) => labels.push(variant.label.clone()),
                        None => found.push((d, vec![variant.label.clone()])),
                    }
                }
            }
        }
    }
    if found.is_empty() {
        return Ok(experiments);
    }
    // Report in source order, whatever order the checks ran in.
    found.sort_by_key(|(d, _)| d.primary.as_ref().map(|(s, _)| (s.file, s.start, s.end)));
    Err(found
        .into_iter()
        .map(|(d, labels)| {
            if variants.len() > 1 && labels.len() < variants.len() {
                let shown: Vec<String> =
                    labels.iter().take(3).map(|l| format!("\"{l}\"")).collect();
                let more = labels.len().saturating_sub(3);
                d.note(format!(
                    "in variant{} {}{}",
                    if labels.len() == 1 { "" } else { "s" },
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ))
            } else {
                d
            }
        })
        .collect())
}

struct VariantChecker<'a> {
    reader: Reader,
    settings: &'a Settings,
    sources: &'a SourceMap,
    manifests: &'a mut ManifestCache,
    pipeline: &'a Spanned<String>,
}

impl<'a> VariantChecker<'a> {
    fn setting(&mut self, key: &str) -> Option<&'a Setting> {
        let found = self.settings.get(key);
        if found.is_none() && schema::REQUIRED.contains(&key) {
            self.reader.error(
                Diagnostic::error(format!("missing setting `{key}`"))
                    .at(self.pipeline.span, "this pipeline")
                    .hint(format!(
                        "every pipeline sets `dataset`, `split` and `tasks`; add `{key} = ...`"
                    )),
            );
        }
        found
    }

    fn value(&mut self, key: &str) -> Option<&'a Value> {
        self.setting(key).map(|s| &s.value)
    }

    /// Dotted-path parameter overrides of a call-valued setting.
    fn overrides(&self, key: &str) -> Vec<(&'a str, &'a Setting)> {
        let prefix = format!("{key}.");
        self.settings
            .iter()
            .filter_map(|(k, s)| k.strip_prefix(&prefix).map(|p| (p, s)))
            .collect()
    }

    /// A call-valued setting read against its table, parameter overrides included.
    fn call<K>(&mut self, key: &str, table: &CallTable<K>) -> Option<Args<'_, 'a, K>> {
        let v = self.value(key)?;
        let overrides = self.overrides(key);
        self.reader.call(v, key, table, &overrides)
    }

    fn experiment(&mut self, pipeline: &Spanned<String>, variant: &Variant) -> Option<Experiment> {
        let dataset = self.dataset();
        let split = self.value("split").and_then(|v| self.name(v, "`split`"));
        let tasks = self.tasks();
        let manifest = dataset.as_ref().and_then(|(_, m)| m.clone());
        if let (Some(m), Some((split, span))) = (&manifest, &split) {
            self.check_split(m, split, *span, tasks.as_deref());
        }
        let seed = self
            .value("seed")
            .and_then(|v| self.reader.int(v, "`seed`", 0, i64::MAX as u64));
        let schedule = self
            .value("schedule")
            .and_then(|v| self.reader.choice(v, "`schedule`"));
        let device = self.device();
        let index = self
            .value("index")
            .and_then(|v| self.reader.choice(v, "`index`"));
        let model = self.model(manifest.as_deref());
        let train = self.train(schedule, manifest.as_deref());
        let evaluate = self.evaluate(manifest.as_deref());
        Some(Experiment {
            pipeline: pipeline.node.clone(),
            label: variant.label.clone(),
            axes: variant.axes.clone(),
            dataset: dataset?.0,
            split: split?.0,
            tasks: tasks?.into_iter().map(|t| t.node).collect(),
            seed: seed?,
            schedule: schedule?,
            device: device?,
            model: model?,
            train: train?,
            index: index?,
            evaluate: evaluate?,
        })
    }

    /// A name written as a bare word or a string.
    fn name(&mut self, v: &Value, what: &str) -> Option<(String, Span)> {
        let v = self.reader.plain(v);
        match &v.kind {
            ValueKind::Word(w) | ValueKind::Str(w) => Some((w.clone(), v.span)),
            _ => {
                self.reader.error(
                    Diagnostic::error(format!("{what} must be a name, found {}", v.describe()))
                        .at(v.span, "expected a name"),
                );
                None
            }
        }
    }

    fn dataset(&mut self) -> Option<(PathBuf, Option<Rc<Manifest>>)> {
        let v = self.value("dataset")?;
        self.manifest_at(v, "dataset")
            .map(|(path, m)| (path, Some(m)))
    }

    /// A manifest named by a string path relative to the file that wrote it
    /// (`what`: the setting, for messages).
    fn manifest_at(&mut self, v: &Value, what: &str) -> Option<(PathBuf, Rc<Manifest>)> {
        let v = self.reader.plain(v);
        let ValueKind::Str(rel) = &v.kind else {
            self.reader.error(
                Diagnostic::error(format!(
                    "`{what}` must be a string path, found {}",
                    v.describe()
                ))
                .at(v.span, "expected a \"path\""),
            );
            return None;
        };
        // Relative to the file that wrote it, so `extends` across folders works.
        let base = self
            .sources
            .get(v.span.file)
            .path
            .parent()
            .unwrap_or(Path::new(""));
        let path = normalize(&base.join(rel));
        if !path.is_file() {
            self.reader.error(
                Diagnostic::error(format!(
                    "dataset manifest `{}` does not exist",
                    path.display()
                ))
                .at(v.span, "no such file")
                .note(format!(
                    "the path is relative to the file that sets `{what}`"
                )),
            );
            return None;
        }
        match self.manifests.get(&path) {
            Ok(m) => Some((path, m)),
            Err(d) => {
                self.reader.error(d.at(v.span, "this manifest"));
                None
            }
        }
    }

    fn check_split(
        &mut self,
        m: &Manifest,
        split: &str,
        span: Span,
        tasks: Option<&[Spanned<String>]>,
    ) {
        let Some(known) = m.split_tasks(split) else {
            let names: Vec<&str> = m.split_names().collect();
            let mut d =
                Diagnostic::error(format!("the dataset `{}` has no split `{split}`", m.name))
                    .at(span, format!("splits are: {}", names.join(", ")));
            if let Some(s) = did_you_mean(split, names.iter().copied()) {
                d = d.hint(format!("did you mean `{s}`?"));
            }
            self.reader.error(d);
            return;
        };
        for task in tasks.unwrap_or_default() {
            if !known.contains(&task.node.as_str()) {
                let mut d = Diagnostic::error(format!(
                    "task `{}` is not in split `{split}` of the dataset `{}`",
                    task.node, m.name
                ))
                .at(task.span, format!("tasks are: {}", known.join(", ")));
                if let Some(s) = did_you_mean(&task.node, known.iter().copied()) {
                    d = d.hint(format!("did you mean `{s}`?"));
                }
                self.reader.error(d);
            }
        }
    }

    fn tasks(&mut self) -> Option<Vec<Spanned<String>>> {
        let v = self.value("tasks")?;
        let items = self.reader.list(v, "`tasks`")?;
        if items.is_empty() {
            self.reader.error(
                Diagnostic::error("`tasks` is empty")
                    .at(v.span, "no tasks")
                    .hint("list the tasks in the order they are learned: `tasks = [a, b, c]`"),
            );
            return None;
        }
        // Duplicates are reported but kept, so the split check still sees every name.
        let mut out: Vec<Spanned<String>> = Vec::new();
        for item in items {
            let Some((name, span)) = self.name(item, "a task") else {
                continue;
            };
            if let Some(first) = out.iter().find(|t| t.node == name) {
                self.reader.error(
                    Diagnostic::error(format!("task `{name}` is listed twice"))
                        .at(span, "again here")
                        .also(first.span, "first here"),
                );
            }
            out.push(Spanned::new(name, span));
        }
        Some(out)
    }

    /// `cpu`, `cuda`, or `"cuda:N"`: the words through their table, then an ordinal.
    fn device(&mut self) -> Option<DeviceSpec> {
        let v = self.value("device")?;
        let v = self.reader.plain(v);
        let text = match &v.kind {
            ValueKind::Word(w) | ValueKind::Str(w) => w.as_str(),
            _ => "",
        };
        if let Some(device) = DeviceSpec::from_word(text) {
            return Some(device);
        }
        match text
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n < 64 => Some(DeviceSpec::Cuda(n)),
            _ => {
                let mut d = Diagnostic::error(format!("unknown device {}", v.describe()))
                    .at(v.span, "expected cpu, cuda or \"cuda:N\"");
                if let Some(s) = did_you_mean(text, DeviceSpec::WORDS.iter().copied()) {
                    d = d.hint(format!("did you mean `{s}`?"));
                }
                self.reader.error(d);
                None
            }
        }
    }

    /// A model branch and the span of its call.
    fn branch(&mut self, key: &str) -> Option<(BranchSpec, Span)> {
        self.call(key, &schema::BRANCH_CALLS)?.build(|call| {
            let span = call.span();
            let spec = match call.kind() {
                BranchCall::Mlp => BranchSpec {
                    hidden: call
                        .whole_list("hidden")?
                        .into_iter()
                        .map(|width| width as usize)
                        .collect(),
                    embed: call.whole("embed")? as usize,
                    activation: call.choice("activation")?,
                    dropout: call.number("dropout")?,
                },
            };
            Some((spec, span))
        })
    }

    fn model(&mut self, manifest: Option<&Manifest>) -> Option<ModelSpec> {
        let image = self.branch("model.image");
        let text = self.branch("model.text");
        let share_setting = self.setting("model.share");
        let share =
            share_setting.and_then(|s| self.reader.int(&s.value, "`model.share`", 0, MAX_LAYERS));
        let ((image, image_span), (text, text_span), share) = (image?, text?, share? as usize);
        let share_span = share_setting
            .map(|s| s.value.span)
            .unwrap_or(self.pipeline.span);
        let mut ok = true;
        if image.embed != text.embed {
            self.reader.error(
                Diagnostic::error(format!(
                    "the branches embed into different sizes: image {} and text {}",
                    image.embed, text.embed
                ))
                .at(text_span, format!("embed = {}", text.embed))
                .also(image_span, format!("embed = {}", image.embed))
                .hint("both branches must map into one space: give them the same `embed`"),
            );
            ok = false;
        }
        if share > image.depth().min(text.depth()) {
            self.reader.error(
                Diagnostic::error(format!(
                    "`model.share = {share}` is more than the depth of a branch (image {}, text {} layers)",
                    image.depth(),
                    text.depth()
                ))
                .at(share_span, "too many shared layers")
                .hint("a branch `mlp(hidden = [h1, ..., hn])` has n + 1 layers"),
            );
            ok = false;
        } else if share > 0 && ok {
            ok &= self.check_shared_shapes(&image, &text, share, share_span, manifest);
        }
        ok.then_some(ModelSpec { image, text, share })
    }

    /// The top `share` layers are one set of weights: their shapes and activation
    /// must agree in both branches.
    fn check_shared_shapes(
        &mut self,
        image: &BranchSpec,
        text: &BranchSpec,
        share: usize,
        span: Span,
        manifest: Option<&Manifest>,
    ) -> bool {
        let dims = manifest.and_then(|m| m.feature_dims());
        // Layer widths from the input (0 = the feature size, unknown without the data).
        let widths = |b: &BranchSpec, input: usize| {
            let mut w = vec![input];
            w.extend(&b.hidden);
            w.push(b.embed);
            w
        };
        let wi = widths(image, dims.map_or(0, |d| d.image));
        let wt = widths(text, dims.map_or(0, |d| d.text));
        for m in 0..=share {
            let (a, b) = (wi[wi.len() - 1 - m], wt[wt.len() - 1 - m]);
            if a != 0 && b != 0 && a != b {
                self.reader.error(
                    Diagnostic::error(format!(
                        "the top {share} layer{} cannot be shared: the branches have widths {a} (image) and {b} (text) there",
                        if share == 1 { "" } else { "s" }
                    ))
                    .at(span, "shared layers")
                    .hint("shared layers need the same input and output sizes in both branches"),
                );
                return false;
            }
        }
        if image.activation != text.activation {
            self.reader.error(
                Diagnostic::error("shared layers need the same `activation` in both branches")
                    .at(span, "shared layers"),
            );
            return false;
        }
        true
    }
}

mod train;

/// Removes `.` and `name/..` pairs lexically, so paths read as the user expects
/// (`pipelines/../datasets/x.yaml` becomes `datasets/x.yaml`).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}
