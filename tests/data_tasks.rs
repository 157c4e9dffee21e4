//! Tasks over multi-label images (`match: any | all | dominant`, caption rules,
//! `overlap: first`), the validation part and `evaluate: val`, the
//! `test_images` limit, Parquet tables, features kept in the memory map, and
//! manifests checked from their raw lists before featurization.

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float16Array, Float64Array, ListArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lethe::data::split::{cut, tables};
use lethe::data::{inspect, load_split, Manifest};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Supercategories of 10 images, one entry per annotated instance.
const SUPERS: [&[&str]; 10] = [
    &["animal"],                       // i0: animal only
    &["animal", "animal", "person"],   // i1: animal dominant, not all
    &["animal", "person"],             // i2: animal tied with person
    &["person", "person", "animal"],   // i3: person dominant
    &["vehicle"],                      // i4
    &["vehicle", "vehicle", "animal"], // i5: vehicle dominant, has animal
    &["food"],                         // i6
    &[],                               // i7: nothing annotated
    &["animal"],                       // i8
    &["vehicle"],                      // i9
];
const PARTS: [&str; 10] = [
    "train", "train", "train", "train", "train", "train", "train", "train", "test", "test",
];
const TEXTS: [&str; 10] = [
    "a dog",
    "a cat and a man",
    "a man with a dog",
    "people",
    "a red car",
    "a bus near a horse",
    "a pizza",
    "an empty room",
    "a dog and a bird",
    "a train",
];

fn ids() -> Vec<String> {
    (0..SUPERS.len()).map(|i| format!("i{i}")).collect()
}

fn strings(values: &[String]) -> ArrayRef {
    Arc::new(
        values
            .iter()
            .map(|s| Some(s.as_str()))
            .collect::<StringArray>(),
    )
}

fn lists(rows: &[&[&str]]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for v in *row {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn f32_features(rows: usize, dim: usize) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
    for r in 0..rows {
        for d in 0..dim {
            b.values().append_value((r * dim + d) as f32 / 8.0);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> (Arc<Schema>, RecordBatch) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), false))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    (schema, batch)
}

/// Writes through a temporary file renamed into place, as lethe's own writers
/// do: a table loaded earlier may still be mapped, and rewriting its file in
/// place would change (or, truncated, fault) the features under it.
fn write_arrow(path: &Path, batches: &[RecordBatch]) {
    let tmp = path.with_extension("tmp");
    write_arrow_in_place(&tmp, batches);
    std::fs::rename(&tmp, path).unwrap();
}

fn write_arrow_in_place(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(3))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// The ten images and two captions each, as Arrow (or Parquet) tables.
    fn new(extension: &str) -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        let n = SUPERS.len();
        let (_, images) = batch(vec![
            ("id", strings(&ids())),
            (
                "split",
                strings(&PARTS.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            ),
            ("supercategory", lists(&SUPERS)),
            ("feature", f32_features(n, 4)),
        ]);
        let caption_image: Vec<String> =
            ids().iter().flat_map(|i| [i.clone(), i.clone()]).collect();
        let (_, captions) = batch(vec![
            (
                "id",
                strings(&(0..2 * n).map(|c| format!("c{c}")).collect::<Vec<_>>()),
            ),
            ("image_id", strings(&caption_image)),
            (
                "text",
                strings(
                    &(0..2 * n)
                        .map(|c| TEXTS[c / 2].to_string())
                        .collect::<Vec<_>>(),
                ),
            ),
            ("feature", f32_features(2 * n, 3)),
        ]);
        if extension == "parquet" {
            write_parquet(&f.path("images.parquet"), &images);
            write_parquet(&f.path("captions.parquet"), &captions);
        } else {
            write_arrow(&f.path("images.arrow"), &[images]);
            write_arrow(&f.path("captions.arrow"), &[captions]);
        }
        f
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A manifest with one split `s` made of `split` (YAML lines, 4 spaces in).
    fn manifest(&self, extension: &str, split: &str) -> Result<Manifest, String> {
        let text = format!("name: t\nimages: images.{extension}\ncaptions: captions.{extension}\nsplits:\n  s:\n{split}");
        std::fs::write(self.path("m.yaml"), text).unwrap();
        Manifest::load(&self.path("m.yaml")).map_err(|e| e.to_string())
    }
    /// The image ids of each task (train and test), or the error.
    fn tasks(&self, split: &str) -> Result<Vec<Vec<String>>, String> {
        let m = self.manifest("arrow", split)?;
        let s = load_split(&m, "s").map_err(|e| e.to_string())?;
        Ok(s.tasks
            .iter()
            .map(|t| {
                let mut rows: Vec<u32> = t
                    .train_captions
                    .iter()
                    .map(|&c| s.caption_image[c as usize])
                    .collect();
                rows.extend(&t.test_images);
                rows.extend(&t.val_images);
                rows.sort_unstable();
                rows.dedup();
                rows.iter()
                    .map(|&r| s.image_ids[r as usize].clone())
                    .collect()
            })
            .collect())
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn match_any_selects_images_with_a_listed_value_and_overlaps_are_errors() {
    let f = Fixture::new("arrow");
    let e = f.tasks("    animals: { supercategory: [animal] }\n    vehicles: { supercategory: [vehicle] }\n").unwrap_err();
    assert!(
        e.contains("image \"i5\" is in two tasks of split `s`: `animals` and `vehicles`"),
        "{e}"
    );
    assert!(e.contains("overlap: first"), "{e}");
    let got = f
        .tasks("    overlap: first\n    animals: { supercategory: [animal] }\n    vehicles: { supercategory: [vehicle] }\n")
        .unwrap();
    assert_eq!(got[0], names(&["i0", "i1", "i2", "i3", "i5", "i8"]));
    assert_eq!(got[1], names(&["i4", "i9"]), "i5 stays in the first task");
}

#[test]
fn match_all_needs_every_value_listed() {
    let f = Fixture::new("arrow");
    let got = f
        .tasks("    animals: { supercategory: [animal], match: all }\n    vehicles: { supercategory: [vehicle], match: all }\n")
        .unwrap();
    assert_eq!(got, [names(&["i0", "i8"]), names(&["i4", "i9"])]);
    let got = f.tasks("    mixed: { supercategory: [animal, person], match: all }\n    v: { supercategory: [vehicle], match: all }\n").unwrap();
    assert_eq!(got[0], names(&["i0", "i1", "i2", "i3", "i8"]));
}

#[test]
fn match_dominant_counts_instances_and_drops_ties() {
    let f = Fixture::new("arrow");
    let split = "    animals: { supercategory: [animal], match: dominant }\n    vehicles: { supercategory: [vehicle], match: dominant }\n";
    let got = f.tasks(split).unwrap();
    assert_eq!(
        got,
        [names(&["i0", "i1", "i8"]), names(&["i4", "i5", "i9"])]
    );
    // What inspect says each rule dropped.
    let m = f.manifest("arrow", split).unwrap();
    let (images, captions) = tables(&m).unwrap();
    let c = cut(&m, "s", &images, &captions).unwrap();
    let animals = &c.reports[0];
    assert_eq!((animals.candidates, animals.selected()), (6, 3));
    assert_eq!(
        (animals.tied, animals.not_dominant),
        (1, 2),
        "i2 tied; i3 and i5 dominated"
    );
    let text = inspect(&m).unwrap();
    assert!(text.contains("6 candidates, 3 selected; dropped: 2 by match: dominant (another value has more instances), 1 by match: dominant (tied with an unlisted value)"), "{text}");
    assert!(text.contains("images in no task: 4"), "{text}");
}

#[test]
fn caption_rules_select_by_caption_words() {
    let f = Fixture::new("arrow");
    let got = f.tasks("    dogs: { caption: \"(?i)\\\\bdog\\\\b\" }\n    cars: { caption: \"car|bus|train\" }\n").unwrap();
    assert_eq!(
        got,
        [names(&["i0", "i2", "i8"]), names(&["i4", "i5", "i9"])]
    );
    // Combined with a column rule, the caption rule drops candidates.
    let m = f
        .manifest("arrow", "    a: { supercategory: [animal], caption: dog }\n    v: { supercategory: [vehicle], match: all }\n")
        .unwrap();
    let (images, captions) = tables(&m).unwrap();
    let c = cut(&m, "s", &images, &captions).unwrap();
    assert_eq!(
        (c.reports[0].candidates, c.reports[0].no_caption),
        (6, 3),
        "i1, i3, i5 have no dog"
    );
    assert!(inspect(&m)
        .unwrap()
        .contains("3 by caption (no caption matches)"));
}

#[test]
fn the_validation_part_is_neither_trained_nor_tested_unless_evaluated() {
    let f = Fixture::new("arrow");
    // Make i1 a validation image.
    let mut parts: Vec<String> = PARTS.iter().map(|s| s.to_string()).collect();
    parts[1] = "val".into();
    let (_, images) = batch(vec![
        ("id", strings(&ids())),
        ("split", strings(&parts)),
        ("supercategory", lists(&SUPERS)),
        ("feature", f32_features(SUPERS.len(), 4)),
    ]);
    write_arrow(&f.path("images.arrow"), &[images]);
    let tasks = "    animals: { supercategory: [animal], match: dominant }\n    vehicles: { supercategory: [vehicle], match: dominant }\n";
    let m = f.manifest("arrow", tasks).unwrap();
    let s = load_split(&m, "s").unwrap();
    let animals = &s.tasks[0];
    assert_eq!(animals.val_images, [1]);
    assert_eq!(animals.val_captions, [2, 3]);
    assert_eq!(animals.test_images, [8]);
    assert!(
        !animals.train_captions.contains(&2),
        "validation captions are not trained on"
    );
    // `evaluate: val`: the evaluated rows are the validation part; vehicles has none.
    let m = f
        .manifest("arrow", &format!("    evaluate: val\n{tasks}"))
        .unwrap();
    let e = load_split(&m, "s").unwrap_err().to_string();
    assert!(
        e.contains("task `vehicles` of split `s` has 4 training pairs and 0 val images"),
        "{e}"
    );
    let m = f
        .manifest(
            "arrow",
            "    evaluate: val\n    animals: { supercategory: [animal], match: dominant }\n",
        )
        .unwrap();
    let s = load_split(&m, "s").unwrap();
    assert_eq!(s.tasks[0].test_images, [1]);
    assert_eq!(s.tasks[0].test_captions, [2, 3]);
    assert_eq!(s.summary()["evaluated"], "val");
}

#[test]
fn test_images_keeps_the_first_by_id_hash() {
    let f = Fixture::new("arrow");
    let parts = vec![
        "train".to_string(),
        "train".into(),
        "test".into(),
        "test".into(),
        "test".into(),
        "train".into(),
        "train".into(),
        "train".into(),
        "test".into(),
        "train".into(),
    ];
    let (_, images) = batch(vec![
        ("id", strings(&ids())),
        ("split", strings(&parts)),
        ("supercategory", lists(&SUPERS)),
        ("feature", f32_features(SUPERS.len(), 4)),
    ]);
    write_arrow(&f.path("images.arrow"), &[images]);
    let m = f
        .manifest(
            "arrow",
            "    test_images: 2\n    any: { supercategory: [animal, person, vehicle] }\n",
        )
        .unwrap();
    let s = load_split(&m, "s").unwrap();
    let held_out = ["i2", "i3", "i4", "i8"];
    let mut by_hash: Vec<&str> = held_out.to_vec();
    by_hash
        .sort_by(|a, b| lethe::data::split::id_hash(a).total_cmp(&lethe::data::split::id_hash(b)));
    let mut expected: Vec<String> = by_hash[..2].iter().map(|s| s.to_string()).collect();
    expected.sort();
    let got: Vec<String> = s.tasks[0]
        .test_images
        .iter()
        .map(|&r| s.image_ids[r as usize].clone())
        .collect();
    assert_eq!(got, expected);
    assert!(inspect(&m)
        .unwrap()
        .contains("2 by test_images (held out beyond the limit)"));
}

#[test]
fn manifest_mistakes_name_their_path() {
    let f = Fixture::new("arrow");
    for (split, needle) in [
        (
            "    a: { supercategory: [animal], match: most }\n",
            "splits.s.a.match: expected `any`, `all` or `dominant`, found `most`",
        ),
        (
            "    a: { caption: \"(dog\" }\n",
            "splits.s.a.caption: not a valid regular expression",
        ),
        (
            "    overlap: last\n    a: { supercategory: [animal] }\n",
            "splits.s.overlap: expected `error` or `first`, found `last`",
        ),
        (
            "    test_images: 0\n    a: { supercategory: [animal] }\n",
            "splits.s.test_images: expected a number of images (1 or more)",
        ),
        (
            "    evaluate: train\n    a: { supercategory: [animal] }\n",
            "splits.s.evaluate: expected `test` or `val`",
        ),
        (
            "    a: animal\n",
            "splits.s.a: a task is a map such as `{ column: [values] }`",
        ),
        (
            "    a: { supercategory: [] }\n",
            "splits.s.a.supercategory: the list is empty",
        ),
        (
            "    a: { match: all }\n",
            "splits.s.a: the task selects nothing",
        ),
        ("    overlap: first\n", "split `s` has no tasks"),
    ] {
        let e = f.manifest("arrow", split).unwrap_err();
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
    }
    let e = f.tasks("    a: { supercategry: [animal] }\n").unwrap_err();
    assert!(
        e.contains("which the images table lacks (did you mean `supercategory`?)"),
        "{e}"
    );
}

#[test]
fn parquet_tables_read_like_arrow_ones() {
    let arrow = Fixture::new("arrow");
    let parquet = Fixture::new("parquet");
    let split = "    animals: { supercategory: [animal], match: dominant }\n    vehicles: { supercategory: [vehicle], match: dominant }\n";
    let a = load_split(&arrow.manifest("arrow", split).unwrap(), "s").unwrap();
    let p = load_split(&parquet.manifest("parquet", split).unwrap(), "s").unwrap();
    assert_eq!(a.tasks, p.tasks);
    assert_eq!(a.image_ids, p.image_ids);
    assert_eq!(&a.image_features[..], &p.image_features[..]);
    assert_eq!(&a.caption_features[..], &p.caption_features[..]);
    assert_eq!(
        lethe::data::read::feature_width(&parquet.path("images.parquet")).unwrap(),
        4
    );
    // A variable-length list of f64 (what numpy embeddings in pandas become).
    let values = Float64Array::from((0..20).map(|x| x as f64).collect::<Vec<_>>());
    let offsets =
        arrow_buffer::OffsetBuffer::new(vec![0i32, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20].into());
    let item = Arc::new(Field::new("item", DataType::Float64, true));
    let list: ArrayRef = Arc::new(ListArray::new(
        item.clone(),
        offsets,
        Arc::new(values),
        None,
    ));
    let (_, images) = batch(vec![
        ("id", strings(&ids())),
        (
            "split",
            strings(&PARTS.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ),
        ("supercategory", lists(&SUPERS)),
        ("feature", list),
    ]);
    write_parquet(&parquet.path("images.parquet"), &images);
    let p = load_split(&parquet.manifest("parquet", split).unwrap(), "s").unwrap();
    assert_eq!(p.image_dim, 2);
    assert_eq!(&p.image_features[..4], &[0.0, 1.0, 2.0, 3.0]);
    assert_eq!(
        lethe::data::read::feature_width(&parquet.path("images.parquet")).unwrap(),
        2
    );
    // Rows of different lengths are located.
    let offsets =
        arrow_buffer::OffsetBuffer::new(vec![0i32, 2, 4, 6, 8, 10, 12, 15, 16, 18, 20].into());
    let values = Float64Array::from((0..20).map(|x| x as f64).collect::<Vec<_>>());
    let list: ArrayRef = Arc::new(ListArray::new(item, offsets, Arc::new(values), None));
    let (_, images) = batch(vec![
        ("id", strings(&ids())),
        (
            "split",
            strings(&PARTS.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ),
        ("supercategory", lists(&SUPERS)),
        ("feature", list),
    ]);
    write_parquet(&parquet.path("images.parquet"), &images);
    let e = load_split(&parquet.manifest("parquet", split).unwrap(), "s")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("images.parquet: `feature` of row 6 has 3 values; every row must have 2"),
        "{e}"
    );
    std::fs::write(parquet.path("images.parquet"), b"PAR1 not really").unwrap();
    let e = load_split(&parquet.manifest("parquet", split).unwrap(), "s")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("images.parquet: is not a readable Parquet file"),
        "{e}"
    );
}

#[test]
fn single_batch_f32_features_stay_in_the_map_and_others_are_converted_once() {
    let f = Fixture::new("arrow");
    let split = "    a: { supercategory: [animal], match: dominant }\n";
    let s = load_split(&f.manifest("arrow", split).unwrap(), "s").unwrap();
    assert!(s.image_features.is_mapped() && s.caption_features.is_mapped());
    assert_eq!(&s.image_features[4..8], &[0.5, 0.625, 0.75, 0.875]);
    // Two batches: copied once into one vector, same values.
    let (_, whole) = batch(vec![
        ("id", strings(&ids())),
        (
            "split",
            strings(&PARTS.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ),
        ("supercategory", lists(&SUPERS)),
        ("feature", f32_features(SUPERS.len(), 4)),
    ]);
    write_arrow(
        &f.path("images.arrow"),
        &[whole.slice(0, 3), whole.slice(3, 7)],
    );
    let two = load_split(&f.manifest("arrow", split).unwrap(), "s").unwrap();
    assert!(!two.image_features.is_mapped());
    assert_eq!(&two.image_features[..], &s.image_features[..]);
    // f16 values are converted to f32.
    let halves = Float16Array::from(
        (0..40)
            .map(|x| half::f16::from_f32(x as f32 / 8.0))
            .collect::<Vec<_>>(),
    );
    let item = Arc::new(Field::new("item", DataType::Float16, true));
    let list: ArrayRef = Arc::new(arrow_array::FixedSizeListArray::new(
        item,
        4,
        Arc::new(halves),
        None,
    ));
    let (_, images) = batch(vec![
        ("id", strings(&ids())),
        (
            "split",
            strings(&PARTS.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ),
        ("supercategory", lists(&SUPERS)),
        ("feature", list),
    ]);
    write_arrow(&f.path("images.arrow"), &[images]);
    let h = load_split(&f.manifest("arrow", split).unwrap(), "s").unwrap();
    assert!(!h.image_features.is_mapped());
    assert_eq!(&h.image_features[..], &s.image_features[..]);
}

#[test]
fn a_manifest_is_checked_from_its_raw_lists_before_featurization() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let mut images = String::new();
    let mut captions = String::new();
    for i in 0..10 {
        let supers: Vec<String> = SUPERS[i].iter().map(|s| format!("\"{s}\"")).collect();
        images.push_str(&format!(
            "{{\"id\": \"i{i}\", \"file\": \"i{i}.jpg\", \"split\": \"{}\", \"supercategory\": [{}]}}\n",
            PARTS[i],
            supers.join(", ")
        ));
        captions.push_str(&format!(
            "{{\"id\": \"c{i}\", \"image_id\": \"i{i}\", \"text\": \"{}\"}}\n",
            TEXTS[i]
        ));
    }
    std::fs::write(raw.join("images.jsonl"), &images).unwrap();
    std::fs::write(raw.join("captions.jsonl"), &captions).unwrap();
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, "name: t\nimages: images.arrow\ncaptions: captions.arrow\nraw:\n  images: raw/images.jsonl\n  captions: raw/captions.jsonl\n  crop: center\nsplits:\n  s:\n    a: { supercategory: [animal], match: dominant }\n    v: { supercategory: [vehicle], match: dominant }\n").unwrap();
    let m = Manifest::load(&manifest).unwrap();
    let note = lethe::data::inspect::check(&m).unwrap();
    assert!(note.unwrap().contains("features not built yet"));
    let text = inspect(&m).unwrap();
    assert!(
        text.contains("10 images, 10 captions; features not built yet"),
        "{text}"
    );
    assert!(load_split(&m, "s")
        .unwrap_err()
        .to_string()
        .contains("images.arrow: no such file"));
    // Raw list mistakes name the line.
    let bad = images.replacen(
        "\"supercategory\": [\"food\"]",
        "\"supercategory\": \"food\"",
        1,
    );
    std::fs::write(raw.join("images.jsonl"), bad).unwrap();
    let e = lethe::data::inspect::check(&m).unwrap_err().to_string();
    assert!(
        e.contains("images.jsonl: line 7: `supercategory` is a string here but a list on line 1"),
        "{e}"
    );
    std::fs::write(
        raw.join("images.jsonl"),
        images.replace("\"id\": \"i3\"", "\"id\": \"i2\""),
    )
    .unwrap();
    let e = lethe::data::inspect::check(&m).unwrap_err().to_string();
    assert!(
        e.contains("images.jsonl: line 4: duplicate id \"i2\" (also on line 3)"),
        "{e}"
    );
}
