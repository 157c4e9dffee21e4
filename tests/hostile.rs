//! Never a wrong number in silence: damaged cache entries are recomputed (or the
//! run fails loudly), random byte edits of tables and manifests give exit 0 or 2
//! and never a panic, a signal or unbounded memory, and bad input met by `lethe
//! run` is exit 2 with no run directory.

mod common;
use common::runs::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tables of the latest run of `name`, without run ids.
fn tables(dir: &Path, name: &str) -> Vec<Vec<String>> {
    let run = latest_run(dir, name);
    [
        "recall.arrow",
        "summary.arrow",
        "train_log.arrow",
        "drift.arrow",
    ]
    .iter()
    .map(|t| {
        let mut rows = rows_without_run_id(&run.join(t));
        if *t == "train_log.arrow" {
            // Wall-clock seconds are the one column that is not a result.
            rows = rows
                .into_iter()
                .map(|r| r.rsplit_once('|').map_or(r.clone(), |(a, _)| a.to_string()))
                .collect();
        }
        rows
    })
    .collect()
}

/// Every cache entry's directory whose node.json says `kind`.
fn entries_of(cache: &Path, kind: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read_to_string(p.join("node.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|d| d["kind"] == kind)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn damaged_cache_entries_are_recomputed_to_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "damage",
        "    seed = [1, 2]\n    train { epochs = 2; regularizer = ewc(lambda = 100) }",
    );
    let run = |args: &[&str]| -> Output {
        let mut all = vec!["run", p.to_str().unwrap()];
        all.extend_from_slice(args);
        lethe(dir.path(), &all)
    };
    assert_eq!(run(&[]).status.code(), Some(0));
    let expected = tables(dir.path(), "damage");
    let cache = dir.path().join(".lethe/cache");
    let evaluations = entries_of(&cache, "evaluate");
    let trainings = entries_of(&cache, "train");
    type Damage = Box<dyn Fn()>;
    let (e0, e1, t0, t1) = (
        evaluations[0].clone(),
        evaluations[1].clone(),
        trainings[0].clone(),
        trainings[1].clone(),
    );
    let damages: Vec<(&str, Damage)> = vec![
        (
            "node.json deleted",
            Box::new(move || std::fs::remove_file(e0.join("node.json")).unwrap()),
        ),
        (
            "recall.jsonl truncated",
            Box::new(move || {
                let f = e1.join("recall.jsonl");
                let len = std::fs::metadata(&f).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }),
        ),
        (
            "log.jsonl truncated",
            Box::new(move || {
                let f = t0.join("log.jsonl");
                let text = std::fs::read_to_string(&f).unwrap();
                let kept: Vec<&str> = text.lines().skip(1).collect();
                std::fs::write(&f, kept.join("\n") + "\n").unwrap();
            }),
        ),
        (
            "model weights edited",
            Box::new(move || {
                let f = t1.join("model.safetensors");
                let mut bytes = std::fs::read(&f).unwrap();
                let n = bytes.len();
                for b in &mut bytes[n - 64..] {
                    *b ^= 0x5a;
                }
                std::fs::write(&f, bytes).unwrap();
            }),
        ),
    ];
    for (what, damage) in damages {
        damage();
        let verify = lethe(dir.path(), &["cache", "verify"]);
        assert_eq!(verify.status.code(), Some(1), "{what}: verify finds it");
        assert!(text(&verify.stdout).contains("damaged"), "{what}");
        let again = run(&[]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "{what}: {}",
            text(&again.stderr)
        );
        assert!(
            text(&again.stderr).contains("is damaged"),
            "{what}: the run says so: {}",
            text(&again.stderr)
        );
        assert_eq!(
            tables(dir.path(), "damage"),
            expected,
            "{what}: the tables changed"
        );
        let clean = lethe(dir.path(), &["cache", "verify"]);
        assert_eq!(clean.status.code(), Some(0), "{what}: repaired by the run");
    }
}

/// Runs `lethe` under a 4 GiB address-space limit.
fn lethe_capped(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .current_dir(dir);
    command.output().expect("run lethe")
}

/// A tiny deterministic generator (xorshift), so the fuzz cases are the same on
/// every run.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Random edits: flipped bytes, a truncation, a zeroed run, or an inserted run.
fn mutate(bytes: &[u8], draw: &mut Draw) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match draw.below(4) {
        0 => {
            for _ in 0..1 + draw.below(8) {
                let i = draw.below(out.len());
                out[i] ^= 1 << draw.below(8);
            }
        }
        1 => out.truncate(draw.below(out.len())),
        2 => {
            let i = draw.below(out.len());
            let n = (1 + draw.below(64)).min(out.len() - i);
            out[i..i + n].fill(0xff);
        }
        _ => {
            let i = draw.below(out.len());
            let noise: Vec<u8> = (0..1 + draw.below(32)).map(|_| draw.next() as u8).collect();
            out.splice(i..i, noise);
        }
    }
    out
}

fn assert_clean_exit(out: &Output, case: &str) {
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(2)),
        "{case}: exit {code:?} (a panic is 101, a signal none):\n{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{case}: {}",
        text(&out.stderr)
    );
}

#[test]
fn random_edits_of_tables_and_manifests_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let source = repo().join("datasets/emoji");
    let mut draw = Draw(0x9e3779b97f4a7c15);
    let originals: Vec<(&str, Vec<u8>)> = ["emoji.yaml", "images.arrow", "captions.arrow"]
        .iter()
        .map(|n| (*n, std::fs::read(source.join(n)).unwrap()))
        .collect();
    // Per case one file is edited and the manifest is validated with its tables.
    let cases = std::env::var("LETHE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(150);
    for case in 0..cases {
        for (name, bytes) in &originals {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let (name, bytes) = &originals[draw.below(originals.len())];
        std::fs::write(dir.path().join(name), mutate(bytes, &mut draw)).unwrap();
        let out = lethe_capped(dir.path(), &["validate", "emoji.yaml"]);
        assert_clean_exit(&out, &format!("case {case}, {name} edited"));
    }
}

#[test]
fn random_edits_of_a_run_directory_never_panic_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "fuzz", "    train { epochs = 1 }");
    assert_eq!(
        lethe(dir.path(), &["run", p.to_str().unwrap(), "--quiet"])
            .status
            .code(),
        Some(0)
    );
    let run = latest_run(dir.path(), "fuzz");
    let names = [
        "recall.arrow",
        "summary.arrow",
        "drift.arrow",
        "train_log.arrow",
        "pipeline.json",
    ];
    let originals: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(run.join(n)).unwrap())
        .collect();
    let mut draw = Draw(0x2545f4914f6cdd1d);
    for case in 0..100 {
        let i = draw.below(names.len());
        std::fs::write(run.join(names[i]), mutate(&originals[i], &mut draw)).unwrap();
        let out = lethe_capped(dir.path(), &["report", run.to_str().unwrap()]);
        assert_clean_exit(&out, &format!("case {case}, {} edited", names[i]));
        std::fs::write(run.join(names[i]), &originals[i]).unwrap();
    }
}

#[test]
fn invalid_data_met_by_a_run_is_exit_2_without_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for name in ["emoji.yaml", "images.arrow", "captions.arrow"] {
        std::fs::copy(repo().join("datasets/emoji").join(name), data.join(name)).unwrap();
    }
    // A truncated captions table: found before anything is computed.
    let captions = std::fs::read(data.join("captions.arrow")).unwrap();
    std::fs::write(data.join("captions.arrow"), &captions[..captions.len() / 2]).unwrap();
    let p = dir.path().join("bad.pipe");
    std::fs::write(
        &p,
        "pipeline \"bad\" {\n    dataset = \"data/emoji.yaml\"\n    split = \"sevige\"\n    tasks = [animals, vehicles, clothes]\n    train { epochs = 1 }\n}\n",
    )
    .unwrap();
    for extra in [&[][..], &["--keep-going"][..]] {
        let mut args = vec!["run", "bad.pipe"];
        args.extend_from_slice(extra);
        let out = lethe(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("captions.arrow"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            !dir.path().join("runs").exists(),
            "no run directory for bad input"
        );
    }
}

#[test]
fn an_unwritable_output_folder_is_found_before_computing() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "out", "    train { epochs = 1 }");
    std::fs::write(dir.path().join("afile"), "").unwrap();
    let out = lethe(
        dir.path(),
        &["run", p.to_str().unwrap(), "--out", "afile/runs"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not writable"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join(".lethe/cache").exists()
            || entries_of(&dir.path().join(".lethe/cache"), "train").is_empty(),
        "nothing was computed"
    );
}

#[test]
fn jobs_are_checked_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "jobs", "    train { epochs = 1 }");
    let zero = lethe(dir.path(), &["run", p.to_str().unwrap(), "--jobs", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(text(&zero.stderr).contains("must be at least 1"));
    let many = lethe(
        dir.path(),
        &["run", p.to_str().unwrap(), "--jobs", "1000", "--quiet"],
    );
    assert_eq!(many.status.code(), Some(0), "{}", text(&many.stderr));
    assert!(
        text(&many.stderr).contains("--jobs 1000 is more than the"),
        "{}",
        text(&many.stderr)
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_run_and_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "stop",
        "    seed = [1, 2, 3, 4]\n    train { epochs = 30 }",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", p.to_str().unwrap(), "--quiet"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first finished node, then interrupt.
    let cache = dir.path().join(".lethe/cache");
    for _ in 0..600 {
        if cache.is_dir() && !entries_of(&cache, "train").is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("interrupted:") && stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("FAILED"), "{stderr}");
    assert!(
        !dir.path().join("runs/stop").exists()
            || std::fs::read_dir(dir.path().join("runs/stop"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn errors_never_quote_someone_elses_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(
        &secret,
        "user:password-hash:1000\nsecond line of the secret\n",
    )
    .unwrap();
    for body in [
        format!("pipeline \"x\" extends \"{}\" {{\n}}\n", secret.display()),
        format!(
            "pipeline \"x\" {{\n    dataset = \"{}\"\n    split = \"a\"\n    tasks = [a]\n}}\n",
            secret.display()
        ),
    ] {
        std::fs::write(dir.path().join("x.pipe"), body).unwrap();
        let out = lethe(dir.path(), &["validate", "x.pipe"]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains("password") && !stderr.contains("second line"),
            "{stderr}"
        );
    }
}
