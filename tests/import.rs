//! `lethe import coco` and `lethe import karpathy` on small files in the real
//! formats (COCO annotation JSON, Karpathy's split files), written by the tests:
//! what is imported, what the default splits hold, every malformed input refused
//! with exit 2 naming the file and the place, nothing half-written. Precomputed
//! features: `import_precomp.rs`; featurizing and running: `import_featurize.rs`.

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
