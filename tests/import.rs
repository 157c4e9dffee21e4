//! `lethe import` on small files in the real formats (COCO annotation JSON,
//! Karpathy's split files, VSE++ precomputed `.npy` + captions), written by the
//! tests: what is imported, what the default splits hold, every malformed input
//! refused with exit 2 naming the file and the place, nothing half-written; and
//! the way from annotation files to a run's results.

mod coco_fixture;

use coco_fixture::{Coco, IMAGES};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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

/// `lethe import coco` with every file of the fixture.
fn import_coco(coco: &Coco, out: &Path) -> Output {
    lethe(&[
        "import",
        "coco",
        "--captions",
        s(&coco.captions("train")),
        "--captions",
        s(&coco.captions("val")),
        "--instances",
        s(&coco.instances("train")),
        "--instances",
        s(&coco.instances("val")),
        "--images",
        s(&coco.images("train")),
        "--images",
        s(&coco.images("val")),
        "--karpathy",
        s(&coco.karpathy()),
        "-o",
        s(out),
    ])
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

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn coco_imports_with_categories_and_karpathy_parts_and_validates_before_featurizing() {
    let dir = tempfile::tempdir().unwrap();
    let coco = coco_fixture::write(&dir.path().join("coco"));
    let out = dir.path().join("dataset");
    let result = import_coco(&coco, &out);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let stdout = text(&result.stdout);
    assert!(stdout.contains("48 images, 240 captions"), "{stdout}");
    assert!(
        stdout.contains("Karpathy split: 12 test, 24 train, 12 val"),
        "{stdout}"
    );
    assert!(stdout.contains("next: lethe featurize"), "{stdout}");
    let images = read_lines(&out.join("raw/images.jsonl"));
    assert_eq!(images.len(), IMAGES);
    let fifth = &images[5];
    assert_eq!(fifth["id"], "6");
    assert_eq!(fifth["cocoid"], "6");
    assert_eq!(fifth["filename"], "COCO_train2014_000000000006.jpg");
    assert_eq!(fifth["file"], "train2014/COCO_train2014_000000000006.jpg");
    assert_eq!(fifth["split"], "val");
    assert_eq!(
        fifth["category"],
        serde_json::json!(["bus", "bus", "person"])
    );
    assert_eq!(
        images[4]["supercategory"],
        serde_json::json!(["animal", "animal", "person"])
    );
    assert_eq!(
        images[7]["category"],
        serde_json::json!([]),
        "no annotation: an empty list"
    );
    let captions = read_lines(&out.join("raw/captions.jsonl"));
    assert_eq!(captions.len(), 240);
    assert_eq!(
        captions[0]["text"], "a dog playing on the grass, photo 0 caption 0",
        "trimmed"
    );
    // The manifest validates as written, from the raw lists.
    let manifest = out.join("coco.yaml");
    let v = lethe(&["validate", s(&manifest)]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    assert!(
        text(&v.stdout).contains("ok (dataset `coco`, 3 splits); features not built yet"),
        "{}",
        text(&v.stdout)
    );
    let inspect = text(&lethe(&["data", "inspect", s(&manifest)]).stdout);
    let row = |split_header: &str, task: &str| -> Vec<String> {
        let after = inspect.split(split_header).nth(1).unwrap();
        let line = after
            .lines()
            .find(|l| l.split_whitespace().next() == Some(task))
            .unwrap();
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    // animals: the 12 animal-dominant images (3 test, 3 val, 6 train); ties and
    // images another supercategory dominates are dropped.
    assert_eq!(
        row("split `secoco`", "animals"),
        ["6", "30", "3", "15", "3", "15", "12", "60"]
    );
    assert_eq!(
        row("split `secoco-val`", "food"),
        ["6", "30", "-", "-", "3", "15", "9", "45"]
    );
    assert!(inspect.contains("24 candidates, 12 selected; dropped: 8 by match: dominant (another value has more instances), 4 by match: dominant (tied with an unlisted value)"), "{inspect}");
    // The shipped template is what an import writes (but for where the images are).
    let written = std::fs::read_to_string(&manifest).unwrap();
    let shipped = std::fs::read_to_string(repo().join("datasets/coco/coco.yaml")).unwrap();
    let body = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.trim_start().starts_with("root:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        body(&written),
        body(&shipped),
        "datasets/coco/coco.yaml is out of date"
    );
    // A second import into the same folder replaces the files, and leaves no staging folder.
    assert!(import_coco(&coco, &out).status.success());
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_coco_input_is_refused_with_its_file_and_place_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let coco = coco_fixture::write(&dir.path().join("coco"));
    let out = dir.path().join("dataset");
    let args = |captions: &Path| -> Vec<String> {
        [
            "import",
            "coco",
            "--captions",
            s(captions),
            "--instances",
            s(&coco.instances("train")),
            "--images",
            s(&coco.images("train")),
            "-o",
            s(&out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let run = |captions: &Path, needles: &[&str]| {
        let a = args(captions);
        refused(&a.iter().map(String::as_str).collect::<Vec<_>>(), needles);
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "nothing written"
        );
    };
    let good = std::fs::read(coco.captions("train")).unwrap();
    let bad = dir.path().join("captions_train2014.json");
    // Truncated JSON.
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    run(&bad, &["captions_train2014.json", "truncated"]);
    // A caption pointing at an image the file does not list.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["annotations"][3]["image_id"] = serde_json::json!(999);
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    run(
        &bad,
        &[
            "captions_train2014.json: annotations[3].image_id",
            "image 999",
        ],
    );
    // A value of the wrong type, located by its JSON path.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["images"][2]["id"] = serde_json::json!("three");
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    run(
        &bad,
        &["captions_train2014.json: images[2].id", "expected u64"],
    );
    // A missing image file.
    std::fs::remove_file(coco.image_file(6)).unwrap();
    run(
        &coco.captions("train"),
        &[
            "captions_train2014.json: images[6].file_name",
            "COCO_train2014_000000000007.jpg",
            "none of the --images folders",
        ],
    );
    coco_fixture::write(&coco.root);
    // Instances naming an unknown category.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(coco.instances("train")).unwrap()).unwrap();
    v["annotations"][1]["category_id"] = serde_json::json!(4242);
    let bad_instances = dir.path().join("instances_train2014.json");
    std::fs::write(&bad_instances, serde_json::to_vec(&v).unwrap()).unwrap();
    refused(
        &[
            "import",
            "coco",
            "--captions",
            s(&coco.captions("train")),
            "--instances",
            s(&bad_instances),
            "--images",
            s(&coco.images("train")),
            "-o",
            s(&out),
        ],
        &[
            "instances_train2014.json: annotations[1].category_id",
            "category 4242",
        ],
    );
    // An image that Karpathy's file lacks.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(coco.karpathy()).unwrap()).unwrap();
    v["images"].as_array_mut().unwrap().remove(0);
    let bad_karpathy = dir.path().join("dataset_coco.json");
    std::fs::write(&bad_karpathy, serde_json::to_vec(&v).unwrap()).unwrap();
    refused(
        &[
            "import",
            "coco",
            "--captions",
            s(&coco.captions("train")),
            "--images",
            s(&coco.images("train")),
            "--karpathy",
            s(&bad_karpathy),
            "-o",
            s(&out),
        ],
        &[
            "captions_train2014.json: images[0].id",
            "not in the Karpathy split file",
        ],
    );
    // An earlier import is left as it was by a failed one.
    assert!(import_coco(&coco, &out).status.success());
    let before = std::fs::read(out.join("raw/images.jsonl")).unwrap();
    std::fs::write(&bad, &good[..100]).unwrap();
    let a = args(&bad);
    refused(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["truncated"],
    );
    assert_eq!(std::fs::read(out.join("raw/images.jsonl")).unwrap(), before);
}

#[test]
fn karpathy_files_import_alone() {
    let dir = tempfile::tempdir().unwrap();
    let coco = coco_fixture::write(&dir.path().join("coco"));
    let out = dir.path().join("k");
    let result = lethe(&[
        "import",
        "karpathy",
        s(&coco.karpathy()),
        "--images",
        s(&coco.root),
        "-o",
        s(&out),
    ]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    assert!(text(&result.stdout).contains("48 images, 240 captions"));
    let manifest = out.join("coco.yaml");
    let v = lethe(&["validate", s(&manifest)]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    let inspect = text(&lethe(&["data", "inspect", s(&manifest)]).stdout);
    assert!(
        inspect.contains("split `topics`") && inspect.contains("split `topics-val`"),
        "{inspect}"
    );
    let images = read_lines(&out.join("raw/images.jsonl"));
    assert_eq!(
        images[0]["file"],
        "train2014/COCO_train2014_000000000001.jpg"
    );
    assert_eq!(images[12]["split"], "train", "restval trains");
    // Truncated, and a file that is missing.
    let good = std::fs::read(coco.karpathy()).unwrap();
    let bad = dir.path().join("dataset_flickr30k.json");
    std::fs::write(&bad, &good[..good.len() - 10]).unwrap();
    refused(
        &[
            "import",
            "karpathy",
            s(&bad),
            "--images",
            s(&coco.root),
            "-o",
            s(&out),
        ],
        &["dataset_flickr30k.json", "truncated"],
    );
    std::fs::remove_file(coco.image_file(40)).unwrap();
    refused(
        &[
            "import",
            "karpathy",
            s(&coco.karpathy()),
            "--images",
            s(&coco.root),
            "-o",
            s(&out),
        ],
        &[
            "dataset_coco.json: images[40].filename",
            "val2014/COCO_val2014_000000000041.jpg",
        ],
    );
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["images"][2]["split"] = serde_json::json!("holdout");
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    coco_fixture::write(&coco.root);
    refused(
        &[
            "import",
            "karpathy",
            s(&bad),
            "--images",
            s(&coco.root),
            "-o",
            s(&out),
        ],
        &["images[2].split", "`holdout` is not a Karpathy split"],
    );
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
