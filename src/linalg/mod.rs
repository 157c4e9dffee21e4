//! Dense f32 matrix products through the `gemm` crate: the kernels candle's CPU
//! backend calls, without its per-operation allocations and layout fixes, for
//! the two hot loops that own their buffers (the fused training step and exact
//! search). `gemm` picks its AVX-512 kernels at run time where the CPU has them
//! (the crate's `x86-v4` feature), AVX2/FMA otherwise. [`amx`] has the bf16
//! tile products of Intel AMX, for search's scoring pass.

pub mod amx;
pub mod functions;
pub mod int8;

/// Row-major matrix views: `rows x cols`, element (r, c) at `r * cols + c`.
/// `Transposed` reads the same buffer as its transpose (no copy).
#[derive(Clone, Copy)]
pub enum View<'a> {
    Plain(&'a [f32], usize, usize),
    Transposed(&'a [f32], usize, usize),
}

impl View<'_> {
    /// (rows, cols, row stride, column stride) of the matrix this view reads.
    fn geometry(&self) -> (usize, usize, isize, isize, *const f32) {
        match *self {
            View::Plain(data, r, c) => {
                assert!(data.len() >= r * c, "matrix view past its buffer");
                (r, c, c as isize, 1, data.as_ptr())
            }
            View::Transposed(data, r, c) => {
                assert!(data.len() >= r * c, "matrix view past its buffer");
                (c, r, 1, c as isize, data.as_ptr())
            }
        }
    }
}

/// How many threads one matrix product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Every thread of the current rayon pool.
    All,
    /// The calling thread only: for products run inside a parallel loop.
    One,
}

impl Threads {
    fn parallelism(self) -> gemm::Parallelism {
        match (self, rayon::current_num_threads()) {
            (Threads::One, _) | (Threads::All, 0 | 1) => gemm::Parallelism::None,
            (Threads::All, n) => gemm::Parallelism::Rayon(n),
        }
    }
}

/// `dst = a · b` (`accumulate`: `dst += a · b`) on every thread of the pool;
/// `dst` is row-major (rows of a) x (cols of b).
pub fn matmul(dst: &mut [f32], a: View, b: View, accumulate: bool) {
    matmul_on(dst, a, b, accumulate, Threads::All)
}

/// [`matmul`] on the given threads.
pub fn matmul_on(dst: &mut [f32], a: View, b: View, accumulate: bool, threads: Threads) {
    let (m, k, a_rs, a_cs, a_ptr) = a.geometry();
    let (k2, n, b_rs, b_cs, b_ptr) = b.geometry();
    assert_eq!(k, k2, "inner dimensions of a matrix product");
    assert!(dst.len() >= m * n, "destination of a matrix product");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the geometry checks above keep every index of the three matrices
    // inside its slice; `dst` does not alias `a` or `b` (a `&mut` borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a_ptr,
            a_cs,
            a_rs,
            b_ptr,
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            threads.parallelism(),
        );
    }
}

/// Side of the square tiles [`transpose`] copies: a tile's 32 source rows and
/// 32 destination rows stay in the L1 cache while it is copied.
const TRANSPOSE_TILE: usize = 32;

/// Writes the transpose of the row-major `src` (rows x cols) to `dst` (cols x
/// rows, row-major), tile by tile.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_map(src, rows, cols, dst, |_, v| v);
}

/// [`transpose`] with `f(index in dst, value)` applied to each element on the
/// way: the fused step's "transpose and multiply by the activation's slope".
#[inline(always)]
pub fn transpose_map(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    f: impl Fn(usize, f32) -> f32,
) {
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose past its buffers"
    );
    vectorized(
        #[inline(always)]
        || {
            for r0 in (0..rows).step_by(TRANSPOSE_TILE) {
                let r1 = (r0 + TRANSPOSE_TILE).min(rows);
                for c0 in (0..cols).step_by(TRANSPOSE_TILE) {
                    for c in c0..(c0 + TRANSPOSE_TILE).min(cols) {
                        let row = c * rows;
                        for (d, r) in dst[row + r0..row + r1].iter_mut().zip(r0..r1) {
                            *d = f(row + r, src[r * cols + c]);
                        }
                    }
                }
            }
        },
    )
}

/// `out = x · weight + bias` on every thread of the pool: `x` is `rows x inputs`,
/// `weight` `inputs x outputs` (both row-major) and `bias` has `outputs` values.
/// `out` is resized to `rows x outputs`; its buffer is reused. The encoders'
/// dense and 1x1-convolution layers.
pub fn affine(out: &mut Vec<f32>, x: &[f32], rows: usize, weight: &[f32], bias: &[f32]) {
    let outputs = bias.len();
    assert!(
        outputs > 0 && weight.len().is_multiple_of(outputs),
        "weight and bias widths"
    );
    let inputs = weight.len() / outputs;
    out.clear();
    out.reserve(rows * outputs);
    for _ in 0..rows {
        out.extend_from_slice(bias);
    }
    matmul(
        out,
        View::Plain(x, rows, inputs),
        View::Plain(weight, inputs, outputs),
        true,
    );
}

/// Runs `f` compiled for AVX-512 where the CPU has it, for the element-wise
/// loops of a step (the crate itself targets baseline x86-64, so SSE2 is all
/// the compiler may assume). `f` is inlined into a function with the AVX-512
/// target features, so its loops are vectorised 16 floats wide. No fast-math
/// is involved: every element's result is the same bits at any width.
///
/// Pass `f` as `#[inline(always)] || ...`: a closure the compiler keeps as a
/// function of its own is compiled without the features (the gradient norm's
/// loop ran in SSE2 that way).
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2")]
            fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU has AVX-512F (checked just above); the features
            // enabled are those `is_x86_feature_detected!` implies on every CPU
            // that has it (AVX-512VL and DQ: Skylake-SP and later, Zen 4 and
            // later).
            return unsafe { wide(f) };
        }
    }
    f()
}
