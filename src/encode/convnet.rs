//! EfficientNet-Lite0's forward written out for the CPU, channels last (NHWC):
//! a 1x1 convolution is then one matrix product over every pixel of the batch
//! (`linalg::matmul`), and a depthwise convolution reads each tap's channels
//! as one contiguous, vectorised run. Batch norm is folded into the
//! convolutions at load (scale into the weights, shift into a bias), and the
//! bias, ReLU6 and residual add are applied to the rows the products write.
//! [`super::image`] holds the network's description and its candle graph, the
//! reference `tests/encode.rs` checks this forward against.

use crate::linalg::{affine, vectorized};
use rayon::prelude::*;

/// A convolution with batch norm folded in, weights in the layout its loop
/// reads: pointwise `[in][out]`, depthwise `[ky][kx][channel]`, the stem
/// `[ky][kx][in][out]`.
pub(super) struct Conv {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub kernel: usize,
    pub stride: usize,
    pub outputs: usize,
    pub relu6: bool,
}

pub(super) struct Block {
    pub expand: Option<Conv>,
    pub depthwise: Conv,
    pub project: Conv,
    pub residual: bool,
}

pub(super) struct CpuEfficientNet {
    pub stem: Conv,
    pub blocks: Vec<Block>,
    pub head: Conv,
}

/// An activation: `n x h x w x c`, channels last.
struct Map {
    data: Vec<f32>,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

/// TF "same" padding of one spatial dimension: (output size, padding before).
fn same(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (out, total / 2)
}

/// A k x k window sliding with a stride over an `h x w` map, TF "same" padding.
struct Window {
    k: usize,
    stride: usize,
    h: usize,
    w: usize,
    /// Output size and padding before, per dimension.
    out: (usize, usize),
    pad: (usize, usize),
}

impl Window {
    fn new(k: usize, stride: usize, x: &Map) -> Window {
        let (ho, top) = same(x.h, k, stride);
        let (wo, left) = same(x.w, k, stride);
        Window {
            k,
            stride,
            h: x.h,
            w: x.w,
            out: (ho, wo),
            pad: (top, left),
        }
    }

    /// Calls `f(tap, pixel)` for each tap (`dy·k + dx`) of output (y, x) that
    /// falls inside the map (padding reads zeros, so those are skipped), with
    /// the input pixel's index in its image (`yi·w + xi`).
    #[inline(always)]
    fn taps(&self, y: usize, x: usize, mut f: impl FnMut(usize, usize)) {
        for dy in 0..self.k {
            let Some(yi) = (y * self.stride + dy)
                .checked_sub(self.pad.0)
                .filter(|&v| v < self.h)
            else {
                continue;
            };
            for dx in 0..self.k {
                let Some(xi) = (x * self.stride + dx)
                    .checked_sub(self.pad.1)
                    .filter(|&v| v < self.w)
                else {
                    continue;
                };
                f(dy * self.k + dx, yi * self.w + xi);
            }
        }
    }
}

#[inline(always)]
fn activate(v: f32, relu6: bool) -> f32 {
    if relu6 {
        v.clamp(0.0, 6.0)
    } else {
        v
    }
}

/// Rows of an activation one parallel element-wise task handles.
const PIXELS_PER_TASK: usize = 64;

impl Conv {
    /// A 1x1 convolution: `x · weight + bias` over every pixel, plus
    /// `residual` when given, then ReLU6 when the layer has it (no block adds a
    /// residual to an activated layer).
    fn pointwise(&self, x: &Map, residual: Option<&Map>) -> Map {
        let pixels = x.n * x.h * x.w;
        // A pointwise layer's rows are its input channels; the stem's (through
        // `full`) are its im2col patches, k·k·inputs wide.
        assert_eq!(
            x.c * self.outputs,
            self.weight.len(),
            "convolution input width"
        );
        let mut out = Vec::new();
        affine(&mut out, &x.data, pixels, &self.weight, &self.bias);
        if residual.is_some() || self.relu6 {
            let width = PIXELS_PER_TASK * self.outputs;
            out.par_chunks_mut(width).enumerate().for_each(|(t, rows)| {
                vectorized(
                    #[inline(always)]
                    || {
                        if let Some(r) = residual {
                            for (v, a) in rows.iter_mut().zip(&r.data[t * width..]) {
                                *v += a;
                            }
                        }
                        for v in rows.iter_mut() {
                            *v = activate(*v, self.relu6);
                        }
                    },
                )
            });
        }
        Map {
            data: out,
            n: x.n,
            h: x.h,
            w: x.w,
            c: self.outputs,
        }
    }

    /// A depthwise k x k convolution with TF "same" padding, then ReLU6.
    fn depthwise(&self, x: &Map) -> Map {
        let window = Window::new(self.kernel, self.stride, x);
        let ((ho, wo), c) = (window.out, x.c);
        let mut out = vec![0f32; x.n * ho * wo * c];
        out.par_chunks_mut(wo * c).enumerate().for_each(|(row, o)| {
            vectorized(
                #[inline(always)]
                || {
                    let (img, y) = (row / ho, row % ho);
                    let plane = &x.data[img * x.h * x.w * c..(img + 1) * x.h * x.w * c];
                    for (xo, acc) in o.chunks_exact_mut(c).enumerate() {
                        acc.copy_from_slice(&self.bias);
                        window.taps(y, xo, |tap, pixel| {
                            let input = &plane[pixel * c..(pixel + 1) * c];
                            let filter = &self.weight[tap * c..(tap + 1) * c];
                            for ((a, v), f) in acc.iter_mut().zip(input).zip(filter) {
                                *a += v * f;
                            }
                        });
                        for a in acc.iter_mut() {
                            *a = activate(*a, self.relu6);
                        }
                    }
                },
            )
        });
        Map {
            data: out,
            n: x.n,
            h: ho,
            w: wo,
            c,
        }
    }

    /// A full k x k convolution with TF "same" padding (the stem: 3 input
    /// channels), as an im2col matrix times the weights.
    fn full(&self, x: &Map) -> Map {
        let window = Window::new(self.kernel, self.stride, x);
        let ((ho, wo), cin) = (window.out, x.c);
        let patch = self.kernel * self.kernel * cin;
        let mut columns = vec![0f32; x.n * ho * wo * patch];
        columns
            .par_chunks_mut(wo * patch)
            .enumerate()
            .for_each(|(row, cols)| {
                let (img, y) = (row / ho, row % ho);
                let plane = &x.data[img * x.h * x.w * cin..(img + 1) * x.h * x.w * cin];
                for (xo, col) in cols.chunks_exact_mut(patch).enumerate() {
                    window.taps(y, xo, |tap, pixel| {
                        col[tap * cin..(tap + 1) * cin]
                            .copy_from_slice(&plane[pixel * cin..(pixel + 1) * cin]);
                    });
                }
            });
        let as_pixels = Map {
            data: columns,
            n: x.n,
            h: ho,
            w: wo,
            c: patch,
        };
        self.pointwise(&as_pixels, None)
    }
}

impl CpuEfficientNet {
    /// The head's output averaged over each image (the 1280-d feature), for
    /// `n` images of `size x size` RGB bytes, channels last.
    pub(super) fn features(&self, rgb: &[u8], n: usize, size: usize) -> Vec<f32> {
        let mut input = vec![0f32; rgb.len()];
        input
            .par_chunks_mut(4096)
            .zip(rgb.par_chunks(4096))
            .for_each(|(o, i)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (o, &v) in o.iter_mut().zip(i) {
                            *o = (v as f32 - 127.0) / 128.0;
                        }
                    },
                )
            });
        let x = Map {
            data: input,
            n,
            h: size,
            w: size,
            c: 3,
        };
        let mut h = self.stem.full(&x);
        for b in &self.blocks {
            let expanded = b.expand.as_ref().map(|e| e.pointwise(&h, None));
            let spatial = b.depthwise.depthwise(expanded.as_ref().unwrap_or(&h));
            drop(expanded);
            h = b.project.pointwise(&spatial, b.residual.then_some(&h));
        }
        let head = self.head.pointwise(&h, None);
        let (pixels, c) = (head.h * head.w, head.c);
        let mut features = vec![0f32; n * c];
        features
            .par_chunks_mut(c)
            .zip(head.data.par_chunks(pixels * c))
            .for_each(|(f, image)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for px in image.chunks_exact(c) {
                            for (a, v) in f.iter_mut().zip(px) {
                                *a += v;
                            }
                        }
                        for a in f.iter_mut() {
                            *a /= pixels as f32;
                        }
                    },
                )
            });
        features
    }
}
