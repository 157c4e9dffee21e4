//! Manifests and feature tables: every class of bad input gets a message naming
//! the file, the row or key, and what was expected; splits and synthetic data
//! are deterministic.

use arrow_array::builder::{FixedSizeListBuilder, Float16Builder, Float32Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lethe::data::{load_split, Manifest};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A column of a fixture table.
enum Col {
    Str(&'static str, Vec<Option<String>>),
    F32(usize, Vec<f32>),
    F16(usize, Vec<f32>),
}

fn write_table(path: &Path, columns: Vec<Col>) {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for c in columns {
        match c {
            Col::Str(name, values) => {
                fields.push(Field::new(name, DataType::Utf8, true));
                arrays.push(Arc::new(values.into_iter().collect::<StringArray>()));
            }
            Col::F32(dim, values) => {
                let mut b = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
                for row in values.chunks(dim) {
                    b.values().append_slice(row);
                    b.append(true);
                }
                let a = b.finish();
                fields.push(Field::new("feature", a.data_type().clone(), false));
                arrays.push(Arc::new(a));
            }
            Col::F16(dim, values) => {
                let mut b = FixedSizeListBuilder::new(Float16Builder::new(), dim as i32);
                for row in values.chunks(dim) {
                    for v in row {
                        b.values().append_value(half::f16::from_f32(*v));
                    }
                    b.append(true);
                }
                let a = b.finish();
                fields.push(Field::new("feature", a.data_type().clone(), false));
                arrays.push(Arc::new(a));
            }
        }
    }
    use arrow_array::Array;
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let mut w =
        arrow_ipc::writer::FileWriter::try_new(std::fs::File::create(path).unwrap(), &schema)
            .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

fn strs(v: &[&str]) -> Vec<Option<String>> {
    v.iter().map(|s| Some(s.to_string())).collect()
}

/// A valid dataset: 8 images in groups a/b, two captions each.
struct Fixture {
    dir: tempfile::TempDir,
}

const IDS: [&str; 8] = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7"];
const GROUPS: [&str; 8] = ["a", "a", "a", "a", "b", "b", "b", "b"];

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.images(
            Col::F32(3, (0..24).map(|x| x as f32).collect()),
            strs(&IDS),
            strs(&GROUPS),
        );
        f.captions(strs(&IDS.iter().flat_map(|i| [*i, *i]).collect::<Vec<_>>()));
        f.manifest("");
        f
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn images(&self, feature: Col, ids: Vec<Option<String>>, groups: Vec<Option<String>>) {
        write_table(
            &self.path("images.arrow"),
            vec![Col::Str("id", ids), feature, Col::Str("group", groups)],
        );
    }
    fn captions(&self, image_ids: Vec<Option<String>>) {
        let n = image_ids.len();
        let ids = (0..n).map(|i| Some(format!("c{i}"))).collect();
        write_table(
            &self.path("captions.arrow"),
            vec![
                Col::Str("id", ids),
                Col::Str("image_id", image_ids),
                Col::F32(2, vec![0.5; n * 2]),
            ],
        );
    }
    /// Writes the manifest; `extra` is appended verbatim.
    fn manifest(&self, extra: &str) {
        let text = format!(
            "name: fixture\nimages: images.arrow\ncaptions: captions.arrow\ntest_fraction: 0.5\nsplits:\n  groups:\n    ta: {{ group: [a] }}\n    tb: {{ group: [b] }}\n{extra}"
        );
        std::fs::write(self.path("m.yaml"), text).unwrap();
    }
    /// The error of loading the manifest and its split (must fail).
    fn error(&self) -> String {
        match Manifest::load(&self.path("m.yaml"))
            .and_then(|m| load_split(&m, "groups").map(|_| ()))
        {
            Ok(()) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }
}

fn assert_error(f: &Fixture, needle: &str) {
    let e = f.error();
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
}

#[test]
fn the_fixture_is_valid_and_split_by_groups() {
    let f = Fixture::new();
    let m = Manifest::load(&f.path("m.yaml")).unwrap();
    let s = load_split(&m, "groups").unwrap();
    assert_eq!((s.image_dim, s.text_dim), (3, 2));
    assert_eq!(
        s.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["ta", "tb"]
    );
    for t in &s.tasks {
        assert_eq!(t.train_captions.len() + t.test_captions.len(), 8);
        assert_eq!(t.test_captions.len(), 2 * t.test_images.len());
    }
}

#[test]
fn missing_table() {
    let f = Fixture::new();
    std::fs::remove_file(f.path("images.arrow")).unwrap();
    assert_error(&f, "images.arrow: no such file");
}

#[test]
fn not_an_arrow_file() {
    let f = Fixture::new();
    std::fs::write(f.path("captions.arrow"), "id,image_id\n").unwrap();
    assert_error(&f, "captions.arrow: is not an Arrow IPC file");
}

#[test]
fn missing_feature_column() {
    let f = Fixture::new();
    write_table(
        &f.path("images.arrow"),
        vec![Col::Str("id", strs(&IDS)), Col::Str("group", strs(&GROUPS))],
    );
    assert_error(&f, "images.arrow: missing column `feature`");
}

#[test]
fn missing_image_id_column() {
    let f = Fixture::new();
    write_table(
        &f.path("captions.arrow"),
        vec![Col::Str("id", strs(&["c0"])), Col::F32(2, vec![0.0, 1.0])],
    );
    assert_error(&f, "captions.arrow: missing column `image_id`");
}

#[test]
fn feature_of_the_wrong_type() {
    let f = Fixture::new();
    write_table(
        &f.path("images.arrow"),
        vec![
            Col::Str("id", strs(&IDS)),
            Col::Str("feature", strs(&IDS)),
            Col::Str("group", strs(&GROUPS)),
        ],
    );
    assert_error(
        &f,
        "column `feature` must be a list (FixedSizeList, List or LargeList) of f32, f16 or f64, found Utf8",
    );
}

#[test]
fn nan_feature_names_row_and_id() {
    let f = Fixture::new();
    let mut values: Vec<f32> = (0..24).map(|x| x as f32).collect();
    values[7] = f32::NAN; // row 2
    f.images(Col::F32(3, values), strs(&IDS), strs(&GROUPS));
    assert_error(
        &f,
        "`feature` of row 2 (id \"i2\") holds a NaN or infinite value",
    );
}

#[test]
fn infinite_feature() {
    let f = Fixture::new();
    let mut values: Vec<f32> = (0..24).map(|x| x as f32).collect();
    values[23] = f32::INFINITY;
    f.images(Col::F32(3, values), strs(&IDS), strs(&GROUPS));
    assert_error(&f, "row 7 (id \"i7\") holds a NaN or infinite value");
}

#[test]
fn caption_points_at_no_image() {
    let f = Fixture::new();
    let mut ids: Vec<&str> = IDS.iter().flat_map(|i| [*i, *i]).collect();
    ids[5] = "i99";
    f.captions(strs(&ids));
    assert_error(
        &f,
        "caption row 5 (id \"c5\") points at image \"i99\", which the images table lacks",
    );
}

#[test]
fn image_without_captions() {
    let f = Fixture::new();
    let ids: Vec<&str> = IDS[..7].iter().flat_map(|i| [*i, *i]).collect();
    f.captions(strs(&ids));
    assert_error(&f, "image row 7 (id \"i7\") has no caption");
}

#[test]
fn duplicate_ids() {
    let f = Fixture::new();
    let mut ids = IDS;
    ids[6] = "i1";
    f.images(Col::F32(3, vec![0.0; 24]), strs(&ids), strs(&GROUPS));
    assert_error(&f, "duplicate id \"i1\" at rows 1 and 6");
}

#[test]
fn null_id() {
    let f = Fixture::new();
    let mut ids = strs(&IDS);
    ids[3] = None;
    f.images(Col::F32(3, vec![0.0; 24]), ids, strs(&GROUPS));
    assert_error(&f, "column `id` is empty (null) at row 3");
}

#[test]
fn empty_task() {
    let f = Fixture::new();
    f.manifest("    tc: { group: [z] }\n");
    assert_error(&f, "task `tc` of split `groups` selects no image");
}

#[test]
fn image_in_two_tasks() {
    let f = Fixture::new();
    f.manifest("    both: { group: [a, b] }\n");
    assert_error(&f, "is in two tasks of split `groups`: `ta` and `both`");
}

#[test]
fn task_selects_on_a_missing_column() {
    let f = Fixture::new();
    f.manifest("    tc: { colour: [red] }\n");
    assert_error(
        &f,
        "task `tc` of split `groups` selects on column `colour`, which the images table lacks",
    );
}

#[test]
fn unknown_manifest_key() {
    let f = Fixture::new();
    f.manifest("test_fractoin: 0.1\n");
    assert_error(&f, "test_fractoin");
}

#[test]
fn test_fraction_out_of_range() {
    let f = Fixture::new();
    std::fs::write(f.path("m.yaml"), "name: x\nimages: images.arrow\ncaptions: captions.arrow\ntest_fraction: 1.5\nsplits:\n  s:\n    t: { group: [a] }\n").unwrap();
    assert_error(
        &f,
        "`test_fraction` must be at least 0 and below 1, found 1.5",
    );
}

#[test]
fn synthetic_without_parameters() {
    let f = Fixture::new();
    std::fs::write(
        f.path("m.yaml"),
        "name: x\nkind: synthetic\nsplits:\n  s:\n    t: { domain: [d1] }\n",
    )
    .unwrap();
    assert_error(&f, "`kind: synthetic` needs a `synthetic:` section");
}

#[test]
fn yaml_alias_bomb() {
    let f = Fixture::new();
    let mut bomb =
        String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 0..9u8 {
        let (prev, next) = ((b'a' + i) as char, (b'a' + i + 1) as char);
        bomb.push_str(&format!("{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    std::fs::write(f.path("m.yaml"), bomb).unwrap();
    let started = std::time::Instant::now();
    let e = f.error();
    assert!(e.contains("invalid manifest"), "{e}");
    assert!(started.elapsed().as_secs() < 5);
}

#[test]
fn huge_manifest() {
    let f = Fixture::new();
    std::fs::write(
        f.path("m.yaml"),
        format!("name: x\n# {}\n", "x".repeat(2 << 20)),
    )
    .unwrap();
    assert_error(&f, "m.yaml: is larger than the limit of 1.0 MiB");
}

#[test]
fn f16_features_load_as_f32() {
    let f = Fixture::new();
    f.images(
        Col::F16(3, (0..24).map(|x| x as f32 / 4.0).collect()),
        strs(&IDS),
        strs(&GROUPS),
    );
    let m = Manifest::load(&f.path("m.yaml")).unwrap();
    let s = load_split(&m, "groups").unwrap();
    assert_eq!(&s.image_features[..4], &[0.0, 0.25, 0.5, 0.75]);
}

#[test]
fn splits_are_deterministic_and_honour_an_explicit_column() {
    let f = Fixture::new();
    let m = Manifest::load(&f.path("m.yaml")).unwrap();
    let a = load_split(&m, "groups").unwrap();
    let b = load_split(&m, "groups").unwrap();
    assert_eq!(a.tasks, b.tasks);
    // An explicit `split` column decides instead of the hash.
    let split = [
        "test", "train", "train", "train", "train", "train", "train", "test",
    ];
    write_table(
        &f.path("images.arrow"),
        vec![
            Col::Str("id", strs(&IDS)),
            Col::F32(3, vec![0.0; 24]),
            Col::Str("group", strs(&GROUPS)),
            Col::Str("split", strs(&split)),
        ],
    );
    let s = load_split(&Manifest::load(&f.path("m.yaml")).unwrap(), "groups").unwrap();
    assert_eq!(s.tasks[0].test_images, [0]);
    assert_eq!(s.tasks[1].test_images, [7]);
}

#[test]
fn synthetic_data_is_identical_for_a_seed_whatever_the_thread_count() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let m = Manifest::load(&repo.join("datasets/synthetic/small.yaml")).unwrap();
    let params = m.synthetic.clone().unwrap();
    let (i1, c1) = lethe::data::synthetic::generate(&params);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (i2, c2) = one.install(|| lethe::data::synthetic::generate(&params));
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    assert_eq!(bytes(&i1.features), bytes(&i2.features));
    assert_eq!(bytes(&c1.features), bytes(&c2.features));
    assert_eq!(i1.ids, i2.ids);
    let mut other = params.clone();
    other.seed += 1;
    assert_ne!(
        bytes(&lethe::data::synthetic::generate(&other).0.features),
        bytes(&i1.features)
    );
    // Splits of the shipped small set: three domains of about 300 images.
    let s = load_split(&m, "domains").unwrap();
    assert_eq!(s.image_ids.len(), 900);
    assert_eq!(s.caption_ids.len(), 2700);
    for t in &s.tasks {
        let images = t.test_images.len() + t.train_captions.len() / 3;
        assert_eq!(images, 300, "{}", t.name);
    }
}

// Hostile and malformed input found by the robustness review (issue 16).

#[test]
fn a_split_value_other_than_train_val_or_test_is_an_error() {
    let f = Fixture::new();
    let mut split: Vec<&str> = vec!["train"; 8];
    split[3] = "tset";
    write_table(
        &f.path("images.arrow"),
        vec![
            Col::Str("id", strs(&IDS)),
            Col::F32(3, (0..24).map(|x| x as f32).collect()),
            Col::Str("group", strs(&GROUPS)),
            Col::Str("split", strs(&split)),
        ],
    );
    let e = f.error();
    assert!(
        e.contains("images.arrow") && e.contains("split") && e.contains("tset"),
        "{e}"
    );
}

#[test]
fn an_empty_table_says_so() {
    let f = Fixture::new();
    write_table(
        &f.path("captions.arrow"),
        vec![
            Col::Str("id", vec![]),
            Col::Str("image_id", vec![]),
            Col::F32(2, vec![]),
        ],
    );
    assert_error(&f, "captions.arrow: the table has no rows");
}

#[test]
fn a_null_inside_a_feature_vector_is_an_error() {
    let f = Fixture::new();
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), 3);
    for row in 0..8 {
        for k in 0..3 {
            if row == 5 && k == 1 {
                b.values().append_null();
            } else {
                b.values().append_value(k as f32);
            }
        }
        b.append(true);
    }
    let feature = b.finish();
    use arrow_array::Array;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("feature", feature.data_type().clone(), false),
        Field::new("group", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(IDS.to_vec())),
        Arc::new(feature),
        Arc::new(StringArray::from(GROUPS.to_vec())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w = arrow_ipc::writer::FileWriter::try_new(
        std::fs::File::create(f.path("images.arrow")).unwrap(),
        &schema,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    assert_error(&f, "`feature` of row 5 holds a null value at position 1");
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_without_blocking() {
    let f = Fixture::new();
    // A FIFO would block a reader forever; `/dev/zero` never ends.
    let fifo = f.path("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let e = Manifest::load(&fifo).unwrap_err().to_string();
    assert!(
        e.contains("is a FIFO (named pipe), not a regular file"),
        "{e}"
    );
    std::os::unix::fs::symlink("/dev/zero", f.path("zero.yaml")).unwrap();
    let e = Manifest::load(&f.path("zero.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a device, not a regular file"), "{e}");
    std::fs::remove_file(f.path("images.arrow")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", f.path("images.arrow")).unwrap();
    assert_error(&f, "images.arrow: is a device, not a regular file");
    std::fs::remove_file(f.path("images.arrow")).unwrap();
    std::fs::create_dir(f.path("images.arrow")).unwrap();
    assert_error(&f, "images.arrow: is a directory, not a regular file");
}

#[test]
fn a_synthetic_set_beyond_the_memory_budget_is_refused_before_allocating() {
    let f = Fixture::new();
    // Each size within its own range; the product is 2.6 TB.
    std::fs::write(
        f.path("m.yaml"),
        "name: big\nkind: synthetic\nsynthetic:\n  seed: 1\n  images: 10000000\n  captions_per_image: 100\n  image_dim: 4096\n  text_dim: 512\ntest_fraction: 0.2\nsplits:\n  s:\n    a: { domain: [d1] }\n",
    )
    .unwrap();
    let e = Manifest::load(&f.path("m.yaml")).unwrap_err().to_string();
    assert!(
        e.contains("of features; at most 32.0 GiB are generated"),
        "{e}"
    );
}

#[test]
fn a_manifest_that_is_someone_elses_file_is_not_quoted() {
    let f = Fixture::new();
    let secret = "root:x:0:0:root:/root:/bin/bash\nsecret-line-two\n";
    std::fs::write(f.path("m.yaml"), secret).unwrap();
    let e = Manifest::load(&f.path("m.yaml")).unwrap_err().to_string();
    assert!(
        !e.contains("root:x") && !e.contains("secret-line-two"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}
