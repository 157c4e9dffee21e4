//! Reading a call against its signature table: the form it names, then each
//! parameter of that form checked against its type and range, or defaulted.
//! Unknown, repeated and missing parameters are reported here, once for every
//! call; a builder then takes the checked values by name.

use super::Reader;
use crate::diagnostics::{did_you_mean, Diagnostic, Span};
use crate::lang::ast::{Spanned, Value, ValueKind};
use crate::lang::resolve::Setting;
use crate::lang::schema::{CallTable, Choice, ParamDefault, ParamType, Signature};

/// A call whose parameters are checked, on its way to a typed value.
///
/// Every parameter error is already recorded when a builder gets this, so a
/// builder may stop at the first parameter that has no value (`?`): nothing is
/// left unreported. [`Args::build`] makes sure the builder read every parameter
/// of the signature, so a parameter added to a table is never silently ignored.
pub struct Args<'r, 'v, K: 'static> {
    reader: &'r mut Reader,
    form: &'static Signature<K>,
    /// How messages name the parameters' owner (see [`CallTable::owner`]).
    owner: String,
    /// The whole value as written.
    span: Span,
    /// One per parameter of `form`, in signature order.
    params: Vec<ParamValue<'v>>,
}

struct ParamValue<'v> {
    /// Where the parameter was written (its name, or the dotted path that set
    /// it), and the value written.
    written: Option<(Span, &'v Value)>,
    state: State,
    read: bool,
}

enum State {
    Valid(Checked),
    /// Not written, and the builder computes the default from other parameters.
    Computed,
    /// Wrong, or missing though required: already reported.
    Invalid,
}

#[derive(Clone)]
enum Checked {
    Number(f64),
    Whole(u64),
    Word(&'static str),
    WholeList(Vec<u64>),
}

impl Reader {
    /// A call (or a bare word meaning the call with default parameters) of one of
    /// the forms in `table`, for `setting`. `overrides` are dotted-path parameter
    /// settings (`train.optimizer.lr = ...`), which win over the call's own.
    pub fn call<'r, 'v, K>(
        &'r mut self,
        v: &'v Value,
        setting: &str,
        table: &CallTable<K>,
        overrides: &[(&'v str, &'v Setting)],
    ) -> Option<Args<'r, 'v, K>> {
        let what = format!("`{setting}`");
        let v = self.plain(v);
        let names: Vec<&str> = table.names().collect();
        type Written<'a> = Vec<(&'a Spanned<String>, &'a Value)>;
        let (name, name_span, written): (&str, Span, Written<'v>) = match &v.kind {
            ValueKind::Word(w) => (w, v.span, Vec::new()),
            ValueKind::Call { name, args } => (
                &name.node,
                name.span,
                args.iter().map(|(k, v)| (k, v)).collect(),
            ),
            _ => {
                self.wrong_type(v, &what, &format!("one of: {}", names.join(", ")));
                return None;
            }
        };
        let Some(form) = table.form(name) else {
            let mut d = Diagnostic::error(format!("unknown choice `{name}` for {what}"))
                .at(name_span, format!("expected one of: {}", names.join(", ")));
            if let Some(s) = did_you_mean(name, names.iter().copied()) {
                d = d.hint(format!("did you mean `{s}`?"));
            }
            self.error(d);
            return None;
        };
        let mut given: Vec<Option<(Span, &'v Value)>> = vec![None; form.params.len()];
        for (key, value) in written {
            match form.params.iter().position(|p| p.name == key.node) {
                None => self.error(unknown_param(form, &key.node, key.span)),
                Some(i) => match given[i] {
                    Some((first, _)) => self.error(
                        Diagnostic::error(format!(
                            "parameter `{}` of `{}` is given twice",
                            key.node, form.name
                        ))
                        .at(key.span, "again here")
                        .also(first, "first here"),
                    ),
                    None => given[i] = Some((key.span, value)),
                },
            }
        }
        for (param, setting) in overrides {
            match form.params.iter().position(|p| p.name == *param) {
                None => self.error(unknown_param(form, param, setting.key_span)),
                // The dotted key (`train.optimizer.lr`) stands in for the parameter name.
                Some(i) => given[i] = Some((setting.key_span, &setting.value)),
            }
        }
        let owner = table.owner(setting, form.name).to_string();
        let params = form
            .params
            .iter()
            .zip(given)
            .map(|(param, written)| {
                let state = match written {
                    Some((_, value)) => {
                        let what = format!("`{}` of `{owner}`", param.name);
                        self.param(value, &what, param.accepts)
                    }
                    None => self.unwritten(form.name, param.name, param.default, v.span),
                };
                ParamValue {
                    written,
                    state,
                    read: false,
                }
            })
            .collect();
        Some(Args {
            reader: self,
            form,
            owner,
            span: v.span,
            params,
        })
    }

    fn param(&mut self, v: &Value, what: &str, accepts: ParamType) -> State {
        let checked = match accepts {
            ParamType::Number(range) => self.float(v, what, range).map(Checked::Number),
            ParamType::Whole { min, max } => self.int(v, what, min, max).map(Checked::Whole),
            ParamType::Word(words) => self.word(v, what, words).map(Checked::Word),
            ParamType::WholeList {
                min,
                max,
                max_len,
                item,
                unit,
            } => self
                .whole_list(v, what, (min, max), max_len, (item, unit))
                .map(Checked::WholeList),
        };
        checked.map_or(State::Invalid, State::Valid)
    }

    /// A list of whole numbers: too long a list is one error, each bad item another.
    fn whole_list(
        &mut self,
        v: &Value,
        what: &str,
        (min, max): (u64, u64),
        max_len: usize,
        (item, unit): (&str, &str),
    ) -> Option<Vec<u64>> {
        let items = self.list(v, what)?;
        if items.len() > max_len {
            self.error(
                Diagnostic::error(format!("{what} has more than {max_len} {unit}"))
                    .at(v.span, format!("too many {unit}")),
            );
            return None;
        }
        let checked: Vec<Option<u64>> = items.iter().map(|i| self.int(i, item, min, max)).collect();
        checked.into_iter().collect()
    }

    /// The state of a parameter the call does not write.
    fn unwritten(&mut self, call: &str, param: &str, default: ParamDefault, at: Span) -> State {
        let value = match default {
            ParamDefault::Number(x) => Checked::Number(x),
            ParamDefault::Whole(n) => Checked::Whole(n),
            ParamDefault::Word(w) => Checked::Word(w),
            ParamDefault::WholeList(ns) => Checked::WholeList(ns.to_vec()),
            ParamDefault::Computed(_) => return State::Computed,
            ParamDefault::Required => {
                self.error(
                    Diagnostic::error(format!("missing parameter `{param}` of `{call}`"))
                        .at(at, format!("`{call}` needs `{param} = ...`")),
                );
                return State::Invalid;
            }
        };
        State::Valid(value)
    }
}

fn unknown_param<K>(form: &Signature<K>, key: &str, span: Span) -> Diagnostic {
    let names: Vec<&str> = form.params.iter().map(|p| p.name).collect();
    let call = form.name;
    let mut d = Diagnostic::error(format!("unknown parameter `{key}` of `{call}`")).at(
        span,
        if names.is_empty() {
            format!("`{call}` takes no parameters")
        } else {
            format!("parameters are: {}", names.join(", "))
        },
    );
    if let Some(s) = did_you_mean(key, names.iter().copied()) {
        d = d.hint(format!("did you mean `{s}`?"));
    }
    d
}

impl<K: Copy> Args<'_, '_, K> {
    /// Which form was called: builders match on it exhaustively.
    pub fn kind(&self) -> K {
        self.form.kind
    }

    pub fn name(&self) -> &'static str {
        self.form.name
    }

    /// The whole value as written.
    pub fn span(&self) -> Span {
        self.span
    }

    /// Records an error found by a builder (a rule across parameters or settings).
    pub fn error(&mut self, d: Diagnostic) {
        self.reader.error(d);
    }

    /// How messages name a parameter: "`per_batch` of `replay`".
    pub fn what(&self, param: &str) -> String {
        format!("`{param}` of `{}`", self.owner)
    }

    /// Where a parameter was written (name through value), or the call itself
    /// when it was not.
    pub fn param_span(&self, param: &str) -> Span {
        let written = self
            .form
            .params
            .iter()
            .position(|p| p.name == param)
            .and_then(|i| self.params[i].written);
        match written {
            // A dotted path in another file than its value cannot span both.
            Some((key, value)) if key.file == value.span.file => key.to(value.span),
            Some((_, value)) => value.span,
            None => self.span,
        }
    }

    pub fn number(&mut self, param: &str) -> Option<f64> {
        match self.take(param)? {
            Checked::Number(x) => Some(x),
            _ => self.mismatch(param, "a number"),
        }
    }

    pub fn whole(&mut self, param: &str) -> Option<u64> {
        match self.take(param)? {
            Checked::Whole(n) => Some(n),
            _ => self.mismatch(param, "a whole number"),
        }
    }

    /// A whole number whose default the builder computes: `computed` when the
    /// pipeline does not give it.
    pub fn whole_or(&mut self, param: &str, computed: u64) -> Option<u64> {
        let at = self.index(param)?;
        if matches!(self.params[at].state, State::Computed) {
            self.params[at].read = true;
            return Some(computed);
        }
        self.whole(param)
    }

    pub fn whole_list(&mut self, param: &str) -> Option<Vec<u64>> {
        match self.take(param)? {
            Checked::WholeList(ns) => Some(ns),
            _ => self.mismatch(param, "a list of whole numbers"),
        }
    }

    /// A word parameter as the value of the choice `T`.
    pub fn choice<T: Choice>(&mut self, param: &str) -> Option<T> {
        match self.take(param)? {
            Checked::Word(w) => match T::from_word(w) {
                Some(t) => Some(t),
                None => self.mismatch(param, "a word of another choice"),
            },
            _ => self.mismatch(param, "a word"),
        }
    }

    /// Runs a builder; a builder that succeeds must have read every parameter.
    pub fn build<T>(mut self, builder: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let built = builder(&mut self)?;
        let unread: Vec<&str> = self
            .form
            .params
            .iter()
            .zip(&self.params)
            .filter(|(_, value)| !value.read)
            .map(|(param, _)| param.name)
            .collect();
        if !unread.is_empty() {
            self.internal(format!(
                "the checker ignores `{}` of `{}`",
                unread.join("`, `"),
                self.form.name
            ));
            return None;
        }
        Some(built)
    }

    fn index(&mut self, param: &str) -> Option<usize> {
        let found = self.form.params.iter().position(|p| p.name == param);
        if found.is_none() {
            self.internal(format!(
                "the checker reads `{param}`, which is not a parameter of `{}`",
                self.form.name
            ));
        }
        found
    }

    /// The checked value of a parameter; `None` when it was wrong (reported).
    fn take(&mut self, param: &str) -> Option<Checked> {
        let at = self.index(param)?;
        self.params[at].read = true;
        match &self.params[at].state {
            State::Valid(value) => Some(value.clone()),
            State::Invalid => None,
            State::Computed => {
                self.internal(format!(
                    "the default of `{param}` of `{}` is computed, but the checker reads none",
                    self.form.name
                ));
                None
            }
        }
    }

    fn mismatch<T>(&mut self, param: &str, read_as: &str) -> Option<T> {
        self.internal(format!(
            "the checker reads `{param}` of `{}` as {read_as}, which its signature does not declare",
            self.form.name
        ));
        None
    }

    /// A disagreement between a signature and its builder: a bug in lethe, said
    /// loudly at the call rather than guessed around.
    fn internal(&mut self, message: String) {
        self.reader.error(
            Diagnostic::error(format!("internal error: {message}"))
                .at(self.span, "while checking this call")
                .note("this is a bug in lethe (src/lang/schema.rs and the checker disagree), not in the pipeline"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::ast::Statement;
    use crate::lang::parse;
    use crate::lang::schema::Param;

    // No shipped form has a required parameter or leaves one unread, so these
    // paths are tested on a form of their own: `f(need, count)`.
    const PARAMS: &[Param] = &[
        Param {
            name: "need",
            accepts: ParamType::Whole { min: 0, max: 10 },
            default: ParamDefault::Required,
        },
        Param {
            name: "count",
            accepts: ParamType::Whole { min: 0, max: 10 },
            default: ParamDefault::Computed("twice `need`"),
        },
    ];
    const TABLE: CallTable<()> = CallTable {
        settings: &["x"],
        forms: &[Signature {
            name: "f",
            kind: (),
            params: PARAMS,
        }],
    };

    fn value(written: &str) -> Value {
        let text = format!("pipeline \"t\" {{\n x = {written}\n}}");
        let ast = parse::parse(&text, 0).expect("the case parses");
        match ast.body.into_iter().next() {
            Some(Statement::Assign(a)) => a.value,
            other => panic!("not an assignment: {other:?}"),
        }
    }

    /// Builds `f` as (need, count), count defaulting to twice `need`.
    fn build(reader: &mut Reader, v: &Value) -> Option<(u64, u64)> {
        reader.call(v, "x", &TABLE, &[])?.build(|call| {
            let need = call.whole("need")?;
            Some((need, call.whole_or("count", 2 * need)?))
        })
    }

    fn messages(reader: &Reader) -> Vec<&str> {
        reader.errors.iter().map(|d| d.message.as_str()).collect()
    }

    #[test]
    fn required_parameter_missing_is_an_error_at_the_call() {
        let mut reader = Reader::default();
        let v = value("f");
        assert_eq!(build(&mut reader, &v), None);
        assert_eq!(messages(&reader), ["missing parameter `need` of `f`"]);
        assert_eq!(reader.errors[0].primary.as_ref().unwrap().0, v.span);
    }

    #[test]
    fn computed_default_comes_from_the_builder() {
        let mut reader = Reader::default();
        assert_eq!(build(&mut reader, &value("f(need = 3)")), Some((3, 6)));
        assert_eq!(
            build(&mut reader, &value("f(need = 3, count = 1)")),
            Some((3, 1))
        );
        assert!(reader.errors.is_empty(), "{:?}", messages(&reader));
    }

    #[test]
    fn a_builder_that_ignores_a_parameter_is_an_internal_error() {
        let mut reader = Reader::default();
        let v = value("f(need = 3)");
        let built = reader
            .call(&v, "x", &TABLE, &[])
            .and_then(|args| args.build(|call| call.whole("need")));
        assert_eq!(built, None);
        assert_eq!(
            messages(&reader),
            ["internal error: the checker ignores `count` of `f`"]
        );
    }

    #[test]
    fn reading_a_computed_default_as_given_is_an_internal_error() {
        let mut reader = Reader::default();
        let v = value("f(need = 3)");
        let built = reader
            .call(&v, "x", &TABLE, &[])
            .and_then(|args| args.build(|call| call.whole("need").zip(call.whole("count"))));
        assert_eq!(built, None);
        assert!(
            messages(&reader)[0].starts_with("internal error: the default of `count` of `f`"),
            "{:?}",
            messages(&reader)
        );
    }
}
