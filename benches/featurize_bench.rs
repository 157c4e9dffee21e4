//! Featurizing 1,000 real captions (the first of `datasets/emoji/raw/captions.jsonl`)
//! with all-MiniLM-L6-v2: lethe's CPU forward against PyTorch + transformers
//! on the same weights (`bench/featurize_peer.py`, with `LETHE_PEER_PYTHON`).
//! Encoders: `LETHE_ENCODERS`, else `target/test-encoders` (fetched by
//! `datasets/fetch-encoders.sh` when missing). Run: `cargo bench --bench featurize_bench`.

use candle_core::{Device, Tensor};
use lethe::encode::text::TextEncoder;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CAPTIONS: usize = 1000;

fn encoders() -> PathBuf {
    if let Ok(dir) = std::env::var("LETHE_ENCODERS") {
        return PathBuf::from(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/test-encoders");
    if !dir.join("all-minilm-l6-v2/model.safetensors").exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("datasets/fetch-encoders.sh"))
            .arg(&dir)
            .status()
            .expect("run datasets/fetch-encoders.sh");
        assert!(status.success(), "fetching the encoders failed");
    }
    dir
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(root.join("datasets/emoji/raw/captions.jsonl"))
        .expect("datasets/emoji/raw/captions.jsonl");
    let texts: Vec<String> = raw
        .lines()
        .take(CAPTIONS)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["text"].as_str().expect("a text field").replace('\n', " ")
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = encoders().join("all-minilm-l6-v2");
    let encoder = TextEncoder::load(&dir, &Device::Cpu).expect("load MiniLM");
    let threads = rayon::current_num_threads();
    let _ = encoder.encode(&refs[..64]).expect("warm-up");
    let started = Instant::now();
    let rows = encoder.encode(&refs).expect("encode");
    let seconds = started.elapsed().as_secs_f64();
    let rate = texts.len() as f64 / seconds;
    println!(
        "featurize lethe (MiniLM, its CPU forward): {rate:.0} captions/s ({seconds:.2} s for {}, {threads} threads)",
        texts.len()
    );
    println!("figure featurize_minilm {rate:.2}");
    let Ok(python) = std::env::var("LETHE_PEER_PYTHON") else {
        println!("(set LETHE_PEER_PYTHON, or run bench/run, for the PyTorch peer)");
        return;
    };
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let (captions, ours) = (
        tmp.path().join("captions.txt"),
        tmp.path().join("lethe.npy"),
    );
    std::fs::write(&captions, texts.join("\n")).expect("write captions");
    Tensor::from_vec(rows, (texts.len(), 384), &Device::Cpu)
        .and_then(|t| t.write_npy(&ours))
        .expect("write lethe's rows");
    let out = std::process::Command::new(python)
        .arg(root.join("bench/featurize_peer.py"))
        .args([&dir, &captions, &ours])
        .arg(threads.to_string())
        .output()
        .expect("run the PyTorch peer");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("{line}");
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["peer", "featurize_minilm", value] = parts.as_slice() {
            if let Ok(theirs) = value.parse::<f64>() {
                println!("ratio featurize_minilm_vs_pytorch {:.2}", rate / theirs);
            }
        }
    }
}
