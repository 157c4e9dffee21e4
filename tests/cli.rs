//! The `lethe` binary: exit codes, streams, help texts.

mod common;
use common::*;
use std::process::{Command, Output};

fn lethe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run lethe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_accepts_every_shipped_pipeline() {
    let files: Vec<String> = shipped_pipelines()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        files.iter().any(|f| f.contains("/ablations/")),
        "the ablation files are found"
    );
    assert!(files.len() >= 17, "{files:?}");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = lethe(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout)
            .lines()
            .filter(|l| l.contains(": ok"))
            .count(),
        files.len()
    );
}

#[test]
fn validate_reports_every_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pipe");
    std::fs::write(
        &bad,
        with_header("    index = reindx\n    train { batch = 0 }"),
    )
    .unwrap();
    let out = lethe(&[
        "validate",
        "pipelines/quickstart.pipe",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.pipe:5:13"), "{stderr}");
    assert!(stderr.contains("bad.pipe:6:21"), "{stderr}");
    assert!(stderr.contains("2 errors"), "{stderr}");
    assert!(text(&out.stdout).contains("quickstart.pipe: ok"));
}

#[test]
fn validate_missing_file_is_invalid_input() {
    let out = lethe(&["validate", "no/such/file.pipe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read `no/such/file.pipe`: no such file"));
}

#[test]
fn validate_checks_a_manifest_with_its_tables() {
    let out = lethe(&["validate", "datasets/synthetic/small.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("small.yaml: ok (dataset `synthetic-small`, 1 split)"));
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, "name: m\nimages: images.arrow\ncaptions: captions.arrow\nsplits:\n  s:\n    a: { group: [x] }\n").unwrap();
    let out = lethe(&["validate", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("images.arrow: no such file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_prints_text_and_totals() {
    let out = lethe(&["plan", "pipelines/table1.pipe"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("plan for pipeline \"table1\": 60 variants"));
    let train = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("train "))
        .unwrap();
    let numbers: Vec<&str> = train.split_whitespace().collect();
    assert_eq!(numbers, ["train", "102", "192"]);
}

#[test]
fn plan_formats() {
    let json = lethe(&["plan", "pipelines/quickstart.pipe", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["pipeline"], "quickstart");
    let dot = text(&lethe(&["plan", "pipelines/quickstart.pipe", "--format", "dot"]).stdout);
    assert!(dot.starts_with("digraph \"quickstart\" {") && dot.contains(" -> "));
    let mermaid =
        text(&lethe(&["plan", "pipelines/quickstart.pipe", "--format", "mermaid"]).stdout);
    assert!(mermaid.starts_with("flowchart LR") && mermaid.contains(" --> "));
}

#[test]
fn plan_device_override_changes_keys() {
    let cpu = text(&lethe(&["plan", "pipelines/quickstart.pipe", "--format", "json"]).stdout);
    let gpu = text(
        &lethe(&[
            "plan",
            "pipelines/quickstart.pipe",
            "--format",
            "json",
            "--device",
            "cuda:1",
        ])
        .stdout,
    );
    let key = |s: &str| {
        let doc: serde_json::Value = serde_json::from_str(s).unwrap();
        doc["nodes"][1]["key"].as_str().unwrap().to_string()
    };
    assert_ne!(key(&cpu), key(&gpu));
    let bad = lethe(&["plan", "pipelines/quickstart.pipe", "--device", "tpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("`tpu` is not a device"));
}

#[test]
fn plan_of_an_invalid_pipeline_exits_2_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pipe");
    std::fs::write(&bad, with_header("    index = sometimes")).unwrap();
    let out = lethe(&["plan", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("unknown choice `sometimes`"));
}

#[test]
fn every_verb_has_help_with_an_example() {
    for verb in ["validate", "plan", "run", "report", "featurize"] {
        let out = lethe(&[verb, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(help.contains("Examples:"), "{verb}: {help}");
    }
    let unknown = lethe(&["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn the_shipped_emoji_dataset_has_the_seed_domains() {
    let out = lethe(&["validate", "datasets/emoji/emoji.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let inspect = text(&lethe(&["data", "inspect", "datasets/emoji/emoji.yaml"]).stdout);
    assert!(inspect.contains("1911 images x 1280-d"), "{inspect}");
    // Images per SeViGe-like domain (train + test + val): 130 animals, 72 vehicles, 47 clothes.
    for (task, images) in [("animals", 130), ("vehicles", 72), ("clothes", 47)] {
        let line = inspect
            .lines()
            .find(|l| l.trim_start().starts_with(task))
            .unwrap();
        let n: Vec<usize> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(n[0] + n[2] + n[4], images, "{line}");
        assert_eq!(n[6], images, "{line}");
    }
}

#[test]
fn the_quickstart_runs_on_the_shipped_emoji_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args([
            "run",
            repo().join("pipelines/quickstart.pipe").to_str().unwrap(),
            "--quiet",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("quickstart"),
        "{}",
        text(&out.stdout)
    );
}
