//! The `pseudo_text` regularizer (IncCLIP's pseudo text replay): located checker
//! errors, the pseudo texts table as training reads it, and a run on the shipped
//! emoji set whose replayed pairs meet their pseudo texts. Its gradients are in
//! `tests/train_grad.rs`, both engines' agreement and `weight = 0` in
//! `tests/train_fused.rs`.

mod common;
use arrow_array::{Array, Float64Array, UInt64Array};
use common::runs::{latest_run, lethe, text};
use common::*;
use lethe::data::{read_pseudo_texts, Manifest};

#[test]
fn pseudo_text_without_replay_is_located() {
    let rendered = error_at(
        &emoji_pipeline(
            "    train.regularizer = distill(lambda = 1) + ‸pseudo_text(per_image = 1)",
        ),
        "`pseudo_text` needs `replay` in the same regularizer",
    );
    assert!(rendered.contains("replay(memory = 200)"), "{rendered}");
    error_at(
        &emoji_pipeline("    train.regularizer = ‸pseudo_text()"),
        "`pseudo_text` needs `replay` in the same regularizer",
    );
}

#[test]
fn pseudo_text_needs_the_datasets_pseudo_negatives() {
    // The emoji set generates 3 per image.
    let rendered = error_at(
        &emoji_pipeline(
            "    train.regularizer = replay(memory = 50) + pseudo_text(‸per_image = 4)",
        ),
        "is more than the dataset `emoji` generates (3 per image)",
    );
    assert!(
        rendered.contains("pseudo_negatives.per_image"),
        "{rendered}"
    );
    // The toy set generates none.
    let rendered = error_at(
        &with_header("    train.regularizer = replay(memory = 50) + ‸pseudo_text(per_image = 1)"),
        "generates no pseudo negative texts",
    );
    assert!(
        rendered.contains("pseudo_negatives: { per_image: 3 }"),
        "{rendered}"
    );
    error_at(
        &emoji_pipeline("    train.regularizer = replay(memory = 50) + pseudo_text(weight = ‸-1)"),
        "`weight` of `pseudo_text` must be 0 or more",
    );
    let ok = check(&emoji_pipeline(
        "    train.regularizer = replay(memory = 50) + pseudo_text(per_image = 3, weight = 2)",
    ));
    assert!(ok.errors().is_empty(), "{}", ok.rendered());
}

#[test]
fn pseudo_texts_are_read_by_image_and_stale_tables_are_errors() {
    let m = Manifest::load(&emoji()).unwrap();
    let split = lethe::data::load_split(&m, "sevige").unwrap();
    let texts = read_pseudo_texts(&m, &split.image_ids, split.text_dim).unwrap();
    assert_eq!(texts.len(), 3 * split.image_ids.len());
    assert!((0..split.image_ids.len() as u32).all(|i| texts.of_image(i).len() == 3));
    assert_eq!(texts.feature(0).len(), 384);
    // Another text width, a missing table, an unknown image: errors naming the file.
    let e = read_pseudo_texts(&m, &split.image_ids, 512)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pseudo.arrow") && e.contains("384-d"), "{e}");
    let e = read_pseudo_texts(&m, &split.image_ids[1..], 384)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pseudo.arrow") && e.contains("does not have") && e.contains("lethe featurize"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(emoji(), dir.path().join("emoji.yaml")).unwrap();
    let moved = Manifest::load(&dir.path().join("emoji.yaml")).unwrap();
    let e = read_pseudo_texts(&moved, &split.image_ids, 384)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("lethe featurize"),
        "{e}"
    );
}

/// The `term_pseudo_text` values of a run's training log at stages after the first.
fn pseudo_terms(log: &std::path::Path) -> Vec<f64> {
    let file = std::fs::File::open(log).unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let stage = batch.column_by_name("stage").unwrap();
        let stage = stage.as_any().downcast_ref::<UInt64Array>().unwrap();
        let term = batch
            .column_by_name("term_pseudo_text")
            .expect("a term_pseudo_text column");
        let term = term.as_any().downcast_ref::<Float64Array>().unwrap();
        for r in 0..batch.num_rows() {
            if stage.value(r) > 1 {
                assert!(!term.is_null(r));
                out.push(term.value(r));
            }
        }
    }
    out
}

#[test]
fn replayed_pairs_meet_their_pseudo_texts_in_a_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("e.pipe"),
        emoji_pipeline(
            "    model { image = mlp(hidden = [128], embed = 64); text = mlp(hidden = [128], embed = 64) }\n    train { epochs = 1; batch = 32; loss = infonce(temperature = 0.07); regularizer = replay(memory = 60, per_batch = 8) + pseudo_text(per_image = 2, weight = 1) }",
        ),
    )
    .unwrap();
    let out = lethe(dir.path(), &["run", "e.pipe", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = latest_run(dir.path(), "e");
    let terms = pseudo_terms(&run.join("train_log.arrow"));
    assert!(!terms.is_empty());
    // Every batch after the first task replays pairs, and with InfoNCE extra
    // negatives always raise the loss.
    assert!(terms.iter().all(|&t| t > 0.0), "{terms:?}");
    // The term and its settings are in the train nodes' specs, so in their keys.
    let plan = lethe(dir.path(), &["plan", "e.pipe", "--format", "json"]);
    let plan = text(&plan.stdout);
    assert!(
        plan.contains(r#""kind":"pseudo_text""#) || plan.contains(r#""kind": "pseudo_text""#),
        "{plan}"
    );
}
