//! `lethe report`: the paper's layout with numbers recomputed here from
//! `recall.arrow`, the three formats, and every class of bad run directory.

mod common;
use arrow_array::{Array, Float64Array, StringArray, UInt64Array};
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn lethe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .output()
        .expect("run lethe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One run of the fixture, shared by every test of this file.
fn run_dir() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        // Kept for the whole test process (the directory outlives every test).
        let dir = tempfile::tempdir().unwrap().keep();
        let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["run", fixture("report.pipe").to_str().unwrap(), "--quiet"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let runs = dir.join("runs/report-fixture");
        std::fs::read_dir(&runs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    })
}

fn report(format: &str, extra: &[&str]) -> String {
    let dir = run_dir().to_str().unwrap();
    let mut args = vec!["report", dir, "--format", format];
    args.extend(extra);
    let out = lethe(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// (variant, direction, gallery, k, seed, stage, eval_task) -> recall, read with
/// arrow directly.
type Key = (String, String, String, u64, u64, u64, String);

fn recall_rows(run: &Path) -> BTreeMap<Key, f64> {
    let file = std::fs::File::open(run.join("recall.arrow")).unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).unwrap();
    let mut out = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let s = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let u = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<UInt64Array>()
                .unwrap()
                .clone()
        };
        let recall = batch
            .column_by_name("recall")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone();
        let (variant, direction, gallery, task) =
            (s("variant"), s("direction"), s("gallery"), s("eval_task"));
        let (k, seed, stage) = (u("k"), u("seed"), u("stage"));
        for i in 0..batch.num_rows() {
            out.insert(
                (
                    variant.value(i).to_string(),
                    direction.value(i).to_string(),
                    gallery.value(i).to_string(),
                    k.value(i),
                    seed.value(i),
                    stage.value(i),
                    task.value(i).to_string(),
                ),
                recall.value(i),
            );
        }
    }
    out
}

/// `mean ± sample std` with one decimal, as papers print it.
fn mean_std(values: &[f64]) -> String {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let fix = |x: f64| {
        let s = format!("{x:.1}");
        if s == "-0.0" {
            "0.0".into()
        } else {
            s
        }
    };
    format!("{} ± {}", fix(mean), fix(var.sqrt()))
}

/// The Markdown table under `## {title}`: header cells and rows of cells.
fn markdown_table(doc: &str, title: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let start = doc
        .find(&format!("\n{title}\n"))
        .unwrap_or_else(|| panic!("no section {title}:\n{doc}"));
    let lines: Vec<Vec<String>> = doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('*').to_string())
                .collect()
        })
        .collect();
    (lines[0].clone(), lines[2..].to_vec())
}

#[test]
fn the_paper_table_holds_the_numbers_of_recall_arrow() {
    let doc = report("markdown", &[]);
    let rows = recall_rows(run_dir());
    for direction in ["im2txt", "txt2im"] {
        let (header, body) = markdown_table(&doc, &format!("## {direction}"));
        // Columns in the paper's order: joint, then reindex, then no reindex.
        assert_eq!(header, ["task", "joint", "reindex ft", "frozen ft"]);
        assert_eq!(
            body[0],
            [
                "policy",
                "joint (upper bound)",
                "reindex",
                "no reindex (frozen)"
            ]
        );
        let labels: Vec<&str> = body.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            labels,
            [
                "policy",
                "animals",
                "vehicles",
                "clothes",
                "average (task known)",
                "union animals+vehicles+clothes (task unknown)",
                "forgetting",
                "BWT",
                "FWT"
            ]
        );
        for (c, variant) in header.iter().enumerate().skip(1) {
            // A joint model is evaluated once, as stage T.
            let last = 3;
            let at = |seed: u64, stage: u64, gallery: &str, task: &str| {
                rows[&(
                    variant.clone(),
                    direction.to_string(),
                    gallery.to_string(),
                    10,
                    seed,
                    stage,
                    task.to_string(),
                )]
            };
            let tasks = ["animals", "vehicles", "clothes"];
            for (r, task) in tasks.iter().enumerate() {
                let expected =
                    mean_std(&[at(1, last, "per_task", task), at(2, last, "per_task", task)]);
                assert_eq!(body[r + 1][c], expected, "{direction} {variant} {task}");
            }
            let average = |seed| {
                tasks
                    .iter()
                    .map(|t| at(seed, last, "per_task", t))
                    .sum::<f64>()
                    / 3.0
            };
            assert_eq!(body[4][c], mean_std(&[average(1), average(2)]));
            let union = mean_std(&[at(1, last, "union", "all"), at(2, last, "union", "all")]);
            assert_eq!(body[5][c], union, "{direction} {variant} union");
            if variant == "joint" {
                assert_eq!(body[6][c], "-", "a joint model forgets nothing");
            } else {
                // Chaudhry's forgetting: the best recall from the stage that
                // learned the task on, minus the final one.
                let forgetting = |seed| {
                    (1..3usize)
                        .map(|j| {
                            let best = (j as u64..3)
                                .map(|k| at(seed, k, "per_task", tasks[j - 1]))
                                .fold(f64::MIN, f64::max);
                            best - at(seed, 3, "per_task", tasks[j - 1])
                        })
                        .sum::<f64>()
                        / 2.0
                };
                assert_eq!(body[6][c], mean_std(&[forgetting(1), forgetting(2)]));
                // Forward transfer against the untrained model (stage 0).
                let fwt = |seed| {
                    (2..=3)
                        .map(|j| {
                            at(seed, j as u64 - 1, "per_task", tasks[j - 1])
                                - at(seed, 0, "per_task", tasks[j - 1])
                        })
                        .sum::<f64>()
                        / 2.0
                };
                assert_eq!(body[8][c], mean_std(&[fwt(1), fwt(2)]));
            }
        }
    }
}

/// The headline `lethe run` printed holds the paper table's average and union rows.
#[test]
fn the_headline_agrees_with_the_report() {
    let headline = std::fs::read_to_string(run_dir().join("headline.txt")).unwrap();
    let split = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = headline.lines();
    let header = split(lines.next().unwrap());
    assert_eq!(
        header,
        [
            "variant",
            "im2txt avg R@10",
            "im2txt union total R@10",
            "txt2im avg R@10",
            "txt2im union total R@10"
        ]
    );
    let rows: Vec<Vec<String>> = lines.map(split).collect();
    let labels: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        labels,
        ["joint", "reindex ft", "frozen ft"],
        "pipeline order"
    );
    let doc = report("markdown", &[]);
    for (d, direction) in ["im2txt", "txt2im"].iter().enumerate() {
        let (columns, body) = markdown_table(&doc, &format!("## {direction}"));
        let row = |label: &str| body.iter().find(|r| r[0] == label).unwrap().clone();
        let average = row("average (task known)");
        let union = row("union animals+vehicles+clothes (task unknown)");
        for line in &rows {
            let c = columns.iter().position(|h| *h == line[0]).unwrap();
            assert_eq!(line[1 + 2 * d], average[c], "{direction} {}", line[0]);
            assert_eq!(line[2 + 2 * d], union[c], "{direction} {}", line[0]);
        }
    }
}

#[test]
fn recall_matrices_list_every_stage_and_task() {
    let doc = report("markdown", &["--k", "1"]);
    assert!(doc.starts_with("# report-fixture: Recall@1 (%)"), "{doc}");
    let rows = recall_rows(run_dir());
    let (header, body) = markdown_table(&doc, "### reindex ft · txt2im");
    assert_eq!(header, ["after stage", "animals", "vehicles", "clothes"]);
    let stages: Vec<&str> = body.iter().map(|r| r[0].as_str()).collect();
    // Stage 0 is the untrained model (forward transfer).
    assert_eq!(
        stages,
        ["0 (init)", "1 (animals)", "2 (vehicles)", "3 (clothes)"]
    );
    for (s, row) in body.iter().enumerate() {
        for (t, task) in ["animals", "vehicles", "clothes"].iter().enumerate() {
            let at = |seed: u64| {
                rows[&(
                    "reindex ft".to_string(),
                    "txt2im".to_string(),
                    "per_task".to_string(),
                    1,
                    seed,
                    s as u64,
                    task.to_string(),
                )]
            };
            assert_eq!(row[t + 1], mean_std(&[at(1), at(2)]), "stage {s} {task}");
        }
    }
    // The joint model has a single stage.
    let (_, joint) = markdown_table(&doc, "### joint · im2txt");
    assert_eq!(joint.len(), 1);
}

#[test]
fn text_report_aligns_groups_over_their_columns() {
    let doc = report("text", &[]);
    let block = &doc[doc.find("\nim2txt\n").unwrap()..];
    let lines: Vec<&str> = block.lines().collect();
    let groups = lines[4];
    let header = lines[5];
    // Each group title sits over its columns: "reindex" right of "joint" and left of "frozen ft".
    let reindex = groups.find("reindex").unwrap();
    assert!(groups.find("joint (upper bound)").unwrap() < reindex);
    assert!(
        reindex < header.find("frozen ft").unwrap(),
        "{groups}\n{header}"
    );
    assert!(header.starts_with("task"));
    assert!(doc.contains("forgetting: mean_{j<T} (max_{j<=l<T} R[l][j] - R[T][j])"));
    assert!(doc.contains("Drift at the last stage"));
}

#[test]
fn html_report_is_one_offline_page_with_inline_plots() {
    let page = report("html", &[]);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    assert!(!page.contains("<script"));
    // No external resources: every URL is an SVG namespace.
    for (i, _) in page.match_indices("http") {
        assert!(
            page[i..].starts_with("http://www.w3.org/"),
            "{}",
            &page[i..i + 60]
        );
    }
    // One recall plot per continual variant and direction, plus the drift plots.
    let svgs = page.matches("<svg").count();
    let drift_kinds = page.matches("<figure>").count() - 4;
    assert_eq!(svgs, 4 + drift_kinds);
    assert!(
        drift_kinds >= 5,
        "embedding drift, alignment, overlap, rotation..."
    );
    assert!(page.contains("<th class=\"group\" colspan=\"1\">reindex</th>"));
    assert_eq!(page.matches("</table>").count(), 2 + 6 + 1);
}

#[test]
fn output_file_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("report.md");
    let run = run_dir().to_str().unwrap();
    let out = lethe(&[
        "report",
        run,
        "--format",
        "markdown",
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        report("markdown", &[])
    );
    // Into a folder that does not exist: exit 2, and nothing left behind.
    let missing = dir.path().join("no/such/report.md");
    let out = lethe(&["report", run, "-o", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot write"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A copy of the run directory to break.
fn broken_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(run_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn fails_with(dir: &Path, extra: &[&str], needles: &[&str]) {
    let mut args = vec!["report", dir.to_str().unwrap()];
    args.extend(extra);
    let out = lethe(&args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_run_directories_exit_2_naming_the_file() {
    fails_with(
        Path::new("/no/such/run"),
        &[],
        &["/no/such/run", "not a run directory"],
    );

    let missing = broken_copy();
    std::fs::remove_file(missing.path().join("recall.arrow")).unwrap();
    fails_with(missing.path(), &[], &["recall.arrow"]);

    let garbage = broken_copy();
    std::fs::write(garbage.path().join("summary.arrow"), b"not arrow at all").unwrap();
    fails_with(
        garbage.path(),
        &[],
        &["summary.arrow", "not an Arrow IPC file"],
    );

    let truncated = broken_copy();
    let bytes = std::fs::read(run_dir().join("recall.arrow")).unwrap();
    std::fs::write(
        truncated.path().join("recall.arrow"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    fails_with(truncated.path(), &[], &["recall.arrow"]);

    let json = broken_copy();
    std::fs::write(json.path().join("pipeline.json"), "[{\"label\": 3").unwrap();
    fails_with(json.path(), &[], &["pipeline.json", "not valid JSON"]);

    fails_with(run_dir(), &["--k", "7"], &["has no Recall@7", "K = 1, 10"]);
}

#[test]
fn a_table_without_a_needed_column_names_it() {
    let dir = broken_copy();
    // A drift table where the recall table should be: valid Arrow, wrong columns.
    std::fs::copy(
        dir.path().join("drift.arrow"),
        dir.path().join("recall.arrow"),
    )
    .unwrap();
    fails_with(
        dir.path(),
        &[],
        &["recall.arrow", "has no column `eval_task`"],
    );
    // A column of the wrong type.
    let batch = arrow_array::RecordBatch::try_from_iter([(
        "variant",
        std::sync::Arc::new(UInt64Array::from(vec![1u64])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let file = std::fs::File::create(dir.path().join("recall.arrow")).unwrap();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    fails_with(
        dir.path(),
        &[],
        &["column `variant` holds UInt64, expected utf8"],
    );
}
