//! Layer normalisation with a backward pass of its own on the CPU backend.
//!
//! Burn 0.22.1's autodiff has no layer norm of its own: under autodiff `LayerNorm::forward`
//! runs as the backend's default composition (two means, a subtraction, a square, a square
//! root, a division, the scale and the shift), and its backward as the gradients of those ten
//! operations, each a full-size tensor written on the calling thread (a mean's gradient alone
//! builds a tensor of ones, scales it and multiplies). In a GoalRank step the decoder's two
//! norms run on `[B, K + 1, L, d]` and the transformer's on `[B, N + 1, d]`.
//!
//! Here the forward is the CPU backend's fused layer norm (`ModuleOps::layer_norm`, the one
//! `LayerNorm::forward` runs on a CPU device without autodiff, so training and ranking now
//! normalise the same way), and the backward is one pass over the rows, split across rayon's
//! threads in fixed blocks of rows: for a row with mean μ, `r = 1/√(var + ε)`, `x̂ = (x − μ) r`
//! and `ĝ = g γ`, `dx = r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂))`; `dγ = Σ g x̂` and `dβ = Σ g` over the
//! rows, summed block by block in order, so the result does not depend on the threads.
//!
//! Only f32 tensors on flex devices take it, and only norms with a shift (every norm in this
//! project has one); everything else runs Burn's `LayerNorm::forward`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::nn::LayerNorm;
use burn::tensor::{DType, Shape, Slice, Tensor};

use core::mem::MaybeUninit;

use super::backend::{flex_tensor, is_flex, lane_sum as sum, zeroed};

/// The variance's ε of every layer norm in this project: Burn's default
/// (`LayerNormConfig::epsilon`, `TransformerEncoderConfig::layer_norm_eps`), which this
/// project never changes. `LayerNorm` keeps its ε private, so a test checks the two defaults.
pub const EPSILON: f64 = 1e-5;

/// Rows per block: one thread's share, and the unit in which the parameters' gradients are
/// summed (so the order of those sums is fixed).
const BLOCK_ROWS: usize = 64;

/// Layer norm over the last dimension and its backward pass as one backend operation each.
#[backend_extension(Flex, Autodiff)]
pub trait NormOps: Backend {
    /// `(x − mean) / √(var + ε) · gamma + beta` over the last dimension.
    ///
    /// # Shapes
    /// - x `[.., d]`, gamma `[d]`, beta `[d]`; output as x
    fn norm_last(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The gradients for `grad`, the gradient of the output: the input's rows, then gamma's,
    /// then beta's.
    ///
    /// # Shapes
    /// - x `[.., d]` (R rows), gamma `[d]`, grad as x; output `[R + 2, d]`
    fn norm_last_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// `norm` applied to `x`: the CPU backend's fused layer norm with the backward pass above on
/// flex devices, Burn's `LayerNorm::forward` elsewhere.
///
/// # Shapes
/// - x `[.., d]`; output as x
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    match &norm.beta {
        Some(beta) if x.dtype() == DType::F32 && is_flex(&x.device()) => {
            Tensor::from_dispatch(<burn::backend::Dispatch as NormOps>::norm_last(
                x.into_dispatch(),
                norm.gamma.val().into_dispatch(),
                beta.val().into_dispatch(),
            ))
        }
        _ => norm.forward(x),
    }
}

/// [`backward_block`] compiled for the widest vectors this processor has (AVX2 on x86-64: the
/// same operations in the same order, so the same values, eight lanes at a time instead of
/// four).
fn backward_block_widest(
    x: &[f32],
    grad: &[f32],
    gamma: &[f32],
    dx: &mut [MaybeUninit<f32>],
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        /// # Safety
        /// AVX2 is present.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(
            x: &[f32],
            grad: &[f32],
            gamma: &[f32],
            dx: &mut [MaybeUninit<f32>],
        ) -> Vec<f32> {
            backward_block(x, grad, gamma, dx)
        }
        // SAFETY: checked just above.
        return unsafe { avx2(x, grad, gamma, dx) };
    }
    backward_block(x, grad, gamma, dx)
}

/// One block of rows: writes each row's input gradient into `dx` and returns the block's
/// `[dγ | dβ]` sums (`2d` values).
#[inline(always)]
fn backward_block(x: &[f32], grad: &[f32], gamma: &[f32], dx: &mut [MaybeUninit<f32>]) -> Vec<f32> {
    let d = gamma.len();
    let scale = 1.0 / d as f32;
    let mut params = vec![0.0f32; 2 * d];
    let mut normed = vec![0.0f32; d];
    let mut scaled = vec![0.0f32; d];
    for ((x, g), dx) in x
        .chunks_exact(d)
        .zip(grad.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let mean = sum(x, x, |v, _| v) * scale;
        let var = sum(x, x, |v, _| (v - mean) * (v - mean)) * scale;
        let r = 1.0 / (var + EPSILON as f32).sqrt();
        for (((n, s), &v), (&g, &w)) in normed
            .iter_mut()
            .zip(scaled.iter_mut())
            .zip(x)
            .zip(g.iter().zip(gamma))
        {
            *n = (v - mean) * r;
            *s = g * w;
        }
        let mean_scaled = sum(&scaled, &scaled, |s, _| s) * scale;
        let mean_product = sum(&scaled, &normed, |s, n| s * n) * scale;
        for ((dx, &s), &n) in dx.iter_mut().zip(&scaled).zip(&normed) {
            dx.write(r * (s - mean_scaled - n * mean_product));
        }
        let (d_gamma, d_beta) = params.split_at_mut(d);
        for (((dg, db), &g), &n) in d_gamma.iter_mut().zip(d_beta).zip(g).zip(&normed) {
            *dg += g * n;
            *db += g;
        }
    }
    params
}

/// `[dx rows | dγ | dβ]` for contiguous `x`, `grad` (`R · d` values each) and `gamma` (`d`).
fn backward_values(x: &[f32], grad: &[f32], gamma: &[f32]) -> Vec<f32> {
    let d = gamma.len();
    let n = x.len();
    // Each block writes its rows' input gradients (below); only the `[dγ | dβ]` sums start from
    // zero. (Zeroing all of it first was a pass over the rows on one thread.)
    let mut out: Vec<f32> = Vec::with_capacity(n + 2 * d);
    let (dx, params) = out.spare_capacity_mut()[..n + 2 * d].split_at_mut(n);
    let params = zeroed(params);
    // The blocks write the whole rows that `x` and `grad` both hold (all of `dx` for a
    // `[.., d]` tensor and its gradient); anything after them stays zero, as it always was.
    let whole = n.min(grad.len()).checked_div(d).unwrap_or(0) * d;
    let (dx, rest) = dx.split_at_mut(whole);
    zeroed(rest);
    let (x, grad) = (&x[..whole], &grad[..whole]);
    // (A zero-width norm has nothing to do; `max` keeps the chunk size valid.)
    let block = BLOCK_ROWS * d.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    let partials: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        dx.par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(grad.par_chunks(block)))
            .map(|(dx, (x, g))| backward_block_widest(x, g, gamma, dx))
            .collect()
    };
    #[cfg(target_arch = "wasm32")]
    let partials: Vec<Vec<f32>> = dx
        .chunks_mut(block)
        .zip(x.chunks(block).zip(grad.chunks(block)))
        .map(|(dx, (x, g))| backward_block_widest(x, g, gamma, dx))
        .collect();
    // Block by block, in order.
    for partial in &partials {
        for (total, value) in params.iter_mut().zip(partial) {
            *total += value;
        }
    }
    // SAFETY: the blocks wrote every element of `dx`'s first `whole` values (each of the whole
    // rows of `x` and `grad` gives the same row of `dx`), the rest of `dx` and `params` are
    // zeroed.
    unsafe { out.set_len(n + 2 * d) };
    out
}

impl NormOps for Flex {
    fn norm_last(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor) -> FlexTensor {
        Flex::layer_norm(x, gamma, Some(beta), EPSILON)
    }

    fn norm_last_backward(x: FlexTensor, gamma: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (x, gamma, grad) = (
            x.to_contiguous(),
            gamma.to_contiguous(),
            grad.to_contiguous(),
        );
        let shape = x.shape();
        let n = shape.num_elements();
        let d = gamma.shape().num_elements();
        let values = backward_values(
            &x.storage::<f32>()[..n],
            &grad.storage::<f32>()[..n],
            &gamma.storage::<f32>()[..d],
        );
        flex_tensor(values, Shape::new([n / d.max(1) + 2, d]))
    }
}

impl<B: Backend + NormOps, C: CheckpointStrategy> NormOps for Autodiff<B, C> {
    fn norm_last(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct NormBackward;

        impl<B: Backend + NormOps> Backward<B, 3> for NormBackward {
            /// The input and gamma.
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, gamma) = ops.state;
                let shape = x.shape();
                let d = gamma.shape().num_elements();
                let rows = shape.num_elements() / d.max(1);
                let all = B::norm_last_backward(x, gamma, grad);
                let part = |range: core::ops::Range<usize>| {
                    B::float_slice(all.clone(), &[Slice::from(range), Slice::from(0..d)])
                };
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, B::float_reshape(part(0..rows), shape));
                }
                if let Some(node) = node_gamma {
                    let grad = B::float_reshape(part(rows..rows + 1), Shape::new([d]));
                    grads.register::<B>(node.id, grad);
                }
                if let Some(node) = node_beta {
                    let grad = B::float_reshape(part(rows + 1..rows + 2), Shape::new([d]));
                    grads.register::<B>(node.id, grad);
                }
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        match NormBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::norm_last(x.clone(), gamma.clone(), beta);
                prep.finish((x, gamma), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::norm_last(x, gamma, beta)),
        }
    }

    /// Not differentiated again in this project: the backward of the inner backend on the
    /// primitives, untracked.
    fn norm_last_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::norm_last_backward(
            Self::inner(x),
            Self::inner(gamma),
            Self::inner(grad),
        ))
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::LayerNormConfig;
    use burn::nn::transformer::TransformerEncoderConfig;
    use burn::tensor::{Device, TensorData};

    use super::*;

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    /// A fixed, non-trivial tensor (no random stream: tests share the device's), with rows of
    /// different means and scales.
    fn fixed<const D: usize>(dims: [usize; D], phase: f32, device: &Device) -> Tensor<D> {
        let n: usize = dims.iter().product();
        let d = dims[D - 1];
        let data: Vec<f32> = (0..n)
            .map(|i| {
                let row = (i / d) as f32;
                (i as f32 * 0.37 + phase).sin() * (1.0 + row % 5.0) + row % 3.0 - 1.0
            })
            .collect();
        Tensor::from_data(TensorData::new(data, dims), device)
    }

    /// A norm with a non-trivial scale and shift.
    fn norm(d: usize, device: &Device) -> LayerNorm {
        let mut norm = LayerNormConfig::new(d).init(device);
        let tracked = |t: Tensor<1>| {
            if device.is_autodiff() {
                t.require_grad()
            } else {
                t
            }
        };
        norm.gamma = norm
            .gamma
            .map(|_| tracked(fixed([d], 0.5, device).add_scalar(1.5)));
        norm.beta = norm
            .beta
            .map(|beta| beta.map(|_| tracked(fixed([d], 2.0, device))));
        norm
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn largest(a: &[f32]) -> f32 {
        a.iter().fold(0.0f32, |m, x| m.max(x.abs()))
    }

    #[test]
    fn epsilon_is_burns_default() {
        assert_eq!(LayerNormConfig::new(4).epsilon, EPSILON);
        assert_eq!(
            TransformerEncoderConfig::new(4, 8, 2, 1).layer_norm_eps,
            EPSILON
        );
    }

    #[test]
    fn without_autodiff_it_is_burns_layer_norm_bit_for_bit() {
        let device = Device::flex();
        let norm = norm(20, &device);
        let x = fixed([3, 50, 20], 0.0, &device);
        assert_eq!(
            values(layer_norm(&norm, x.clone())),
            values(norm.forward(x.clone()))
        );
        // A strided view (transposed) gives the same values too.
        let t = fixed([3, 20, 50], 0.0, &device).swap_dims(1, 2);
        assert_eq!(
            values(layer_norm(&norm, t.clone())),
            values(norm.forward(t))
        );
    }

    /// Output and the gradients of a fixed weighted sum of it with respect to the input, the
    /// scale and the shift, through this layer norm or Burn's.
    fn run(ours: bool, dims: [usize; 4]) -> [Vec<f32>; 4] {
        let device = Device::flex().autodiff();
        let norm = norm(dims[3], &device);
        let x = fixed(dims, 0.0, &device).require_grad();
        let y = if ours {
            layer_norm(&norm, x.clone())
        } else {
            norm.forward(x.clone())
        };
        let grads = (y.clone() * fixed(dims, 1.0, &device)).sum().backward();
        let beta = norm.beta.as_ref().expect("a shift");
        [
            values(y),
            values(x.grad(&grads).expect("an input gradient")),
            values(norm.gamma.grad(&grads).expect("a scale gradient")),
            values(beta.grad(&grads).expect("a shift gradient")),
        ]
    }

    #[test]
    fn outputs_and_gradients_match_burns_composed_layer_norm() {
        // 2·3·37 = 222 rows: several blocks and a partial one; 20 columns: not a multiple of
        // the eight running sums.
        for dims in [[2, 3, 37, 20], [1, 1, 5, 128]] {
            let ours = run(true, dims);
            let burns = run(false, dims);
            for (name, (a, b)) in ["output", "input", "scale", "shift"]
                .iter()
                .zip(ours.iter().zip(&burns))
            {
                let scale = largest(b);
                assert!(scale > 1e-2, "{name}: the reference is not trivially zero");
                let diff = worst(a, b);
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{name} {dims:?}: {diff} of {scale}"
                );
            }
        }
    }

    #[test]
    fn a_wrong_gradient_fails_the_comparison() {
        // The tolerance above can tell: the input gradient without its last term,
        // `r (ĝ − mean ĝ)` instead of `r (ĝ − mean ĝ − x̂ mean(ĝ x̂))`, fails it.
        let dims = [2, 3, 37, 20];
        let d = dims[3];
        let device = Device::flex();
        let x = values(fixed(dims, 0.0, &device));
        let g = values(fixed(dims, 1.0, &device));
        let gamma = values(fixed([d], 0.5, &device).add_scalar(1.5));
        let full = backward_values(&x, &g, &gamma);
        let burns = run(false, dims);
        let n = x.len();
        let tolerance = 1e-5 * largest(&burns[1]).max(1.0);
        assert!(worst(&full[..n], &burns[1]) <= tolerance);
        let mut broken = vec![0.0f32; n];
        for ((out, x), g) in broken.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
            let mean = x.iter().sum::<f32>() / d as f32;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let r = 1.0 / (var + EPSILON as f32).sqrt();
            let scaled: Vec<f32> = g.iter().zip(&gamma).map(|(g, w)| g * w).collect();
            let mean_scaled = scaled.iter().sum::<f32>() / d as f32;
            for (out, s) in out.iter_mut().zip(&scaled) {
                *out = r * (s - mean_scaled);
            }
        }
        assert!(worst(&broken, &burns[1]) > tolerance);
    }

    /// The backward pass writes its output without zeroing it first: given values that are not
    /// whole rows (or a gradient shorter than `x`), what lies past the whole rows is zero, and
    /// the whole rows are as on their own.
    #[test]
    fn values_past_the_whole_rows_are_zero() {
        let d = 4;
        let device = Device::flex();
        let x = values(fixed([7, d], 0.0, &device));
        let g = values(fixed([7, d], 1.0, &device));
        let gamma = values(fixed([d], 0.5, &device).add_scalar(1.5));
        let rows = backward_values(&x[..3 * d], &g[..3 * d], &gamma);
        for (x, g) in [
            (&x[..3 * d + 3], &g[..3 * d + 3]),
            (&x[..], &g[..3 * d + 2]),
        ] {
            let out = backward_values(x, g, &gamma);
            assert_eq!(out.len(), x.len() + 2 * d);
            assert_eq!(out[..3 * d], rows[..3 * d]);
            assert!(out[3 * d..x.len()].iter().all(|&v| v == 0.0));
            assert_eq!(out[x.len()..], rows[3 * d..]);
        }
    }
}
