//! Every call form in the signature table of `src/lang/schema.rs`, checked from the
//! table itself: each parameter accepts its valid values, rejects a wrong type and
//! an out-of-range value at the value, and a misspelt parameter gets a suggestion.
//! A form added to the table is tested here without a line of this file changing.
//! The last tests pin a few concrete messages.

mod common;
use common::*;
use lethe::lang::schema::{self, call_forms, CallForm, Param, ParamDefault, ParamType, Range};
use lethe::lang::{Experiment, LrSchedule, RegularizerSpec};

/// Line 5 of every case, before the calls: with one model per direction every
/// word of `on` is valid, and nothing else depends on it.
const CONTEXT: &str = "    train.decouple = true";

/// (line, column) of the `‸` marker in `text`, and the text without it.
fn strip_marker(text: &str) -> (String, (usize, usize)) {
    let at = text.find('‸').expect("case has a ‸ marker");
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (text.replacen('‸', "", 1), (line, col))
}

/// The body setting every setting of `form` to `call(args)`. Only the first
/// setting's line keeps a `‸` marker, so an error is expected there.
fn body(form: &CallForm, args: &[String], extra: &str) -> String {
    let (needs, dataset) = companion(form);
    let call = if args.is_empty() {
        format!("{needs}{}", form.name)
    } else {
        format!("{needs}{}({})", form.name, args.join(", "))
    };
    let mut lines = vec![CONTEXT.to_string()];
    for (i, setting) in form.settings.iter().enumerate() {
        let written = if i == 0 {
            call.clone()
        } else {
            call.replace('‸', "")
        };
        lines.push(format!("    {setting} = {written}"));
    }
    if !extra.is_empty() {
        lines.push(extra.to_string());
    }
    with_header(&lines.join("\n")).replace(
        &fixture("toy.yaml").display().to_string(),
        &fixture(dataset).display().to_string(),
    )
}

/// Whether `form` is valid only in a `+` combination, where no parameter can be
/// set by path.
fn only_combined(form: &CallForm) -> bool {
    !companion(form).0.is_empty()
}

/// What a form needs beside it to be valid: a term it combines with (written
/// before it) and the dataset fixture. `pseudo_text` gives replayed images pseudo
/// negative texts, so it needs `replay` and a dataset that generates them.
fn companion(form: &CallForm) -> (&'static str, &'static str) {
    match form.name {
        "pseudo_text" => ("replay(memory = 50) + ", "pseudo.yaml"),
        _ => ("", "toy.yaml"),
    }
}

/// How messages name a parameter (`lambda` of `ewc`); a call that serves several
/// settings is named by the setting, so the message says which.
fn what(form: &CallForm, param: &str) -> String {
    let owner = if form.settings.len() > 1 {
        form.settings[0]
    } else {
        form.name
    };
    format!("`{param}` of `{owner}`")
}

/// `name = value` for every required parameter but `except`, so a case fails
/// only for the reason it is about.
fn required_args(form: &CallForm, except: &str) -> Vec<String> {
    form.params
        .iter()
        .filter(|p| p.name != except && matches!(p.default, ParamDefault::Required))
        .map(|p| format!("{} = {}", p.name, valid_values(p)[0]))
        .collect()
}

fn args_with(form: &CallForm, param: &str, value: &str) -> Vec<String> {
    let mut args = required_args(form, param);
    args.push(format!("{param} = {value}"));
    args
}

/// The default as a pipeline would write it; `None` when there is no literal one.
fn written_default(p: &Param) -> Option<String> {
    match p.default {
        ParamDefault::Number(x) => Some(x.to_string()),
        ParamDefault::Whole(n) => Some(n.to_string()),
        ParamDefault::Word(w) => Some(w.to_string()),
        ParamDefault::WholeList(ns) => Some(list(ns.iter())),
        ParamDefault::Computed(_) | ParamDefault::Required => None,
    }
}

fn list<T: ToString>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// Values the parameter must accept, the default first when it has one.
fn valid_values(p: &Param) -> Vec<String> {
    let mut out: Vec<String> = written_default(p).into_iter().collect();
    let more: Vec<String> = match p.accepts {
        ParamType::Number(range) => match range {
            Range::Positive => vec!["1e-3".into(), "0.5".into(), "1000".into()],
            Range::NonNegative => vec!["0".into(), "0.5".into(), "1000".into()],
            Range::UnitOpen => vec!["0".into(), "0.5".into(), "0.999".into()],
            Range::UnitPositive => vec!["0.001".into(), "0.5".into(), "1".into()],
        },
        ParamType::Whole { min, .. } => vec![min.to_string()],
        ParamType::Word(words) => words.iter().map(|w| w.to_string()).collect(),
        ParamType::WholeList {
            min, max, max_len, ..
        } => vec![
            "[]".into(),
            format!("[{min}]"),
            format!("[{max}]"),
            list(std::iter::repeat_n(min, max_len)),
        ],
    };
    for v in more {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Values of the wrong type (marker before the value) and the message they get.
fn wrong_types(form: &CallForm, p: &Param) -> Vec<(String, String)> {
    let what = what(form, p.name);
    match p.accepts {
        ParamType::Number(_) => vec![
            (
                "\"x\"".into(),
                format!("{what} must be a number, found the string \"x\""),
            ),
            (
                "[1]".into(),
                format!("{what} must be a number, found a list"),
            ),
        ],
        ParamType::Whole { .. } => vec![
            (
                "\"x\"".into(),
                format!("{what} must be a whole number, found the string \"x\""),
            ),
            (
                "2.5".into(),
                format!("{what} must be a whole number, found 2.5"),
            ),
        ],
        ParamType::Word(words) => vec![(
            "1".into(),
            format!(
                "{what} must be one of: {}, found the number `1`",
                words.join(", ")
            ),
        )],
        ParamType::WholeList { .. } => vec![(
            "1".into(),
            format!("{what} must be a list `[...]`, found the number `1`"),
        )],
    }
}

/// Values outside what the parameter accepts, each with a `‸` where the error
/// must point, the message, and the suggestion it must make, if any.
fn out_of_range(form: &CallForm, p: &Param) -> Vec<(String, String, Option<String>)> {
    let what = what(form, p.name);
    let range_cases = |values: &[&str], phrase: &str| -> Vec<(String, String, Option<String>)> {
        values
            .iter()
            .map(|v| {
                (
                    format!("‸{v}"),
                    format!("{what} must be {phrase}, found {v}"),
                    None,
                )
            })
            .collect()
    };
    match p.accepts {
        ParamType::Number(range) => match range {
            Range::Positive => range_cases(&["0", "-1"], "greater than 0"),
            Range::NonNegative => range_cases(&["-1", "-1e-9"], "0 or more"),
            Range::UnitOpen => range_cases(&["1", "-0.5"], "at least 0 and below 1"),
            Range::UnitPositive => range_cases(&["0", "1.5"], "above 0 and at most 1"),
        },
        ParamType::Whole { min, max } => {
            let mut cases = vec![(
                format!("‸{}", max + 1),
                format!("{what} must be at most {max}, found {}", max + 1),
                None,
            )];
            if min > 0 {
                cases.push((
                    format!("‸{}", min - 1),
                    format!("{what} must be at least {min}, found {}", min - 1),
                    None,
                ));
            }
            cases
        }
        ParamType::Word(words) => vec![(
            format!("‸{}x", words[0]),
            format!("unknown choice `{}x` for {what}", words[0]),
            Some(format!("did you mean `{}`?", words[0])),
        )],
        ParamType::WholeList {
            min,
            max,
            max_len,
            item,
            unit,
        } => {
            let mut cases = vec![
                (
                    format!("[{min}, ‸{}]", max + 1),
                    format!("{item} must be at most {max}, found {}", max + 1),
                    None,
                ),
                (
                    format!("‸{}", list(std::iter::repeat_n(min, max_len + 1))),
                    format!("{what} has more than {max_len} {unit}"),
                    None,
                ),
            ];
            if min > 0 {
                cases.push((
                    format!("[‸{}]", min - 1),
                    format!("{item} must be at least {min}, found {}", min - 1),
                    None,
                ));
            }
            cases
        }
    }
}

fn experiments(text: &str) -> Result<Vec<Experiment>, String> {
    let o = check(text);
    match &o.result {
        Ok(p) => Ok(p.experiments.clone()),
        Err(_) => Err(o.rendered()),
    }
}

/// Checks `text` (with a `‸`) and says what is wrong, if anything: no error
/// with `message`, or not at the marker, or without the `hint`.
fn error_at(text: &str, message: &str, hint: Option<&str>) -> Option<String> {
    let (clean, expected) = strip_marker(text);
    let o = check(&clean);
    let Some(d) = o.errors().iter().find(|d| d.message.contains(message)) else {
        return Some(format!("no error contains {message:?}:\n{}", o.rendered()));
    };
    let Some((span, _)) = d.primary.as_ref() else {
        return Some(format!("{message:?} has no place"));
    };
    let found = o.sources.line_col(span.file, span.start);
    if found != expected {
        return Some(format!(
            "{message:?} at {found:?}, expected {expected:?}:\n{}",
            o.rendered()
        ));
    }
    match hint {
        Some(h) if !d.hints.iter().any(|x| x == h) => Some(format!(
            "{message:?} lacks the hint {h:?}:\n{}",
            o.rendered()
        )),
        _ => None,
    }
}

/// Runs `case` on every parameter of every form; fails naming every failing one.
fn for_every_param(mut case: impl FnMut(&CallForm, &Param, &mut Vec<String>)) {
    let mut failures = Vec::new();
    let mut params = 0;
    for form in call_forms() {
        for p in form.params {
            case(&form, p, &mut failures);
            params += 1;
        }
    }
    assert!(params >= 30, "the table lost parameters: {params}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_parameter_accepts_its_valid_values() {
    for_every_param(|form, p, failures| {
        for value in valid_values(p) {
            let text = body(form, &args_with(form, p.name, &value), "");
            if let Err(rendered) = experiments(&text) {
                failures.push(format!("{}({} = {value}):\n{rendered}", form.name, p.name));
            }
        }
    });
}

#[test]
fn wrong_types_are_rejected_at_the_value() {
    for_every_param(|form, p, failures| {
        for (value, message) in wrong_types(form, p) {
            let text = body(form, &args_with(form, p.name, &format!("‸{value}")), "");
            if let Some(problem) = error_at(&text, &message, None) {
                failures.push(format!("{}({} = {value}): {problem}", form.name, p.name));
            }
        }
    });
}

#[test]
fn out_of_range_values_are_rejected_at_the_value() {
    for_every_param(|form, p, failures| {
        for (value, message, hint) in out_of_range(form, p) {
            let text = body(form, &args_with(form, p.name, &value), "");
            if let Some(problem) = error_at(&text, &message, hint.as_deref()) {
                failures.push(format!("{}({} = {value}): {problem}", form.name, p.name));
            }
        }
    });
}

#[test]
fn misspelt_parameters_are_rejected_with_a_suggestion() {
    for_every_param(|form, p, failures| {
        let value = &valid_values(p)[0];
        let misspelt = format!("{}x", p.name);
        let message = format!("unknown parameter `{misspelt}` of `{}`", form.name);
        let hint = format!("did you mean `{}`?", p.name);
        let mut inline = required_args(form, "");
        inline.push(format!("‸{misspelt} = {value}"));
        let by_path = body(
            form,
            &required_args(form, ""),
            &format!("    ‸{}.{misspelt} = {value}", form.settings[0]),
        );
        // A form that only exists in a `+` combination has no paths (they would be
        // ambiguous: `combined_terms_cannot_be_set_by_path`).
        let texts = if only_combined(form) {
            vec![body(form, &inline, "")]
        } else {
            vec![body(form, &inline, ""), by_path]
        };
        for text in texts {
            if let Some(problem) = error_at(&text, &message, Some(&hint)) {
                failures.push(format!("{}: {problem}", form.name));
            }
        }
    });
}

#[test]
fn forms_without_parameters_reject_any() {
    let mut failures = Vec::new();
    for form in call_forms().filter(|f| f.params.is_empty()) {
        let text = body(&form, &["‸x = 1".to_string()], "");
        let message = format!("unknown parameter `x` of `{}`", form.name);
        let label = format!("`{}` takes no parameters", form.name);
        if let Some(problem) = error_at(&text, &message, None) {
            failures.push(format!("{}: {problem}", form.name));
        } else if !check(&strip_marker(&text).0).rendered().contains(&label) {
            failures.push(format!("{}: no label {label:?}", form.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn bare_calls_mean_their_written_defaults() {
    let mut failures = Vec::new();
    for form in call_forms() {
        let required: Vec<&Param> = form
            .params
            .iter()
            .filter(|p| matches!(p.default, ParamDefault::Required))
            .collect();
        if !required.is_empty() {
            // A bare call cannot stand for a call that needs parameters.
            let o = check(&body(&form, &[], ""));
            for p in required {
                let message = format!("missing parameter `{}` of `{}`", p.name, form.name);
                if !o.errors().iter().any(|d| d.message == message) {
                    failures.push(format!("{}: no {message:?}:\n{}", form.name, o.rendered()));
                }
            }
            continue;
        }
        let written: Vec<String> = form
            .params
            .iter()
            .filter_map(|p| written_default(p).map(|d| format!("{} = {d}", p.name)))
            .collect();
        let bare = experiments(&body(&form, &[], ""));
        let explicit = experiments(&body(&form, &written, ""));
        if bare.is_err() || bare != explicit {
            failures.push(format!(
                "{}: bare {bare:?}\nwith its defaults written {explicit:?}",
                form.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn parameter_paths_equal_parameters_in_the_call() {
    for_every_param(|form, p, failures| {
        if only_combined(form) {
            return;
        }
        let value = valid_values(p).pop().expect("a valid value");
        let inline = experiments(&body(form, &args_with(form, p.name, &value), ""));
        let paths: Vec<String> = form
            .settings
            .iter()
            .map(|s| format!("    {s}.{} = {value}", p.name))
            .collect();
        let by_path = experiments(&body(form, &required_args(form, p.name), &paths.join("\n")));
        if inline.is_err() || inline != by_path {
            failures.push(format!(
                "{}.{} = {value}: in the call {inline:?}\nby path {by_path:?}",
                form.name, p.name
            ));
        }
    });
}

#[test]
fn every_call_setting_is_a_setting() {
    for form in call_forms() {
        for setting in form.settings {
            assert!(
                schema::setting(setting).is_some() && schema::takes_call(setting),
                "`{}` names `{setting}`, which is not a call-valued setting",
                form.name
            );
        }
    }
}

#[test]
fn the_reference_documents_every_call_and_parameter() {
    let doc = std::fs::read_to_string(repo().join("docs/language.md")).unwrap();
    let reference = &doc[doc.find("# Reference").expect("a reference part")..];
    let contains_word = |row: &str, word: &str| {
        row.match_indices(word).any(|(at, _)| {
            let before = row[..at].chars().next_back();
            let after = row[at + word.len()..].chars().next();
            let outside = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            outside(before) && outside(after)
        })
    };
    for form in call_forms() {
        let setting = form.settings[0];
        let row = reference
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{setting}`")))
            .unwrap_or_else(|| panic!("docs/language.md has no reference row for `{setting}`"));
        for word in std::iter::once(form.name).chain(form.params.iter().map(|p| p.name)) {
            assert!(
                contains_word(row, word),
                "the reference row of `{setting}` does not mention `{word}` of `{}`:\n{row}",
                form.name
            );
        }
    }
}

// Concrete messages, written out.

fn assert_error(body_text: &str, message: &str) -> Outcome {
    let text = with_header(body_text);
    if let Some(problem) = error_at(&text, message, None) {
        panic!("{problem}");
    }
    check(&strip_marker(&text).0)
}

#[test]
fn misspelt_parameter_lists_the_parameters() {
    let o = assert_error(
        "    train { regularizer = ewc(‸lamda = 5) }",
        "unknown parameter `lamda` of `ewc`",
    );
    let text = o.rendered();
    assert!(
        text.contains("parameters are: lambda, accumulate, on"),
        "{text}"
    );
    assert!(text.contains("did you mean `lambda`?"), "{text}");
}

#[test]
fn branch_parameters_are_named_by_their_setting() {
    assert_error(
        "    model { text = mlp(embed = ‸0) }",
        "`embed` of `model.text` must be at least 1, found 0",
    );
    assert_error(
        "    model { image = mlp(hidden = [512, ‸70000]) }",
        "a hidden size must be at most 65536, found 70000",
    );
    assert_error(
        "    model { image = mlp(hidden = ‸[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]) }",
        "`hidden` of `model.image` has more than 16 layers",
    );
}

#[test]
fn schedule_and_boolean_messages() {
    assert_error(
        "    train { schedule_lr = cosine(warmup = ‸1) }",
        "`warmup` of `cosine` must be at least 0 and below 1, found 1",
    );
    assert_error(
        "    train { schedule_lr = step(gamma = ‸0) }",
        "`gamma` of `step` must be above 0 and at most 1, found 0",
    );
    let o = assert_error(
        "    train { loss = infonce(learnable = ‸yes) }",
        "unknown choice `yes` for `learnable` of `infonce`",
    );
    assert!(o.rendered().contains("expected one of: true, false"));
}

#[test]
fn parameter_given_twice() {
    assert_error(
        "    train { regularizer = ewc(lambda = 1, ‸lambda = 2) }",
        "parameter `lambda` of `ewc` is given twice",
    );
}

#[test]
fn path_into_another_form_names_that_form() {
    let o = assert_error(
        "    train.optimizer = sgd\n    ‸train.optimizer.beta1 = 0.9",
        "unknown parameter `beta1` of `sgd`",
    );
    assert!(
        o.rendered()
            .contains("parameters are: lr, momentum, weight_decay"),
        "{}",
        o.rendered()
    );
}

#[test]
fn every_parameter_error_of_every_call_in_one_pass() {
    let o = check(&with_header(
        "    train {\n        loss = triplet(margin = -1, negatives = some)\n        optimizer = sgd(lr = 0, momentum = 1)\n        regularizer = ewc(lambda = -1, on = query)\n    }",
    ));
    assert_eq!(o.errors().len(), 6, "{}", o.rendered());
}

#[test]
fn replay_draws_sixteen_or_its_whole_memory() {
    let replay = |call: &str| {
        let o = check(&with_header(&format!("    train.regularizer = {call}")));
        o.pipeline().experiments[0].train.regularizer.clone()
    };
    assert!(matches!(
        replay("replay(memory = 8)")[..],
        [RegularizerSpec::Replay { per_batch: 8, .. }]
    ));
    assert!(matches!(
        replay("replay")[..],
        [RegularizerSpec::Replay {
            memory: 200,
            per_batch: 16,
            ..
        }]
    ));
}

#[test]
fn step_schedule_reads_whole_epochs() {
    let o = check(&with_header(
        "    train.schedule_lr = step(every = 3, gamma = 0.5)",
    ));
    assert_eq!(
        o.pipeline().experiments[0].train.schedule_lr,
        LrSchedule::Step {
            every: 3,
            gamma: 0.5
        }
    );
}

#[test]
fn combined_terms_cannot_be_set_by_path() {
    let text = body(
        &call_forms().find(|f| f.name == "pseudo_text").unwrap(),
        &[],
        "    ‸train.regularizer.weight = 2",
    );
    assert_eq!(
        error_at(
            &text,
            "a parameter of a `+` combination cannot be set by path",
            None
        ),
        None
    );
}
