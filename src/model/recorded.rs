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
//! Only f32 tensors on flex devices take it; elsewhere [`recorded_log_probs`] is the
//! composition, computed again. The queries' gradient has the composition's bits at a training
//! step's sizes (50 candidates); with hundreds of candidates `gemm` may block a product's sum
//! over them differently for more rows, and then the queries' gradient's last bits could move
//! too.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Bool, DType, Tensor};

use super::backend::is_flex;
use super::decode_step::step_log_probs;
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
/// the module's documentation). Elsewhere than on flex, or for other than f32 tensors, the
/// composition itself, computed again from `queries` and `keys` (`log_probs` unused).
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
    let runs = [&queries, &keys, &log_probs]
        .iter()
        .all(|t| t.dtype() == DType::F32 && is_flex(&t.device()));
    if !runs {
        let ([b, m, d], n) = (queries.dims(), keys.dims()[1]);
        let mask = mask.reshape([b, 1, m, n]);
        return step_log_probs(queries.reshape([b, 1, m, d]), keys, mask).reshape([b, m, n]);
    }
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
    use burn::tensor::{Device, FloatDType, TensorData};

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
    /// and the keys (empty where one is not `tracked`), from the recorded node (`recorded`) or
    /// from the composition it stands for.
    fn run(dims: [usize; 4], recorded: bool, tracked: [bool; 2]) -> [Vec<u32>; 3] {
        let [b, m, n, d] = dims;
        let device = Device::flex().autodiff();
        let track = |t: Tensor<3>, tracked: bool| if tracked { t.require_grad() } else { t };
        let queries = track(fixed([b, m, d], 0.0, &device), tracked[0]);
        let keys = track(fixed([b, n, d], 1.0, &device), tracked[1]);
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
        let grad = |t: &Tensor<3>| t.grad(&grads).map(bits).unwrap_or_default();
        [bits(output), grad(&queries), grad(&keys)]
    }

    /// One node gives the composition's output and gradients bit for bit: one step's worth of
    /// queries (a recorded decoding's steps each score their own rows, so only the keys'
    /// gradient, one product over all steps, sums in another order there), on four shapes,
    /// one of them a training step's (K·L = 120 rows of d 128 against 50 candidates), with both
    /// parents tracked or one.
    #[test]
    fn the_recorded_node_has_the_compositions_values_and_gradients() {
        for dims in [
            [2, 5, 7, 8],
            [3, 20, 50, 16],
            [2, 120, 50, 128],
            [1, 1, 3, 4],
        ] {
            let (ours, theirs) = (run(dims, true, [true; 2]), run(dims, false, [true; 2]));
            assert!(ours[1].iter().any(|&g| f32::from_bits(g) != 0.0));
            assert!(ours[2].iter().any(|&g| f32::from_bits(g) != 0.0));
            assert_eq!(ours, theirs, "{dims:?}");
            // One parent tracked: its gradient alone, the same.
            for tracked in [[true, false], [false, true]] {
                let ours = run(dims, true, tracked);
                assert_eq!(ours, run(dims, false, tracked), "{dims:?}, {tracked:?}");
                let one = if tracked[0] { 1 } else { 2 };
                assert_eq!(ours[one], theirs[one]);
                assert!(ours[3 - one].is_empty());
            }
        }
    }

    /// Where the node does not run (here: f64 tensors), the composition is computed again from
    /// the queries and keys, and the given values are not used.
    #[test]
    fn elsewhere_the_composition_runs() {
        let device = Device::flex();
        let to_f64 = |t: Tensor<3>| t.cast(FloatDType::F64);
        let (b, m, n, d) = (2, 3, 5, 4);
        let queries = to_f64(fixed([b, m, d], 0.0, &device));
        let keys = to_f64(fixed([b, n, d], 1.0, &device));
        let mask = fixed([b, m, n], 2.0, &device).greater_elem(0.4);
        let unused = Tensor::<3>::zeros([b, m, n], &device);
        let out = recorded_log_probs(queries.clone(), keys.clone(), mask.clone(), unused);
        let composed = step_log_probs(
            queries.reshape([b, 1, m, d]),
            keys,
            mask.reshape([b, 1, m, n]),
        )
        .reshape([b, m, n]);
        let values = |t: Tensor<3>| t.into_data().try_to_vec::<f64>().expect("f64");
        let (out, composed) = (values(out), values(composed));
        assert!(out.iter().any(|&v| v != 0.0));
        assert_eq!(out, composed);
    }
}
