//! The syntax tree of one `.pipe` file. Every node keeps its [`Span`], so that
//! errors found by later stages still point at the text that caused them.

use crate::diagnostics::Span;

/// A name with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

/// One parsed file: `pipeline "name" [extends "parent.pipe"] { ... }`.
#[derive(Debug, Clone)]
pub struct PipelineAst {
    pub name: Spanned<String>,
    pub extends: Option<Spanned<String>>,
    pub body: Vec<Statement>,
}

#[derive(Debug, Clone)]
pub enum Statement {
    /// `a.b.c = value`
    Assign(Assignment),
    /// `model { ... }`: sugar for assignments under the `model.` prefix.
    Section {
        name: Spanned<String>,
        body: Vec<Statement>,
    },
    /// `sweep { axis = [...]; variant "x" { ... } }`
    Sweep(SweepAst),
}

#[derive(Debug, Clone)]
pub struct Assignment {
    /// The dotted path, one element per segment.
    pub path: Vec<Spanned<String>>,
    pub path_span: Span,
    pub value: Value,
}

impl Assignment {
    pub fn dotted(&self) -> String {
        self.path
            .iter()
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

#[derive(Debug, Clone)]
pub struct SweepAst {
    pub span: Span,
    /// Axes in the order written: a `key = [values]` line, or the position of the
    /// first `variant` line (all variant lines together form one axis).
    pub axes: Vec<SweepAxisAst>,
}

#[derive(Debug, Clone)]
pub enum SweepAxisAst {
    Values(Assignment),
    Variants(Vec<VariantAst>),
}

#[derive(Debug, Clone)]
pub struct VariantAst {
    pub label: Spanned<String>,
    pub span: Span,
    pub overrides: Vec<Assignment>,
}

/// A value as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// A number with its source text (kept for integer checks and messages).
    Number(f64, String),
    Str(String),
    /// A bare word: a choice (`frozen`), a task name, `true`/`false`, or a call
    /// with default parameters (`none`, `cosine`).
    Word(String),
    Call {
        name: Spanned<String>,
        args: Vec<(Spanned<String>, Value)>,
    },
    List(Vec<Value>),
    /// `a + b + c`
    Sum(Vec<Value>),
    /// `value as "label"`
    Labeled(Box<Value>, Spanned<String>),
}

impl Value {
    /// The value with any `as "label"` removed.
    pub fn unlabeled(&self) -> &Value {
        match &self.kind {
            ValueKind::Labeled(inner, _) => inner.unlabeled(),
            _ => self,
        }
    }

    /// A short description of what was written, for "expected X, found Y".
    pub fn describe(&self) -> String {
        match &self.kind {
            ValueKind::Number(_, text) => format!("the number `{text}`"),
            ValueKind::Str(s) => format!("the string \"{s}\""),
            ValueKind::Word(w) => format!("`{w}`"),
            ValueKind::Call { name, .. } => format!("`{}(...)`", name.node),
            ValueKind::List(_) => "a list".to_string(),
            ValueKind::Sum(_) => "a `+` combination".to_string(),
            ValueKind::Labeled(inner, _) => inner.describe(),
        }
    }
}
