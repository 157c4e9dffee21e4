//! The two-branch network as flat f32 buffers, with a hand-written forward and
//! backward pass per branch. Buffers live in a [`Tape`] that is reused from step
//! to step, so a training step allocates nothing once the first batch has run.

use super::kernels::{self, View};
use crate::lang::Activation;
use crate::linalg;
use crate::model::{Group, Modality, Model};
use crate::rng::Rng;

/// A copy of a [`Model`]'s parameters, in the model's parameter order.
///
/// Weight matrices are held input-major: `values[w]` is the transpose of the
/// model's (out x in) matrix, so every matrix product reads a weight as a
/// row-major right-hand operand. `gemm` packs a column-major right-hand operand
/// on every call, and at a batch of 128 rows that packing of a 1024 x 2048
/// weight cost more than the product itself: `cargo bench --bench gemm_layouts`
/// put the bench model's step products at 13.5 ms output-major and 9.0 ms
/// input-major (2 cores of an AVX-512 Xeon, 2026-12-07). Gradients, optimizer
/// moments and penalty importances share this layout; [`Net::from_model`] and
/// [`Net::write_to`] convert.
pub struct Net {
    pub values: Vec<Vec<f32>>,
    pub groups: Vec<Group>,
    names: Vec<String>,
    /// (weight, bias) parameter indices of each layer, image then text branch.
    paths: [Vec<(usize, usize)>; 2],
    /// (out, in) of each parameter (biases: (out, 1)).
    shapes: Vec<(usize, usize)>,
    activation: [Activation; 2],
    dropout: [f64; 2],
    pub logit_scale: Option<usize>,
}

fn branch_index(m: Modality) -> usize {
    match m {
        Modality::Image => 0,
        Modality::Text => 1,
    }
}

impl Net {
    pub fn from_model(model: &Model) -> candle_core::Result<Net> {
        let mut values = Vec::new();
        let mut shapes = Vec::new();
        for p in model.params() {
            let t = p.var.as_detached_tensor();
            let dims = t.dims().to_vec();
            shapes.push(match dims.as_slice() {
                [out, inp] => (*out, *inp),
                [out] => (*out, 1),
                _ => (t.elem_count(), 1),
            });
            let (out, inp) = shapes[shapes.len() - 1];
            values.push(transposed(&t.flatten_all()?.to_vec1::<f32>()?, out, inp));
        }
        Ok(Net {
            values,
            groups: model.params().iter().map(|p| p.group).collect(),
            names: model.params().iter().map(|p| p.name.clone()).collect(),
            paths: [model.layers(Modality::Image), model.layers(Modality::Text)],
            shapes,
            activation: [model.spec.image.activation, model.spec.text.activation],
            dropout: [model.spec.image.dropout, model.spec.text.dropout],
            logit_scale: model
                .params()
                .iter()
                .position(|p| p.group == Group::Temperature),
        })
    }

    /// Writes these values back into `model` (same architecture).
    pub fn write_to(&self, model: &Model) -> Result<(), String> {
        let device = model.device();
        let mut named = Vec::with_capacity(self.values.len());
        for (((name, value), &(out, inp)), p) in self
            .names
            .iter()
            .zip(&self.values)
            .zip(&self.shapes)
            .zip(model.params())
        {
            let t = candle_core::Tensor::from_slice(
                &transposed(value, inp, out),
                p.var.shape(),
                device,
            )
            .map_err(|e| e.to_string())?;
            named.push((name.clone(), t));
        }
        model.set_values(&named)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Parameter `i`'s values in the model's layout (a tensor flattened),
    /// rearranged into this net's (for weight penalties' importances).
    pub fn in_layout(&self, i: usize, values: &[f32]) -> Vec<f32> {
        let (out, inp) = self.shapes[i];
        transposed(values, out, inp)
    }

    pub fn output_dim(&self, m: Modality) -> usize {
        let path = &self.paths[branch_index(m)];
        self.shapes[path[path.len() - 1].0].0
    }
}

/// The transpose of a row-major (rows x cols) matrix: a model's (out x in)
/// weight to this net's layout and back. A bias is an (out x 1) matrix, whose
/// transpose is the same buffer.
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; values.len()];
    linalg::transpose(values, rows, cols, &mut t);
    t
}

/// What one branch's forward pass keeps for its backward pass.
#[derive(Default)]
pub struct Tape {
    pub rows: usize,
    /// `inputs[l]`: the input of layer l (rows x in_l); `inputs[0]` holds the features.
    pub inputs: Vec<Vec<f32>>,
    /// `slopes[l]`: act'(z_l) times the dropout mask, for the hidden layers.
    slopes: Vec<Vec<f32>>,
    /// The normalised embeddings (rows x embed) and their pre-normalisation norms.
    pub embeddings: Vec<f32>,
    norms: Vec<f32>,
    pre_activation: Vec<f32>,
    mask: Vec<f32>,
    grad: Vec<f32>,
    grad_next: Vec<f32>,
    /// The gradient of a layer's input, transposed (in x rows), before it is
    /// transposed back and multiplied by the activation's slope.
    grad_input_t: Vec<f32>,
}

impl Tape {
    /// Resizes the feature buffer for `rows` inputs of `dim` features and
    /// returns it for filling.
    pub fn features(&mut self, rows: usize, dim: usize) -> &mut Vec<f32> {
        self.rows = rows;
        if self.inputs.is_empty() {
            self.inputs.push(Vec::new());
        }
        self.inputs[0].resize(rows * dim, 0.0);
        &mut self.inputs[0]
    }
}

/// Gradients of every parameter, and which were written this step (an
/// untouched buffer holds stale values and must be overwritten, not added to).
pub struct Grads {
    pub values: Vec<Vec<f32>>,
    pub touched: Vec<bool>,
    /// Per parameter, the sums of squares of its chunks as they stand, when the
    /// last pass that wrote them computed these on the way (a weight penalty):
    /// the gradient norm then need not read the gradient again.
    pub chunk_squares: Vec<Option<Vec<f64>>>,
}

impl Grads {
    pub fn for_net(net: &Net) -> Grads {
        Grads {
            values: net.values.iter().map(|v| vec![0.0; v.len()]).collect(),
            touched: vec![false; net.values.len()],
            chunk_squares: vec![None; net.values.len()],
        }
    }

    pub fn clear(&mut self) {
        self.touched.fill(false);
        self.chunk_squares.fill(None);
    }

    /// The gradient buffer of parameter `i`, zeroed first if it was not written
    /// this step.
    pub fn buffer(&mut self, i: usize) -> &mut [f32] {
        self.chunk_squares[i] = None;
        if !self.touched[i] {
            self.values[i].fill(0.0);
            self.touched[i] = true;
        }
        &mut self.values[i]
    }
}

impl Net {
    /// Forward pass of branch `m` over `tape.inputs[0]`; with `dropout`, hidden
    /// activations are dropped with masks drawn in the same order as
    /// `Model::forward_raw` draws them.
    pub fn forward(&self, m: Modality, tape: &mut Tape, mut dropout: Option<&mut Rng>) {
        let bi = branch_index(m);
        let path = &self.paths[bi];
        let rows = tape.rows;
        let layers = path.len();
        tape.inputs.resize_with(layers, Vec::new);
        tape.slopes.resize_with(layers.saturating_sub(1), Vec::new);
        let p = self.dropout[bi];
        for (l, &(w, b)) in path.iter().enumerate() {
            let (out, inp) = self.shapes[w];
            let last = l + 1 == layers;
            let z = if last {
                &mut tape.embeddings
            } else {
                &mut tape.pre_activation
            };
            z.resize(rows * out, 0.0);
            kernels::matmul(
                z,
                View::Plain(&tape.inputs[l], rows, inp),
                View::Plain(&self.values[w], inp, out),
                false,
            );
            kernels::add_bias(z, &self.values[b]);
            if last {
                break;
            }
            let use_mask = match (dropout.as_deref_mut(), p > 0.0) {
                (Some(rng), true) => {
                    let keep = 1.0 - p as f32;
                    tape.mask.clear();
                    tape.mask.extend((0..rows * out).map(|_| {
                        if rng.next_f32() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    }));
                    true
                }
                _ => false,
            };
            let next = &mut tape.inputs[l + 1];
            next.resize(rows * out, 0.0);
            let slope = &mut tape.slopes[l];
            slope.resize(rows * out, 0.0);
            kernels::activate(
                self.activation[bi],
                &tape.pre_activation,
                next,
                slope,
                use_mask.then_some(tape.mask.as_slice()),
            );
        }
        let dim = self.output_dim(m);
        kernels::normalize_rows(&mut tape.embeddings, dim, &mut tape.norms);
    }

    /// Backward pass of branch `m`: `d_embeddings` (rows x embed) is the loss
    /// gradient with respect to the normalised embeddings; parameter gradients
    /// are added to `grads`. The input features get no gradient.
    pub fn backward(&self, m: Modality, tape: &mut Tape, d_embeddings: &[f32], grads: &mut Grads) {
        let path = &self.paths[branch_index(m)];
        let rows = tape.rows;
        tape.grad.clear();
        tape.grad.extend_from_slice(d_embeddings);
        kernels::normalize_rows_backward(&mut tape.grad, &tape.embeddings, &tape.norms);
        for (l, &(w, b)) in path.iter().enumerate().rev() {
            let (out, inp) = self.shapes[w];
            let touched = grads.touched[w];
            if !touched {
                grads.touched[w] = true;
            }
            kernels::matmul(
                &mut grads.values[w],
                View::Transposed(&tape.inputs[l], rows, inp),
                View::Plain(&tape.grad, rows, out),
                touched,
            );
            let touched = grads.touched[b];
            grads.touched[b] = true;
            kernels::column_sums(&mut grads.values[b], &tape.grad, touched);
            if l == 0 {
                break;
            }
            // ∂/∂inputᵀ = W'·gradᵀ, so that the weight is again the row-major
            // operand (gradᵀ is small enough that its packing costs little).
            tape.grad_input_t.resize(inp * rows, 0.0);
            kernels::matmul(
                &mut tape.grad_input_t,
                View::Plain(&self.values[w], inp, out),
                View::Transposed(&tape.grad, rows, out),
                false,
            );
            tape.grad_next.resize(rows * inp, 0.0);
            let slope = &tape.slopes[l - 1];
            linalg::transpose_map(
                &tape.grad_input_t,
                inp,
                rows,
                &mut tape.grad_next,
                |i, g| g * slope[i],
            );
            std::mem::swap(&mut tape.grad, &mut tape.grad_next);
        }
    }
}
