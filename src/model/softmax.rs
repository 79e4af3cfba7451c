//! Softmax and log-softmax over the last dimension with a backward pass of their own on the
//! CPU backend.
//!
//! Burn 0.22.1's autodiff has neither: under autodiff they run as the backend's default
//! composition (a detached max, a subtraction, `exp`, a sum and a division or a `log`), and
//! their backward as the gradients of those operations, each a full-size tensor written on the
//! calling thread (the division's alone takes a reciprocal, a square, a negation, two
//! multiplications and a sum). In a GoalRank step the attention's softmax runs on
//! `[B, H, N + 1, N + 1]` and the decoder's log-softmax on `[B, K + 1, L, N]`.
//!
//! The forward computes the CPU backend's own values bit for bit (`ActivationOps::softmax` /
//! `log_softmax`, what a CPU device without autodiff runs, so training and ranking compute the
//! same values) with `exp` in vector code (`model::exp`, the C library's `expf` bit for bit,
//! which the backend calls one value at a time), and the backward is one pass over the rows: for
//! the output `y` and the output's gradient `g`, softmax's is `y (g − Σ g y)` and log-softmax's
//! `g − exp(y) Σ g`. Both run on rayon's threads for large tensors.
//!
//! Only f32 tensors on flex devices take it; everything else runs Burn's `softmax` and
//! `log_softmax`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor, activation};

use super::backend::{
    CHUNK, flex_tensor, is_flex, lane_sum as sum, map_chunks, map_chunks_of, values_of,
};
use super::exp::exp_in_place;

/// Softmax and log-softmax over the last dimension, and their backward passes.
#[backend_extension(Flex, Autodiff)]
pub trait SoftmaxOps: Backend {
    /// `exp(x) / Σ exp(x)` over the last dimension.
    ///
    /// # Shapes
    /// - x: any (rank ≥ 1); output as x
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x − log Σ exp(x)` over the last dimension.
    ///
    /// # Shapes
    /// - x: any (rank ≥ 1); output as x
    fn log_softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The input's gradient from softmax's output `y` and its gradient.
    ///
    /// # Shapes
    /// - y, grad: the same shape; output as y
    fn softmax_last_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The input's gradient from log-softmax's output `y` and its gradient.
    ///
    /// # Shapes
    /// - y, grad: the same shape; output as y
    fn log_softmax_last_backward(
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Whether `x` takes the extension: f32 on a flex device, normalised over its last dimension.
fn runs_here<const D: usize>(x: &Tensor<D>, dim: usize) -> bool {
    dim + 1 == D && x.dtype() == DType::F32 && is_flex(&x.device())
}

/// Softmax of `x` along `dim`.
///
/// # Shapes
/// - x: any; output as x
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    if runs_here(&x, dim) {
        Tensor::from_dispatch(<burn::backend::Dispatch as SoftmaxOps>::softmax_last(
            x.into_dispatch(),
        ))
    } else {
        activation::softmax(x, dim)
    }
}

/// Log-softmax of `x` along `dim`.
///
/// # Shapes
/// - x: any; output as x
pub fn log_softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    if runs_here(&x, dim) {
        Tensor::from_dispatch(<burn::backend::Dispatch as SoftmaxOps>::log_softmax_last(
            x.into_dispatch(),
        ))
    } else {
        activation::log_softmax(x, dim)
    }
}

/// A row's largest value (`-inf` for an empty row; NaN inputs are passed over, and a row
/// holding one comes out NaN either way).
fn row_max(row: &[f32]) -> f32 {
    row.iter()
        .fold(f32::NEG_INFINITY, |max, &v| if v > max { v } else { max })
}

/// `out = x − max(row)` for one block of whole rows of length `n`: the shift both softmaxes
/// start from.
fn shifted_block(x: &[f32], out: &mut [f32], n: usize) {
    for (x, out) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let max = row_max(x);
        for (out, &x) in out.iter_mut().zip(x) {
            *out = x - max;
        }
    }
}

/// Softmax for one block of whole rows of length `n`: flex's fused softmax
/// (`burn_flex::ops::activation`), `exp(x − max)` summed in order from the row's first value,
/// then each times `1 / sum`.
pub fn softmax_forward_block(x: &[f32], out: &mut [f32], n: usize) {
    shifted_block(x, out, n);
    exp_in_place(out);
    let mut groups = out.chunks_exact_mut(n * INTERLEAVED);
    for group in &mut groups {
        // Each row's sum in its own order, the rows' chains side by side.
        let mut totals = [0.0f32; INTERLEAVED];
        for i in 0..n {
            for (r, total) in totals.iter_mut().enumerate() {
                *total += group[r * n + i];
            }
        }
        for (row, total) in group.chunks_exact_mut(n).zip(totals) {
            scale_row(row, total);
        }
    }
    for row in groups.into_remainder().chunks_exact_mut(n) {
        let mut total = 0.0f32;
        for &e in row.iter() {
            total += e;
        }
        scale_row(row, total);
    }
}

/// Rows whose sums [`softmax_forward_block`] takes side by side. Each sum is a chain of
/// dependent additions (in order from the row's first value, for flex's bits); one row at a
/// time the processor waits out each addition's latency, eight at a time it overlaps them.
const INTERLEAVED: usize = 8;

/// `row · (1 / total)`.
fn scale_row(row: &mut [f32], total: f32) {
    let inv = 1.0f32 / total;
    for value in row.iter_mut() {
        *value *= inv;
    }
}

/// Rows per parallel chunk for rows of length `n`: about [`CHUNK`] values.
fn chunk_rows(n: usize) -> usize {
    (CHUNK / n).max(1) * n
}

/// `x` contiguous and its last dimension's length; else (not f32, no values, or a last
/// dimension of size 0) `fallback`'s result, the backend's own operation over the last
/// dimension, which behaves there as Burn's does.
fn rows_or(
    x: FlexTensor,
    fallback: fn(FlexTensor, usize) -> FlexTensor,
) -> Result<(FlexTensor, usize), FlexTensor> {
    let shape = x.shape();
    let n = shape.last().copied().unwrap_or(0);
    if x.dtype() != DType::F32 || n == 0 || shape.num_elements() == 0 {
        let last = shape.num_dims().saturating_sub(1);
        return Err(fallback(x, last));
    }
    Ok((x.to_contiguous(), n))
}

/// Softmax over the last dimension: flex's values, `exp` in vector code.
fn softmax_forward(x: FlexTensor) -> FlexTensor {
    let (x, n) = match rows_or(x, Flex::softmax) {
        Ok(rows) => rows,
        Err(done) => return done,
    };
    let out = map_chunks_of(values_of(&x), chunk_rows(n), |x, out| {
        softmax_forward_block(x, out, n)
    });
    flex_tensor(out, x.shape())
}

/// Log-softmax over the last dimension: Burn's composition (`ActivationOps::log_softmax`: the
/// shift by the row's max, `exp`, flex's sum over the row, `ln`, the subtraction), `exp` in
/// vector code.
fn log_softmax_forward(x: FlexTensor) -> FlexTensor {
    let (x, n) = match rows_or(x, Flex::log_softmax) {
        Ok(rows) => rows,
        Err(done) => return done,
    };
    let shape = x.shape();
    let last = shape.num_dims() - 1;
    let rows = chunk_rows(n);
    let mut shifted = map_chunks_of(values_of(&x), rows, |x, out| shifted_block(x, out, n));
    let exps = map_chunks_of(&shifted, rows, |s, out| {
        out.copy_from_slice(s);
        exp_in_place(out);
    });
    // The backend's own sum over the row, so that its order of additions is kept.
    let sums = Flex::float_sum_dim(flex_tensor(exps, shape.clone()), last).to_contiguous();
    for (row, &total) in shifted.chunks_exact_mut(n).zip(values_of(&sums)) {
        let log_total = total.ln();
        for value in row.iter_mut() {
            *value -= log_total;
        }
    }
    flex_tensor(shifted, shape)
}

/// Softmax's input gradient for one block of whole rows of length `n`.
fn softmax_block(y: &[f32], grad: &[f32], out: &mut [f32], n: usize) {
    for ((y, g), out) in y
        .chunks_exact(n)
        .zip(grad.chunks_exact(n))
        .zip(out.chunks_exact_mut(n))
    {
        let dot = sum(y, g, |y, g| y * g);
        for ((out, &y), &g) in out.iter_mut().zip(y).zip(g) {
            *out = y * (g - dot);
        }
    }
}

/// Log-softmax's input gradient for one block of whole rows of length `n`.
fn log_softmax_block(y: &[f32], grad: &[f32], out: &mut [f32], n: usize) {
    // `exp(y)` over the whole block at once (whole vectors), then each row.
    out.copy_from_slice(y);
    exp_in_place(out);
    for (g, out) in grad.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let total = sum(g, g, |g, _| g);
        for (out, &g) in out.iter_mut().zip(g) {
            *out = g - *out * total;
        }
    }
}

/// `block(y, grad, out, n)` over blocks of whole rows (`model::backend::map_chunks`: on
/// rayon's threads for large tensors, on one thread in the browser build).
fn backward(
    y: FlexTensor,
    grad: FlexTensor,
    block: fn(&[f32], &[f32], &mut [f32], usize),
) -> FlexTensor {
    let (y, grad) = (y.to_contiguous(), grad.to_contiguous());
    let shape = y.shape();
    let n = shape.last().copied().unwrap_or(1).max(1);
    let (ys, gs) = (values_of(&y), values_of(&grad));
    flex_tensor(
        map_chunks(ys, gs, chunk_rows(n), |y, g, out| block(y, g, out, n)),
        shape,
    )
}

impl SoftmaxOps for Flex {
    fn softmax_last(x: FlexTensor) -> FlexTensor {
        softmax_forward(x)
    }

    fn log_softmax_last(x: FlexTensor) -> FlexTensor {
        log_softmax_forward(x)
    }

    fn softmax_last_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
        backward(y, grad, softmax_block)
    }

    fn log_softmax_last_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
        backward(y, grad, log_softmax_block)
    }
}

/// A softmax's backward step: its output is the state.
#[derive(Debug)]
struct SoftmaxBackward {
    log: bool,
}

impl<B: Backend + SoftmaxOps> Backward<B, 1> for SoftmaxBackward {
    /// The output.
    type State = B::FloatTensorPrimitive;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            if self.log {
                B::log_softmax_last_backward(output, grad)
            } else {
                B::softmax_last_backward(output, grad)
            }
        });
    }
}

/// `forward(x)` recorded for autodiff with [`SoftmaxBackward`].
fn tracked<B: Backend + SoftmaxOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    log: bool,
    forward: fn(B::FloatTensorPrimitive) -> B::FloatTensorPrimitive,
) -> FloatTensor<Autodiff<B, C>> {
    let node = x.node();
    let input = x.into_primitive();
    let prepared = SoftmaxBackward { log }
        .prepare::<C>([node])
        .compute_bound()
        .stateful();
    match prepared {
        OpsKind::Tracked(prep) => {
            let output = forward(input);
            prep.finish(output.clone(), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(input)),
    }
}

impl<B: Backend + SoftmaxOps, C: CheckpointStrategy> SoftmaxOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, false, B::softmax_last)
    }

    fn log_softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(x, true, B::log_softmax_last)
    }

    /// Not differentiated again in this project: the inner backend's backward, untracked.
    fn softmax_last_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::softmax_last_backward(Self::inner(y), Self::inner(grad)))
    }

    /// Not differentiated again in this project: the inner backend's backward, untracked.
    fn log_softmax_last_backward(
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::log_softmax_last_backward(
            Self::inner(y),
            Self::inner(grad),
        ))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    /// A fixed tensor with rows of different ranges, one value masked the decoder's way.
    fn fixed(dims: [usize; 3], phase: f32, device: &Device) -> Tensor<3> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| match i % 97 {
                5 => -1e9,
                _ => (i as f32 * 0.37 + phase).sin() * (1.0 + (i / dims[2]) as f32 % 4.0),
            })
            .collect();
        Tensor::from_data(TensorData::new(data, dims), device)
    }

    /// The values' bits, every NaN as one (a row of `-inf` is NaN in both).
    fn bits<const D: usize>(tensor: Tensor<D>) -> Vec<u32> {
        let nan = f32::NAN.to_bits();
        values(tensor)
            .iter()
            .map(|v| if v.is_nan() { nan } else { v.to_bits() })
            .collect()
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn without_autodiff_the_values_are_burns_bit_for_bit() {
        // One thread, several threads (over 64 K values), rows shorter than a vector of 16 and
        // rows of 600 (where Burn's max takes vector code), with entries masked by -1e9 and by
        // -inf (`exp`'s special cases), and rows with NaN, +inf and a +0 / -0 tie at the top.
        for dims in [[7, 60, 51], [7, 200, 51], [11, 13, 6], [2, 3, 600]] {
            let x = fixed(dims, 0.0, &Device::flex());
            let masked = x
                .clone()
                .mask_fill(x.clone().greater_elem(0.9), f32::NEG_INFINITY);
            // A row with a NaN, one with +inf, one whose largest values are +0 and -0.
            let n = dims[2];
            let mut odd = values(x.clone());
            odd[3] = f32::NAN;
            odd[n + 1] = f32::INFINITY;
            for v in &mut odd[2 * n..3 * n] {
                *v = -v.abs() - 1.0;
            }
            odd[2 * n + 1] = 0.0;
            odd[2 * n + 2] = -0.0;
            let odd = Tensor::<3>::from_data(TensorData::new(odd, dims), &Device::flex());
            for x in [x, masked, odd] {
                let ours = bits(softmax(x.clone(), 2));
                assert!(ours == bits(activation::softmax(x.clone(), 2)), "{dims:?}");
                let ours = bits(log_softmax(x.clone(), 2));
                assert!(ours == bits(activation::log_softmax(x, 2)), "{dims:?}");
            }
        }
    }

    /// Output and input gradient of a fixed weighted sum, through ours or Burn's.
    fn run(ours: bool, log: bool) -> (Vec<f32>, Vec<f32>) {
        let device = Device::flex().autodiff();
        // 7·60 rows of 51 (21,420 values): two blocks of 321 rows, the last one partial.
        let dims = [7, 60, 51];
        let x = fixed(dims, 0.0, &device).require_grad();
        let y = match (ours, log) {
            (true, false) => softmax(x.clone(), 2),
            (true, true) => log_softmax(x.clone(), 2),
            (false, false) => activation::softmax(x.clone(), 2),
            (false, true) => activation::log_softmax(x.clone(), 2),
        };
        // Masked entries' log-probabilities are huge; weigh them zero as the decoder does.
        let weights = fixed(dims, 1.0, &device).clamp(-2.0, 2.0);
        let grads = (y.clone().clamp(-50.0, 50.0) * weights).sum().backward();
        (values(y), values(x.grad(&grads).expect("a gradient")))
    }

    #[test]
    fn outputs_and_gradients_match_burns_composed_softmaxes() {
        for log in [false, true] {
            let (out, grad) = run(true, log);
            let (burn_out, burn_grad) = run(false, log);
            let scale = burn_grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(
                scale > 1e-2,
                "log {log}: the gradient is not trivially zero"
            );
            // Outputs: the fused forward rounds differently (relative 1e-6 of values up to 1e9).
            let out_scale = burn_out
                .iter()
                .fold(1.0f32, |m, v| m.max(v.abs().min(50.0)));
            assert!(
                worst(&clamped(&out), &clamped(&burn_out)) <= 1e-5 * out_scale,
                "log {log}"
            );
            let diff = worst(&grad, &burn_grad);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "log {log}: {diff} of {scale}"
            );
        }
    }

    fn clamped(v: &[f32]) -> Vec<f32> {
        v.iter().map(|x| x.clamp(-50.0, 50.0)).collect()
    }

    #[test]
    fn a_swapped_formula_fails_the_comparison() {
        // The tolerance above can tell: log-softmax's backward formula applied to softmax's
        // output and gradient is far from softmax's true gradient.
        let (y, burns) = run(false, false);
        let dims = [7, 60, 51];
        let weights = values(fixed(dims, 1.0, &Device::flex()).clamp(-2.0, 2.0));
        let mut swapped = vec![0.0f32; y.len()];
        log_softmax_block(&y, &weights, &mut swapped, dims[2]);
        let mut right = vec![0.0f32; y.len()];
        softmax_block(&y, &weights, &mut right, dims[2]);
        let scale = burns.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(worst(&right, &burns) <= 1e-5 * scale.max(1.0));
        assert!(worst(&swapped, &burns) > 1e-5 * scale.max(1.0));
    }
}
