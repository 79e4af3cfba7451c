//! The generator's greedy decoding, one list per request, on the CPU backend without autodiff,
//! as one backend operation.
//!
//! Ranking decodes L steps, and each step is about thirty of Burn's tensor operations (the
//! query's sums, layer norms and linear layers, the scores, the mask, the log-softmax, the
//! pick, the gathers that update the prefix, and the reshapes between them), each a call
//! through Burn's tensor API with its own checks, buffers and handles. For one request those
//! calls, not the arithmetic, took most of the decoding's time. Here the whole loop runs inside
//! the backend. The products, layer norms, the bias with GELU, the log-softmax and the argmax
//! are the backend operations the tensor route runs (`model::product`, `model::layer_norm`,
//! `model::gelu`, `model::softmax` and flex's own), called on the same operands in the same
//! order. The rest (the sums, the division by `√d`, the mask, the prefix's rows) is done
//! element by element on plain buffers, each element as flex computes it. So the lists, their
//! log-probabilities and the first step's scores are the tensor route's bit for bit, which a
//! test checks.
//!
//! Only f32 tensors on flex devices without autodiff, decoding one greedy list per request,
//! take it. Every other decoding (sampled lists, several lists per request, training on the
//! autodiff graph, wgpu's fused step) runs the tensor route.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, ExtensionType, Flex, TensorMetadata, backend_extension};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Bytes, DType, Int, IntDType, Shape, Tensor};

use super::backend::{flex_tensor, is_flex, values_of};
use super::gelu::GeluOps;
use super::layer_norm::NormOps;
use super::product::ProductOps;
use super::softmax::SoftmaxOps;

/// Greedy decoding as one backend operation.
#[backend_extension(Flex)]
pub trait GreedyOps: Backend {
    /// L greedy steps for each request (see [`decode`]).
    ///
    /// # Shapes
    /// - user `[B, d]`, keys and candidates `[B, N, d]`, steps `[L, d]`
    /// - output: lists `[B, 1, L]` of `int_dtype`, log π `[B, 1]`, the first step's
    ///   log-probabilities `[B, N]`
    fn greedy_decode(
        user: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        candidates: FloatTensor<Self>,
        steps: FloatTensor<Self>,
        #[extension_type] layers: Layers<Self>,
        int_dtype: IntDType,
    ) -> (IntTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// A linear layer's weight `[d_in, d_out]` and bias `[d_out]`.
#[derive(ExtensionType)]
pub struct Affine<B: Backend> {
    pub weight: FloatTensor<B>,
    pub bias: FloatTensor<B>,
}

/// A layer norm's scale and shift `[d]`.
#[derive(ExtensionType)]
pub struct Norm<B: Backend> {
    pub gamma: FloatTensor<B>,
    pub beta: FloatTensor<B>,
}

/// The decoder's layers from a step's prefix mean to its query.
#[derive(ExtensionType)]
pub struct Layers<B: Backend> {
    #[extension_type]
    pub prefix: Affine<B>,
    #[extension_type]
    pub mlp_norm: Norm<B>,
    #[extension_type]
    pub mlp_in: Affine<B>,
    #[extension_type]
    pub mlp_out: Affine<B>,
    #[extension_type]
    pub query_norm: Norm<B>,
    #[extension_type]
    pub query: Affine<B>,
}

impl Affine<burn::backend::Dispatch> {
    /// `layer`'s weight and bias as backend tensors; `None` where it has no bias.
    pub fn of(layer: &Linear) -> Option<Self> {
        Some(Self {
            weight: layer.weight.val().into_dispatch(),
            bias: layer.bias.as_ref()?.val().into_dispatch(),
        })
    }
}

impl Norm<burn::backend::Dispatch> {
    /// `norm`'s scale and shift as backend tensors; `None` where it has no shift.
    pub fn of(norm: &LayerNorm) -> Option<Self> {
        Some(Self {
            gamma: norm.gamma.val().into_dispatch(),
            beta: norm.beta.as_ref()?.val().into_dispatch(),
        })
    }
}

/// Whether decoding from `user` `[B, d]`, `keys` and `candidates` `[B, N, d]` takes
/// [`decode`]: f32 on a flex device without autodiff, with at least one candidate and shapes
/// that agree.
pub fn runs_here(user: &Tensor<2>, keys: &Tensor<3>, candidates: &Tensor<3>) -> bool {
    let device = user.device();
    let [b, d] = user.dims();
    let f32s = [user.dtype(), keys.dtype(), candidates.dtype()] == [DType::F32; 3];
    let [keys_b, n, keys_d] = keys.dims();
    f32s && is_flex(&device)
        && !device.is_autodiff()
        && keys.dims() == candidates.dims()
        && [keys_b, keys_d] == [b, d]
        && n > 0
}

/// One greedy list per request, as the generator's tensor route decodes it with `layers`: the
/// lists' positions, their log π and the first step's log-probabilities. Call it where
/// [`runs_here`] holds, with at least one step.
///
/// # Shapes
/// - user `[B, d]`, keys and candidates `[B, N, d]`, steps `[L, d]` (L ≥ 1)
/// - output: lists `[B, 1, L]`, log π `[B, 1]`, scores `[B, N]`
pub fn decode(
    layers: Layers<burn::backend::Dispatch>,
    user: Tensor<2>,
    keys: Tensor<3>,
    candidates: Tensor<3>,
    steps: Tensor<2>,
) -> (Tensor<3, Int>, Tensor<2>, Tensor<2>) {
    let int_dtype = user.device().settings().int_dtype;
    let (lists, log_probs, scores) = <burn::backend::Dispatch as GreedyOps>::greedy_decode(
        user.into_dispatch(),
        keys.into_dispatch(),
        candidates.into_dispatch(),
        steps.into_dispatch(),
        layers,
        int_dtype,
    );
    (
        Tensor::from_dispatch(lists),
        Tensor::from_dispatch(log_probs),
        Tensor::from_dispatch(scores),
    )
}

impl Affine<Flex> {
    /// `x · W + b` as `model::rows::linear_rows` computes it on flex.
    ///
    /// # Shapes
    /// - x `[rows, d_in]`; output `[rows, d_out]`
    fn forward(&self, x: FlexTensor) -> FlexTensor {
        Flex::product_bias(x, self.weight.clone(), self.bias.clone())
    }

    /// `gelu(x · W + b)` as `model::rows::linear_gelu` computes it on flex.
    ///
    /// # Shapes
    /// - x `[rows, d_in]`; output `[rows, d_out]`
    fn forward_gelu(&self, x: FlexTensor) -> FlexTensor {
        let n = self.bias.shape().num_elements();
        let row = Flex::float_reshape(self.bias.clone(), Shape::new([1, n]));
        Flex::bias_gelu(Flex::product(x, self.weight.clone()), row)
    }
}

impl Norm<Flex> {
    /// As `model::layer_norm::layer_norm` computes it on flex.
    ///
    /// # Shapes
    /// - x `[rows, d]`; output as x
    fn forward(&self, x: FlexTensor) -> FlexTensor {
        Flex::norm_last(x, self.gamma.clone(), self.beta.clone())
    }
}

impl Layers<Flex> {
    /// A step's queries from its inputs `u = user + step + P · prefix mean`, as the
    /// generator's `query_rows` computes them: `W_q LN(u + MLP(LN u))`.
    ///
    /// # Shapes
    /// - u `[rows, d]`; output `[rows, d]`
    fn queries(&self, u: FlexTensor) -> FlexTensor {
        let hidden = self.mlp_in.forward_gelu(self.mlp_norm.forward(u.clone()));
        let z = Flex::float_add(u, self.mlp_out.forward(hidden));
        self.query.forward(self.query_norm.forward(z))
    }
}

/// A contiguous f32 flex tensor of `dims` holding `values`.
fn tensor<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FlexTensor {
    flex_tensor(values, Shape::new(dims))
}

impl GreedyOps for Flex {
    fn greedy_decode(
        user: FlexTensor,
        keys: FlexTensor,
        candidates: FlexTensor,
        steps: FlexTensor,
        layers: Layers<Flex>,
        int_dtype: IntDType,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (user, candidates, steps) = (
            user.to_contiguous(),
            candidates.to_contiguous(),
            steps.to_contiguous(),
        );
        let (b, d) = (user.shape()[0], user.shape()[1]);
        let n = keys.shape()[1];
        let l = steps.shape()[0];
        let (user, candidates, steps) =
            (values_of(&user), values_of(&candidates), values_of(&steps));
        // `[B, d, N]`, a view, as the tensor route's `keys.transpose()`.
        let keys = Flex::float_swap_dims(keys, 1, 2);
        let scale = (d as f32).sqrt();
        let mut prefix_sum = vec![0.0f32; b * d];
        let mut chosen = vec![false; b * n];
        let mut total = vec![0.0f32; b];
        let mut picks: Vec<i64> = vec![0; b * l];
        let mut first_scores = None;
        for t in 0..l {
            // The prefix mean (zeros before the first pick), then `u = (user + step) + P · mean`.
            let divisor = t.max(1) as f32;
            let mean = prefix_sum.iter().map(|&sum| sum / divisor).collect();
            let projected = layers.prefix.forward(tensor(mean, [b, d]));
            let step = &steps[t * d..(t + 1) * d];
            let u = values_of(&projected)
                .chunks_exact(d)
                .zip(user.chunks_exact(d))
                .flat_map(|(projected, user)| {
                    projected
                        .iter()
                        .zip(user.iter().zip(step))
                        .map(|(&p, (&u, &s))| (u + s) + p)
                })
                .collect();
            let queries =
                Flex::float_reshape(layers.queries(tensor(u, [b, d])), Shape::new([b, 1, d]));
            // The scores `[B, 1, N]`, divided by `√d`, the chosen masked, then log-softmax.
            let products = Flex::product(queries, keys.clone()).to_contiguous();
            let mut scores: Vec<f32> = values_of(&products).iter().map(|&s| s / scale).collect();
            for (score, &is_chosen) in scores.iter_mut().zip(&chosen) {
                if is_chosen {
                    *score = -1e9;
                }
            }
            let log_probs = Flex::log_softmax_last(tensor(scores, [b, n])).to_contiguous();
            let argmax = Flex::float_argmax(log_probs.clone(), 1, IntDType::I64).to_contiguous();
            let log_probs_values = values_of(&log_probs);
            for (row, &pick) in argmax.storage::<i64>()[..b].iter().enumerate() {
                let at = pick as usize;
                total[row] += log_probs_values[row * n + at];
                chosen[row * n + at] = true;
                picks[row * l + t] = pick;
                let item = &candidates[(row * n + at) * d..(row * n + at + 1) * d];
                for (sum, &x) in prefix_sum[row * d..(row + 1) * d].iter_mut().zip(item) {
                    *sum += x;
                }
            }
            if t == 0 {
                first_scores = Some(log_probs);
            }
        }
        let lists = FlexTensor::new(
            Bytes::from_elems(picks),
            Layout::contiguous(Shape::new([b, 1, l])),
            DType::I64,
        );
        let lists = if DType::from(int_dtype) == DType::I64 {
            lists
        } else {
            Flex::int_cast(lists, int_dtype)
        };
        let first_scores = first_scores.unwrap_or_else(|| tensor(Vec::new(), [b, 0]));
        (lists, tensor(total, [b, 1]), first_scores)
    }
}
