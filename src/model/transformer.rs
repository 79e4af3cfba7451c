//! The forward pass of Burn's `TransformerEncoder` (pre- or post-norm, no masks), with every
//! linear layer applied to all rows at once ([`linear_rows`]).
//!
//! The module, its parameters, their initialisation and the checkpoint format stay Burn's
//! (`burn::nn::transformer`); only the forward differs, in the one way `linear_rows` explains.
//! Burn's own forward runs each of a layer's six linear layers as a batched product against
//! the broadcast weight, and its backward as one weight-gradient product per request (about
//! 400 MB of partial gradients per layer at batch 512). The attention itself is Burn's
//! computation, step for step: scaled scores, softmax (or quiet softmax), dropout, weighted
//! values; on the CPU backend without autodiff those steps run in one pass per request and head
//! (`model::attention`), for a batch of at least [`JOIN_FROM`] rows after the queries, keys and
//! values as one product against the three weights joined ([`joined_projections`]; three
//! products where a projection has no bias): the same values. Parameters are used in the same
//! order as Burn's forward, so a fresh model's lazily initialised weights are the same (a fresh
//! `experiment main` reproduces the supervised-only generator's metrics to 5e-6).
//! An exact GELU in the feed-forward runs with its linear layer as [`linear_gelu`]: on the CPU
//! backend the bias and GELU in one pass on all threads, with an `erf` that differs from
//! Burn's in the last bits (bounded by its tests).

use burn::nn::activation::{Activation, Gelu};
use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::{PositionWiseFeedForward, TransformerEncoder, TransformerEncoderLayer};
use burn::tensor::Tensor;
use burn::tensor::activation::quiet_softmax;

use super::attention::{attention, attention_joined, runs_here};
use super::layer_norm::layer_norm;
use super::product::{product, product_bias};
use super::rows::{linear_gelu, linear_rows};
use super::softmax::softmax;

/// Rows (requests × tokens) from which the attention's three projections run as one product
/// where nothing needs a gradient ([`joined_projections`]): it reads the input once, but first
/// copies the three weights side by side (3d² values a layer), which one request's 51 rows do
/// not repay (its ranking latency was longer in alternating `bench` runs).
const JOIN_FROM: usize = 1024;

/// `encoder` applied to `tokens` (no masks).
///
/// # Shapes
/// - tokens `[B, S, d]`
/// - output `[B, S, d]`
pub fn encode(encoder: &TransformerEncoder, tokens: Tensor<3>) -> Tensor<3> {
    encoder
        .layers
        .iter()
        .fold(tokens, |x, layer| encoder_layer(layer, x))
}

/// One layer: `x + MHA(norm x)`, then `x + FFN(norm x)` (pre-norm), or post-norm when the
/// layer was built with `norm_first` off.
///
/// # Shapes
/// - x `[B, S, d]` → `[B, S, d]`
fn encoder_layer(layer: &TransformerEncoderLayer, x: Tensor<3>) -> Tensor<3> {
    let attended = if layer.norm_first {
        layer_norm(&layer.norm_2, x.clone())
    } else {
        x.clone()
    };
    let attended = layer.dropout.forward(self_attention(&layer.mha, attended));
    let mut x = x + attended;
    let fed = if layer.norm_first {
        layer_norm(&layer.norm_1, x.clone())
    } else {
        x = layer_norm(&layer.norm_1, x);
        x.clone()
    };
    let fed = layer.dropout.forward(feed_forward(&layer.pwff, fed));
    let x = x + fed;
    if layer.norm_first {
        x
    } else {
        layer_norm(&layer.norm_2, x)
    }
}

/// Multi-head self-attention.
///
/// # Shapes
/// - x `[B, S, d]` → `[B, S, d]`; per head `[B, H, S, d_k]`, scores `[B, H, S, S]`
fn self_attention(mha: &MultiHeadAttention, x: Tensor<3>) -> Tensor<3> {
    let [b, s, d] = x.dims();
    let fused = !mha.quiet_softmax && runs_here(&x, mha.n_heads);
    // Without autodiff the steps below run in one pass per request and head (the same values;
    // nothing to differentiate), for a batch after one product for all three projections.
    if fused
        && b * s >= JOIN_FROM
        && let Some(qkv) = joined_projections(mha, x.clone())
    {
        return linear_rows(&mha.output, attention_joined(qkv, mha.n_heads));
    }
    let heads = |projected: Tensor<3>| {
        projected
            .reshape([b, s, mha.n_heads, mha.d_k])
            .swap_dims(1, 2)
    };
    let (query, key, value) = (
        linear_rows(&mha.query, x.clone()),
        linear_rows(&mha.key, x.clone()),
        linear_rows(&mha.value, x),
    );
    if fused {
        let context = attention(query, key, value, mha.n_heads);
        return linear_rows(&mha.output, context);
    }
    let (query, key, value) = (heads(query), heads(key), heads(value));
    let scores = product(query, key.transpose()).div_scalar((mha.d_k as f32).sqrt());
    let weights = if mha.quiet_softmax {
        quiet_softmax(scores, 3)
    } else {
        softmax(scores, 3)
    };
    let weights = mha.dropout.forward(weights);
    let context = product(weights, value).swap_dims(1, 2).reshape([b, s, d]);
    linear_rows(&mha.output, context)
}

/// The queries, keys and values of `x` side by side, as one product against the three
/// weights joined: each value the chain of multiply-adds its own layer's product computes
/// (`linear_rows`), from one read of `x`. `None` where a projection has no bias, or where the
/// width is 1 (the attention's product with the values would then take another of `gemm`'s
/// routes for its joined rows than for rows of their own).
///
/// The parameters are read in `linear_rows`' order (each layer's weight, then its bias), so
/// that a fresh model initialises them as Burn's forward does.
///
/// # Shapes
/// - x `[B, S, d]`
/// - output `[B, S, 3d]`
fn joined_projections(mha: &MultiHeadAttention, x: Tensor<3>) -> Option<Tensor<3>> {
    let [b, s, d] = x.dims();
    if d < 2 {
        return None;
    }
    let (mut weights, mut biases) = (Vec::with_capacity(3), Vec::with_capacity(3));
    for layer in [&mha.query, &mha.key, &mha.value] {
        weights.push(layer.weight.val());
        biases.push(layer.bias.as_ref()?.val());
    }
    let (weight, bias) = (Tensor::cat(weights, 1), Tensor::cat(biases, 0));
    let width = weight.dims()[1];
    Some(product_bias(x.reshape([b * s, d]), weight, bias).reshape([b, s, width]))
}

/// Position-wise feed-forward: `W_2 act(W_1 x)`.
///
/// # Shapes
/// - x `[B, S, d]` → `[B, S, d]`
fn feed_forward(pwff: &PositionWiseFeedForward, x: Tensor<3>) -> Tensor<3> {
    let hidden = match &pwff.activation {
        Activation::Gelu(Gelu { approximate: false }) => linear_gelu(&pwff.linear_inner, x),
        activation => activation.forward(linear_rows(&pwff.linear_inner, x)),
    };
    linear_rows(&pwff.linear_outer, pwff.dropout.forward(hidden))
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, Param};
    use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};
    use burn::tensor::{Device, TensorData};

    use super::*;

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A fixed, non-trivial `[3, 7, 16]` tensor (no random stream: tests share the device's).
    fn fixed(device: &Device, phase: f32) -> Tensor<3> {
        let data: Vec<f32> = (0..3 * 7 * 16)
            .map(|i| (i as f32 * 0.37 + phase).sin())
            .collect();
        Tensor::from_data(TensorData::new(data, [3, 7, 16]), device)
    }

    /// Output, and the gradients of a fixed weighted sum of it with respect to the first
    /// layer's FFN input weight and attention query weight.
    fn run(encoder: &TransformerEncoder, ours: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let device = Device::flex().autodiff();
        // 3 requests of 7 tokens: not a multiple of 32 rows, so Burn's forward broadcasts.
        let tokens = fixed(&device, 0.0);
        let output = if ours {
            encode(encoder, tokens)
        } else {
            encoder.forward(TransformerEncoderInput::new(tokens))
        };
        let grads = (output.clone() * fixed(&device, 1.0)).sum().backward();
        let grad = |param: &Param<Tensor<2>>| values(param.grad(&grads).expect("a gradient"));
        let layer = &encoder.layers[0];
        (
            values(output),
            grad(&layer.pwff.linear_inner.weight),
            grad(&layer.mha.query.weight),
        )
    }

    /// Without autodiff the attention runs in one pass per request and head, for a batch of at
    /// least `JOIN_FROM` rows after one product for the three projections: the same bits as the
    /// projections and the composition the autodiff device runs (the generator's 51 tokens of 4
    /// heads of 32, and a small width; each with too few rows to join and enough).
    #[test]
    fn the_joined_projections_and_fused_attention_give_the_compositions_bits() {
        // Rows: 153 and 21 (apart); 1,071 and 1,050 (joined, one product); 2,091 and 2,100
        // (joined, in parts of rows; at d 16 `model::small` runs the three products apart and
        // `gemm` the joined one).
        let cases = [
            (128, 3, 51),
            (128, 21, 51),
            (128, 41, 51),
            (16, 3, 7),
            (16, 150, 7),
            (16, 300, 7),
        ];
        let rows = cases.map(|(_, requests, tokens)| requests * tokens);
        assert!(rows.iter().any(|&r| r < JOIN_FROM) && rows.iter().any(|&r| r >= 2 * JOIN_FROM));
        for (d, requests, tokens) in cases {
            let autodiff = Device::flex().autodiff();
            let encoder = TransformerEncoderConfig::new(d, 4 * d, 4, 2)
                .with_dropout(0.0)
                .with_norm_first(true)
                .init(&autodiff);
            let data: Vec<f32> = (0..requests * tokens * d)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let dims = [requests, tokens, d];
            let tokens = Tensor::<3>::from_data(TensorData::new(data, dims), &autodiff);
            let composed = values(encode(&encoder, tokens.clone()).inner());
            let plain = encoder.valid();
            assert!(runs_here(&tokens.clone().inner(), 4));
            let fused = values(encode(&plain, tokens.inner()));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let joined = requests * dims[1] >= JOIN_FROM;
            assert_eq!(bits(&fused), bits(&composed), "{dims:?}, joined {joined}");
        }
    }

    #[test]
    fn the_folded_forward_matches_burns_outputs_and_gradients() {
        for norm_first in [true, false] {
            let encoder = TransformerEncoderConfig::new(16, 64, 4, 2)
                .with_dropout(0.0)
                .with_norm_first(norm_first)
                .init(&Device::flex().autodiff());
            let (out, ffn, query) = run(&encoder, true);
            let (burn_out, burn_ffn, burn_query) = run(&encoder, false);
            // The same function; only the order of floating-point sums differs.
            assert!(max_diff(&out, &burn_out) < 1e-5, "norm_first {norm_first}");
            let scale = burn_ffn.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 1e-3, "the gradient is not trivially zero");
            assert!(max_diff(&ffn, &burn_ffn) < 1e-4 * scale.max(1.0));
            assert!(max_diff(&query, &burn_query) < 1e-4 * scale.max(1.0));
        }
    }
}
