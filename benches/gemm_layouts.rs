//! The fused training step's matrix products (batch 128, the bench model: image
//! 2048→1024→512, text 768→1024→512) in the two ways a weight can be stored:
//! output-major (the model's (out x in), so the forward pass reads `X · Wᵀ`) and
//! input-major (its transpose, what `train::fused` holds since 2026-12-07). `gemm`
//! packs a column-major right-hand operand on every call; a row-major one it reads
//! as it is. Prints milliseconds and GFLOP/s per product, each the mean of 100
//! after one warm-up, on every thread of the pool, and the sum per layout.
//! Run: `cargo bench --bench gemm_layouts`.

use lethe::linalg::{matmul, View};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 128;
const REPEATS: usize = 100;

fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7_919 + salt) % 1_000) as f32 / 1_000.0 - 0.5)
        .collect()
}

/// Mean milliseconds of `product`, printed with its rate.
fn time(what: &str, flops: f64, mut product: impl FnMut()) -> f64 {
    product();
    let started = Instant::now();
    for _ in 0..REPEATS {
        product();
    }
    let seconds = started.elapsed().as_secs_f64() / REPEATS as f64;
    println!(
        "gemm_layouts {what:<44} {:7.3} ms {:5.0} GFLOP/s",
        seconds * 1e3,
        flops / seconds / 1e9
    );
    seconds * 1e3
}

fn main() {
    let b = BATCH;
    let mut totals = [0.0; 2];
    let layers = [
        (2048, 1024, true),
        (1024, 512, false),
        (768, 1024, true),
        (1024, 512, false),
    ];
    for (inp, out, first) in layers {
        let x = values(b * inp, 1);
        let g = values(b * out, 2);
        let w = values(out * inp, 3); // output-major: out x inp
        let w_t = values(inp * out, 4); // input-major: inp x out
        let flops = 2.0 * (b * inp * out) as f64;
        let mut z = vec![0.0; b * out];
        let mut dw = vec![0.0; out * inp];
        let mut dx = vec![0.0; b * inp];
        let shape = format!("{inp}->{out}");
        // Output-major: Z = X·Wᵀ, dW = gᵀ·X, dX = g·W.
        totals[0] += time(&format!("{shape} output-major forward X.Wt"), flops, || {
            matmul(
                &mut z,
                View::Plain(&x, b, inp),
                View::Transposed(&w, out, inp),
                false,
            )
        });
        totals[0] += time(
            &format!("{shape} output-major weight grad gT.X"),
            flops,
            || {
                matmul(
                    &mut dw,
                    View::Transposed(&g, b, out),
                    View::Plain(&x, b, inp),
                    false,
                )
            },
        );
        // Input-major: Z = X·W', dW' = Xᵀ·g, dXᵀ = W'·gᵀ.
        totals[1] += time(&format!("{shape} input-major forward X.W'"), flops, || {
            matmul(
                &mut z,
                View::Plain(&x, b, inp),
                View::Plain(&w_t, inp, out),
                false,
            )
        });
        totals[1] += time(
            &format!("{shape} input-major weight grad Xt.g"),
            flops,
            || {
                matmul(
                    &mut dw,
                    View::Transposed(&x, b, inp),
                    View::Plain(&g, b, out),
                    false,
                )
            },
        );
        if first {
            continue; // a first layer's input (the features) gets no gradient
        }
        totals[0] += time(
            &format!("{shape} output-major input grad g.W"),
            flops,
            || {
                matmul(
                    &mut dx,
                    View::Plain(&g, b, out),
                    View::Plain(&w, out, inp),
                    false,
                )
            },
        );
        time(
            &format!("{shape} input-major input grad g.W't"),
            flops,
            || {
                matmul(
                    &mut dx,
                    View::Plain(&g, b, out),
                    View::Transposed(&w_t, inp, out),
                    false,
                )
            },
        );
        totals[1] += time(
            &format!("{shape} input-major input grad W'.gt"),
            flops,
            || {
                matmul(
                    &mut dx,
                    View::Plain(&w_t, inp, out),
                    View::Transposed(&g, b, out),
                    false,
                )
            },
        );
    }
    println!(
        "gemm_layouts step's products: output-major {:.2} ms, input-major {:.2} ms ({} threads)",
        totals[0],
        totals[1],
        rayon::current_num_threads()
    );
}
