//! A recorded decoding's log-probabilities on the autodiff graph, from values computed off it.
//!
//! A training step on the CPU decodes its sampled lists on the autodiff graph
//! (`Generator::records_decoding`), so that their log π needs no second, teacher-forced pass.
//! Each step picks its item from log-probabilities computed off the graph, and the steps'
//! queries stay on it. [`recorded_log_probs`] then puts all steps' log-probabilities on the
//! graph as one node, whose parents are the queries of every step and the keys: its backward
//! pass is that of the composition `decode_step::step_log_probs` records (the scores `q kᵀ`,
//! their division by `√d`, the mask, the log-softmax), each operation's gradient as Burn's
//! autodiff and this crate's own backward passes compute it, with one product for all steps'
//! queries and one for the keys. Scored step by step on the graph, the keys would get one
//! gradient per step, each a `[B, N, d]` tensor, summed by autodiff. Its forward is the given
//! log-probabilities: nothing is computed twice.
//!
//! Only flex devices take it (the generator scores the steps on the graph elsewhere).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Bool, Tensor};

use super::product::ProductOps;
use super::softmax::SoftmaxOps;

/// Log-probabilities computed off the graph, recorded as a function of the queries and keys.
#[backend_extension(Flex, Autodiff)]
pub trait RecordedOps: Backend {
    /// `log_probs`, which holds `log_softmax(mask_fill(q kᵀ / √d, mask, −1e9))` computed off
    /// the graph, as that function of `queries` and `keys` (its backward pass).
    ///
    /// # Shapes
    /// - queries `[B, M, d]`, keys `[B, N, d]`, mask and log_probs `[B, M, N]`
    /// - output `[B, M, N]`
    fn recorded_log_probs(
        queries: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        log_probs: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// `log_probs`, computed off the graph as `log_softmax(mask_fill(q kᵀ / √d, mask, −1e9))` over
/// the last dimension, recorded on `queries`' and `keys`' graph as that function of them (see
/// the module's documentation). Call it on flex devices.
///
/// # Shapes
/// - queries `[B, M, d]`, keys `[B, N, d]`, mask and log_probs `[B, M, N]`
/// - output `[B, M, N]`
pub fn recorded_log_probs(
    queries: Tensor<3>,
    keys: Tensor<3>,
    mask: Tensor<3, Bool>,
    log_probs: Tensor<3>,
) -> Tensor<3> {
    Tensor::from_dispatch(
        <burn::backend::Dispatch as RecordedOps>::recorded_log_probs(
            queries.into_dispatch(),
            keys.into_dispatch(),
            mask.into_dispatch(),
            log_probs.into_dispatch(),
        ),
    )
}

/// Nothing to record without autodiff: the log-probabilities as given.
impl RecordedOps for Flex {
    fn recorded_log_probs(
        _queries: FlexTensor,
        _keys: FlexTensor,
        _mask: FlexTensor,
        log_probs: FlexTensor,
    ) -> FlexTensor {
        log_probs
    }
}

/// The node's backward pass: the composition's operations' gradients in its order.
#[derive(Debug)]
struct RecordedBackward;

impl<B: Backend + ProductOps + SoftmaxOps> Backward<B, 2> for RecordedBackward {
    /// The queries, the keys, the mask and the output.
    type State = (
        B::FloatTensorPrimitive,
        B::FloatTensorPrimitive,
        B::BoolTensorPrimitive,
        B::FloatTensorPrimitive,
    );

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (queries, keys, mask, output) = ops.state;
        let [queries_parent, keys_parent] = ops.parents;
        let d = queries.shape()[2];
        let grad = grads.consume::<B>(&ops.node);
        // The log-softmax's, the mask's (zero where masked) and the division's (a
        // multiplication by the reciprocal, as Burn's `div_scalar` differentiates).
        let grad = B::log_softmax_last_backward(output, grad);
        let grad = B::float_mask_fill(grad, mask, 0f32.into());
        let grad = B::float_mul_scalar(grad, (1.0 / (d as f32).sqrt()).into());
        // The product's `q · kᵀ`: `grad · k` and, for `kᵀ`, `qᵀ · grad`, transposed back.
        if let Some(node) = keys_parent {
            let transposed = B::product(B::float_transpose(queries), grad.clone());
            grads.register::<B>(node.id, B::float_transpose(transposed));
        }
        if let Some(node) = queries_parent {
            grads.register::<B>(node.id, B::product(grad, keys));
        }
    }
}

impl<B: Backend + RecordedOps + ProductOps + SoftmaxOps, C: CheckpointStrategy> RecordedOps
    for Autodiff<B, C>
{
    fn recorded_log_probs(
        queries: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        log_probs: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (queries_node, keys_node) = (queries.node(), keys.node());
        let (queries, keys) = (queries.into_primitive(), keys.into_primitive());
        let log_probs = Self::inner(log_probs);
        match RecordedBackward
            .prepare::<C>([queries_node, keys_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let mask = Self::bool_inner(mask);
                prep.finish((queries, keys, mask, log_probs.clone()), log_probs)
            }
            OpsKind::UnTracked(prep) => prep.finish(log_probs),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::super::decode_step::step_log_probs;
    use super::*;

    /// A fixed, non-trivial tensor (no random stream: tests share the device's).
    fn fixed(dims: [usize; 3], phase: f32, device: &Device) -> Tensor<3> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| (i as f32 * 0.613 + phase).sin()).collect();
        Tensor::from_data(TensorData::new(data, dims), device)
    }

    fn bits(tensor: Tensor<3>) -> Vec<u32> {
        let values = tensor.into_data().try_into_vec::<f32>().expect("f32");
        values.iter().map(|x| x.to_bits()).collect()
    }

    /// The output, and the gradients of a fixed weighted sum of it with respect to the queries
    /// and the keys, from the recorded node (`recorded`) or from the composition it stands for.
    fn run(dims: [usize; 4], recorded: bool) -> [Vec<u32>; 3] {
        let [b, m, n, d] = dims;
        let device = Device::flex().autodiff();
        let queries = fixed([b, m, d], 0.0, &device).require_grad();
        let keys = fixed([b, n, d], 1.0, &device).require_grad();
        // Some candidates masked in each row, all of one row's in the last request.
        let mask = fixed([b, m, n], 2.0, &device)
            .greater_elem(0.4)
            .bool_or(fixed([b, m, n], 0.0, &device).lower_elem(-2.0));
        let mask = if b > 1 {
            let all = Tensor::<3, Bool>::full([1, m, n], true, &device);
            Tensor::cat(vec![mask.narrow(0, 0, b - 1), all], 0)
        } else {
            mask
        };
        let composed = |q: Tensor<3>, k: Tensor<3>| {
            step_log_probs(
                q.reshape([b, 1, m, d]),
                k,
                mask.clone().reshape([b, 1, m, n]),
            )
            .reshape([b, m, n])
        };
        let output = if recorded {
            let off_graph = composed(queries.clone().detach(), keys.clone().detach());
            recorded_log_probs(queries.clone(), keys.clone(), mask.clone(), off_graph)
        } else {
            composed(queries.clone(), keys.clone())
        };
        let weights = fixed([b, m, n], 3.0, &device);
        let grads = (output.clone() * weights).sum().backward();
        let grad = |t: &Tensor<3>| bits(t.grad(&grads).expect("a gradient"));
        [bits(output), grad(&queries), grad(&keys)]
    }

    /// One node gives the composition's output and gradients bit for bit: one step's worth of
    /// queries (a recorded decoding's steps each score their own rows, so only the keys'
    /// gradient, one product over all steps, sums in another order there), on four shapes,
    /// one of them a training step's (K·L = 120 rows of d 128 against 50 candidates).
    #[test]
    fn the_recorded_node_has_the_compositions_values_and_gradients() {
        for dims in [
            [2, 5, 7, 8],
            [3, 20, 50, 16],
            [2, 120, 50, 128],
            [1, 1, 3, 4],
        ] {
            let (ours, theirs) = (run(dims, true), run(dims, false));
            assert!(ours[1].iter().any(|&g| f32::from_bits(g) != 0.0));
            assert!(ours[2].iter().any(|&g| f32::from_bits(g) != 0.0));
            assert_eq!(ours, theirs, "{dims:?}");
        }
    }
}
