//! Stage 2: from parsed files to a list of variants, each a flat map of settings.
//!
//! - `extends` chains are followed relative to the extending file; cycles and
//!   missing parents are located errors.
//! - Sections flatten into dotted keys (`train { epochs = 3 }` is `train.epochs`).
//!   A later whole-value assignment of `train.optimizer` clears earlier parameter
//!   overrides such as `train.optimizer.lr`.
//! - A child's sweep axes replace the parent's axes with the same key and add the
//!   others; its `variant` lines replace the parent's variant lines.
//! - The grid is expanded (first axis outermost, seeds innermost).

use super::ast::*;
use super::parse;
use super::schema;
use crate::diagnostics::{did_you_mean, Diagnostic, FileId, SourceMap, Span};
use indexmap::IndexMap;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Longest `extends` chain followed.
const MAX_EXTENDS_DEPTH: usize = 16;
/// Largest grid expanded; bigger sweeps are almost certainly a mistake.
pub const MAX_VARIANTS: usize = 100_000;

/// One setting: its value and where its key was written.
#[derive(Debug, Clone)]
pub struct Setting {
    pub value: Value,
    pub key_span: Span,
}

/// Dotted key → setting, in first-written order.
pub type Settings = IndexMap<String, Setting>;

/// A pipeline after `extends` and before sweep expansion.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: Spanned<String>,
    pub settings: Settings,
    pub axes: Vec<Axis>,
}

/// One axis of a sweep. `key` is `None` for the axis formed by `variant` lines.
#[derive(Debug, Clone)]
pub struct Axis {
    pub key: Option<Spanned<String>>,
    pub entries: Vec<AxisEntry>,
}

impl Axis {
    fn name(&self) -> &str {
        self.key
            .as_ref()
            .map(|k| k.node.as_str())
            .unwrap_or("variant")
    }
    fn is_seed(&self) -> bool {
        self.key.as_ref().is_some_and(|k| k.node == "seed")
    }
}

#[derive(Debug, Clone)]
pub struct AxisEntry {
    pub label: Spanned<String>,
    pub overrides: Vec<(String, Setting)>,
}

/// One point of the grid: settings fully overlaid, not yet type-checked.
#[derive(Debug, Clone)]
pub struct Variant {
    pub label: String,
    /// Swept axis name → this variant's value label (seed excluded).
    pub axes: Vec<(String, String)>,
    pub settings: Settings,
}

/// Reads `path` (and its `extends` chain), returns the merged pipeline.
pub fn resolve(path: &Path, sources: &mut SourceMap) -> Result<Resolved, Vec<Diagnostic>> {
    let errors = RefCell::new(Vec::new());
    let defaults = defaults(sources);
    let mut stack = Vec::new();
    let resolved = resolve_file(path, None, sources, &mut stack, &errors);
    let mut errors = errors.into_inner();
    match resolved {
        Some(mut r) if errors.is_empty() => {
            for (key, setting) in defaults {
                if !r.settings.contains_key(&key) {
                    r.settings.insert(key, setting);
                }
            }
            Ok(r)
        }
        _ => {
            if errors.is_empty() {
                errors.push(Diagnostic::error(format!(
                    "cannot resolve {}",
                    path.display()
                )));
            }
            Err(errors)
        }
    }
}

/// The defaults, written in the language itself (`schema::DEFAULTS`).
fn defaults(sources: &mut SourceMap) -> Settings {
    let id = sources
        .find(Path::new("<defaults>"))
        .unwrap_or_else(|| sources.add(Path::new("<defaults>"), schema::DEFAULTS.to_string()));
    let ast = parse::parse(schema::DEFAULTS, id).expect("the built-in defaults parse");
    let errors = RefCell::new(Vec::new());
    let (settings, _) = collect(ast.body, &errors);
    settings
}

fn read_source(
    path: &Path,
    sources: &mut SourceMap,
    referrer: Option<&Spanned<String>>,
) -> Result<FileId, Diagnostic> {
    let located = |d: Diagnostic| match referrer {
        Some(r) => d.at(r.span, "named here"),
        None => d,
    };
    // Only regular files, read no further than one byte past the limit (a FIFO
    // would block, `/dev/zero` never ends); the size check itself is the parser's.
    let bytes = crate::files::read_bounded(path, parse::MAX_FILE_BYTES as u64 + 1)
        .or_else(|e| match crate::files::regular_file(path) {
            Ok(size) if size > parse::MAX_FILE_BYTES as u64 => {
                Ok(vec![b' '; parse::MAX_FILE_BYTES + 1])
            }
            _ => Err(e),
        })
        .map_err(|e| {
            located(Diagnostic::error(format!(
                "cannot read `{}`: {}",
                path.display(),
                e.message
            )))
        })?;
    match parse::decode(&bytes) {
        // A file that is not a pipeline is not quoted (it may be anyone's file).
        Ok(text) if !looks_like_pipeline(path, &text) => Err(located(Diagnostic::error(format!(
            "`{}` is not a pipeline file: it does not begin with `pipeline \"name\"`",
            path.display()
        )))),
        Ok(text) => Ok(sources.add(path, text)),
        Err(mut bad) => {
            let id = sources.add(path, std::mem::take(&mut bad.shown));
            Err(bad.diagnostic(id))
        }
    }
}

/// Whether a file may be quoted in messages as a pipeline: a `.pipe` file, or one
/// whose first word (after comments) is `pipeline`.
fn looks_like_pipeline(path: &Path, text: &str) -> bool {
    path.extension().is_some_and(|e| e == "pipe")
        || text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.starts_with("pipeline"))
}

fn resolve_file(
    path: &Path,
    referrer: Option<&Spanned<String>>,
    sources: &mut SourceMap,
    stack: &mut Vec<PathBuf>,
    errors: &RefCell<Vec<Diagnostic>>,
) -> Option<Resolved> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Some(r) = referrer {
        if let Some(at) = stack.iter().position(|p| *p == canonical) {
            let cycle: Vec<String> = stack[at..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect();
            errors.borrow_mut().push(
                Diagnostic::error(format!("`extends` cycle: {}", cycle.join(" -> ")))
                    .at(r.span, "extends a file that extends this one"),
            );
            return None;
        }
        if stack.len() >= MAX_EXTENDS_DEPTH {
            errors.borrow_mut().push(
                Diagnostic::error(format!(
                    "`extends` chain longer than {MAX_EXTENDS_DEPTH} files"
                ))
                .at(r.span, "here"),
            );
            return None;
        }
    }
    let file = match read_source(path, sources, referrer) {
        Ok(id) => id,
        Err(d) => {
            errors.borrow_mut().push(d);
            return None;
        }
    };
    let text = sources.get(file).text().to_string();
    let ast = match parse::parse(&text, file) {
        Ok(ast) => ast,
        Err(ds) => {
            errors.borrow_mut().extend(ds);
            return None;
        }
    };
    stack.push(canonical);
    let parent = ast.extends.as_ref().and_then(|ext| {
        let base = path.parent().unwrap_or(Path::new("."));
        resolve_file(&base.join(&ext.node), Some(ext), sources, stack, errors)
    });
    stack.pop();
    if ast.extends.is_some() && parent.is_none() {
        return None;
    }
    let name = ast.name.clone();
    let (settings, axes) = collect(ast.body, errors);
    Some(match parent {
        None => Resolved {
            name,
            settings,
            axes,
        },
        Some(mut p) => {
            for (key, setting) in settings {
                set(&mut p.settings, key, setting);
            }
            merge_axes(&mut p.axes, axes);
            Resolved {
                name,
                settings: p.settings,
                axes: p.axes,
            }
        }
    })
}

/// Sets `key`, dropping earlier parameter overrides (`key.param`) it supersedes.
fn set(settings: &mut Settings, key: String, setting: Setting) {
    let prefix = format!("{key}.");
    settings.retain(|k, _| !k.starts_with(&prefix));
    settings.insert(key, setting);
}

fn merge_axes(parent: &mut Vec<Axis>, child: Vec<Axis>) {
    for axis in child {
        let same = parent.iter().position(|a| match (&a.key, &axis.key) {
            (Some(x), Some(y)) => x.node == y.node,
            (None, None) => true,
            _ => false,
        });
        match same {
            Some(i) => parent[i] = axis,
            None => parent.push(axis),
        }
    }
}

/// Top-level statements of one file: its settings and its sweep axes.
fn collect(body: Vec<Statement>, errors: &RefCell<Vec<Diagnostic>>) -> (Settings, Vec<Axis>) {
    let mut settings = Settings::new();
    let mut axes = Vec::new();
    let mut sweep_seen: Option<Span> = None;
    let mut plain = Vec::new();
    for statement in body {
        match statement {
            Statement::Sweep(sweep) => {
                if parse::is_lone_variant(&sweep) {
                    plain.push(Statement::Sweep(sweep));
                    continue;
                }
                if let Some(first) = sweep_seen {
                    errors.borrow_mut().push(
                        Diagnostic::error("a pipeline has at most one `sweep` block")
                            .at(sweep.span, "second sweep")
                            .also(first, "first sweep")
                            .hint("put every axis in one `sweep` block"),
                    );
                    continue;
                }
                sweep_seen = Some(sweep.span);
                axes = sweep_axes(sweep, errors);
            }
            other => plain.push(other),
        }
    }
    let mut first_set: IndexMap<String, Span> = IndexMap::new();
    for a in parse::flatten(plain, &[], errors) {
        let key = a.dotted();
        if let Some(first) = first_set.get(&key) {
            errors.borrow_mut().push(
                Diagnostic::error(format!("`{key}` is set twice"))
                    .at(a.path_span, "set again here")
                    .also(*first, "first set here"),
            );
            continue;
        }
        first_set.insert(key.clone(), a.path_span);
        if !schema::is_known_path(&key) {
            errors.borrow_mut().push(unknown_setting(&key, a.path_span));
            continue;
        }
        set(
            &mut settings,
            key,
            Setting {
                value: a.value,
                key_span: a.path_span,
            },
        );
    }
    (settings, axes)
}

pub(crate) fn unknown_setting(key: &str, span: Span) -> Diagnostic {
    let d = Diagnostic::error(format!("unknown setting `{key}`")).at(span, "not a setting");
    match did_you_mean(key, schema::SETTINGS.iter().map(|s| s.key)) {
        Some(s) => d.hint(format!("did you mean `{s}`?")),
        None => d.hint(format!(
            "settings are: {}",
            schema::SETTINGS
                .iter()
                .map(|s| s.key)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn sweep_axes(sweep: SweepAst, errors: &RefCell<Vec<Diagnostic>>) -> Vec<Axis> {
    let mut axes = Vec::new();
    let mut seen_keys: IndexMap<String, Span> = IndexMap::new();
    for axis in sweep.axes {
        match axis {
            SweepAxisAst::Values(a) => {
                let key = a.dotted();
                if !schema::is_known_path(&key) {
                    errors
                        .borrow_mut()
                        .push(unknown_setting(&key, a.path_span).note(
                            "a sweep key is the dotted path of a setting, like `train.regularizer`",
                        ));
                    continue;
                }
                if let Some(first) = seen_keys.insert(key.clone(), a.path_span) {
                    errors.borrow_mut().push(
                        Diagnostic::error(format!("sweep axis `{key}` is given twice"))
                            .at(a.path_span, "again here")
                            .also(first, "first here"),
                    );
                    continue;
                }
                let items = match a.value.kind {
                    ValueKind::List(items) => items,
                    _ => {
                        errors.borrow_mut().push(
                            Diagnostic::error(format!(
                                "a sweep axis takes a list of values, found {}",
                                a.value.describe()
                            ))
                            .at(a.value.span, "not a list")
                            .hint(format!(
                                "write `{key} = [a, b]`, or set it outside the sweep"
                            )),
                        );
                        continue;
                    }
                };
                if items.is_empty() {
                    errors.borrow_mut().push(
                        Diagnostic::error(format!("sweep axis `{key}` is empty"))
                            .at(a.value.span, "no values")
                            .hint("an empty axis makes an empty grid; give at least one value"),
                    );
                    continue;
                }
                let entries = items
                    .into_iter()
                    .map(|item| {
                        let (value, label) = match item.kind {
                            ValueKind::Labeled(inner, label) => (*inner, label),
                            _ => {
                                let label = Spanned::new(render(&item), item.span);
                                (item, label)
                            }
                        };
                        AxisEntry {
                            label,
                            overrides: vec![(
                                key.clone(),
                                Setting {
                                    value,
                                    key_span: a.path_span,
                                },
                            )],
                        }
                    })
                    .collect();
                axes.push(Axis {
                    key: Some(Spanned::new(key, a.path_span)),
                    entries,
                });
            }
            SweepAxisAst::Variants(variants) => {
                let entries = variants
                    .into_iter()
                    .map(|v| {
                        let mut overrides: Vec<(String, Setting)> = Vec::new();
                        for a in v.overrides {
                            let key = a.dotted();
                            if !schema::is_known_path(&key) {
                                errors.borrow_mut().push(unknown_setting(&key, a.path_span));
                                continue;
                            }
                            if let Some((_, first)) = overrides.iter().find(|(k, _)| *k == key) {
                                errors.borrow_mut().push(
                                    Diagnostic::error(format!(
                                        "`{key}` is set twice in one variant"
                                    ))
                                    .at(a.path_span, "set again here")
                                    .also(first.key_span, "first set here"),
                                );
                                continue;
                            }
                            overrides.push((
                                key,
                                Setting {
                                    value: a.value,
                                    key_span: a.path_span,
                                },
                            ));
                        }
                        AxisEntry {
                            label: v.label,
                            overrides,
                        }
                    })
                    .collect();
                axes.push(Axis { key: None, entries });
            }
        }
    }
    for axis in &axes {
        let mut labels: IndexMap<&str, Span> = IndexMap::new();
        for e in &axis.entries {
            if let Some(first) = labels.insert(&e.label.node, e.label.span) {
                errors.borrow_mut().push(
                    Diagnostic::error(format!(
                        "two values of sweep axis `{}` have the label \"{}\"",
                        axis.name(),
                        e.label.node
                    ))
                    .at(e.label.span, "same label again")
                    .also(first, "first here")
                    .hint("labels name the variants in the results; make them distinct"),
                );
            }
        }
    }
    axes
}

/// Expands the grid. A list-valued `seed` outside the sweep is one more axis.
pub fn expand(resolved: &Resolved) -> Result<Vec<Variant>, Diagnostic> {
    let mut axes = resolved.axes.clone();
    if let Some(seed) = resolved.settings.get("seed") {
        if let ValueKind::List(items) = &seed.value.kind {
            if !axes.iter().any(Axis::is_seed) {
                if items.is_empty() {
                    return Err(Diagnostic::error("`seed` is an empty list")
                        .at(seed.value.span, "no seeds")
                        .hint("give at least one seed"));
                }
                axes.push(Axis {
                    key: Some(Spanned::new("seed".into(), seed.key_span)),
                    entries: items
                        .iter()
                        .map(|v| AxisEntry {
                            label: Spanned::new(render(v), v.span),
                            overrides: vec![(
                                "seed".into(),
                                Setting {
                                    value: v.clone(),
                                    key_span: seed.key_span,
                                },
                            )],
                        })
                        .collect(),
                });
            }
        }
    }
    let total = axes
        .iter()
        .try_fold(1usize, |acc, a| acc.checked_mul(a.entries.len()))
        .filter(|n| *n <= MAX_VARIANTS);
    let Some(total) = total else {
        let span = axes
            .iter()
            .find_map(|a| a.key.as_ref().map(|k| k.span))
            .unwrap_or(resolved.name.span);
        return Err(
            Diagnostic::error(format!("the sweep has more than {MAX_VARIANTS} variants"))
                .at(span, "this grid is too large")
                .note(format!(
                    "axes: {}",
                    axes.iter()
                        .map(|a| format!("{} ({} values)", a.name(), a.entries.len()))
                        .collect::<Vec<_>>()
                        .join(" x ")
                )),
        );
    };
    let mut variants = Vec::with_capacity(total);
    let mut index = vec![0usize; axes.len()];
    for _ in 0..total {
        let mut settings = resolved.settings.clone();
        let mut labels = Vec::new();
        let mut axis_values = Vec::new();
        for (axis, &i) in axes.iter().zip(&index) {
            let entry = &axis.entries[i];
            for (key, setting) in &entry.overrides {
                set(&mut settings, key.clone(), setting.clone());
            }
            if !axis.is_seed() {
                labels.push(entry.label.node.clone());
                axis_values.push((axis.name().to_string(), entry.label.node.clone()));
            }
        }
        let label = if labels.is_empty() {
            resolved.name.node.clone()
        } else {
            labels.join(", ")
        };
        variants.push(Variant {
            label,
            axes: axis_values,
            settings,
        });
        // Odometer: the last axis turns fastest.
        for d in (0..axes.len()).rev() {
            index[d] += 1;
            if index[d] < axes[d].entries.len() {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(variants)
}

/// A value written back in canonical form (derived sweep labels, messages).
pub fn render(value: &Value) -> String {
    match &value.kind {
        ValueKind::Number(_, text) => text.clone(),
        ValueKind::Str(s) => s.clone(),
        ValueKind::Word(w) => w.clone(),
        ValueKind::Call { name, args } => format!(
            "{}({})",
            name.node,
            args.iter()
                .map(|(k, v)| format!("{} = {}", k.node, render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ValueKind::List(items) => format!(
            "[{}]",
            items.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        ValueKind::Sum(terms) => terms.iter().map(render).collect::<Vec<_>>().join(" + "),
        ValueKind::Labeled(inner, _) => render(inner),
    }
}
