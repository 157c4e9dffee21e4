//! Exact top-10 search (cosine on normalised 512-d vectors) against numpy and
//! FAISS `IndexFlatIP`, measured in the same run on the same data and thread
//! count: the headline 10,000 queries over 100,000 items, then the shapes
//! `lethe run` searches (COCO's 5k test protocol both ways, a 25k gallery, a
//! 1k task). `LETHE_SEARCH_SCORING=f32` measures the f32 scoring instead of the
//! machine's best (a bf16 shortlist on AMX, an int8 one on AVX-512 VNNI), and
//! `LETHE_SEARCH_SCORING=int8` or `bf16` a given shortlist; `LETHE_SEARCH_SHAPES`
//! (names such as `10000x100000,1000x1000`) measures only those shapes.
//! Run everything with `bench/run-search` (it installs the peers); alone,
//! `cargo bench --bench search_bench` measures lethe and runs the peers only if
//! `LETHE_PEER_PYTHON` names a Python that has numpy (and faiss-cpu).

use lethe::eval::search::{top_k_search_on, top_k_search_with, Matrix, Scoring};
use lethe::rng::Rng;
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const DIM: usize = 512;
const K: usize = 10;
/// (queries, gallery items, name of the ratio): the headline first.
const SHAPES: &[(usize, usize, &str)] = &[
    (10_000, 100_000, ""),
    (25_000, 5_000, "_coco5k_txt2im"),
    (5_000, 25_000, "_coco5k_im2txt"),
    (2_000, 25_000, "_2k_x_25k"),
    (1_000, 1_000, "_1k_x_1k"),
];

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
    let scoring = match std::env::var("LETHE_SEARCH_SCORING").as_deref() {
        Ok("f32") => Scoring::F32,
        Ok("int8") => Scoring::Int8Shortlist,
        Ok("bf16") => Scoring::Bf16Shortlist,
        Ok(other) if !other.is_empty() => {
            eprintln!(
                "LETHE_SEARCH_SCORING={other}: expected f32, int8 or bf16 (or unset for the best)"
            );
            std::process::exit(2);
        }
        _ => Scoring::best(),
    };
    if !scoring.available() {
        eprintln!("{scoring:?} scoring: this machine does not have it");
        std::process::exit(2);
    }
    let shapes = std::env::var("LETHE_SEARCH_SHAPES").unwrap_or_default();
    let wanted: Vec<&str> = shapes.split(',').filter(|s| !s.is_empty()).collect();
    for name in &wanted {
        if !SHAPES.iter().any(|(q, g, _)| format!("{q}x{g}") == *name) {
            eprintln!(
                "LETHE_SEARCH_SHAPES: no shape {name} (the shapes are queries x items: {})",
                SHAPES
                    .iter()
                    .map(|(q, g, _)| format!("{q}x{g}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            std::process::exit(2);
        }
    }
    let threads = rayon::current_num_threads();
    let place = if gpu {
        "on cuda".to_string()
    } else {
        format!("{threads} threads, {scoring:?} scoring")
    };
    for &(queries_n, gallery_n, name) in SHAPES {
        if !wanted.is_empty() && !wanted.contains(&format!("{queries_n}x{gallery_n}").as_str()) {
            continue;
        }
        let queries = normalised(queries_n, &format!("queries {queries_n}"));
        let gallery = normalised(gallery_n, &format!("gallery {gallery_n}"));
        let search = |q: &[f32]| match &device {
            Some(d) => top_k_search_on(Matrix::new(q, DIM), Matrix::new(&gallery, DIM), K, d),
            None => Ok(top_k_search_with(
                Matrix::new(q, DIM),
                Matrix::new(&gallery, DIM),
                K,
                scoring,
            )),
        };
        // Warm-up on a slice, then the timed runs: one of a large search; of a
        // short one, the best of at least three runs and as many as fit in a
        // second (a single millisecond-long run is mostly noise). The peers
        // do the same.
        let _ = search(&queries[..256.min(queries_n) * DIM]).unwrap();
        let large = queries_n * gallery_n >= 1_000_000_000;
        let mut seconds = f64::MAX;
        let mut found = Vec::new();
        let (mut runs, started) = (0, Instant::now());
        while runs < if large { 1 } else { 3 }
            || (!large && started.elapsed().as_secs_f64() < 1.0 && runs < 1000)
        {
            let run = Instant::now();
            found = search(&queries).unwrap();
            seconds = seconds.min(run.elapsed().as_secs_f64());
            runs += 1;
        }
        let lethe_qps = queries_n as f64 / seconds;
        println!("search{name} lethe: {lethe_qps:.0} queries/s ({seconds:.3} s, {place}, top-{K} of {gallery_n} x {DIM}-d, {queries_n} queries)");
        let Ok(python) = std::env::var("LETHE_PEER_PYTHON") else {
            println!(
                "(set LETHE_PEER_PYTHON, or run bench/run-search, for the numpy and FAISS peers)"
            );
            continue;
        };
        run_peers(
            &python, &queries, &gallery, &found, gpu, threads, name, lethe_qps,
        );
    }
}

/// Runs bench/search_peers.py on the same data and prints one ratio per peer.
#[allow(clippy::too_many_arguments)]
fn run_peers(
    python: &str,
    queries: &[f32],
    gallery: &[f32],
    found: &[Vec<(usize, f32)>],
    gpu: bool,
    threads: usize,
    name: &str,
    lethe_qps: f64,
) {
    let dir = tempfile::tempdir().unwrap();
    let (qp, gp, ip) = (
        dir.path().join("q.npy"),
        dir.path().join("g.npy"),
        dir.path().join("ids.npy"),
    );
    write_npy(&qp, queries, queries.len() / DIM);
    write_npy(&gp, gallery, gallery.len() / DIM);
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
        if let ["peer", peer, qps] = parts.as_slice() {
            if let Ok(q) = qps.parse::<f64>() {
                let suffix = if gpu { "_cuda" } else { "" };
                println!(
                    "ratio search_top10{name}{suffix}_vs_{peer} {:.2}",
                    lethe_qps / q
                );
            }
        }
    }
}
