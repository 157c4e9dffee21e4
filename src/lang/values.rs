//! Typed readers for values: each returns `None` after recording a located
//! error, so the checker can go on and report every mistake of a file at once.

use super::ast::{Spanned, Value, ValueKind};
use super::resolve::{render, Setting};
use crate::diagnostics::{did_you_mean, Diagnostic, Span};

/// Allowed range of a number.
#[derive(Clone, Copy)]
pub enum Range {
    /// `> 0`
    Positive,
    /// `>= 0`
    NonNegative,
    /// `[0, 1)`
    UnitOpen,
    /// `(0, 1]`
    UnitPositive,
}

impl Range {
    fn admits(self, x: f64) -> bool {
        match self {
            Range::Positive => x > 0.0,
            Range::NonNegative => x >= 0.0,
            Range::UnitOpen => (0.0..1.0).contains(&x),
            Range::UnitPositive => x > 0.0 && x <= 1.0,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Range::Positive => "greater than 0",
            Range::NonNegative => "0 or more",
            Range::UnitOpen => "at least 0 and below 1",
            Range::UnitPositive => "above 0 and at most 1",
        }
    }
}

/// Collects the errors of one variant.
#[derive(Default)]
pub struct Reader {
    pub errors: Vec<Diagnostic>,
}

/// A call as written, with dotted-path parameter overrides folded in.
pub struct Call<'v> {
    pub name: &'v str,
    pub span: Span,
    /// Parameter name, where the name was written, value.
    args: Vec<(&'v str, Span, &'v Value)>,
}

impl<'v> Call<'v> {
    pub fn arg(&self, key: &str) -> Option<&'v Value> {
        self.args
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }
    /// Where the parameter was written, or the call itself when defaulted.
    pub fn arg_span(&self, key: &str) -> Span {
        self.args
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, ks, v)| {
                if ks.file == v.span.file {
                    ks.to(v.span)
                } else {
                    v.span
                }
            })
            .unwrap_or(self.span)
    }
}

impl Reader {
    pub fn error(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }

    /// Strips a misplaced `as "label"` (reporting it) and returns the value.
    pub fn plain<'v>(&mut self, v: &'v Value) -> &'v Value {
        match &v.kind {
            ValueKind::Labeled(inner, label) => {
                self.error(
                    Diagnostic::error("a label (`as \"...\"`) only names a value of a sweep axis")
                        .at(label.span, "label here")
                        .hint("remove the label, or move this value into a `sweep` list"),
                );
                self.plain(inner)
            }
            _ => v,
        }
    }

    fn wrong_type(&mut self, v: &Value, what: &str, expected: &str) {
        self.error(
            Diagnostic::error(format!("{what} must be {expected}, found {}", v.describe()))
                .at(v.span, format!("expected {expected}")),
        );
    }

    /// A bare word among `choices`.
    pub fn word<'v>(&mut self, v: &'v Value, what: &str, choices: &[&str]) -> Option<&'v str> {
        let v = self.plain(v);
        match &v.kind {
            ValueKind::Word(w) if choices.contains(&w.as_str()) => Some(w),
            ValueKind::Word(w) | ValueKind::Str(w) => {
                let mut d = Diagnostic::error(format!("unknown choice `{w}` for {what}"))
                    .at(v.span, format!("expected one of: {}", choices.join(", ")));
                if let Some(s) = did_you_mean(w, choices.iter().copied()) {
                    d = d.hint(format!("did you mean `{s}`?"));
                }
                self.error(d);
                None
            }
            _ => {
                self.wrong_type(v, what, &format!("one of: {}", choices.join(", ")));
                None
            }
        }
    }

    pub fn boolean(&mut self, v: &Value, what: &str) -> Option<bool> {
        self.word(v, what, &["true", "false"]).map(|w| w == "true")
    }

    fn number(&mut self, v: &Value, what: &str, expected: &str) -> Option<(f64, Span)> {
        let v = self.plain(v);
        match &v.kind {
            ValueKind::Number(x, text) if !x.is_finite() => {
                self.error(
                    Diagnostic::error(format!(
                        "{what}: the number `{}` is out of range",
                        clip(text)
                    ))
                    .at(v.span, "too large"),
                );
                None
            }
            ValueKind::Number(x, _) => Some((*x, v.span)),
            _ => {
                self.wrong_type(v, what, expected);
                None
            }
        }
    }

    /// A finite number in `range`.
    pub fn float(&mut self, v: &Value, what: &str, range: Range) -> Option<f64> {
        let (x, span) = self.number(v, what, "a number")?;
        if !range.admits(x) {
            self.error(
                Diagnostic::error(format!(
                    "{what} must be {}, found {}",
                    range.describe(),
                    render(v)
                ))
                .at(span, "out of range"),
            );
            return None;
        }
        Some(x)
    }

    /// A whole number in `min..=max`.
    pub fn int(&mut self, v: &Value, what: &str, min: u64, max: u64) -> Option<u64> {
        let (x, span) = self.number(v, what, "a whole number")?;
        if x.fract() != 0.0 {
            self.error(
                Diagnostic::error(format!(
                    "{what} must be a whole number, found {}",
                    render(v)
                ))
                .at(span, "not a whole number"),
            );
            return None;
        }
        if x < min as f64 || x > max as f64 {
            let bound = if x < min as f64 {
                format!("at least {min}")
            } else {
                format!("at most {max}")
            };
            self.error(
                Diagnostic::error(format!("{what} must be {bound}, found {}", render(v)))
                    .at(span, "out of range"),
            );
            return None;
        }
        Some(x as u64)
    }

    /// A list (a single item is accepted as a list of one where `lenient`).
    pub fn list<'v>(&mut self, v: &'v Value, what: &str) -> Option<&'v [Value]> {
        let v = self.plain(v);
        match &v.kind {
            ValueKind::List(items) => Some(items),
            _ => {
                self.wrong_type(v, what, "a list `[...]`");
                None
            }
        }
    }

    /// A non-empty list of distinct words among `choices`.
    pub fn word_set<T: Copy + PartialEq>(
        &mut self,
        v: &Value,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<Vec<T>> {
        let items = self.list(v, what)?;
        if items.is_empty() {
            self.error(Diagnostic::error(format!("{what} is empty")).at(v.span, "empty list"));
            return None;
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let Some(w) = self.word(item, what, &names) else {
                ok = false;
                continue;
            };
            let t = choices.iter().find(|(n, _)| *n == w).map(|(_, t)| *t)?;
            if out.contains(&t) {
                let first = items[..i]
                    .iter()
                    .find(|x| matches!(&x.kind, ValueKind::Word(y) if y == w));
                let mut d = Diagnostic::error(format!("`{w}` is listed twice in {what}"))
                    .at(item.span, "again here");
                if let Some(f) = first {
                    d = d.also(f.span, "first here");
                }
                self.error(d);
                ok = false;
                continue;
            }
            out.push(t);
        }
        ok.then_some(out)
    }

    /// A call (or a bare word meaning the call with default parameters) named in
    /// `signatures`, whose parameters are all known. `overrides` are dotted-path
    /// parameter settings (`train.optimizer.lr = ...`), which win over the call's.
    pub fn call<'v>(
        &mut self,
        v: &'v Value,
        what: &str,
        signatures: &[(&str, &[&str])],
        overrides: &[(&'v str, &'v Setting)],
    ) -> Option<Call<'v>> {
        let v = self.plain(v);
        let names: Vec<&str> = signatures.iter().map(|(n, _)| *n).collect();
        type Written<'a> = Vec<(&'a Spanned<String>, &'a Value)>;
        let (name, name_span, written): (&str, Span, Written<'v>) = match &v.kind {
            ValueKind::Word(w) => (w, v.span, Vec::new()),
            ValueKind::Call { name, args } => (
                &name.node,
                name.span,
                args.iter().map(|(k, v)| (k, v)).collect(),
            ),
            _ => {
                self.wrong_type(v, what, &format!("one of: {}", names.join(", ")));
                return None;
            }
        };
        let Some((_, params)) = signatures.iter().find(|(n, _)| *n == name) else {
            let mut d = Diagnostic::error(format!("unknown choice `{name}` for {what}"))
                .at(name_span, format!("expected one of: {}", names.join(", ")));
            if let Some(s) = did_you_mean(name, names.iter().copied()) {
                d = d.hint(format!("did you mean `{s}`?"));
            }
            self.error(d);
            return None;
        };
        let mut args: Vec<(&'v str, Span, &'v Value)> = Vec::new();
        let mut ok = true; // false once a parameter error was reported
        for (key, value) in written {
            if !params.contains(&key.node.as_str()) {
                self.error(unknown_param(name, &key.node, key.span, params));
                ok = false;
            } else if let Some((_, first, _)) = args.iter().find(|(k, _, _)| *k == key.node) {
                self.error(
                    Diagnostic::error(format!(
                        "parameter `{}` of `{name}` is given twice",
                        key.node
                    ))
                    .at(key.span, "again here")
                    .also(*first, "first here"),
                );
                ok = false;
            } else {
                args.push((&key.node, key.span, value));
            }
        }
        for (param, setting) in overrides {
            if !params.contains(param) {
                self.error(unknown_param(name, param, setting.key_span, params));
                ok = false;
                continue;
            }
            args.retain(|(k, _, _)| k != param);
            // The dotted key (`train.optimizer.lr`) stands in for the parameter name.
            args.push((param, setting.key_span, &setting.value));
        }
        // Unknown parameters are already reported; still check the known ones.
        let _ = ok;
        Some(Call {
            name,
            span: v.span,
            args,
        })
    }
}

fn unknown_param(call: &str, key: &str, span: Span, params: &[&str]) -> Diagnostic {
    let mut d = Diagnostic::error(format!("unknown parameter `{key}` of `{call}`")).at(
        span,
        if params.is_empty() {
            format!("`{call}` takes no parameters")
        } else {
            format!("parameters are: {}", params.join(", "))
        },
    );
    if let Some(s) = did_you_mean(key, params.iter().copied()) {
        d = d.hint(format!("did you mean `{s}`?"));
    }
    d
}

fn clip(text: &str) -> String {
    if text.len() > 24 {
        format!("{}...", &text[..20])
    } else {
        text.to_string()
    }
}
