//! EfficientNet-Lite0's forward written out for the CPU, channels last (NHWC):
//! a 1x1 convolution is then one matrix product over every pixel of the batch
//! (`linalg::matmul`), and a depthwise convolution reads each tap's channels
//! as one contiguous, vectorised run. Batch norm is folded into the
//! convolutions at load (scale into the weights, shift into a bias), and the
//! bias, ReLU6 and residual add are applied to the rows the products write.
//! [`super::image`] holds the network's description and its candle graph, the
//! reference `tests/encode.rs` checks this forward against.

use crate::linalg::{matmul, vectorized, View};
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
    /// A 1x1 convolution: `x · weight + bias` over every pixel, then ReLU6;
    /// `residual` is added before the activation's output is stored (the
    /// blocks that add one have no activation on it).
    fn pointwise(&self, x: &Map, residual: Option<&Map>) -> Map {
        let pixels = x.n * x.h * x.w;
        let mut out = Vec::with_capacity(pixels * self.outputs);
        match residual {
            Some(r) => {
                debug_assert_eq!(r.data.len(), pixels * self.outputs);
                out.extend_from_slice(&r.data);
                out.par_chunks_mut(PIXELS_PER_TASK * self.outputs)
                    .for_each(|rows| {
                        vectorized(|| {
                            for row in rows.chunks_exact_mut(self.outputs) {
                                for (v, b) in row.iter_mut().zip(&self.bias) {
                                    *v += b;
                                }
                            }
                        })
                    });
            }
            None => {
                for _ in 0..pixels {
                    out.extend_from_slice(&self.bias);
                }
            }
        }
        // A pointwise layer's rows are its input channels; the stem's (through
        // `full`) are its im2col patches, k·k·inputs wide.
        assert_eq!(
            x.c * self.outputs,
            self.weight.len(),
            "convolution input width"
        );
        matmul(
            &mut out,
            View::Plain(&x.data, pixels, x.c),
            View::Plain(&self.weight, x.c, self.outputs),
            true,
        );
        if self.relu6 {
            out.par_chunks_mut(PIXELS_PER_TASK * self.outputs)
                .for_each(|rows| {
                    vectorized(|| rows.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)))
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
        let (k, s, c) = (self.kernel, self.stride, x.c);
        let (ho, top) = same(x.h, k, s);
        let (wo, left) = same(x.w, k, s);
        let mut out = vec![0f32; x.n * ho * wo * c];
        out.par_chunks_mut(wo * c).enumerate().for_each(|(row, o)| {
            vectorized(|| {
                let (img, y) = (row / ho, row % ho);
                let plane = &x.data[img * x.h * x.w * c..(img + 1) * x.h * x.w * c];
                for (xo, acc) in o.chunks_exact_mut(c).enumerate() {
                    acc.copy_from_slice(&self.bias);
                    for dy in 0..k {
                        let Some(yi) = (y * s + dy).checked_sub(top).filter(|&v| v < x.h) else {
                            continue;
                        };
                        for dx in 0..k {
                            let Some(xi) = (xo * s + dx).checked_sub(left).filter(|&v| v < x.w)
                            else {
                                continue;
                            };
                            let input = &plane[(yi * x.w + xi) * c..(yi * x.w + xi + 1) * c];
                            let tap = &self.weight[(dy * k + dx) * c..(dy * k + dx + 1) * c];
                            for ((a, v), f) in acc.iter_mut().zip(input).zip(tap) {
                                *a += v * f;
                            }
                        }
                    }
                    for a in acc.iter_mut() {
                        *a = activate(*a, self.relu6);
                    }
                }
            })
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
        let (k, s, cin) = (self.kernel, self.stride, x.c);
        let (ho, top) = same(x.h, k, s);
        let (wo, left) = same(x.w, k, s);
        let patch = k * k * cin;
        let pixels = x.n * ho * wo;
        let mut columns = vec![0f32; pixels * patch];
        columns
            .par_chunks_mut(wo * patch)
            .enumerate()
            .for_each(|(row, cols)| {
                let (img, y) = (row / ho, row % ho);
                let plane = &x.data[img * x.h * x.w * cin..(img + 1) * x.h * x.w * cin];
                for (xo, col) in cols.chunks_exact_mut(patch).enumerate() {
                    for dy in 0..k {
                        let Some(yi) = (y * s + dy).checked_sub(top).filter(|&v| v < x.h) else {
                            continue;
                        };
                        for dx in 0..k {
                            let Some(xi) = (xo * s + dx).checked_sub(left).filter(|&v| v < x.w)
                            else {
                                continue;
                            };
                            let at = (dy * k + dx) * cin;
                            col[at..at + cin].copy_from_slice(
                                &plane[(yi * x.w + xi) * cin..(yi * x.w + xi + 1) * cin],
                            );
                        }
                    }
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
                vectorized(|| {
                    for (o, &v) in o.iter_mut().zip(i) {
                        *o = (v as f32 - 127.0) / 128.0;
                    }
                })
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
                vectorized(|| {
                    for px in image.chunks_exact(c) {
                        for (a, v) in f.iter_mut().zip(px) {
                            *a += v;
                        }
                    }
                    for a in f.iter_mut() {
                        *a /= pixels as f32;
                    }
                })
            });
        features
    }
}
