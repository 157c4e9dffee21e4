//! Every class of invalid pipeline gets a located message. Each case marks with `‸`
//! the exact character the error must point at; the marker is removed before
//! checking, and the error's line and column must be the marker's.

mod common;
use common::*;

/// (line, column) of the marker in `text`, and the text without it.
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

/// Checks `text` (with marker) and asserts an error containing `message` at the marker.
fn assert_error_at(text: &str, message: &str) -> Outcome {
    let (clean, expected) = strip_marker(text);
    let outcome = check(&clean);
    assert_eq!(
        outcome.located(message),
        expected,
        "wrong place for {message:?}:\n{}",
        outcome.rendered()
    );
    outcome
}

fn body_error(body: &str, message: &str) -> Outcome {
    assert_error_at(&with_header(body), message)
}

#[test]
fn unknown_setting_with_suggestion() {
    let o = body_error("    ‸indx = frozen", "unknown setting `indx`");
    assert!(
        o.rendered().contains("did you mean `index`?"),
        "{}",
        o.rendered()
    );
}

#[test]
fn unknown_choice_with_suggestion() {
    let o = body_error("    index = ‸reindx", "unknown choice `reindx` for `index`");
    assert!(o.rendered().contains("did you mean `reindex`?"));
}

#[test]
fn unknown_setting_inside_a_section() {
    let o = body_error("    train { ‸epoch = 3 }", "unknown setting `train.epoch`");
    assert!(o.rendered().contains("did you mean `train.epochs`?"));
}

#[test]
fn unknown_loss() {
    let o = body_error(
        "    train { loss = ‸tripplet }",
        "unknown choice `tripplet` for `train.loss`",
    );
    assert!(o.rendered().contains("did you mean `triplet`?"));
}

#[test]
fn unknown_parameter() {
    body_error(
        "    train { optimizer = adamw(‸learning_rate = 1e-3) }",
        "unknown parameter `learning_rate` of `adamw`",
    );
}

#[test]
fn negative_learning_rate() {
    body_error(
        "    train { optimizer = adamw(lr = ‸-1) }",
        "`lr` of `adamw` must be greater than 0",
    );
}

#[test]
fn negative_margin() {
    body_error(
        "    train { loss = triplet(margin = ‸-0.2) }",
        "`margin` of `triplet` must be 0 or more",
    );
}

#[test]
fn negative_lambda() {
    body_error(
        "    train { regularizer = ewc(lambda = ‸-5) }",
        "`lambda` of `ewc` must be 0 or more",
    );
}

#[test]
fn zero_batch() {
    body_error(
        "    train { batch = ‸0 }",
        "`train.batch` must be at least 2",
    );
}

#[test]
fn zero_recall_k() {
    body_error(
        "    evaluate { recall = [‸0, 5] }",
        "a recall K must be at least 1",
    );
}

#[test]
fn fractional_epochs() {
    body_error(
        "    train { epochs = ‸2.5 }",
        "`train.epochs` must be a whole number, found 2.5",
    );
}

#[test]
fn wrong_value_type() {
    body_error(
        "    train { epochs = ‸\"ten\" }",
        "`train.epochs` must be a whole number, found the string \"ten\"",
    );
}

#[test]
fn number_too_large() {
    body_error("    train { epochs = ‸1e400 }", "out of range");
}

#[test]
fn empty_task_list() {
    let text = format!(
        "pipeline \"t\" {{\n    dataset = \"{}\"\n    split = \"domains\"\n    tasks = ‸[]\n}}\n",
        fixture("toy.yaml").display()
    );
    assert_error_at(&text, "`tasks` is empty");
}

#[test]
fn task_not_in_split() {
    let text = format!(
        "pipeline \"t\" {{\n    dataset = \"{}\"\n    split = \"domains\"\n    tasks = [d1, ‸d5]\n}}\n",
        fixture("toy.yaml").display()
    );
    let o = assert_error_at(&text, "task `d5` is not in split `domains`");
    assert!(o.rendered().contains("tasks are: d1, d2, d3"));
}

#[test]
fn task_listed_twice() {
    let text = format!(
        "pipeline \"t\" {{\n    dataset = \"{}\"\n    split = \"domains\"\n    tasks = [d1, d2, ‸d1]\n}}\n",
        fixture("toy.yaml").display()
    );
    assert_error_at(&text, "task `d1` is listed twice");
}

#[test]
fn unknown_split() {
    let text = format!(
        "pipeline \"t\" {{\n    dataset = \"{}\"\n    split = ‸\"domain\"\n    tasks = [d1]\n}}\n",
        fixture("toy.yaml").display()
    );
    let o = assert_error_at(&text, "has no split `domain`");
    assert!(o.rendered().contains("did you mean `domains`?"));
}

#[test]
fn missing_dataset_file() {
    let text = "pipeline \"t\" {\n    dataset = ‸\"no/such/manifest.yaml\"\n    split = \"s\"\n    tasks = [a]\n}\n";
    assert_error_at(text, "does not exist");
}

#[test]
fn missing_required_setting() {
    let text = format!(
        "pipeline ‸\"t\" {{\n    dataset = \"{}\"\n    tasks = [d1]\n}}\n",
        fixture("toy.yaml").display()
    );
    assert_error_at(&text, "missing setting `split`");
}

#[test]
fn share_deeper_than_branches() {
    body_error(
        "    model { share = ‸3 }",
        "is more than the depth of a branch",
    );
}

#[test]
fn embed_sizes_differ() {
    body_error(
        "    model { text = ‸mlp(embed = 256) }",
        "embed into different sizes",
    );
}

#[test]
fn shared_layers_with_different_widths() {
    body_error(
        "    model {\n        image = mlp(hidden = [512], embed = 256)\n        text = mlp(hidden = [1024], embed = 256)\n        share = ‸2\n    }",
        "cannot be shared",
    );
}

#[test]
fn cross_task_negatives_in_sequential_schedule() {
    body_error(
        "    train { negatives = ‸cross_task }",
        "needs `schedule = joint`",
    );
}

#[test]
fn query_coverage_without_decouple() {
    body_error(
        "    train { regularizer = ewc(‸on = query) }",
        "`on = query` needs `train.decouple = true`",
    );
}

#[test]
fn regularizer_in_joint_schedule() {
    body_error(
        "    schedule = joint\n    train { regularizer = ‸ewc }",
        "needs `schedule = sequential`",
    );
}

#[test]
fn regularizer_term_twice() {
    body_error(
        "    train { regularizer = ewc + ‸ewc }",
        "`ewc` appears twice",
    );
}

#[test]
fn replay_draws_more_than_memory() {
    body_error(
        "    train { regularizer = replay(memory = 10, ‸per_batch = 20) }",
        "is more than the memory",
    );
}

#[test]
fn parameter_path_into_a_combination() {
    body_error(
        "    train.regularizer = ewc + mas\n    ‸train.regularizer.lambda = 3",
        "cannot be set by path",
    );
}

#[test]
fn unknown_device() {
    body_error("    device = ‸gpu", "unknown device");
}

#[test]
fn unknown_direction() {
    let o = body_error(
        "    evaluate { directions = [‸im2text] }",
        "unknown choice `im2text`",
    );
    assert!(o.rendered().contains("did you mean `im2txt`?"));
}

#[test]
fn boolean_expected() {
    body_error(
        "    train { decouple = ‸maybe }",
        "unknown choice `maybe` for `train.decouple`",
    );
}

#[test]
fn unknown_activation() {
    body_error(
        "    model { image = mlp(activation = ‸swish) }",
        "unknown choice `swish`",
    );
}

#[test]
fn setting_given_twice() {
    body_error(
        "    index = frozen\n    ‸index = reindex",
        "`index` is set twice",
    );
}

#[test]
fn label_outside_a_sweep() {
    body_error(
        "    index = frozen as ‸\"f\"",
        "only names a value of a sweep axis",
    );
}

#[test]
fn variant_outside_a_sweep() {
    body_error(
        "    ‸variant \"x\" { index = frozen }",
        "belongs inside a `sweep` block",
    );
}

#[test]
fn two_sweep_blocks() {
    body_error(
        "    sweep { index = [frozen, reindex] }\n    ‸sweep { seed = [1, 2] }",
        "at most one `sweep` block",
    );
}

#[test]
fn sweep_key_names_no_setting() {
    body_error(
        "    sweep { ‸train.lr = [1, 2] }",
        "unknown setting `train.lr`",
    );
}

#[test]
fn empty_sweep_axis() {
    body_error("    sweep { index = ‸[] }", "sweep axis `index` is empty");
}

#[test]
fn sweep_axis_not_a_list() {
    body_error(
        "    sweep { index = ‸frozen }",
        "a sweep axis takes a list of values",
    );
}

#[test]
fn duplicate_labels_on_one_axis() {
    body_error(
        "    sweep { index = [frozen as \"a\", reindex as ‸\"a\"] }",
        "have the label \"a\"",
    );
}

#[test]
fn grid_too_large() {
    let values = |n: usize| {
        (1..=n)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = format!(
        "    sweep {{\n        ‸seed = [{}]\n        train.epochs = [{}]\n        train.batch = [{}]\n    }}",
        values(50),
        values(50),
        (2..52).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    );
    body_error(&body, "more than 100000 variants");
}

#[test]
fn errors_in_some_variants_name_them() {
    let o = body_error(
        "    sweep { variant \"ok\" { index = frozen }; variant \"bad\" { train.negatives = ‸cross_task } }",
        "needs `schedule = joint`",
    );
    assert!(
        o.rendered().contains("in variant \"bad\""),
        "{}",
        o.rendered()
    );
}

#[test]
fn syntax_error_two_values() {
    body_error(
        "    index = frozen ‸reindex",
        "unexpected `reindex` after a value",
    );
}

#[test]
fn syntax_error_missing_value() {
    body_error("    index =\n‸}", "syntax error: expected a value");
}

#[test]
fn syntax_error_unclosed_block() {
    let text = format!(
        "pipeline \"t\" {{\n    dataset = \"{}\"\n    split = \"domains\"\n    tasks = [d1]\n‸",
        fixture("toy.yaml").display()
    );
    assert_error_at(&text, "syntax error");
}

#[test]
fn syntax_error_unterminated_string() {
    let o = check("pipeline \"t\" {\n    split = \"domains\n}\n");
    assert!(
        o.errors()
            .iter()
            .any(|d| d.message.starts_with("syntax error")),
        "{}",
        o.rendered()
    );
    assert_eq!(o.errors().len(), 1);
}

#[test]
fn syntax_error_single_quotes() {
    let o = body_error("    split2 = ‸'x'", "syntax error");
    assert!(o.rendered().contains("double quotes"), "{}", o.rendered());
}

#[test]
fn nul_byte() {
    body_error("    index = fro‸\u{0}zen", "control character U+0000");
}

#[test]
fn invalid_utf8() {
    let mut bytes = with_header("    index = X").into_bytes();
    let at = bytes.iter().position(|&b| b == b'X').expect("marker");
    bytes[at] = 0xff;
    let o = check_bytes(&bytes);
    assert_eq!(o.located("not valid UTF-8"), (5, 13));
}

#[test]
fn nesting_too_deep() {
    // The pipeline block is the first level: the 32nd bracket is level 33.
    let body = format!("    tasks = {}‸{}", "[".repeat(31), "[".repeat(10));
    body_error(&body, "nesting deeper than 32");
}

#[test]
fn file_too_large() {
    let mut text = String::from("# ");
    text.push_str(&"x".repeat(2 << 20));
    let o = check(&text);
    assert_eq!(o.located("a pipeline may have at most"), (1, 1));
}

#[test]
fn extends_cycle() {
    let o = check_file(&fixture("cycle-a.pipe"));
    let (line, col) = o.located("`extends` cycle: cycle-a.pipe -> cycle-b.pipe -> cycle-a.pipe");
    assert_eq!((line, col), (1, 22));
}

#[test]
fn extends_missing_parent() {
    let o = assert_error_at(
        "pipeline \"x\" extends ‸\"missing.pipe\" {\n}\n",
        "cannot read",
    );
    assert!(o.rendered().contains("no such file"));
}

#[test]
fn all_errors_reported_in_one_pass() {
    let o = check(&with_header(
        "    index = reindx\n    train { batch = 0; optimizer = adamw(lr = -1) }\n    evaluate { recall = [0] }",
    ));
    assert_eq!(o.errors().len(), 4, "{}", o.rendered());
    // Reported in source order.
    let lines: Vec<usize> = o
        .errors()
        .iter()
        .map(|d| {
            o.sources
                .line_col(
                    d.primary.as_ref().unwrap().0.file,
                    d.primary.as_ref().unwrap().0.start,
                )
                .0
        })
        .collect();
    assert_eq!(lines, vec![5, 6, 6, 7]);
}

#[test]
fn rendered_form_has_location_line_and_caret() {
    let o = check(&with_header("    index = reindx"));
    let text = o.rendered();
    assert!(
        text.contains("error: unknown choice `reindx` for `index`"),
        "{text}"
    );
    assert!(text.contains("test.pipe:5:13"), "{text}");
    assert!(text.contains("5 |     index = reindx"), "{text}");
    assert!(text.contains("^^^^^^"), "{text}");
}
