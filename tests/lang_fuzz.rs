//! No input makes the parser, resolver or checker panic or hang: random bytes,
//! random token soups, and random edits of the shipped pipelines (bounded runs).

mod common;
use common::*;
use lethe::lang::parse;
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "pipeline", "\"p\"", "extends", "sweep", "variant", "as", "{", "}", "[", "]", "(", ")", "=",
    "+", ",", ";", "\n", "#c\n", ".", "train", "model", "evaluate", "index", "tasks", "seed", "d1",
    "ewc", "lambda", "-1", "0", "1e9", "1e999", "2.5", "\"x\"", "\\", "\"", "true", "none", "mlp",
    "share",
];

/// Every shipped pipeline's text.
fn shipped() -> Vec<String> {
    shipped_pipelines()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(text) = parse::decode(&bytes) {
            let _ = parse::parse(&text, 0);
        }
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(0..TOKENS.len(), 0..80)) {
        let text: String = tokens.iter().map(|&i| TOKENS[i]).collect::<Vec<_>>().join(" ");
        let _ = parse::parse(&text, 0);
        let wrapped = with_header(&text);
        let _ = parse::parse(&wrapped, 0);
    }
}

proptest! {
    // Full load (resolve + check against the fixture manifest) goes through files: fewer cases.
    #![proptest_config(ProptestConfig { cases: 150, .. ProptestConfig::default() })]

    #[test]
    fn edited_pipelines_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3, 0..TOKENS.len()), 1..6),
    ) {
        let files = shipped();
        let mut text = files[which % files.len()].replace("../datasets/emoji/emoji.yaml", &repo().join("datasets/emoji/emoji.yaml").display().to_string());
        for (at, op, token) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) { i -= 1; }
            match op {
                0 => text.insert_str(i, TOKENS[token]),
                1 => { let end = (i + 8).min(text.len()); let mut e = end; while !text.is_char_boundary(e) { e -= 1; } text.replace_range(i..e, ""); }
                _ => { let end = (i + 3).min(text.len()); let mut e = end; while !text.is_char_boundary(e) { e -= 1; } text.replace_range(i..e, TOKENS[token]); }
            }
        }
        let outcome = check(&text);
        // Whatever the outcome, errors render without panicking.
        let _ = outcome.rendered();
    }
}

#[test]
fn pathological_inputs_finish() {
    let cases = [
        "[".repeat(100_000),
        "pipeline \"x\" {".to_string() + &"a = [1,".repeat(5_000),
        format!("pipeline \"x\" {{ # {} \n}}", "x".repeat(900_000)),
        "\"".repeat(50_000),
        "pipeline \"x\" { a = 1 ".to_string() + &"+ 1 ".repeat(50_000) + "}",
    ];
    for text in cases {
        let started = std::time::Instant::now();
        let _ = check(&text).rendered();
        assert!(
            started.elapsed().as_secs() < 10,
            "took {:?}",
            started.elapsed()
        );
    }
}
