//! Zero-shot classification: class sets in manifests, `evaluate.zeroshot` in
//! pipelines (located errors), the prompts table (stale prompts are errors), and a
//! run on the shipped emoji set whose accuracies are checked against the kept
//! embeddings (the independent numpy check is in `tests/python/test_zeroshot.py`).

mod common;
use common::runs::{latest_run, lethe, rows_without_run_id, text};
use common::*;
use lethe::data::classes::read_class_set;
use lethe::data::Manifest;
use std::path::Path;

#[test]
fn zeroshot_naming_an_undeclared_class_set_is_located() {
    let rendered = error_at(
        &emoji_pipeline("    evaluate { zeroshot = [group, ‸subgrup] }"),
        "declares no class set `subgrup`",
    );
    assert!(
        rendered.contains("class sets are: group, subgroup"),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `subgroup`?"), "{rendered}");
    // A manifest without `classes:` says so.
    let rendered = error_at(
        &with_header("    evaluate { zeroshot = [‸subgroup] }"),
        "declares no class set `subgroup`",
    );
    assert!(rendered.contains("it declares no `classes:`"), "{rendered}");
}

#[test]
fn zeroshot_listing_a_class_set_twice_is_located() {
    error_at(
        &emoji_pipeline("    evaluate { zeroshot = [group, ‸group] }"),
        "class set `group` is listed twice",
    );
}

#[test]
fn zeroshot_is_valid_and_planned_per_stage() {
    let outcome = check(&emoji_pipeline(
        "    evaluate { zeroshot = [subgroup, group] }",
    ));
    let pipeline = outcome.pipeline();
    let e = &pipeline.experiments[0];
    assert_eq!(e.evaluate.zeroshot, vec!["subgroup", "group"]);
    let mut manifests = lethe::lang::ManifestCache::default();
    let plan = lethe::plan::lower("z", pipeline.experiments.clone(), &mut manifests);
    // Stages 0..=3 for two class sets; nothing else changes.
    assert_eq!(plan.variant_nodes[0].zeroshot.len(), 8);
    let without = check(&emoji_pipeline("")).pipeline().experiments.clone();
    let plain = lethe::plan::lower("z", without, &mut manifests);
    let keys = |p: &lethe::plan::Plan| -> Vec<String> {
        p.graph.node_weights().map(|n| n.key.clone()).collect()
    };
    let with_keys = keys(&plan);
    for k in keys(&plain) {
        assert!(
            with_keys.contains(&k),
            "asking for zero-shot changed a retrieval node's key"
        );
    }
}

/// A manifest of feature tables in `dir` with a `classes:` section `classes`.
fn manifest_with(dir: &Path, classes: &str) -> Result<Manifest, String> {
    let path = dir.join("m.yaml");
    std::fs::write(
        &path,
        format!(
            "name: m\nimages: images.arrow\ncaptions: captions.arrow\n{classes}\nsplits:\n  s:\n    a: {{ group: [x] }}\n"
        ),
    )
    .unwrap();
    Manifest::load(&path).map_err(|e| e.to_string())
}

#[test]
fn class_set_declarations_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |classes: &str, needle: &str| {
        let e = manifest_with(dir.path(), classes).expect_err(classes);
        assert!(e.contains("m.yaml"), "{e}");
        assert!(e.contains(needle), "{classes}: {e}");
    };
    bad(
        "classes:\n  g: { column: group, template: \"an emoji\" }",
        "`classes.g.template` must hold `{}` exactly once",
    );
    bad(
        "classes:\n  g: { column: group, template: \"{} or {}\" }",
        "holds it 2 times",
    );
    bad(
        "classes:\n  g: { column: group }",
        "missing field `template`",
    );
    bad(
        "classes:\n  \"two words\": { column: group, template: \"a {}\" }",
        "a class set's name is a word",
    );
    bad("prompts: p.arrow", "no `classes` are declared");
    let ok = manifest_with(
        dir.path(),
        "classes:\n  g: { column: group, template: \"a photo of {}\" }",
    )
    .unwrap();
    assert_eq!(ok.class_set("g").unwrap().prompt("cat"), "a photo of cat");
    assert_eq!(ok.prompts_path().unwrap(), dir.path().join("prompts.arrow"));
}

#[test]
fn stale_or_missing_prompts_are_errors_that_say_to_featurize() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo().join("datasets/emoji");
    for name in ["images.arrow", "captions.arrow", "prompts.arrow"] {
        std::fs::copy(shipped.join(name), dir.path().join(name)).unwrap();
    }
    let write = |template: &str| {
        let text = std::fs::read_to_string(shipped.join("emoji.yaml"))
            .unwrap()
            .replace(
                "subgroup: { column: subgroup, template: \"an emoji of {}\" }",
                &format!("subgroup: {{ column: subgroup, template: \"{template}\" }}"),
            );
        std::fs::write(dir.path().join("emoji.yaml"), text).unwrap();
        Manifest::load(&dir.path().join("emoji.yaml")).unwrap()
    };
    let m = write("an emoji of {}");
    let set = read_class_set(&m, "subgroup", 384).unwrap();
    assert!(set.classes.len() > 50, "{}", set.classes.len());
    assert!(
        set.classes.windows(2).all(|w| w[0] < w[1]),
        "sorted, distinct"
    );
    assert!(set.image_class.iter().all(Option::is_some));
    // Another template: the prompts no longer match.
    let m = write("a picture of {}");
    let e = read_class_set(&m, "subgroup", 384).unwrap_err().to_string();
    assert!(
        e.contains("prompts.arrow") && e.contains("run `lethe featurize` again"),
        "{e}"
    );
    // Another text width.
    let m = write("an emoji of {}");
    let e = read_class_set(&m, "subgroup", 512).unwrap_err().to_string();
    assert!(e.contains("384-d but the captions' are 512-d"), "{e}");
    // No prompts table.
    std::fs::remove_file(dir.path().join("prompts.arrow")).unwrap();
    let e = read_class_set(&m, "subgroup", 384).unwrap_err().to_string();
    assert!(
        e.contains("missing") && e.contains("lethe featurize"),
        "{e}"
    );
}

#[test]
fn a_run_classifies_every_task_after_every_stage_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("e.pipe");
    std::fs::write(
        &pipe,
        emoji_pipeline(
            "    model { image = mlp(hidden = [128], embed = 64); text = mlp(hidden = [128], embed = 64) }\n    train { epochs = 2; batch = 32 }\n    evaluate { zeroshot = [subgroup] }",
        ),
    )
    .unwrap();
    let args = ["run", "e.pipe", "--quiet", "--keep-embeddings"];
    let out = lethe(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("zero-shot subgroup avg top-1"),
        "the headline shows the average accuracy:\n{}",
        text(&out.stdout)
    );
    let run = latest_run(dir.path(), "e");
    let rows = rows_without_run_id(&run.join("zeroshot.arrow"));
    // Stages 0..=3 x 3 tasks x top-1 and top-5.
    assert_eq!(rows.len(), 4 * 3 * 2, "{rows:#?}");
    let report = lethe(dir.path(), &["report", run.to_str().unwrap()]);
    let report = text(&report.stdout);
    assert!(report.contains("Zero-shot classification"), "{report}");
    assert!(report.contains("zero-shot subgroup top-1"), "{report}");
    // The same run again is served from the cache, with the same table.
    let again = lethe(dir.path(), &args);
    assert!(again.status.success());
    let rerun = latest_run(dir.path(), "e");
    assert_ne!(rerun, run);
    assert_eq!(rows_without_run_id(&rerun.join("zeroshot.arrow")), rows);
}

#[test]
fn downstream_sets_need_class_sets_and_the_same_encoders() {
    // The toy manifest declares no classes.
    let rendered = error_at(
        &emoji_pipeline(&format!(
            "    evaluate {{ downstream = [‸\"{}\"] }}",
            fixture("toy.yaml").display()
        )),
        "declares no `classes:` to classify its images by",
    );
    assert!(
        rendered.contains("a downstream set needs class sets"),
        "{rendered}"
    );
    // The toy pipeline's 32-d and 16-d features are not the emoji set's.
    let rendered = error_at(
        &with_header(&format!(
            "    evaluate {{ downstream = [‸\"{}\"] }}",
            emoji().display()
        )),
        "has 1280-d image and 384-d text features, the pipeline's dataset 32-d and 16-d",
    );
    assert!(rendered.contains("other encoders"), "{rendered}");
    error_at(
        &emoji_pipeline(&format!(
            "    evaluate {{ downstream = [\"{0}\", ‸\"{0}\"] }}",
            emoji().display()
        )),
        "the dataset `emoji` is listed twice",
    );
    error_at(
        &emoji_pipeline("    evaluate { downstream = [‸\"no/such.yaml\"] }"),
        "does not exist",
    );
}

#[test]
fn a_downstream_set_is_classified_after_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    // The emoji set under another name stands in for a downstream set.
    let shipped = repo().join("datasets/emoji");
    for name in ["images.arrow", "captions.arrow", "prompts.arrow"] {
        std::fs::copy(shipped.join(name), dir.path().join(name)).unwrap();
    }
    let manifest = std::fs::read_to_string(shipped.join("emoji.yaml"))
        .unwrap()
        .replace("name: emoji", "name: other");
    std::fs::write(dir.path().join("other.yaml"), manifest).unwrap();
    std::fs::write(
        dir.path().join("e.pipe"),
        emoji_pipeline(
            "    model { image = mlp(hidden = [64], embed = 32); text = mlp(hidden = [64], embed = 32) }\n    train { epochs = 1; batch = 32 }\n    evaluate { zeroshot = [group]; downstream = [\"other.yaml\"] }",
        ),
    )
    .unwrap();
    let out = lethe(dir.path(), &["run", "e.pipe", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = rows_without_run_id(&latest_run(dir.path(), "e").join("zeroshot.arrow"));
    let downstream: Vec<&String> = rows.iter().filter(|r| r.contains("|other/")).collect();
    // Two class sets (group, subgroup) x stages 0..=3 x top-1 and top-5, every image.
    assert_eq!(downstream.len(), 2 * 4 * 2, "{rows:#?}");
    assert!(downstream
        .iter()
        .all(|r| r.contains("|other|") && r.contains("|1911|")));
    let headline = text(&out.stdout);
    assert!(
        headline.contains("zero-shot other/group avg top-1"),
        "{headline}"
    );
}

#[test]
fn data_inspect_lists_class_sets_and_pseudo_negatives() {
    let dir = tempfile::tempdir().unwrap();
    let out = lethe(dir.path(), &["data", "inspect", emoji().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(
            "class set `subgroup`: 99 classes of column `subgroup`, prompts \"an emoji of {}\""
        ),
        "{shown}"
    );
    assert!(shown.contains("class set `group`: 10 classes"), "{shown}");
    assert!(
        shown.contains("pseudo negatives: 3 per image, seed 0"),
        "{shown}"
    );
    assert!(!shown.contains("not generated yet"), "{shown}");
}
