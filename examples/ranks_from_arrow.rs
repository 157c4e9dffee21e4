//! Ranks and Recall@K of an arbitrary query/gallery set, through lethe's own
//! search and metric code: the Rust half of the independent check in
//! `tests/python/test_results.py`.
//!
//! Input: an Arrow IPC file with columns `role` (`query`|`gallery`), `image_id`
//! (the image a query wants, or an item shows) and `vector` (FixedSizeList<f32>),
//! in gallery order. Output (stdout): JSON with every query's rank and, for K in
//! 1, 5, 10, the recall, median rank and mean rank.
//! Run: `cargo run --release --example ranks_from_arrow -- in.arrow`.

use arrow_array::{Array, FixedSizeListArray, Float32Array, StringArray};
use lethe::eval::recall_figures;
use lethe::eval::search::{first_correct_rank, for_each_similarity_row, Matrix};
use std::sync::Mutex;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: ranks_from_arrow IN.arrow")?;
    let reader = arrow_ipc::reader::FileReader::try_new(std::fs::File::open(path)?, None)?;
    let (mut queries, mut gallery, mut targets, mut shows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut dim = 0;
    for batch in reader {
        let batch = batch?;
        let role = batch
            .column_by_name("role")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            .ok_or("role")?;
        let image = batch
            .column_by_name("image_id")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            .ok_or("image_id")?;
        let vectors = batch
            .column_by_name("vector")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>().cloned())
            .ok_or("vector")?;
        dim = vectors.value_length() as usize;
        for i in 0..batch.num_rows() {
            let v = vectors.value(i);
            let v = v
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or("f32 vectors")?;
            if role.value(i) == "query" {
                queries.extend_from_slice(v.values());
                targets.push(image.value(i).to_string());
            } else {
                gallery.extend_from_slice(v.values());
                shows.push(image.value(i).to_string());
            }
        }
    }
    let ranks = Mutex::new(vec![0usize; targets.len()]);
    for_each_similarity_row(
        Matrix::new(&queries, dim),
        Matrix::new(&gallery, dim),
        |i, row| {
            let r = first_correct_rank(row, |j| shows[j] == targets[i]).unwrap_or(row.len() + 1);
            ranks.lock().expect("lock")[i] = r;
        },
    );
    let ranks = ranks.into_inner()?;
    let figures: Vec<serde_json::Value> = [1, 5, 10]
        .iter()
        .map(|&k| {
            let (recall, median_rank, mean_rank) = recall_figures(&ranks, k);
            serde_json::json!({ "k": k, "recall": recall, "median_rank": median_rank, "mean_rank": mean_rank })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({ "ranks": ranks, "figures": figures })
    );
    Ok(())
}
