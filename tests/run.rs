//! `lethe run` end to end on the small synthetic dataset: caching, resuming after
//! SIGKILL, concurrent runs sharing a cache, and failures with `--keep-going`.

mod common;
use common::runs::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[test]
fn a_second_run_executes_no_node_and_results_are_reproduced() {
    let dir = tempfile::tempdir().unwrap();
    let body = "    train { epochs = 12; batch = 64; optimizer = adamw(lr = 1e-3); regularizer = ewc(lambda = 10) }";
    let p = pipeline(dir.path(), "twice", body);
    let first = lethe(dir.path(), &["run", p.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let r1 = run_json(dir.path(), "twice");
    assert!(r1["nodes"]["executed"].as_u64().unwrap() > 10);
    let recall1 = rows_without_run_id(&latest_run(dir.path(), "twice").join("recall.arrow"));
    assert!(!recall1.is_empty());
    let second = lethe(dir.path(), &["run", p.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(0));
    let r2 = run_json(dir.path(), "twice");
    assert_eq!(r2["nodes"]["executed"], 0);
    assert_eq!(
        r2["nodes"]["cached"].as_u64().unwrap(),
        r2["nodes"]["total"].as_u64().unwrap()
    );
    assert_eq!(
        rows_without_run_id(&latest_run(dir.path(), "twice").join("recall.arrow")),
        recall1
    );
    // The same pipeline in a fresh cache gives bit-identical results.
    let other = tempfile::tempdir().unwrap();
    let p2 = pipeline(other.path(), "twice", body);
    assert_eq!(
        lethe(other.path(), &["run", p2.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        rows_without_run_id(&latest_run(other.path(), "twice").join("recall.arrow")),
        recall1
    );
    // Learning happened: R@10 after task 1 on task 1 is far above chance (an image
    // with 3 of 168 captions hits the top 10 by chance about 17% of the time).
    let r10: f64 = recall1
        .iter()
        .find(|r| r.contains("|1|d1|d1|per_task|im2txt|10|"))
        .and_then(|r| r.split('|').nth(9)?.parse().ok())
        .unwrap();
    assert!(r10 > 60.0, "R@10 {r10}");
}

#[test]
fn a_killed_run_resumes_to_the_same_results() {
    let body = "    train { epochs = 25; batch = 32 }\n    sweep { train.regularizer = [none, ewc(lambda = 10), mas] }";
    let reference = tempfile::tempdir().unwrap();
    let p = pipeline(reference.path(), "resume", body);
    assert_eq!(
        lethe(reference.path(), &["run", p.to_str().unwrap(), "--quiet"])
            .status
            .code(),
        Some(0)
    );
    let expected =
        rows_without_run_id(&latest_run(reference.path(), "resume").join("recall.arrow"));

    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "resume", body);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", p.to_str().unwrap(), "--quiet"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a few nodes are in the cache (or give up waiting and kill anyway).
    let cache = dir.path().join(".lethe/cache");
    for _ in 0..400 {
        let done = std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().len() == 64)
                    .count()
            })
            .unwrap_or(0);
        if done >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be killed"
    );
    let resumed = lethe(dir.path(), &["run", p.to_str().unwrap()]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let r = run_json(dir.path(), "resume");
    assert!(
        r["nodes"]["cached"].as_u64().unwrap() > 0,
        "nothing survived the kill: {r}"
    );
    assert_eq!(
        rows_without_run_id(&latest_run(dir.path(), "resume").join("recall.arrow")),
        expected
    );
}

#[test]
fn concurrent_runs_share_the_cache_and_compute_each_node_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = pipeline(
        dir.path(),
        "left",
        "    train { epochs = 8 }\n    sweep { index = [frozen, reindex] }",
    );
    let b = pipeline(
        dir.path(),
        "right",
        "    train { epochs = 8 }\n    sweep { train.regularizer = [none, ewc(lambda = 5)] }",
    );
    let spawn = |p: &Path| {
        Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["run", p.to_str().unwrap()])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (left, right) = (spawn(&a), spawn(&b));
    let (left, right) = (
        left.wait_with_output().unwrap(),
        right.wait_with_output().unwrap(),
    );
    assert_eq!(left.status.code(), Some(0), "{}", text(&left.stderr));
    assert_eq!(right.status.code(), Some(0), "{}", text(&right.stderr));
    // Both pipelines share the `ft` chain: it must be trained once between them.
    let trained = |out: &Output| {
        text(&out.stderr)
            .lines()
            .filter(|l| l.contains("train(1: d1): done"))
            .count()
    };
    assert_eq!(trained(&left) + trained(&right), 1);
    let (l, r) = (run_json(dir.path(), "left"), run_json(dir.path(), "right"));
    let executed =
        l["nodes"]["executed"].as_u64().unwrap() + r["nodes"]["executed"].as_u64().unwrap();
    let distinct = std::fs::read_dir(dir.path().join(".lethe/cache"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().len() == 64)
        .count() as u64;
    assert_eq!(executed, distinct, "some node was computed twice");
}

#[test]
fn a_diverging_variant_fails_alone_with_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "diverge",
        "    train { epochs = 2; grad_clip = none }\n    sweep { train.optimizer = [adamw(lr = 1e-3) as \"sane\", sgd(lr = 1e30, momentum = 0) as \"wild\"] }",
    );
    let stop = lethe(dir.path(), &["run", p.to_str().unwrap()]);
    assert_eq!(stop.status.code(), Some(1));
    let stderr = text(&stop.stderr);
    assert!(stderr.contains("error: node train(1: d1) failed (variant \"wild\"): training diverged at d1, epoch 1, step"), "{stderr}");
    assert!(
        !dir.path().join("runs").exists(),
        "no results without --keep-going"
    );

    let go = lethe(dir.path(), &["run", p.to_str().unwrap(), "--keep-going"]);
    assert_eq!(go.status.code(), Some(1));
    let run = latest_run(dir.path(), "diverge");
    let rows = rows_without_run_id(&run.join("recall.arrow"));
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r.contains("|sane|")),
        "only the sane variant has results"
    );
    let json = run_json(dir.path(), "diverge");
    assert_eq!(json["nodes"]["failed"], 1);
    assert_eq!(json["failures"][0]["variants"][0], "wild");
    // The run says which variants its tables lack; they never do so in silence.
    assert!(
        text(&go.stderr).contains(
            "warning: the tables lack 1 of 2 variants (a node they need failed): \"wild\""
        ),
        "{}",
        text(&go.stderr)
    );
}

#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "gpu", "    train { epochs = 1 }");
    let out = lethe(
        dir.path(),
        &["run", p.to_str().unwrap(), "--device", "cuda"],
    );
    if cfg!(feature = "cuda") {
        return;
    }
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("built without CUDA"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn plan_marks_cached_nodes_and_explains_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "explain",
        "    train { epochs = 2; optimizer = adamw(lr = 1e-3) }",
    );
    assert_eq!(
        lethe(dir.path(), &["run", p.to_str().unwrap(), "--quiet"])
            .status
            .code(),
        Some(0)
    );
    let plan = text(&lethe(dir.path(), &["plan", p.to_str().unwrap()]).stdout);
    let rows: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("train(") || l.contains("evaluate("))
        .collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|l| l.contains(" yes ")),
        "{plan}"
    );
    // Change the learning rate: every training node has a new key, and says why.
    let p = pipeline(
        dir.path(),
        "explain",
        "    train { epochs = 2; optimizer = adamw(lr = 2e-3) }",
    );
    let out = text(&lethe(dir.path(), &["plan", p.to_str().unwrap(), "--explain"]).stdout);
    assert!(
        out.contains("will run train(1: d1): optimizer.lr: 0.001 -> 0.002"),
        "{out}"
    );
    assert!(
        out.contains(
            "will run train(2: d2): input train(1: d1) changed; optimizer.lr: 0.001 -> 0.002"
        ) || out.contains(
            "will run train(2: d2): optimizer.lr: 0.001 -> 0.002; input train(1: d1) changed"
        ),
        "{out}"
    );
    let load = out.lines().find(|l| l.contains(" load ")).unwrap();
    assert!(load.contains(" yes "), "the data did not change: {load}");
}

#[test]
fn the_table1_grid_runs_end_to_end_on_the_small_synthetic_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = lethe(
        dir.path(),
        &[
            "run",
            repo()
                .join("pipelines/synthetic-table1.pipe")
                .to_str()
                .unwrap(),
            "--quiet",
            "--jobs",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = latest_run(dir.path(), "synthetic-table1");
    let json = run_json(dir.path(), "synthetic-table1");
    assert_eq!(json["variants"], 60);
    assert_eq!(json["nodes"]["failed"], 0);
    let summary = rows_without_run_id(&run.join("summary.arrow"));
    // Every variant and seed has an average; only continual variants have forgetting.
    let averages = summary
        .iter()
        .filter(|r| r.contains("|value|") && r.contains("|average|"))
        .count();
    assert_eq!(
        averages,
        60 * 2 * 2 * 3,
        "variants x directions x galleries x K"
    );
    assert!(summary
        .iter()
        .filter(|r| r.contains("|forgetting|"))
        .all(|r| !r.contains("|joint")));
    // Decoupled variants train one model per direction.
    let log = rows_without_run_id(&run.join("train_log.arrow"));
    assert!(log
        .iter()
        .any(|r| r.contains("|frozen EWC-q, sharing|") && r.contains("|txt2im|")));
    // The headline table has a row per variant label.
    let headline = std::fs::read_to_string(run.join("headline.txt")).unwrap();
    assert_eq!(headline.lines().count(), 1 + 20);
}

/// The ablation files of `pipelines/ablations/` run with one cache: each file after
/// the base reuses the nodes it shares with the files before it, and each run's
/// report renders.
#[test]
fn the_ablation_files_run_and_share_the_base_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ablations = repo().join("pipelines/ablations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ablations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // The base first, so the others find its nodes cached.
    files.sort_by_key(|f| !f.ends_with("base.pipe"));
    for file in &files {
        let out = lethe(dir.path(), &["run", file.to_str().unwrap(), "--quiet"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let name = |f: &str| format!("ablation-{f}");
    let base = run_json(dir.path(), &name("base"));
    assert_eq!(base["nodes"]["cached"], 0);
    // Peak memory: the process's, and the kinds whose nodes raised it (Linux).
    let peak = base["peak_rss_bytes"].as_u64().unwrap();
    assert!(peak > 1 << 20, "{base}");
    let raised = base["peak_rss_raised_by"].as_object().unwrap();
    assert!(raised.contains_key("before nodes"), "{base}");
    // Training holds a model and its optimizer state beside the data: some node
    // kind raised the peak above reading the data.
    assert!(
        raised
            .keys()
            .any(|k| k != "before nodes" && k != "reading the data"),
        "{base}"
    );
    // Reindexing needs no new training: only index, query and evaluate nodes run.
    let reindex = run_json(dir.path(), &name("reindex"));
    assert!(reindex["nodes"]["cached"].as_u64().unwrap() > 0);
    assert_eq!(reindex["seconds_by_kind"]["train"], 0.0, "{reindex}");
    // A regularizer keeps the first stage (nothing to remember yet) but retrains the rest.
    let ewc = run_json(dir.path(), &name("ewc"));
    assert!(ewc["nodes"]["cached"].as_u64().unwrap() > 0, "{ewc}");
    for f in ["base", "reindex", "ewc", "joint"] {
        let run = latest_run(dir.path(), &name(f));
        let out = lethe(dir.path(), &["report", run.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("average (task known)"));
    }
}

#[test]
fn an_inert_regularizer_is_named_by_the_run_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "inert",
        "    train { epochs = 2; regularizer = ewc(lambda = 0.000001) }",
    );
    let out = lethe(dir.path(), &["run", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: EWC contributed 0.00% of the loss at stage 2 (d2) of \"inert\": it is inert at λ = 0.000001"),
        "{stderr}"
    );
    let run = latest_run(dir.path(), "inert");
    let report = text(&lethe(dir.path(), &["report", run.to_str().unwrap()]).stdout);
    assert!(
        report.contains("warning: EWC contributed 0.00% of the loss at stage 3"),
        "{report}"
    );
    assert!(
        report.contains("Regularizer terms: share of the loss"),
        "{report}"
    );
}

#[test]
fn featurize_on_cuda_without_the_feature_is_a_clear_error_and_a_bad_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/emoji/emoji.yaml");
    let manifest = manifest.to_str().unwrap();
    let bad = lethe(dir.path(), &["featurize", manifest, "--device", "tpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("`tpu` is not a device; expected cpu, cuda or cuda:N"),
        "{}",
        text(&bad.stderr)
    );
    if cfg!(feature = "cuda") {
        return;
    }
    let out = lethe(dir.path(), &["featurize", manifest, "--device", "cuda"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("built without CUDA"),
        "{}",
        text(&out.stderr)
    );
}
