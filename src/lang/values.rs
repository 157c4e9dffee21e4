//! Typed readers for values: each returns `None` after recording a located
//! error, so the checker can go on and report every mistake of a file at once.
//! Calls are read against their signature tables (`call.rs`).

mod call;

pub use call::Args;

use super::ast::{Value, ValueKind};
use super::resolve::render;
use super::schema::{Choice, Range};
use crate::diagnostics::{did_you_mean, Diagnostic, Span};

/// Collects the errors of one variant.
#[derive(Default)]
pub struct Reader {
    pub errors: Vec<Diagnostic>,
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

    /// A bare word among `choices`; returns the choice it matched.
    pub fn word<'c>(&mut self, v: &Value, what: &str, choices: &[&'c str]) -> Option<&'c str> {
        let v = self.plain(v);
        match &v.kind {
            ValueKind::Word(w) if choices.contains(&w.as_str()) => {
                choices.iter().copied().find(|c| c == w)
            }
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

    /// A word of the choice `T`, converted to its value by `T`'s table.
    pub fn choice<T: Choice>(&mut self, v: &Value, what: &str) -> Option<T> {
        self.word(v, what, T::WORDS).and_then(T::from_word)
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

    /// A non-empty list of distinct words of the choice `T`.
    pub fn word_set<T: Choice>(&mut self, v: &Value, what: &str) -> Option<Vec<T>> {
        let items = self.list(v, what)?;
        if items.is_empty() {
            self.error(Diagnostic::error(format!("{what} is empty")).at(v.span, "empty list"));
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let Some(w) = self.word(item, what, T::WORDS) else {
                ok = false;
                continue;
            };
            let t = T::from_word(w)?;
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
}

fn clip(text: &str) -> String {
    if text.len() > 24 {
        format!("{}...", &text[..20])
    } else {
        text.to_string()
    }
}
