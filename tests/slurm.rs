//! `lethe run --executor slurm` on a real Slurm: Debian's slurm-wlm as a one-node
//! cluster on localhost (`scripts/slurm-localhost start`, which `scripts/test`
//! runs and which sets `LETHE_SLURM_TESTS=1`). Tables equal a local run's; a
//! cancelled job is resubmitted by `lethe collect`; two drivers on one cache
//! compute every node once. Without the variable the cluster tests are skipped
//! (a developer machine without Slurm); the no-Slurm error is always tested.

mod common;
use common::runs::{latest_run, pipeline, rows_without_run_id, text};
use std::path::Path;
use std::process::{Command, Output};

fn cluster() -> bool {
    let wanted = std::env::var("LETHE_SLURM_TESTS").is_ok_and(|v| v == "1");
    if wanted {
        let sinfo = Command::new("sinfo").arg("-h").output();
        assert!(
            sinfo.is_ok_and(|o| o.status.success()),
            "LETHE_SLURM_TESTS=1 but `sinfo` does not answer: start the cluster with scripts/slurm-localhost start"
        );
    }
    wanted
}

/// `lethe` in `dir`, polling Slurm fast.
fn lethe(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .current_dir(dir)
        .env("LETHE_SLURM_POLL_MS", "300")
        .output()
        .expect("run lethe")
}

const BODY: &str =
    "    train { epochs = 6; batch = 32 }\n    sweep { train.regularizer = [none, ewc(lambda = 10)] }";

/// The result tables that hold no times, as text rows.
fn tables(run: &Path) -> Vec<Vec<String>> {
    ["recall.arrow", "summary.arrow", "drift.arrow"]
        .iter()
        .map(|t| rows_without_run_id(&run.join(t)))
        .collect()
}

/// A local run of the test pipeline in `dir`, its tables.
fn local_tables(dir: &Path) -> Vec<Vec<String>> {
    pipeline(dir, "s", BODY);
    let out = lethe(dir, &["run", "s.pipe", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    tables(&latest_run(dir, "s"))
}

/// run.json of the newest finished run of pipeline `s` (not a `.pending` folder).
fn latest_run_json(dir: &Path) -> serde_json::Value {
    let mut runs: Vec<_> = std::fs::read_dir(dir.join("runs/s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("run.json").is_file())
        .collect();
    runs.sort();
    let last = runs.last().expect("a finished run");
    serde_json::from_str(&std::fs::read_to_string(last.join("run.json")).unwrap()).unwrap()
}

/// A successful `--detach` run's stderr and the pending folder it printed.
fn detached(out: &Output) -> (String, String) {
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let pending = err
        .lines()
        .find_map(|l| l.split("lethe status ").nth(1)?.split('`').next())
        .expect("the pending folder is printed")
        .to_string();
    (err, pending)
}

/// How many nodes the jobs' logs say they computed.
fn computed_by_jobs(cache: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(cache.join("slurm/logs")).unwrap() {
        let log = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in log.lines() {
            if let Some(count) = line
                .strip_prefix("computed ")
                .and_then(|l| l.strip_suffix(" nodes"))
            {
                n += count.parse::<usize>().unwrap();
            }
        }
    }
    n
}

#[test]
fn without_sbatch_slurm_is_an_exit_2_error() {
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "s", BODY);
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", "s.pipe", "--executor", "slurm"])
        .current_dir(dir.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("`sbatch` is not on PATH"), "{err}");
    assert!(!dir.path().join("runs").exists(), "nothing written");
    // Slurm's flags without the Slurm executor are a mistake too.
    let out = lethe(dir.path(), &["run", "s.pipe", "--partition", "gpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--partition needs `--executor slurm`"));
    let out = lethe(
        dir.path(),
        &[
            "run",
            "s.pipe",
            "--executor",
            "slurm",
            "--gpus-per-node-kind",
            "evaluate=1",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("only `train` does"));
}

#[test]
fn a_slurm_run_writes_the_tables_a_local_run_writes() {
    if !cluster() {
        return;
    }
    let local = tempfile::tempdir().unwrap();
    let expected = local_tables(local.path());
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "s", BODY);
    let out = lethe(
        dir.path(),
        &["run", "s.pipe", "--executor", "slurm", "--quiet"],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Tens of nodes, a handful of jobs: trainings of a wave and the small nodes share.
    let jobs: usize = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("submitted ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the job count is printed");
    assert!((2..=12).contains(&jobs), "{jobs} jobs:\n{err}");
    assert_eq!(tables(&latest_run(dir.path(), "s")), expected);
    // Every node computed exactly once over all jobs.
    let computed = computed_by_jobs(&dir.path().join(".lethe/cache"));
    let run = latest_run_json(dir.path());
    assert_eq!(computed as u64, run["nodes"]["executed"].as_u64().unwrap());
    // Again: everything is cached, nothing is submitted.
    let again = lethe(
        dir.path(),
        &["run", "s.pipe", "--executor", "slurm", "--quiet"],
    );
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("submitted 0 Slurm jobs"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn a_cancelled_job_is_resubmitted_by_collect() {
    if !cluster() {
        return;
    }
    let local = tempfile::tempdir().unwrap();
    let expected = local_tables(local.path());
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "s", BODY);
    let out = lethe(
        dir.path(),
        &["run", "s.pipe", "--executor", "slurm", "--detach"],
    );
    let (err, pending) = detached(&out);
    // The last job waits on the others: cancel it before it can start.
    let last = err
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("job ")?.split(' ').next())
        .expect("job ids are printed")
        .to_string();
    let cancel = Command::new("scancel").arg(&last).status().unwrap();
    assert!(cancel.success());
    let status = lethe(dir.path(), &["status", &pending]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains(&format!("job {last}")));
    let collect = lethe(dir.path(), &["collect", &pending]);
    let log = text(&collect.stderr);
    assert!(collect.status.success(), "{log}");
    assert!(log.contains("submitted 1 Slurm job"), "{log}");
    assert!(!Path::new(&pending).exists(), "the pending folder is gone");
    assert_eq!(tables(&latest_run(dir.path(), "s")), expected);
}

#[test]
fn two_drivers_on_one_cache_compute_every_node_once() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "s", BODY);
    let first = lethe(
        dir.path(),
        &["run", "s.pipe", "--executor", "slurm", "--detach"],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = lethe(
        dir.path(),
        &["run", "s.pipe", "--executor", "slurm", "--quiet"],
    );
    let log = text(&second.stderr);
    assert!(second.status.success(), "{log}");
    // Every node is made by a job of the first driver (or already made by one).
    assert!(log.contains("submitted 0 Slurm jobs"), "{log}");
    // The first driver's detached submission is listed beside the run.
    let runs = lethe(dir.path(), &["runs"]);
    assert!(
        text(&runs.stdout).contains("submitted to Slurm"),
        "{}",
        text(&runs.stdout)
    );
    // From an empty cache every node was made once, by one job: the second
    // driver saw some as computed by the jobs, the rest as already cached.
    let run = latest_run_json(dir.path());
    let made =
        run["nodes"]["executed"].as_u64().unwrap() + run["nodes"]["cached"].as_u64().unwrap();
    assert_eq!(made, run["nodes"]["total"].as_u64().unwrap());
    assert_eq!(
        computed_by_jobs(&dir.path().join(".lethe/cache")) as u64,
        made
    );
}

/// The jobs for the seed's Table 1 from an empty cache: every node in one job,
/// each job after the jobs it reads, tens of jobs rather than hundreds.
#[test]
fn table1_is_tens_of_jobs_each_after_its_inputs() {
    use lethe::exec::slurm::group;
    let mut sources = lethe::diagnostics::SourceMap::new();
    let mut manifests = lethe::lang::ManifestCache::default();
    let file = common::repo().join("pipelines/table1.pipe");
    let p = lethe::lang::load(&file, &mut sources, &mut manifests).unwrap();
    let plan = lethe::plan::lower(&p.name, p.experiments, &mut manifests);
    let n = plan.graph.node_count();
    let needed = vec![true; n];
    let jobs = group(&plan, &needed, 32);
    eprintln!(
        "table1 from an empty cache: {} jobs for {n} nodes",
        jobs.len()
    );
    assert!((8..=40).contains(&jobs.len()), "{} jobs", jobs.len());
    let mut job_of = vec![usize::MAX; n];
    for (j, g) in jobs.iter().enumerate() {
        for node in &g.nodes {
            assert_eq!(job_of[node.index()], usize::MAX, "a node in two jobs");
            job_of[node.index()] = j;
        }
        // Jobs that train hold trainings and importance estimates only.
        let kinds: Vec<_> = g.nodes.iter().map(|&x| plan.node(x).kind()).collect();
        assert_eq!(
            g.trains,
            kinds.iter().all(|k| matches!(
                k,
                lethe::plan::NodeKind::Train | lethe::plan::NodeKind::Importance
            ))
        );
    }
    assert!(
        job_of.iter().all(|&j| j != usize::MAX),
        "every node in a job"
    );
    for i in 0..n {
        let node = petgraph::graph::NodeIndex::new(i);
        for input in plan
            .graph
            .neighbors_directed(node, petgraph::Direction::Incoming)
        {
            assert!(
                job_of[input.index()] <= job_of[i],
                "a job before its input's job"
            );
        }
    }
    // A larger budget spreads the trainings over more jobs.
    assert!(group(&plan, &needed, 200).len() > jobs.len());
}

#[test]
fn gpus_go_to_training_jobs_only() {
    use lethe::exec::slurm::{sbatch_args, JobGroup, SlurmOptions};
    let options = SlurmOptions {
        partition: Some("gpu".into()),
        account: Some("lab".into()),
        time: Some("2:00:00".into()),
        gpus_for_training: Some(1),
        sbatch_args: vec!["--qos=short".into()],
        max_jobs: 32,
        detach: false,
        cancel_on_exit: false,
    };
    let job = |trains| JobGroup {
        nodes: Vec::new(),
        wave: 1,
        trains,
        label: "wave1-x".into(),
    };
    let args = |trains| {
        sbatch_args(
            &job(trains),
            &["11".to_string(), "12".to_string()],
            "t1",
            Path::new("/c/slurm/logs/wave1-x-%j.log"),
            Path::new("/work"),
            &options,
        )
    };
    let training = args(true);
    for expected in [
        "--job-name=lethe:t1:wave1-x",
        "--output=/c/slurm/logs/wave1-x-%j.log",
        "--chdir=/work",
        "--kill-on-invalid-dep=yes",
        "--dependency=afterok:11:12",
        "--partition=gpu",
        "--account=lab",
        "--time=2:00:00",
        "--gpus=1",
        "--qos=short",
    ] {
        assert!(
            training.contains(&expected.to_string()),
            "{expected}: {training:?}"
        );
    }
    let light = args(false);
    assert!(!light.iter().any(|a| a.starts_with("--gpus")), "{light:?}");
    assert_eq!(light.len(), training.len() - 1);
}

#[test]
fn ctrl_c_with_cancel_on_exit_cancels_the_jobs() {
    if !cluster() {
        return;
    }
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "s", BODY);
    let mut driver = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args([
            "run",
            "s.pipe",
            "--executor",
            "slurm",
            "--cancel-on-exit",
            "--quiet",
        ])
        .current_dir(dir.path())
        .env("LETHE_SLURM_POLL_MS", "300")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(driver.stderr.take().unwrap()).lines();
    let mut ids = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(id) = line
            .trim()
            .strip_prefix("job ")
            .and_then(|l| l.split(' ').next())
        {
            ids.push(id.to_string());
        }
        if line.contains(", log ") && ids.len() > 1 {
            break;
        }
    }
    assert!(ids.len() > 1, "job ids are printed");
    let kill = Command::new("kill")
        .args(["-INT", &driver.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = driver.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("cancelled Slurm jobs")),
        "{rest:?}"
    );
    // None of the submitted jobs waits or runs any more (a cancelled running job
    // may show as completing for a moment).
    let queued = Command::new("squeue")
        .args(["-h", "-o", "%i %T", "-j", &ids.join(",")])
        .output()
        .unwrap();
    let queued = text(&queued.stdout);
    assert!(
        !queued
            .lines()
            .any(|l| l.ends_with(" PENDING") || l.ends_with(" RUNNING")),
        "{queued}"
    );
}

/// Long enough trainings (seconds) to cancel one while it runs.
const SLOW: &str =
    "    train { epochs = 1000; batch = 32 }\n    sweep { train.regularizer = [none, ewc(lambda = 10)] }";

/// The state Slurm shows for job `id` (empty once it has left the queue).
fn squeue_state(id: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%T", "-j", id])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

#[test]
fn a_job_cancelled_part_way_is_resubmitted_by_collect() {
    if !cluster() {
        return;
    }
    let local = tempfile::tempdir().unwrap();
    pipeline(local.path(), "s", SLOW);
    let out = lethe(local.path(), &["run", "s.pipe", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = tables(&latest_run(local.path(), "s"));
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "s", SLOW);
    let out = lethe(
        dir.path(),
        &["run", "s.pipe", "--executor", "slurm", "--detach"],
    );
    let (err, pending) = detached(&out);
    // The first training job, cancelled while it trains.
    let training = err
        .lines()
        .find_map(|l| {
            let l = l.trim().strip_prefix("job ")?;
            l.contains("-train")
                .then(|| l.split(' ').next().unwrap().to_string())
        })
        .expect("a training job is printed");
    let started = std::time::Instant::now();
    while squeue_state(&training) != "RUNNING" {
        assert!(
            started.elapsed().as_secs() < 120,
            "the training job never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let cancel = Command::new("scancel").arg(&training).status().unwrap();
    assert!(cancel.success());
    while squeue_state(&training) == "RUNNING" {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let collect = lethe(dir.path(), &["collect", &pending]);
    let log = text(&collect.stderr);
    assert!(collect.status.success(), "{log}");
    // What the cancelled job (and the jobs after it) did not make is submitted again.
    let resubmitted: usize = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("submitted ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the job count is printed");
    assert!(resubmitted >= 1, "{log}");
    assert!(!Path::new(&pending).exists(), "the pending folder is gone");
    assert_eq!(tables(&latest_run(dir.path(), "s")), expected);
}
