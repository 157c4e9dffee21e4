//! Featurizing 500 photos with EfficientNet-Lite0: lethe's CPU forward against
//! PyTorch on the same weights (`bench/featurize_image_peer.py`, with
//! `LETHE_PEER_PYTHON`), end to end from JPEG files to pooled 1280-d features.
//!
//! The photos are generated here, deterministically, into a temporary folder: smooth
//! colour fields with detail and sensor-like noise, saved as JPEG (quality 90) at
//! COCO's sizes (640x480, 480x640, 640x427, 500x375) and a fifth at 224x224, so
//! decoding and resizing weigh as they do on a real photo set. lethe featurizes them
//! the way `lethe featurize` does a `crop: center` list (`encode_images` in
//! `src/encode/featurize.rs`): batches of 16, each batch decoded and centre-cropped
//! in parallel (`load_photo`) while the encoder runs on the previous one. A warm-up
//! batch is left out. The network alone is then timed on the same decoded pixels.
//!
//! Encoders: `LETHE_ENCODERS`, else `target/test-encoders` (fetched by
//! `datasets/fetch-encoders.sh` when missing).
//! Run: `cargo bench --bench featurize_image_bench` (all peers: `bench/run`).

use candle_core::{Device, Tensor};
use lethe::encode::image::{ImageEncoder, SIZE};
use lethe::encode::preprocess::load_photo;
use lethe::rng::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IMAGES: usize = 500;
/// Images per forward pass: `IMAGE_BATCH` of `src/encode/featurize.rs`.
const BATCH: usize = 16;
const DIM: usize = 1280;
/// Width x height of image i is `SHAPES[i % 5]`.
const SHAPES: [(u32, u32); 5] = [(640, 480), (480, 640), (640, 427), (500, 375), (224, 224)];

fn encoders() -> PathBuf {
    if let Ok(dir) = std::env::var("LETHE_ENCODERS") {
        return PathBuf::from(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/test-encoders");
    if !dir.join("efficientnet-lite0.pth").exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("datasets/fetch-encoders.sh"))
            .arg(&dir)
            .status()
            .expect("run datasets/fetch-encoders.sh");
        assert!(status.success(), "fetching the encoders failed");
    }
    dir
}

/// A grid of random colours, bilinearly interpolated over a `w x h` image.
struct Field {
    cols: usize,
    cell: f32,
    values: Vec<[f32; 3]>,
}

impl Field {
    fn new(rng: &mut Rng, w: u32, h: u32, cell: f32, amplitude: f32) -> Field {
        let cols = (w as f32 / cell) as usize + 2;
        let rows = (h as f32 / cell) as usize + 2;
        let values = (0..cols * rows)
            .map(|_| [0; 3].map(|_: i32| (rng.next_f32() - 0.5) * amplitude))
            .collect();
        Field { cols, cell, values }
    }

    fn at(&self, x: u32, y: u32, c: usize) -> f32 {
        let (fx, fy) = (x as f32 / self.cell, y as f32 / self.cell);
        let (gx, gy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - gx as f32, fy - gy as f32);
        let v = |dx: usize, dy: usize| self.values[(gy + dy) * self.cols + gx + dx][c];
        let top = v(0, 0) * (1.0 - tx) + v(1, 0) * tx;
        let bottom = v(0, 1) * (1.0 - tx) + v(1, 1) * tx;
        top * (1.0 - ty) + bottom * ty
    }
}

/// Photo `i`: a base colour, large smooth regions, finer detail and per-pixel
/// noise, all drawn from lethe's seeded generator.
fn photo(i: usize) -> image::RgbImage {
    let (w, h) = SHAPES[i % SHAPES.len()];
    let mut rng = Rng::derive(17, &["featurize_image_bench", &i.to_string()]);
    let base = [0; 3].map(|_: i32| 60.0 + 130.0 * rng.next_f32());
    let (coarse_cell, fine_cell) = (60.0 + 80.0 * rng.next_f32(), 6.0 + 10.0 * rng.next_f32());
    let coarse = Field::new(&mut rng, w, h, coarse_cell, 200.0);
    let fine = Field::new(&mut rng, w, h, fine_cell, 60.0);
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb(std::array::from_fn(|c| {
            let noise = (rng.next_f32() - 0.5) * 16.0;
            (base[c] + coarse.at(x, y, c) + fine.at(x, y, c) + noise).clamp(0.0, 255.0) as u8
        }))
    })
}

fn write_photos(dir: &Path) -> Vec<PathBuf> {
    (0..IMAGES)
        .into_par_iter()
        .map(|i| {
            let path = dir.join(format!("{i:04}.jpg"));
            let file = std::fs::File::create(&path).expect("create a photo file");
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(
                std::io::BufWriter::new(file),
                90,
            );
            encoder.encode_image(&photo(i)).expect("encode a photo");
            path
        })
        .collect()
}

fn decode(files: &[PathBuf]) -> Vec<u8> {
    let pixels: Vec<Vec<u8>> = files
        .par_iter()
        .map(|f| load_photo(f).expect("decode a photo"))
        .collect();
    pixels.concat()
}

/// `lethe featurize`'s image loop: decode the next batch while the encoder runs on
/// this one.
fn featurize(encoder: &ImageEncoder, files: &[PathBuf]) -> Vec<f32> {
    let batches: Vec<&[PathBuf]> = files.chunks(BATCH).collect();
    let mut features = Vec::with_capacity(files.len() * DIM);
    let mut next = batches.first().map(|b| decode(b));
    for (k, batch) in batches.iter().enumerate() {
        let rgb = next.take().expect("a decoded batch");
        let (encoded, decoded) = rayon::join(
            || encoder.forward(&rgb, batch.len()),
            || batches.get(k + 1).map(|b| decode(b)),
        );
        features.extend(encoded.expect("encode a batch").0);
        next = decoded;
    }
    features
}

fn main() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).expect("a photo folder");
    let started = Instant::now();
    let files = write_photos(&photos);
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    eprintln!(
        "{IMAGES} photos written ({:.1} MB of JPEG) in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let weights = encoders().join("efficientnet-lite0.pth");
    let encoder = ImageEncoder::load(&weights, &Device::Cpu).expect("load EfficientNet-Lite0");
    let threads = rayon::current_num_threads();

    let _ = featurize(&encoder, &files[..BATCH]);
    let started = Instant::now();
    let rows = featurize(&encoder, &files);
    let seconds = started.elapsed().as_secs_f64();
    let rate = IMAGES as f64 / seconds;
    println!(
        "featurize lethe (EfficientNet-Lite0, its CPU forward, JPEG to features): {rate:.1} images/s \
         ({seconds:.2} s for {IMAGES}, batches of {BATCH}, {threads} threads)"
    );
    println!("figure featurize_efficientnet {rate:.2}");

    let pixels = decode(&files);
    let started = Instant::now();
    for batch in pixels.chunks(BATCH * SIZE * SIZE * 3) {
        let n = batch.len() / (SIZE * SIZE * 3);
        encoder.forward(batch, n).expect("encode a batch");
    }
    let model = IMAGES as f64 / started.elapsed().as_secs_f64();
    println!("featurize lethe, the network alone on decoded pixels: {model:.1} images/s");

    let Ok(python) = std::env::var("LETHE_PEER_PYTHON") else {
        println!("(set LETHE_PEER_PYTHON, or run bench/run, for the PyTorch peer)");
        return;
    };
    let (list, ours, input) = (
        tmp.path().join("photos.txt"),
        tmp.path().join("lethe.npy"),
        tmp.path().join("pixels.npy"),
    );
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    std::fs::write(&list, names.join("\n")).expect("write the photo list");
    Tensor::from_vec(rows, (IMAGES, DIM), &Device::Cpu)
        .and_then(|t| t.write_npy(&ours))
        .expect("write lethe's rows");
    Tensor::from_vec(pixels, (IMAGES, SIZE, SIZE, 3), &Device::Cpu)
        .and_then(|t| t.write_npy(&input))
        .expect("write lethe's pixels");
    let out = std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/featurize_image_peer.py"))
        .args([&weights, &list, &ours, &input])
        .arg(threads.to_string())
        .arg(BATCH.to_string())
        .output()
        .expect("run the PyTorch peer");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("{line}");
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["peer", "featurize_efficientnet", value] = parts.as_slice() {
            if let Ok(theirs) = value.parse::<f64>() {
                println!(
                    "ratio featurize_efficientnet_vs_pytorch {:.2}",
                    rate / theirs
                );
            }
        }
    }
    if !out.status.success() {
        eprintln!("the PyTorch peer failed ({})", out.status);
    }
}
