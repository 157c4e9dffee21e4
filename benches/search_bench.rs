//! Exact top-10 search, 10,000 queries over 100,000 gallery vectors of 512
//! dimensions (cosine on normalised vectors), against numpy and FAISS
//! `IndexFlatIP` measured in the same run on the same data and thread count.
//! Run everything with `bench/run-search` (it installs the peers); alone,
//! `cargo bench --bench search_bench` measures lethe and runs the peers only if
//! `LETHE_PEER_PYTHON` names a Python that has numpy (and faiss-cpu).

use lethe::eval::search::{top_k_search, top_k_search_on, Matrix};
use lethe::rng::Rng;
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const QUERIES: usize = 10_000;
const GALLERY: usize = 100_000;
const DIM: usize = 512;
const K: usize = 10;

fn normalised(rows: usize, stream: &str) -> Vec<f32> {
    let mut data = vec![0f32; rows * DIM];
    data.par_chunks_mut(DIM).enumerate().for_each(|(i, row)| {
        let mut rng = Rng::derive(11, &[stream, &i.to_string()]);
        for x in row.iter_mut() {
            *x = rng.normal() as f32;
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    });
    data
}

/// A float32 .npy file (version 1.0, C order).
fn write_npy(path: &Path, data: &[f32], rows: usize) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {DIM}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("npy"));
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    for x in data {
        f.write_all(&x.to_le_bytes()).unwrap();
    }
}

fn main() {
    let queries = normalised(QUERIES, "queries");
    let gallery = normalised(GALLERY, "gallery");
    let threads = rayon::current_num_threads();
    // `LETHE_BENCH_DEVICE=cuda` (a `--features cuda` build): the device search,
    // against PyTorch on the same GPU.
    let gpu = std::env::var("LETHE_BENCH_DEVICE").as_deref() == Ok("cuda");
    let device = if gpu {
        match candle_core::Device::new_cuda(0) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("no CUDA device (build with --features cuda): {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let search = |q: &[f32]| match &device {
        Some(d) => top_k_search_on(Matrix::new(q, DIM), Matrix::new(&gallery, DIM), K, d),
        None => top_k_search(Matrix::new(q, DIM), Matrix::new(&gallery, DIM), K),
    };
    // Warm-up on a slice, then the timed run.
    let _ = search(&queries[..256 * DIM]).unwrap();
    let started = Instant::now();
    let found = search(&queries).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let lethe_qps = QUERIES as f64 / seconds;
    let place = if gpu {
        "on cuda".to_string()
    } else {
        format!("{threads} threads")
    };
    println!("search lethe: {lethe_qps:.0} queries/s ({seconds:.2} s, {place}, top-{K} of {GALLERY} x {DIM}-d)");
    let Ok(python) = std::env::var("LETHE_PEER_PYTHON") else {
        println!("(set LETHE_PEER_PYTHON, or run bench/run-search, for the numpy and FAISS peers)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (qp, gp, ip) = (
        dir.path().join("q.npy"),
        dir.path().join("g.npy"),
        dir.path().join("ids.npy"),
    );
    write_npy(&qp, &queries, QUERIES);
    write_npy(&gp, &gallery, GALLERY);
    // Our top-1 ids, so the peers can confirm they found the same neighbours.
    std::fs::write(
        &ip,
        found
            .iter()
            .map(|r| r[0].0.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    // bench/ of the working directory when there is one (a carried binary).
    let script = if Path::new("bench/search_peers.py").exists() {
        Path::new("bench/search_peers.py").to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/search_peers.py")
    };
    let out = std::process::Command::new(python)
        .arg(script)
        .args([&qp, &gp, &ip])
        .arg(threads.to_string())
        .arg(if gpu { "cuda" } else { "cpu" })
        .output()
        .expect("run the peers");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Peer lines: "peer <name> <queries/s>"
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["peer", name, qps] = parts.as_slice() {
            if let Ok(q) = qps.parse::<f64>() {
                let suffix = if gpu { "_cuda" } else { "" };
                println!("ratio search_top10{suffix}_vs_{name} {:.2}", lethe_qps / q);
            }
        }
    }
}
