//! Loading COCO-size feature tables: wall time and peak resident memory against
//! the bytes of the features in memory (f32), for an Arrow file of f32 features
//! in one batch (kept in the memory map), an Arrow file of f16 features in
//! chunks (what `lethe featurize` writes: converted once), a Parquet file of f32
//! features (streamed); and `lethe import precomp` of VSE++-style `.npy` files
//! of the same size. Each load runs in its own process, so each peak is its own.
//!
//! Run: `cargo bench --bench load_tables [-- IMAGES]` (default 113,287 images x
//! 5 captions, 2048-d and 768-d: 2.5 GiB of f32 features; about 9 GiB of
//! temporary files under target/).

use arrow_array::builder::{FixedSizeListBuilder, Float16Builder};
use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const IMAGE_DIM: usize = 2048;
const TEXT_DIM: usize = 768;
const CAPTIONS_PER_IMAGE: usize = 5;

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A cheap deterministic value for row r, column d.
fn value(r: usize, d: usize) -> f32 {
    let x = (r.wrapping_mul(2654435761) ^ d.wrapping_mul(40503)) % 2000;
    x as f32 / 1000.0 - 1.0
}

fn features(rows: usize, dim: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        v.extend((0..dim).map(|d| value(r, d)));
    }
    v
}

fn f32_column(values: Vec<f32>, dim: usize) -> ArrayRef {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Arc::new(FixedSizeListArray::new(
        item,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    ))
}

fn f16_column(rows: std::ops::Range<usize>, dim: usize) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Float16Builder::new(), dim as i32);
    for r in rows {
        for d in 0..dim {
            b.values().append_value(half::f16::from_f32(value(r, d)));
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Metadata columns of rows: images `id`, `domain`; captions `id`, `image_id`.
fn meta(images: bool, rows: std::ops::Range<usize>) -> Vec<(String, ArrayRef)> {
    let ids: StringArray = rows
        .clone()
        .map(|r| {
            Some(if images {
                format!("i{r}")
            } else {
                format!("c{r}")
            })
        })
        .collect();
    let other: StringArray = rows
        .map(|r| {
            Some(if images {
                format!("d{}", r % 3)
            } else {
                format!("i{}", r / CAPTIONS_PER_IMAGE)
            })
        })
        .collect();
    vec![
        ("id".into(), Arc::new(ids) as ArrayRef),
        (
            if images { "domain" } else { "image_id" }.into(),
            Arc::new(other) as ArrayRef,
        ),
    ]
}

fn batch(mut columns: Vec<(String, ArrayRef)>, feature: ArrayRef) -> RecordBatch {
    columns.push(("feature".into(), feature));
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(n, a.data_type().clone(), false))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect()).unwrap()
}

fn write_arrow(path: &Path, batches: impl Iterator<Item = RecordBatch>) {
    let mut batches = batches.peekable();
    let schema = batches.peek().unwrap().schema();
    let mut w = arrow_ipc::writer::FileWriter::try_new(
        std::io::BufWriter::new(std::fs::File::create(path).unwrap()),
        &schema,
    )
    .unwrap();
    for b in batches {
        w.write(&b).unwrap();
    }
    w.finish().unwrap();
}

fn write_parquet(path: &Path, batches: impl Iterator<Item = RecordBatch>) {
    let mut batches = batches.peekable();
    let schema = batches.peek().unwrap().schema();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema,
        Some(props),
    )
    .unwrap();
    for b in batches {
        w.write(&b).unwrap();
    }
    w.close().unwrap();
}

fn manifest(dir: &Path, name: &str, extension: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!("name: {name}\nimages: {name}-images.{extension}\ncaptions: {name}-captions.{extension}\ntest_fraction: 0.05\nsplits:\n  s:\n    d0: {{ domain: [d0] }}\n    d1: {{ domain: [d1] }}\n    d2: {{ domain: [d2] }}\n"),
    )
    .unwrap();
    path
}

fn write_npy(path: &Path, rows: usize, dim: usize) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(b"\x93NUMPY\x01\x00").unwrap();
    out.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
    out.write_all(header.as_bytes()).unwrap();
    for r in 0..rows {
        for d in 0..dim {
            out.write_all(&value(r, d).to_le_bytes()).unwrap();
        }
    }
}

/// In a child: load a manifest's split and print time, peak and whether mapped.
fn child(manifest: &Path) {
    let m = lethe::data::Manifest::load(manifest).unwrap();
    let started = Instant::now();
    let split = lethe::data::load_split(&m, "s").unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let bytes = (split.image_features.len() + split.caption_features.len()) * 4;
    println!(
        "{seconds} {} {bytes} {}",
        peak_rss_bytes(),
        split.image_features.is_mapped()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]));
        return;
    }
    let images: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(113_287);
    let captions = images * CAPTIONS_PER_IMAGE;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let dir = tempfile::tempdir_in(&root).unwrap();
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let feature_bytes = ((images * IMAGE_DIM + captions * TEXT_DIM) * 4) as f64;
    println!("load_tables: {images} images x {IMAGE_DIM}, {captions} captions x {TEXT_DIM}: {:.2} GiB of f32 features; {} threads", gib(feature_bytes), rayon::current_num_threads());
    let started = Instant::now();
    const CHUNK: usize = 8192;
    let chunks = |rows: usize| {
        (0..rows.div_ceil(CHUNK)).map(move |c| c * CHUNK..((c + 1) * CHUNK).min(rows))
    };
    // Arrow, f32, one batch per table.
    write_arrow(
        &dir.path().join("arrow-f32-images.arrow"),
        std::iter::once(batch(
            meta(true, 0..images),
            f32_column(features(images, IMAGE_DIM), IMAGE_DIM),
        )),
    );
    write_arrow(
        &dir.path().join("arrow-f32-captions.arrow"),
        std::iter::once(batch(
            meta(false, 0..captions),
            f32_column(features(captions, TEXT_DIM), TEXT_DIM),
        )),
    );
    // Arrow, f16, in chunks (as `lethe featurize` writes).
    write_arrow(
        &dir.path().join("arrow-f16-images.arrow"),
        chunks(images).map(|r| batch(meta(true, r.clone()), f16_column(r, IMAGE_DIM))),
    );
    write_arrow(
        &dir.path().join("arrow-f16-captions.arrow"),
        chunks(captions).map(|r| batch(meta(false, r.clone()), f16_column(r, TEXT_DIM))),
    );
    // Parquet, f32, in row groups.
    let f32_chunk = |r: std::ops::Range<usize>, dim: usize| {
        let mut v = Vec::with_capacity(r.len() * dim);
        for row in r {
            v.extend((0..dim).map(|d| value(row, d)));
        }
        f32_column(v, dim)
    };
    write_parquet(
        &dir.path().join("parquet-f32-images.parquet"),
        chunks(images).map(|r| batch(meta(true, r.clone()), f32_chunk(r, IMAGE_DIM))),
    );
    write_parquet(
        &dir.path().join("parquet-f32-captions.parquet"),
        chunks(captions).map(|r| batch(meta(false, r.clone()), f32_chunk(r, TEXT_DIM))),
    );
    println!(
        "  wrote the tables in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().unwrap();
    for (name, extension) in [
        ("arrow-f32", "arrow"),
        ("arrow-f16", "arrow"),
        ("parquet-f32", "parquet"),
    ] {
        let m = manifest(dir.path(), name, extension);
        let out = Command::new(&exe)
            .args(["--child", m.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        let (seconds, peak, bytes): (f64, f64, f64) = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
        );
        println!(
            "  load {name:<12} {seconds:6.1} s; peak resident {:.2} GiB = {:.2}x the features ({}); {:.0} MiB/s",
            gib(peak),
            peak / bytes,
            if f[3] == "true" { "image features in the map" } else { "features converted once" },
            bytes / seconds / (1 << 20) as f64
        );
        println!(
            "figure load_{}_peak_vs_features {:.2}",
            name.replace('-', "_"),
            peak / bytes
        );
    }
    // `lethe import precomp` of .npy files of the same size.
    let (ims, caps, cf) = (
        dir.path().join("coco_ims.npy"),
        dir.path().join("coco_caps.txt"),
        dir.path().join("coco_cf.npy"),
    );
    write_npy(&ims, images, IMAGE_DIM);
    write_npy(&cf, captions, TEXT_DIM);
    let mut text = std::io::BufWriter::new(std::fs::File::create(&caps).unwrap());
    for c in 0..captions {
        writeln!(
            text,
            "a photo of thing {} seen from side {}",
            c / CAPTIONS_PER_IMAGE,
            c % CAPTIONS_PER_IMAGE
        )
        .unwrap();
    }
    drop(text);
    let rss = dir.path().join("rss");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args([
            "-f",
            "%M",
            "-o",
            rss.to_str().unwrap(),
            env!("CARGO_BIN_EXE_lethe"),
            "import",
            "precomp",
        ])
        .args([
            "--images",
            ims.to_str().unwrap(),
            "--captions",
            caps.to_str().unwrap(),
            "--caption-features",
            cf.to_str().unwrap(),
        ])
        .args(["-o", dir.path().join("precomp").to_str().unwrap()])
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = std::fs::read_to_string(&rss)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1024.0;
    println!(
        "  import precomp {seconds:6.1} s; peak resident {:.2} GiB = {:.2}x the features",
        gib(peak),
        peak / feature_bytes
    );
    println!(
        "figure import_precomp_peak_vs_features {:.2}",
        peak / feature_bytes
    );
}
