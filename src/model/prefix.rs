//! The decoder's exclusive prefix mean with a backward pass of its own on the CPU backend.
//!
//! Teacher forcing gives step t of a list the mean of the items chosen before it:
//! `out[t] = Σ_{s<t} x[s] / max(t, 1)`. Composed from Burn's operations that is a cumulative
//! sum, a subtraction and a division, and under autodiff their three backward steps; flex runs
//! the cumulative sum and its backward (a reversed cumulative sum) one lane at a time on the
//! calling thread, about 8 % of a GoalRank training step's backward pass at batch 512
//! (`[B, K + 1, L, d]`). Here the forward is one pass over each list's `L · d` values and the
//! backward another, `gx[s] = Σ_{t>s} g[t] / max(t, 1)`, both split across rayon's threads by
//! whole lists.
//!
//! Only f32 tensors on flex devices take it; every other device runs the composed operations,
//! which Burn fuses on a GPU. Both compute the same function; the order of the floating-point
//! sums differs.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};

use super::backend::{CHUNK, flex_tensor, is_flex, map_chunks_of};

/// The exclusive prefix mean over the second-to-last dimension, and its backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait PrefixOps: Backend {
    /// `out[.., t, :] = Σ_{s<t} x[.., s, :] / max(t, 1)`.
    ///
    /// # Shapes
    /// - x: `[.., L, d]` (rank ≥ 2); output as x
    fn prefix_mean(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The input's gradient from the output's: `gx[.., s, :] = Σ_{t>s} g[.., t, :] / max(t, 1)`.
    ///
    /// # Shapes
    /// - grad: `[.., L, d]`; output as grad
    fn prefix_mean_backward(grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The mean of the rows before each row along dim `D − 2` (zero for the first).
///
/// # Shapes
/// - x: `[.., L, d]` (D ≥ 2); output as x
pub fn prefix_mean<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if D >= 2 && x.dtype() == DType::F32 && is_flex(&x.device()) {
        Tensor::from_dispatch(<burn::backend::Dispatch as PrefixOps>::prefix_mean(
            x.into_dispatch(),
        ))
    } else {
        composed(x)
    }
}

/// [`prefix_mean`] from Burn's operations: `(cumsum(x) − x) / max(t, 1)`.
///
/// # Shapes
/// - x: `[.., L, d]` (D ≥ 2); output as x
fn composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let along = D - 2;
    let l = x.dims()[along];
    let mut count_dims = [1; D];
    count_dims[along] = l;
    let counts: Vec<f32> = (0..l).map(|t| t.max(1) as f32).collect();
    let counts = Tensor::<D>::from_data(TensorData::new(counts, count_dims), &x.device());
    (x.clone().cumsum(along) - x) / counts
}

/// The forward pass over whole lists of `l` rows of `d` values.
fn forward_block(x: &[f32], out: &mut [f32], l: usize, d: usize) {
    for (x, out) in x.chunks_exact(l * d).zip(out.chunks_exact_mut(l * d)) {
        // Running sums first (row t holds Σ_{s<t} x[s]), then each row divided by its count.
        out[..d].fill(0.0);
        for t in 1..l {
            let (done, rest) = out.split_at_mut(t * d);
            let previous = &done[(t - 1) * d..];
            let before = &x[(t - 1) * d..t * d];
            for ((sum, &p), &b) in rest[..d].iter_mut().zip(previous).zip(before) {
                *sum = p + b;
            }
        }
        for (t, row) in out.chunks_exact_mut(d).enumerate().skip(2) {
            let count = t as f32;
            row.iter_mut().for_each(|v| *v /= count);
        }
    }
}

/// The backward pass over whole lists of `l` rows of `d` values.
fn backward_block(grad: &[f32], out: &mut [f32], l: usize, d: usize) {
    for (g, out) in grad.chunks_exact(l * d).zip(out.chunks_exact_mut(l * d)) {
        // From the last row back: gx[s] = gx[s + 1] + g[s + 1] / max(s + 1, 1).
        out[(l - 1) * d..].fill(0.0);
        for s in (0..l - 1).rev() {
            let (head, later) = out.split_at_mut((s + 1) * d);
            let count = (s + 1) as f32;
            let next = &g[(s + 1) * d..(s + 2) * d];
            for ((value, &acc), &n) in head[s * d..].iter_mut().zip(&later[..d]).zip(next) {
                *value = acc + n / count;
            }
        }
    }
}

/// `block` over whole lists of a contiguous copy of `x` (`model::backend::map_chunks_of`).
fn over_lists(x: FlexTensor, block: fn(&[f32], &mut [f32], usize, usize)) -> FlexTensor {
    let x = x.to_contiguous();
    let shape = x.shape();
    let rank = shape.num_dims();
    let (l, d) = (shape[rank - 2], shape[rank - 1]);
    let total = shape.num_elements();
    let values = &x.storage::<f32>()[..total];
    if l * d == 0 {
        return flex_tensor(values.to_vec(), shape);
    }
    let lists = (CHUNK / (l * d)).max(1) * l * d;
    flex_tensor(
        map_chunks_of(values, lists, |x, out| block(x, out, l, d)),
        shape,
    )
}

impl PrefixOps for Flex {
    fn prefix_mean(x: FlexTensor) -> FlexTensor {
        over_lists(x, forward_block)
    }

    fn prefix_mean_backward(grad: FlexTensor) -> FlexTensor {
        over_lists(grad, backward_block)
    }
}

/// The prefix mean's backward step: linear, so it needs no state.
#[derive(Debug)]
struct PrefixBackward;

impl<B: Backend + PrefixOps> Backward<B, 1> for PrefixBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, B::prefix_mean_backward);
    }
}

impl<B: Backend + PrefixOps, C: CheckpointStrategy> PrefixOps for Autodiff<B, C> {
    fn prefix_mean(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let node = x.node();
        let output = B::prefix_mean(x.into_primitive());
        PrefixBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateless(output)
    }

    /// Not differentiated again in this project: the inner backend's backward, untracked.
    fn prefix_mean_backward(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::prefix_mean_backward(Self::inner(grad)))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    /// A fixed, non-trivial tensor (no random stream: tests share the device's).
    fn fixed(dims: [usize; 4], phase: f32, device: &Device) -> Tensor<4> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| (i as f32 * 0.61 + phase).sin()).collect();
        Tensor::from_data(TensorData::new(data, dims), device)
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Output and input gradient of a fixed weighted sum, through ours or the composed
    /// operations; the input sliced so that it is not contiguous.
    fn run(ours: bool) -> (Vec<f32>, Vec<f32>) {
        let device = Device::flex().autodiff();
        // 9·23 lists of 6 rows of 24: 29,808 values, several chunks of 113 lists and a partial one.
        let dims = [9, 23, 6, 24];
        let x = fixed([9, 23, 6, 30], 0.0, &device).require_grad();
        let view = x.clone().slice([0..9, 0..23, 0..6, 3..27]);
        let y = if ours {
            prefix_mean(view)
        } else {
            composed(view)
        };
        let grads = (y.clone() * fixed(dims, 1.0, &device)).sum().backward();
        (values(y), values(x.grad(&grads).expect("a gradient")))
    }

    #[test]
    fn outputs_and_gradients_match_the_composed_operations() {
        let (out, grad) = run(true);
        let (composed_out, composed_grad) = run(false);
        let scale = composed_grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.1, "the gradient is not trivially zero");
        assert!(worst(&out, &composed_out) <= 1e-6 * 6.0);
        assert!(worst(&grad, &composed_grad) <= 1e-6 * 6.0 * scale);
    }

    #[test]
    fn the_first_row_is_zero_and_the_rest_means_of_the_rows_before() {
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0], [4, 2]),
            &Device::flex(),
        );
        let mean = values(prefix_mean(x));
        assert_eq!(mean, vec![0.0, 0.0, 1.0, 2.0, 2.0, 3.5, 4.0, 20.0 / 3.0]);
    }

    #[test]
    fn an_inclusive_mean_fails_the_comparison() {
        // The tolerance above can tell an off-by-one: the mean including row t is far off.
        let device = Device::flex();
        let x = fixed([9, 23, 6, 24], 0.0, &device);
        let exclusive = values(composed(x.clone()));
        let counts: Vec<f32> = (1..=6).map(|t| t as f32).collect();
        let counts = Tensor::<4>::from_data(TensorData::new(counts, [1, 1, 6, 1]), &device);
        let inclusive = values(x.cumsum(2) / counts);
        assert!(worst(&inclusive, &exclusive) > 1e-6 * 6.0 * 100.0);
        assert!(
            worst(
                &values(prefix_mean(fixed([9, 23, 6, 24], 0.0, &device))),
                &exclusive
            ) <= 1e-6 * 6.0
        );
    }
}
