//! `lethe import precomp`: VSE++-style `.npy` features and caption files written
//! by the tests; every malformed input refused with exit 2 naming the file and
//! the place, nothing written; a study run on the imported features.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lethe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .output()
        .expect("run lethe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs lethe expecting exit 2 and `needles` in the error.
fn refused(args: &[&str], needles: &[&str]) {
    let out = lethe(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

/// A `.npy` file: `descr` such as `<f4`, the shape, and raw little-endian data.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let shape_text = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}

/// VSE++-style files: `{part}_ims.npy` (n x dim) and `{part}_caps.txt` (5 per image).
fn write_precomp(dir: &Path, part: &str, n: usize, dim: usize, seed: usize) -> (PathBuf, PathBuf) {
    let ims = dir.join(format!("{part}_ims.npy"));
    let caps = dir.join(format!("{part}_caps.txt"));
    let values =
        (0..n * dim).map(|x| (((x * 7 + seed) % 13) as f32 - 6.0) / 6.0 + (x / dim % 3) as f32);
    write_npy(&ims, "<f4", &[n, dim], &f32_bytes(values));
    let words = ["a dog runs", "a red car", "a pizza slice"];
    let lines: String = (0..n * 5)
        .map(|c| format!("{} number {} ({c})\n", words[(c / 5) % 3], c / 5))
        .collect();
    std::fs::write(&caps, lines).unwrap();
    (ims, caps)
}

#[test]
fn bad_precomp_input_is_refused_with_its_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let (ims, caps) = write_precomp(dir.path(), "train", 6, 4, 0);
    let out = dir.path().join("p");
    let args = |ims: &Path, caps: &Path| {
        vec![
            "import".to_string(),
            "precomp".into(),
            "--images".into(),
            s(ims).into(),
            "--captions".into(),
            s(caps).into(),
            "-o".into(),
            s(&out).into(),
        ]
    };
    let run = |ims: &Path, caps: &Path, needles: &[&str]| {
        let a = args(ims, caps);
        refused(&a.iter().map(String::as_str).collect::<Vec<_>>(), needles);
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "nothing written"
        );
    };
    let bad = dir.path().join("bad_ims.npy");
    write_npy(&bad, "<i8", &[6, 4], &[0u8; 6 * 4 * 8]);
    run(&bad, &caps, &["bad_ims.npy", "`<i8`", "float32"]);
    write_npy(&bad, "<f4", &[24], &[0u8; 24 * 4]);
    run(&bad, &caps, &["bad_ims.npy", "has shape [24]"]);
    write_npy(&bad, "<f4", &[7, 4], &[0u8; 7 * 4 * 4]);
    run(
        &bad,
        &caps,
        &["bad_ims.npy: has 7 rows", "30 captions, so 6 images"],
    );
    write_npy(&bad, "<f4", &[6, 4], &[0u8; 50]);
    run(
        &bad,
        &caps,
        &[
            "bad_ims.npy",
            "needs 96 bytes of data, the file has 50 (truncated?)",
        ],
    );
    let short = dir.path().join("short_caps.txt");
    let text29: String = std::fs::read_to_string(&caps)
        .unwrap()
        .lines()
        .take(29)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&short, text29).unwrap();
    run(
        &ims,
        &short,
        &[
            "short_caps.txt: line 29",
            "29 captions is not a multiple of --captions-per-image 5",
            "lines 26-29",
        ],
    );
    let mut nan = f32_bytes((0..24).map(|x| x as f32));
    nan[4 * 9..4 * 10].copy_from_slice(&f32::NAN.to_le_bytes());
    write_npy(&bad, "<f4", &[6, 4], &nan);
    run(&bad, &caps, &["bad_ims.npy: row 2 holds a NaN"]);
}

#[test]
fn precomp_imports_features_and_a_pipeline_runs_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let (train_ims, train_caps) = write_precomp(dir.path(), "train", 30, 8, 1);
    let (dev_ims, dev_caps) = write_precomp(dir.path(), "dev", 9, 8, 2);
    let (test_ims, test_caps) = write_precomp(dir.path(), "test", 9, 8, 3);
    let cap_features = |name: &str, n: usize| {
        let path = dir.path().join(name);
        write_npy(
            &path,
            "<f4",
            &[n * 5, 6],
            &f32_bytes(
                (0..n * 30).map(|x| ((x * 5 % 11) as f32 - 5.0) / 5.0 + (x / 30 % 3) as f32),
            ),
        );
        path
    };
    let out = dir.path().join("p");
    let (cf1, cf2, cf3) = (
        cap_features("train_cf.npy", 30),
        cap_features("dev_cf.npy", 9),
        cap_features("test_cf.npy", 9),
    );
    let result = lethe(&[
        "import",
        "precomp",
        "--images",
        s(&train_ims),
        "--captions",
        s(&train_caps),
        "--caption-features",
        s(&cf1),
        "--images",
        s(&dev_ims),
        "--captions",
        s(&dev_caps),
        "--caption-features",
        s(&cf2),
        "--images",
        s(&test_ims),
        "--captions",
        s(&test_caps),
        "--caption-features",
        s(&cf3),
        "-o",
        s(&out),
    ]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    assert!(
        text(&result.stdout).contains("48 images x 8, 240 captions"),
        "{}",
        text(&result.stdout)
    );
    let manifest = out.join("precomp.yaml");
    let inspect = lethe(&["data", "inspect", s(&manifest)]);
    let inspect = text(&inspect.stdout);
    assert!(
        inspect.contains("48 images x 8-d, 240 captions x 6-d"),
        "{inspect}"
    );
    let m = lethe::data::Manifest::load(&manifest).unwrap();
    let split = lethe::data::load_split(&m, "topics").unwrap();
    assert!(
        split.image_features.is_mapped(),
        "f32 features stay in the map"
    );
    assert_eq!(split.image_ids[30], "dev/0");
    assert_eq!(split.caption_ids[1], "train/0#1");
    // A small study on it.
    let pipe = dir.path().join("p.pipe");
    std::fs::write(&pipe, format!(
        "pipeline \"precomp\" {{\n    dataset = \"{}\"\n    split = \"topics\"\n    tasks = [animals, vehicles, food]\n    model {{\n        image = mlp(hidden = [16], embed = 8)\n        text = mlp(hidden = [16], embed = 8)\n    }}\n    train {{ epochs = 2; batch = 8 }}\n}}\n",
        s(&manifest)
    )).unwrap();
    let run = lethe(&[
        "run",
        s(&pipe),
        "--out",
        s(&dir.path().join("runs")),
        "--cache",
        s(&dir.path().join("cache")),
        "--quiet",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    // Without caption features: captions wait for `lethe featurize`, image features are in.
    let out2 = dir.path().join("p2");
    let labels = dir.path().join("labels.csv");
    let rows: String = (0..30)
        .map(|i| {
            format!(
                "{},{}\n",
                ["animal|animal|person", "vehicle", "food|food|person"][i % 3],
                ["test", "val", "train", "train", "train"][i % 5]
            )
        })
        .collect();
    std::fs::write(&labels, format!("supercategory,split\n{rows}")).unwrap();
    let result = lethe(&[
        "import",
        "precomp",
        "--images",
        s(&train_ims),
        "--captions",
        s(&train_caps),
        "--tasks",
        s(&labels),
        "-o",
        s(&out2),
    ]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    assert!(text(&result.stdout).contains("next: lethe featurize"));
    let yaml = std::fs::read_to_string(out2.join("precomp.yaml")).unwrap();
    assert!(
        yaml.contains("{ supercategory: [animal], match: dominant }"),
        "{yaml}"
    );
    assert!(
        yaml.contains("captions: raw/captions.jsonl") && !yaml.contains("images: raw/"),
        "{yaml}"
    );
    let v = lethe(&["validate", s(&out2.join("precomp.yaml"))]);
    assert!(
        v.status.success() && text(&v.stdout).contains("features not built yet"),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    std::fs::write(
        &labels,
        format!(
            "supercategory,split\n{}",
            rows.lines()
                .take(29)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    refused(
        &[
            "import",
            "precomp",
            "--images",
            s(&train_ims),
            "--captions",
            s(&train_caps),
            "--tasks",
            s(&labels),
            "-o",
            s(&out2),
        ],
        &["labels.csv: has 29 rows of labels for 30 images"],
    );
}

#[test]
fn a_table_of_several_batches_loads_whole_and_the_split_check_reads_no_features() {
    use lethe::data::read::{read_table, read_table_with, Read};
    // 2,000 images with 5 captions each: the captions table is written in two
    // record batches (8,192 rows each at most), read by copying each batch and
    // releasing its pages of the map.
    let dir = tempfile::tempdir().unwrap();
    let (ims, caps) = write_precomp(dir.path(), "data", 2000, 4, 5);
    let caption_values: Vec<f32> = (0..10_000 * 3)
        .map(|x| (x % 97) as f32 / 97.0 - 0.5)
        .collect();
    let cf = dir.path().join("data_cf.npy");
    write_npy(
        &cf,
        "<f4",
        &[10_000, 3],
        &f32_bytes(caption_values.iter().copied()),
    );
    let out = dir.path().join("p");
    let result = lethe(&[
        "import",
        "precomp",
        "--images",
        s(&ims),
        "--captions",
        s(&caps),
        "--caption-features",
        s(&cf),
        "-o",
        s(&out),
    ]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let path = out.join("captions.arrow");
    let file = lethe::files::read_ipc(&path, u64::MAX).unwrap();
    assert_eq!(file.batches.len(), 2, "two record batches");
    let table = read_table(&path, &["image_id"]).unwrap();
    assert!(!table.features.is_mapped(), "several batches are copied");
    assert_eq!(&table.features[..], &caption_values[..]);
    assert_eq!(table.ids[9_999], "data/1999#4");
    // Read again after the release: the same values.
    assert_eq!(
        &read_table(&path, &["image_id"]).unwrap().features[..],
        &caption_values[..]
    );
    let meta = read_table_with(&path, &["image_id"], Read::MetadataOnly).unwrap();
    assert_eq!((meta.features.len(), meta.dim), (0, 3));
    assert_eq!(meta.ids, table.ids);
    assert_eq!(meta.columns["image_id"], table.columns["image_id"]);
}
