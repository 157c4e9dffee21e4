//! Housekeeping of a shared cache: `lethe runs`, `lethe cache du`, `lethe cache gc`.

mod common;
use common::runs::*;
use lethe::exec::housekeeping::{NodeRef, NODES_FILE};
use lethe::exec::Cache;
use std::collections::BTreeSet;
use std::path::Path;

fn keys_of(run: &Path) -> BTreeSet<String> {
    let nodes: Vec<NodeRef> =
        serde_json::from_str(&std::fs::read_to_string(run.join(NODES_FILE)).unwrap()).unwrap();
    nodes.into_iter().map(|n| n.key).collect()
}

fn ok(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Two pipelines that share their first stage, run into one cache.
fn two_runs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = pipeline(dir, "ft", "    train { epochs = 2 }");
    let b = pipeline(
        dir,
        "ewc",
        "    train { epochs = 2; regularizer = ewc(lambda = 100) }",
    );
    for p in [&a, &b] {
        ok(&lethe(dir, &["run", p.to_str().unwrap(), "--quiet"]));
    }
    (latest_run(dir, "ft"), latest_run(dir, "ewc"))
}

#[test]
fn gc_deletes_exactly_the_entries_only_a_deleted_run_used() {
    let dir = tempfile::tempdir().unwrap();
    let (ft, ewc) = two_runs(dir.path());
    let (ft_keys, ewc_keys) = (keys_of(&ft), keys_of(&ewc));
    assert!(
        !ft_keys.is_disjoint(&ewc_keys),
        "the runs share their first stage"
    );
    let only_ewc: BTreeSet<&String> = ewc_keys.difference(&ft_keys).collect();
    assert!(!only_ewc.is_empty());
    std::fs::remove_dir_all(&ewc).unwrap();

    let dry = ok(&lethe(dir.path(), &["cache", "gc", "--dry-run"]));
    let listed: BTreeSet<&str> = dry
        .lines()
        .filter_map(|l| l.strip_prefix("would delete "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let expected: BTreeSet<&str> = only_ewc.iter().map(|k| k.as_str()).collect();
    assert_eq!(listed, expected, "{dry}");
    // A dry run deletes nothing.
    let cache = Cache::open(&dir.path().join(".lethe/cache")).unwrap();
    assert!(only_ewc.iter().all(|k| cache.contains(k)));

    let done = ok(&lethe(dir.path(), &["cache", "gc"]));
    assert!(
        done.contains(&format!("deleted {} entries", only_ewc.len())),
        "{done}"
    );
    let cache = Cache::open(&dir.path().join(".lethe/cache")).unwrap();
    assert!(only_ewc.iter().all(|k| !cache.contains(k)));
    assert!(ft_keys.iter().all(|k| cache.contains(k)));
    // The kept run's pipeline is still wholly cached.
    ok(&lethe(
        dir.path(),
        &[
            "run",
            dir.path().join("ft.pipe").to_str().unwrap(),
            "--quiet",
        ],
    ));
    assert_eq!(run_json(dir.path(), "ft")["nodes"]["executed"], 0);
}

#[test]
fn gc_keeps_what_a_named_pipeline_plans_and_what_a_computing_run_locks() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ewc) = two_runs(dir.path());
    let ewc_keys = keys_of(&ewc);
    std::fs::remove_dir_all(dir.path().join("runs")).unwrap();
    // No runs left: naming the pipeline keeps its entries.
    let out = ok(&lethe(
        dir.path(),
        &["cache", "gc", "--keep", "ewc.pipe", "--dry-run"],
    ));
    for line in out.lines().filter(|l| l.starts_with("would delete ")) {
        let key = line.split_whitespace().nth(2).unwrap();
        assert!(!ewc_keys.contains(key), "{line}");
    }
    // An entry whose lock another process holds is never deleted.
    let cache = Cache::open(&dir.path().join(".lethe/cache")).unwrap();
    let held = ewc_keys.iter().next().unwrap().clone();
    let _lock = cache.lock(&held).unwrap();
    std::fs::create_dir_all(dir.path().join("empty-runs")).unwrap();
    let out = ok(&lethe(
        dir.path(),
        &["cache", "gc", "--keep-runs", "empty-runs"],
    ));
    assert!(
        out.contains(&format!("in use (locked by a computing run), kept: {held}")),
        "{out}"
    );
    assert!(cache.contains(&held));
    assert_eq!(
        Cache::open(&dir.path().join(".lethe/cache"))
            .unwrap()
            .keys(),
        vec![held]
    );
}

#[test]
fn gc_refuses_to_guess_what_to_keep_and_ages_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".lethe/cache")).unwrap();
    let out = lethe(dir.path(), &["cache", "gc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nothing to keep"),
        "{}",
        text(&out.stderr)
    );
    let out = lethe(
        dir.path(),
        &["cache", "gc", "--keep-runs", ".", "--older-than", "3 weeks"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`3 weeks` is not an age"),
        "{}",
        text(&out.stderr)
    );
    let out = lethe(dir.path(), &["cache", "du", "--cache", "no-such-cache"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a cache directory"));
    assert!(
        !dir.path().join("no-such-cache").exists(),
        "du creates no cache"
    );
}

#[test]
fn gc_older_than_keeps_young_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ewc) = two_runs(dir.path());
    std::fs::remove_dir_all(&ewc).unwrap();
    let out = ok(&lethe(dir.path(), &["cache", "gc", "--older-than", "1d"]));
    assert!(out.contains("deleted 0 entries"), "{out}");
    assert!(out.contains("younger than --older-than"), "{out}");
}

#[test]
fn a_run_written_before_nodes_were_listed_stops_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (ft, _) = two_runs(dir.path());
    std::fs::remove_file(ft.join(NODES_FILE)).unwrap();
    let out = lethe(dir.path(), &["cache", "gc", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("written before runs listed their nodes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn du_counts_every_entry_by_kind_and_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    two_runs(dir.path());
    let out = ok(&lethe(dir.path(), &["cache", "du"]));
    let cache = Cache::open(&dir.path().join(".lethe/cache")).unwrap();
    let n = cache.keys().len();
    assert!(
        out.starts_with(&format!(".lethe/cache: {n} entries")),
        "{out}"
    );
    let count = |section: &str| -> usize {
        out.split(section)
            .nth(1)
            .unwrap()
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| {
                // name (it may hold spaces), entries, size ("1.5 MiB")
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields[fields.len() - 3].parse::<usize>().unwrap()
            })
            .sum()
    };
    assert_eq!(count("by node kind"), n, "{out}");
    assert_eq!(count("by pipeline"), n, "{out}");
    for kind in ["train", "index", "query", "evaluate"] {
        assert!(out.contains(&format!("  {kind} ")), "{out}");
    }
}

#[test]
fn runs_lists_complete_and_incomplete_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (ft, _) = two_runs(dir.path());
    let killed = ft.with_file_name("2000-01-01T00-00-00Z.incomplete");
    std::fs::create_dir_all(&killed).unwrap();
    let out = ok(&lethe(dir.path(), &["runs"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].contains("2000-01-01T00-00-00Z") && lines[1].contains("incomplete"),
        "{out}"
    );
    assert!(out.contains("ewc") && out.contains("ft"), "{out}");
    assert_eq!(
        out.matches("complete ").count() - out.matches("incomplete").count(),
        2,
        "{out}"
    );
    assert!(out.contains("im2txt avg R@10"), "{out}");
    let missing = lethe(dir.path(), &["runs", "nowhere"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn gc_while_a_run_uses_the_cache_keeps_everything_that_run_needs() {
    let dir = tempfile::tempdir().unwrap();
    let ft = pipeline(dir.path(), "ft", "    train { epochs = 2 }");
    ok(&lethe(
        dir.path(),
        &["run", ft.to_str().unwrap(), "--quiet"],
    ));
    let ft_keys = keys_of(&latest_run(dir.path(), "ft"));
    // A long run that shares ft's first stage, started before gc.
    let long = pipeline(
        dir.path(),
        "long",
        "    train { epochs = 2; regularizer = ewc(lambda = 100) }\n    sweep { train.epochs = [2, 400] }",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", long.to_str().unwrap(), "--quiet"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let active = dir.path().join(".lethe/cache/active");
    let started = std::time::Instant::now();
    while !std::fs::read_dir(&active).is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "json"))
    }) {
        assert!(
            started.elapsed().as_secs() < 60,
            "the run never marked its keys"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::create_dir_all(dir.path().join("nothing")).unwrap();
    let out = ok(&lethe(
        dir.path(),
        &["cache", "gc", "--keep-runs", "nothing"],
    ));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before gc: nothing was tested"
    );
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    let long_keys = keys_of(&latest_run(dir.path(), "long"));
    let shared: Vec<&String> = ft_keys.intersection(&long_keys).collect();
    assert!(!shared.is_empty());
    // What the live run shared with ft was kept; what only ft used was deleted.
    let cache = Cache::open(&dir.path().join(".lethe/cache")).unwrap();
    assert!(shared.iter().all(|k| cache.contains(k)), "{out}");
    assert!(
        ft_keys.difference(&long_keys).all(|k| !cache.contains(k)),
        "{out}"
    );
    assert_eq!(run_json(dir.path(), "long")["nodes"]["failed"], 0);
    assert!(
        !std::fs::read_dir(&active)
            .unwrap()
            .any(|e| { e.unwrap().path().extension().is_some_and(|x| x == "json") }),
        "the run's record is removed when it ends"
    );
}
