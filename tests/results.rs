//! The result tables' schemas (`lethe::results`): `docs/results.md` lists exactly
//! their columns, and every table reads back what was written, with located errors.

use lethe::results::{
    read_table, tables, DriftRow, EmbeddingRow, Identified, Identity, LogRow, RecallRow, ResultRow,
    SummaryRow, TableWriter, TrainLogRow,
};
use std::collections::HashMap;
use std::path::Path;

fn results_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results.md");
    std::fs::read_to_string(path).unwrap()
}

/// The sections of the doc by heading line (`## \`recall.arrow\``), each with its
/// lines.
fn sections(doc: &str) -> Vec<(String, Vec<&str>)> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            out.push((heading.to_string(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(line);
        }
    }
    out
}

/// The column names a section's `| column | meaning |` table lists, in order: every
/// `code` span of a row's first cell (`median_rank`, `mean_rank` are two), and a row
/// without one (the swept settings) as its text.
fn documented_columns(lines: &[&str]) -> Vec<String> {
    let rows = lines
        .iter()
        .skip_while(|l| l.trim() != "| column | meaning |")
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    let mut names = Vec::new();
    for row in rows {
        let first = row
            .trim_start_matches('|')
            .split(" | ")
            .next()
            .unwrap()
            .trim();
        let spans: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        if spans.is_empty() {
            names.push(first.to_string());
        }
        names.extend(spans.iter().map(|s| s.to_string()));
    }
    names
}

fn assert_same_columns(what: &str, documented: &[String], schema: &[String]) {
    let missing: Vec<&String> = schema.iter().filter(|c| !documented.contains(c)).collect();
    let extra: Vec<&String> = documented.iter().filter(|c| !schema.contains(c)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: docs/results.md lacks {missing:?} and lists {extra:?} that the schema has not"
    );
    assert_eq!(
        documented, schema,
        "{what}: the doc lists the columns in another order"
    );
}

#[test]
fn the_doc_lists_exactly_the_columns_of_every_table() {
    let doc = results_doc();
    let sections = sections(&doc);
    let section = |prefix: &str| {
        let found: Vec<&(String, Vec<&str>)> = sections
            .iter()
            .filter(|(h, _)| h.starts_with(prefix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one section `## {prefix}...` in docs/results.md"
        );
        documented_columns(&found[0].1)
    };
    let identifying = section("Identifying columns");
    assert_eq!(
        identifying.last().map(String::as_str),
        Some("one column per swept setting"),
        "the swept settings follow the fixed identifying columns"
    );
    let schemas = tables();
    for table in &schemas {
        assert_same_columns(
            "identifying columns",
            &identifying[..identifying.len() - 1],
            &table.identity,
        );
        assert_same_columns(
            table.file,
            &section(&format!("`{}`", table.file)),
            &table.own,
        );
    }
    // Every table the doc documents has a schema.
    for (heading, _) in &sections {
        if let Some(file) = heading.strip_prefix('`').and_then(|h| h.split('`').next()) {
            assert!(
                schemas.iter().any(|t| t.file == file),
                "docs/results.md documents {file}, which has no schema"
            );
        }
    }
}

#[test]
fn the_column_parser_reads_names_and_fails_on_a_changed_doc() {
    let doc = "## `x.arrow`\n\n| column | meaning |\n| --- | --- |\n| `a` | one |\n\
               | `b`, `c` | two |\n\nprose\n";
    let lines: Vec<&str> = doc.lines().collect();
    assert_eq!(documented_columns(&lines), ["a", "b", "c"]);
    let schema = ["a".to_string(), "b".to_string()];
    let result = std::panic::catch_unwind(|| {
        assert_same_columns("x.arrow", &documented_columns(&lines), &schema)
    });
    assert!(result.is_err(), "an extra documented column fails");
}

fn metadata() -> HashMap<String, String> {
    HashMap::from([("lethe.run_id".to_string(), "run".to_string())])
}

fn identity(variant: &str, seed: Option<u64>) -> Identity {
    Identity {
        run_id: "run".to_string(),
        pipeline: "p".to_string(),
        variant: variant.to_string(),
        seed,
        axes: vec![
            ("train.regularizer".to_string(), "ft".to_string()),
            ("variant".to_string(), variant.to_string()),
        ],
    }
}

fn axes() -> Vec<String> {
    vec!["train.regularizer".to_string(), "variant".to_string()]
}

/// Writes `rows` and reads them back, with the file's column names.
fn round_trip<R: ResultRow>(rows: &[Identified<R>]) -> (Vec<Identified<R>>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(R::FILE);
    let mut writer = TableWriter::<R>::new(&axes());
    for r in rows {
        writer.push(&r.identity, &r.row);
    }
    writer.write(&path, &metadata()).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).unwrap();
    let names = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    (read_table::<R>(&path).unwrap(), names)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const IDENTIFYING: [&str; 6] = [
    "run_id",
    "pipeline",
    "variant",
    "seed",
    "train.regularizer",
    "variant_line",
];

#[test]
fn recall_and_drift_rows_read_back_as_written() {
    let recall = Identified {
        identity: identity("ft", Some(3)),
        row: RecallRow {
            stage: 2,
            stage_task: "b".into(),
            eval_task: "all".into(),
            gallery: "union".into(),
            direction: "im2txt".into(),
            k: 10,
            recall: 41.5,
            median_rank: 3.0,
            mean_rank: 7.25,
            n_queries: 80,
            gallery_size: 400,
        },
    };
    let (back, columns) = round_trip(std::slice::from_ref(&recall));
    assert_eq!(back, [recall]);
    assert_eq!(columns[..6], IDENTIFYING.map(String::from));
    let drift = Identified {
        identity: identity("ft", Some(3)),
        row: DriftRow {
            stage: 3,
            stage_task: "c".into(),
            task: "a".into(),
            task_stage: 1,
            direction: "txt2im".into(),
            metric: "alignment".into(),
            modality: "cross".into(),
            value: Some(0.5),
            note: String::new(),
        },
    };
    let (back, _) = round_trip(std::slice::from_ref(&drift));
    assert_eq!(back, [drift]);
}

#[test]
fn summary_rows_keep_their_nulls() {
    let rows = [None, Some(0.7)].map(|value| Identified {
        identity: identity("ewc", None),
        row: SummaryRow {
            statistic: "std".into(),
            n_seeds: 1,
            direction: "im2txt".into(),
            gallery: "per_task".into(),
            k: 5,
            metric: "bwt".into(),
            formula: "mean".into(),
            value,
        },
    });
    let (back, _) = round_trip(&rows);
    assert_eq!(back, rows);
}

#[test]
fn regularizer_terms_become_a_column_each_in_first_use_order() {
    let row = |terms: &[(&str, f64)]| Identified {
        identity: identity("x", Some(1)),
        row: TrainLogRow {
            model: "both".into(),
            log: LogRow {
                stage: 1,
                task: "a".into(),
                epoch: 1,
                step: 4,
                loss: 1.5,
                task_loss: 1.0,
                terms: terms.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
                lr: 1e-3,
                grad_norm: 2.0,
                seconds: 0.1,
            },
        },
    };
    let rows = [
        row(&[]),
        row(&[("mas", 0.25)]),
        row(&[("mas", 0.125), ("ewc", 0.5)]),
    ];
    let (back, columns) = round_trip(&rows);
    assert_eq!(back, rows);
    let mut expected = names(&IDENTIFYING);
    expected.extend(names(&[
        "model",
        "stage",
        "task",
        "epoch",
        "step",
        "loss",
        "task_loss",
        "term_mas",
        "term_ewc",
        "lr",
        "grad_norm",
        "seconds",
    ]));
    assert_eq!(columns, expected);
}

#[test]
fn embeddings_keep_their_vectors_and_refuse_mixed_widths() {
    let row = |vector: Vec<f32>| Identified {
        identity: identity("x", Some(1)),
        row: EmbeddingRow {
            stage: 2,
            model_stage: 1,
            model: "both".into(),
            task: "a".into(),
            modality: "text".into(),
            role: "reference".into(),
            item_id: "c1".into(),
            image_id: "i1".into(),
            vector,
        },
    };
    let rows = [row(vec![0.6, 0.8]), row(vec![1.0, 0.0])];
    let (back, columns) = round_trip(&rows);
    assert_eq!(back, rows);
    assert_eq!(columns.last().map(String::as_str), Some("vector"));

    let dir = tempfile::tempdir().unwrap();
    let mut writer = TableWriter::<EmbeddingRow>::new(&[]);
    writer.push(&rows[0].identity, &rows[0].row);
    writer.push(&rows[0].identity, &row(vec![1.0]).row);
    let error = writer
        .write(&dir.path().join("e.arrow"), &metadata())
        .unwrap_err();
    assert!(error.contains("row 1 has 1 values"), "{error}");
}

#[test]
fn an_empty_table_has_every_column() {
    let (rows, columns) = round_trip::<DriftRow>(&[]);
    assert!(rows.is_empty());
    let mut expected = names(&IDENTIFYING);
    expected.extend(DriftRow::COLUMNS.iter().map(|c| c.name.to_string()));
    assert_eq!(columns, expected);
}

/// Writes a one-row table of the given columns to `path`.
fn write_columns(path: &Path, columns: Vec<(&str, arrow_array::ArrayRef)>) {
    let batch = arrow_array::RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

#[test]
fn reading_names_the_file_the_column_and_the_row() {
    use arrow_array::{ArrayRef, Float64Array, StringArray, UInt64Array};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drift.arrow");
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let number = |v: u64| Arc::new(UInt64Array::from(vec![v])) as ArrayRef;

    // A wrong type is named before a missing column.
    write_columns(&path, vec![("stage_task", number(1))]);
    let e = read_table::<DriftRow>(&path).unwrap_err();
    assert_eq!(e.path, path);
    assert_eq!(e.message, "column `stage_task` holds UInt64, expected utf8");

    write_columns(&path, vec![("run_id", text(Some("r")))]);
    let e = read_table::<DriftRow>(&path).unwrap_err();
    assert_eq!(e.message, "has no column `pipeline` (it has: run_id)");

    // A null where the row type has no room for one.
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("run_id", text(Some("r"))),
        ("pipeline", text(Some("p"))),
        ("variant", text(Some("x"))),
        ("seed", number(1)),
        ("stage", number(1)),
        ("stage_task", text(Some("a"))),
        ("task", text(None)),
        ("task_stage", number(1)),
        ("direction", text(Some("im2txt"))),
        ("metric", text(Some("alignment"))),
        ("modality", text(Some("cross"))),
        ("value", Arc::new(Float64Array::from(vec![0.5])) as ArrayRef),
        ("note", text(Some(""))),
    ];
    write_columns(&path, columns);
    let e = read_table::<DriftRow>(&path).unwrap_err();
    assert_eq!(e.message, "row 0: `task` is null");
}

#[test]
fn the_doc_states_every_formula_as_the_code_names_it() {
    use lethe::eval::metrics::{AVERAGE, BWT, FORGETTING, FWT, TOTAL};
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results.md"),
    )
    .unwrap();
    for formula in [AVERAGE, FORGETTING, BWT, FWT, TOTAL] {
        assert!(
            doc.contains(&format!("`{formula}`")),
            "docs/results.md does not state `{formula}`"
        );
    }
}
