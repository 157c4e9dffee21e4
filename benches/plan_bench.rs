//! Time to validate and plan a 1,000-variant sweep (goal: well under a second).
//! Run: `cargo bench --bench plan_bench`.

use lethe::diagnostics::SourceMap;
use lethe::lang::{self, ManifestCache};
use lethe::plan::{self, Format, NodeKind};
use std::time::Instant;

fn main() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sweep1000.pipe");
    // 10 learning rates x 10 EWC strengths x 10 seeds, on the emoji sevige split.
    let lrs: Vec<String> = (1..=10).map(|i| format!("{i}e-4")).collect();
    let lambdas: Vec<String> = (0..10)
        .map(|i| (10u64.pow(i % 5) * (1 + i as u64 / 5)).to_string())
        .collect();
    let text = format!(
        "pipeline \"sweep1000\" {{\n    dataset = \"{}\"\n    split = \"sevige\"\n    tasks = [animals, vehicles, clothes]\n    seed = [{}]\n    train {{ epochs = 5; regularizer = ewc }}\n    sweep {{\n        train.optimizer.lr = [{}]\n        train.regularizer.lambda = [{}]\n    }}\n}}\n",
        repo.join("datasets/emoji/emoji.yaml").display(),
        (1..=10).map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
        lrs.join(", "),
        lambdas.join(", "),
    );
    std::fs::write(&path, text).expect("write");

    let mut timings = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut sources = SourceMap::new();
        let mut manifests = ManifestCache::default();
        let pipeline = lang::load(&path, &mut sources, &mut manifests).expect("valid sweep");
        let checked = started.elapsed();
        let n = pipeline.experiments.len();
        let planned = plan::lower(&pipeline.name, pipeline.experiments, &mut manifests);
        let lowered = started.elapsed();
        let text = plan::render(&planned, Format::Text);
        let total = started.elapsed();
        timings.push((
            checked,
            lowered,
            total,
            n,
            planned.graph.node_count(),
            planned.count(NodeKind::Train),
            text.len(),
        ));
    }
    timings.sort_by_key(|t| t.2);
    let (checked, lowered, total, n, nodes, trains, _) = timings[timings.len() / 2];
    println!("plan_bench: {n} variants -> {nodes} nodes ({trains} train)");
    println!(
        "  parse+resolve+check: {:>8.1} ms",
        checked.as_secs_f64() * 1e3
    );
    println!(
        "  + lower:             {:>8.1} ms",
        lowered.as_secs_f64() * 1e3
    );
    println!(
        "  + render text:       {:>8.1} ms  (median of 5)",
        total.as_secs_f64() * 1e3
    );
    println!(
        "  goal: well under 1000 ms; ratio goal/actual = {:.1}",
        1.0 / total.as_secs_f64()
    );
}
