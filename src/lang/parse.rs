//! Stage 1: `.pipe` text to [`PipelineAst`], with located syntax errors.
//!
//! Hostile input is stopped before pest sees it: files over [`MAX_FILE_BYTES`],
//! invalid UTF-8, control characters and nesting deeper than [`MAX_NESTING`] each get
//! one located error. That keeps the recursive descent (pest's and ours) bounded.

use super::ast::*;
use crate::diagnostics::{Diagnostic, FileId, Span};
use pest::iterators::Pair;
use pest::Parser as _;
use std::cell::RefCell;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/pipe.pest"]
struct PipeParser;

/// A pipeline file is a page or two; anything this large is a mistake.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Brackets, parentheses and braces nested deeper than this are rejected.
pub const MAX_NESTING: usize = 32;

/// Bytes that cannot be a pipeline: the text to quote (decoded lossily) and what
/// is wrong where. It becomes a [`Diagnostic`] once that text is in the source map.
#[derive(Debug)]
pub struct Undecodable {
    /// The text to add to the source map, so the diagnostic can quote it.
    pub shown: String,
    span: (usize, usize),
    message: String,
}

impl Undecodable {
    fn new(shown: String, at: usize, message: String) -> Self {
        let end = (at + 1).min(shown.len()).max(at);
        Undecodable {
            shown,
            span: (at, end),
            message,
        }
    }

    /// The located diagnostic, with `file` the id under which `shown` was added.
    pub fn diagnostic(&self, file: FileId) -> Diagnostic {
        Diagnostic::error(self.message.clone())
            .at(Span::new(file, self.span.0, self.span.1), "here")
    }
}

/// Decodes raw file bytes, rejecting what the language cannot contain.
pub fn decode(bytes: &[u8]) -> Result<String, Undecodable> {
    if bytes.len() > MAX_FILE_BYTES {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned();
        return Err(Undecodable::new(
            shown,
            0,
            format!(
                "the file is {} bytes; a pipeline may have at most {MAX_FILE_BYTES}",
                bytes.len()
            ),
        ));
    }
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Ok(text),
        Err(e) => Err(Undecodable::new(
            String::from_utf8_lossy(bytes).into_owned(),
            e.utf8_error().valid_up_to(),
            "the file is not valid UTF-8".to_string(),
        )),
    }
}

/// Parses one file's text. `file` is its id in the source map (for spans).
pub fn parse(text: &str, file: FileId) -> Result<PipelineAst, Vec<Diagnostic>> {
    precheck(text, file).map_err(|d| vec![d])?;
    let mut pairs =
        PipeParser::parse(Rule::file, text).map_err(|e| vec![syntax_error(e, text, file)])?;
    let file_pair = pairs.next().expect("the file rule always yields one pair");
    let pipeline = file_pair
        .into_inner()
        .find(|p| p.as_rule() == Rule::pipeline)
        .expect("the grammar requires a pipeline");
    let builder = Builder {
        file,
        errors: RefCell::new(Vec::new()),
    };
    let ast = builder.pipeline(pipeline);
    let errors = builder.errors.into_inner();
    if errors.is_empty() {
        Ok(ast)
    } else {
        Err(errors)
    }
}

fn precheck(text: &str, file: FileId) -> Result<(), Diagnostic> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if c.is_control() && !matches!(c, '\n' | '\t' | '\r') {
            return Err(Diagnostic::error(format!(
                "unexpected control character U+{:04X}",
                c as u32
            ))
            .at(
                Span::new(file, i, i + c.len_utf8()),
                "not allowed in a pipeline",
            ));
        }
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') | (false, '\n') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '#' => in_comment = true,
            '"' => in_string = true,
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::error(format!(
                        "nesting deeper than {MAX_NESTING} levels"
                    ))
                    .at(Span::new(file, i, i + 1), "too deep")
                    .hint("pipelines never need this much nesting; check the brackets"));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn rule_name(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of file",
        Rule::file | Rule::pipeline => "`pipeline \"name\" { ... }`",
        Rule::extends => "`extends \"file.pipe\"`",
        Rule::block => "`{`",
        Rule::sweep => "`sweep { ... }`",
        Rule::variant => "`variant \"label\" { ... }`",
        Rule::section => "a section `name { ... }`",
        Rule::assignment => "a setting `key = value`",
        Rule::path | Rule::key => "a setting name",
        Rule::value | Rule::sum => "a value",
        Rule::label => "`as \"label\"`",
        Rule::call => "a call `name(key = value)`",
        Rule::argument => "a parameter `key = value`",
        Rule::list => "a list `[...]`",
        Rule::word | Rule::ident => "a name",
        Rule::number => "a number",
        Rule::string | Rule::string_body | Rule::escape => "a string",
        Rule::newline | Rule::gap | Rule::sep => "a new line or `;`",
        _ => "more input",
    }
    .to_string()
}

fn syntax_error(error: pest::error::Error<Rule>, text: &str, file: FileId) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let found = found_token(text, pos);
    let message = match &error.variant {
        // After a complete value only a `+`, a label or the end of the setting may follow.
        ErrorVariant::ParsingError { positives, .. } if positives.contains(&Rule::label) => {
            format!(
                "syntax error: unexpected {} after a value; expected a new line or `;`",
                found.1
            )
        }
        ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut names: Vec<String> = positives.iter().map(rule_name).collect();
            names.dedup();
            names.sort();
            names.dedup();
            let expected = match names.len() {
                1 => names[0].clone(),
                _ => format!(
                    "{} or {}",
                    names[..names.len() - 1].join(", "),
                    names[names.len() - 1]
                ),
            };
            format!("syntax error: expected {expected}, found {}", found.1)
        }
        ErrorVariant::ParsingError { .. } => format!("syntax error: unexpected {}", found.1),
        ErrorVariant::CustomError { message } => format!("syntax error: {message}"),
    };
    let mut d = Diagnostic::error(message).at(Span::new(file, pos, pos + found.0), "here");
    if text[pos..].starts_with('=') || text[pos..].starts_with(':') {
        d = d.hint("settings are written `key = value`, one per line or separated by `;`");
    }
    if found.1.contains("'") && text[pos..].starts_with('\'') {
        d = d.hint("strings use double quotes: \"...\"");
    }
    d
}

/// Byte length and a description of the token at `pos`.
fn found_token(text: &str, pos: usize) -> (usize, String) {
    let rest = &text[pos.min(text.len())..];
    match rest.chars().next() {
        None => (0, "end of file".to_string()),
        Some('\n') => (1, "end of line".to_string()),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let len = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '-' || ch == '.'))
                .unwrap_or(rest.len());
            let word: String = rest[..len].chars().take(40).collect();
            (len, format!("`{word}`"))
        }
        Some(c) => (c.len_utf8(), format!("`{c}`")),
    }
}

/// A `sweep` or `variant` where only settings may stand.
/// Whether a sweep is the wrapper the parser puts around a single `variant` line.
pub(crate) fn is_lone_variant(sweep: &SweepAst) -> bool {
    matches!(sweep.axes.as_slice(), [SweepAxisAst::Variants(vs)] if vs.len() == 1 && vs[0].span == sweep.span)
}

fn misplaced(sweep: &SweepAst) -> Diagnostic {
    match sweep.axes.as_slice() {
        _ if is_lone_variant(sweep) => {
            Diagnostic::error("a `variant` line belongs inside a `sweep` block")
                .at(sweep.span, "outside a sweep")
                .hint(
                    "write `sweep { variant \"label\" { ... } }` at the top level of the pipeline",
                )
        }
        _ => Diagnostic::error("a `sweep` block belongs at the top level of the pipeline")
            .at(sweep.span, "misplaced sweep"),
    }
}

/// Turns pest pairs into the AST. The grammar guarantees the shapes matched here;
/// misplaced constructs the grammar admits are collected in `errors`.
struct Builder {
    file: FileId,
    errors: RefCell<Vec<Diagnostic>>,
}

impl Builder {
    fn error(&self, d: Diagnostic) {
        self.errors.borrow_mut().push(d);
    }

    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn pipeline(&self, pair: Pair<Rule>) -> PipelineAst {
        let mut name = None;
        let mut extends = None;
        let mut body = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::string => name = Some(self.string(p)),
                Rule::extends => extends = p.into_inner().next().map(|s| self.string(s)),
                Rule::block => body = self.block(p),
                _ => {}
            }
        }
        PipelineAst {
            name: name.expect("grammar: pipeline has a name"),
            extends,
            body,
        }
    }

    fn block(&self, pair: Pair<Rule>) -> Vec<Statement> {
        pair.into_inner().map(|p| self.statement(p)).collect()
    }

    fn statement(&self, pair: Pair<Rule>) -> Statement {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::assignment => Statement::Assign(self.assignment(pair)),
            Rule::section => {
                let mut inner = pair.into_inner();
                let key = inner.next().expect("grammar: section name");
                let name = Spanned::new(key.as_str().to_string(), self.span(&key));
                let body = self.block(inner.next().expect("grammar: section block"));
                Statement::Section { name, body }
            }
            Rule::sweep => {
                let block = pair.into_inner().next().expect("grammar: sweep block");
                let mut axes: Vec<SweepAxisAst> = Vec::new();
                for p in block.into_inner() {
                    match self.statement(p) {
                        Statement::Assign(a) => axes.push(SweepAxisAst::Values(a)),
                        // `train { regularizer = [...] }` inside a sweep: axes under a prefix.
                        section @ Statement::Section { .. } => axes.extend(
                            flatten(vec![section], &[], &self.errors)
                                .into_iter()
                                .map(SweepAxisAst::Values),
                        ),
                        Statement::Sweep(inner) => {
                            if is_lone_variant(&inner) {
                                if let Some(SweepAxisAst::Variants(vs)) =
                                    inner.axes.into_iter().next()
                                {
                                    // A `variant` line: all of them form one axis.
                                    let v = vs.into_iter().next().expect("a lone variant");
                                    match axes.iter_mut().find_map(|a| match a {
                                        SweepAxisAst::Variants(vs) => Some(vs),
                                        _ => None,
                                    }) {
                                        Some(vs) => vs.push(v),
                                        None => axes.push(SweepAxisAst::Variants(vec![v])),
                                    }
                                }
                                continue;
                            }
                            self.error(
                                Diagnostic::error("a `sweep` cannot contain another `sweep`")
                                    .at(inner.span, "nested sweep")
                                    .hint("put every axis in one `sweep` block"),
                            );
                        }
                    }
                }
                Statement::Sweep(SweepAst { span, axes })
            }
            Rule::variant => {
                // A lone variant: wrapped so the enclosing sweep can collect it (its span
                // equals the wrapper's). Outside a sweep, `flatten`/the resolver reject it.
                let v = self.variant(pair);
                Statement::Sweep(SweepAst {
                    span,
                    axes: vec![SweepAxisAst::Variants(vec![v])],
                })
            }
            other => unreachable!("grammar: unexpected statement {other:?}"),
        }
    }

    fn variant(&self, pair: Pair<Rule>) -> VariantAst {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let label = self.string(inner.next().expect("grammar: variant label"));
        let block = inner.next().expect("grammar: variant block");
        let overrides = flatten(self.block(block), &[], &self.errors);
        VariantAst {
            label,
            span,
            overrides,
        }
    }

    fn assignment(&self, pair: Pair<Rule>) -> Assignment {
        let mut inner = pair.into_inner();
        let path_pair = inner.next().expect("grammar: assignment path");
        let path_span = self.span(&path_pair);
        let path = path_pair
            .into_inner()
            .map(|k| Spanned::new(k.as_str().to_string(), self.span(&k)))
            .collect();
        let value = self.value(inner.next().expect("grammar: assignment value"));
        Assignment {
            path,
            path_span,
            value,
        }
    }

    fn value(&self, pair: Pair<Rule>) -> Value {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::value => {
                let mut inner = pair.into_inner();
                let sum = self.value(inner.next().expect("grammar: value body"));
                match inner.next() {
                    Some(label) => {
                        let s = label.into_inner().next().expect("grammar: label string");
                        Value {
                            kind: ValueKind::Labeled(Box::new(sum), self.string(s)),
                            span,
                        }
                    }
                    None => sum,
                }
            }
            Rule::sum => {
                let mut terms: Vec<Value> = pair.into_inner().map(|p| self.value(p)).collect();
                if terms.len() == 1 {
                    terms.pop().expect("one term")
                } else {
                    Value {
                        kind: ValueKind::Sum(terms),
                        span,
                    }
                }
            }
            Rule::list => Value {
                kind: ValueKind::List(pair.into_inner().map(|p| self.value(p)).collect()),
                span,
            },
            Rule::call => {
                let mut inner = pair.into_inner();
                let name_pair = inner.next().expect("grammar: call name");
                let name = Spanned::new(name_pair.as_str().to_string(), self.span(&name_pair));
                let args = inner
                    .map(|arg| {
                        let mut parts = arg.into_inner();
                        let k = parts.next().expect("grammar: argument key");
                        let key = Spanned::new(k.as_str().to_string(), self.span(&k));
                        let v = self.value(parts.next().expect("grammar: argument value"));
                        (key, v)
                    })
                    .collect();
                Value {
                    kind: ValueKind::Call { name, args },
                    span,
                }
            }
            Rule::number => {
                let text = pair.as_str();
                // The grammar only admits decimal literals, which always parse (possibly
                // to infinity; the checker reports that).
                let n = text.parse::<f64>().unwrap_or(f64::INFINITY);
                Value {
                    kind: ValueKind::Number(n, text.to_string()),
                    span,
                }
            }
            Rule::string => {
                let s = self.string(pair);
                Value {
                    kind: ValueKind::Str(s.node),
                    span,
                }
            }
            Rule::word => Value {
                kind: ValueKind::Word(pair.as_str().to_string()),
                span,
            },
            other => unreachable!("grammar: unexpected value {other:?}"),
        }
    }

    fn string(&self, pair: Pair<Rule>) -> Spanned<String> {
        let span = self.span(&pair);
        let body = pair.into_inner().next().map(|b| b.as_str()).unwrap_or("");
        let mut out = String::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        Spanned::new(out, span)
    }
}

/// Flattens sections into dotted assignments: `train { epochs = 3 }` becomes
/// `train.epochs = 3`. A sweep or variant found here is misplaced and reported.
pub fn flatten(
    statements: Vec<Statement>,
    prefix: &[Spanned<String>],
    errors: &RefCell<Vec<Diagnostic>>,
) -> Vec<Assignment> {
    let mut out = Vec::new();
    for s in statements {
        match s {
            Statement::Assign(mut a) => {
                if !prefix.is_empty() {
                    let mut path = prefix.to_vec();
                    path.extend(a.path);
                    a.path = path;
                }
                out.push(a);
            }
            Statement::Section { name, body } => {
                let mut p = prefix.to_vec();
                p.push(name);
                out.extend(flatten(body, &p, errors));
            }
            Statement::Sweep(sweep) => errors.borrow_mut().push(misplaced(&sweep)),
        }
    }
    out
}
