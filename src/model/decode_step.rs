//! One step of the generator's decoder outside teacher forcing: score the candidates for each
//! list's query, mask those chosen already, log-softmax, pick one, and mark it chosen.
//!
//! On a wgpu device (native, or WebGPU in the browser) the step runs as one fused WGSL kernel
//! (`shaders/decode_step.wgsl`, launched by `model::wgsl`); everywhere else (the CPU backend, the
//! browser's CPU fallback, a remote device) it runs as the tensor ops of [`twin`], which the
//! kernel must agree with (`experiment/kernel_check.rs`, run by `goalrank check-device` and
//! `tests/wgpu.rs`). A recorded decoding (an autodiff device) scores each step off the graph
//! with [`step_log_probs`] and picks with [`pick_from`], the two halves of [`twin`].

use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor};

use super::product::product;
use super::softmax::log_softmax;

/// How a step picks its item: `argmax(log π / temperature + noise)`, a draw when `noise` is
/// Gumbel noise; without noise the most likely remaining candidate.
#[derive(Clone, Debug)]
pub struct Pick {
    /// `[B, K, N]`, or `None` for the greedy pick.
    pub noise: Option<Tensor<3>>,
    /// `None` means 1 (no division).
    pub temperature: Option<f32>,
}

impl Pick {
    /// The most likely remaining candidate.
    pub fn greedy() -> Self {
        Self {
            noise: None,
            temperature: None,
        }
    }

    /// `argmax(log π / temperature + noise)` (`noise` `[B, K, N]`).
    pub fn draw(noise: Tensor<3>, temperature: Option<f32>) -> Self {
        Self {
            noise: Some(noise),
            temperature,
        }
    }
}

/// What one step decided.
#[derive(Clone, Debug)]
pub struct Step {
    /// `[B, K, 1]` the picked candidate positions.
    pub picks: Tensor<3, Int>,
    /// `[B, K]` log π(pick | prefix).
    pub log_probs: Tensor<2>,
    /// `[B, K, N]` the chosen mask with the picks added.
    pub chosen: Tensor<3>,
}

/// One decoding step: the fused kernel where it runs, else [`twin`].
///
/// # Shapes
/// - queries `[B, K, d]`, keys `[B, N, d]`, chosen `[B, K, N]` (1 where chosen)
/// - output: see [`Step`]
pub fn decode_step(queries: Tensor<3>, keys: Tensor<3>, chosen: Tensor<3>, pick: Pick) -> Step {
    if super::wgsl::runs_kernels(&queries.device())
        && let Some((picks, log_probs, chosen)) = super::wgsl::decode_step(
            &queries,
            &keys,
            &chosen,
            pick.noise.as_ref(),
            pick.temperature.unwrap_or(1.0),
        )
    {
        return Step {
            picks,
            log_probs,
            chosen,
        };
    }
    twin(queries, keys, chosen, pick)
}

/// The step as tensor ops (the reference the kernel is tested against).
///
/// # Shapes
/// - as [`decode_step`]
pub fn twin(queries: Tensor<3>, keys: Tensor<3>, chosen: Tensor<3>, pick: Pick) -> Step {
    let [b, k, d] = queries.dims();
    let n = keys.dims()[1];
    let mask = chosen.clone().greater_elem(0.5).reshape([b, k, 1, n]);
    let log_probs = step_log_probs(queries.reshape([b, k, 1, d]), keys, mask).reshape([b, k, n]);
    pick_from(log_probs, chosen, pick)
}

/// The step's pick from its log-probabilities (chosen candidates masked already).
///
/// # Shapes
/// - log_probs, chosen `[B, K, N]`
/// - output: see [`Step`]
pub(crate) fn pick_from(log_probs: Tensor<3>, chosen: Tensor<3>, pick: Pick) -> Step {
    let [b, k, _] = log_probs.dims();
    let picks = match (pick.noise, pick.temperature) {
        (None, _) => log_probs.clone().argmax(2),
        (Some(noise), None) => (log_probs.clone() + noise).argmax(2),
        (Some(noise), Some(t)) => (log_probs.clone().div_scalar(t) + noise).argmax(2),
    }; // [B, K, 1]
    let picked = log_probs.gather(2, picks.clone()).reshape([b, k]);
    let ones = Tensor::<3>::ones([b, k, 1], &picks.device());
    let chosen = chosen.scatter(2, picks.clone(), ones, IndexingUpdateOp::Add);
    Step {
        picks,
        log_probs: picked,
        chosen,
    }
}

/// Log-probabilities over candidates of each step, chosen candidates masked.
///
/// # Shapes
/// - queries `[B, K, T, d]`, keys `[B, N, d]`, chosen (masked) `[B, K, T, N]`
/// - output: `[B, K, T, N]`
pub(crate) fn step_log_probs(
    queries: Tensor<4>,
    keys: Tensor<3>,
    chosen: Tensor<4, Bool>,
) -> Tensor<4> {
    let [b, k, t, d] = queries.dims();
    let n = keys.dims()[1];
    let scores = product(queries.reshape([b, k * t, d]), keys.transpose())
        .div_scalar((d as f32).sqrt())
        .reshape([b, k, t, n]);
    log_softmax(scores.mask_fill(chosen, -1e9), 3)
}
