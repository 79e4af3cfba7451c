//! GELU, `0.5 x (1 + erf(x / √2))`, on all of the CPU backend's threads and in vector code.
//!
//! Burn 0.22.1's CPU backend (flex) computes GELU and its gradient one element at a time on the
//! calling thread, each around a scalar `libm::erff`; in a GoalRank training step that was a
//! fifth of the main thread's time (the decoder's MLP runs on `[B, K + 1, L, 4d]`). Here the
//! same expressions run with `erf` and `exp` from `model::erf` (vector code without branches:
//! `erf` within 1.5 ULP of the exact value, `erff` within about 1), in one pass per element,
//! split into chunks across rayon's threads and compiled for AVX-512 or AVX2 where the
//! processor has them (chosen at run time; every build gives the same bits). The values differ
//! from Burn's in the last bits of `erf`; the tests bound the difference. It is a Burn backend
//! extension (`#[backend_extension]`) with its own backward pass for autodiff.
//!
//! [`bias_gelu`] is a linear layer's bias and GELU as one operation: `gelu(x + b)` in one pass
//! over the product's output `x` (in place where `x` is held alone, as a product's output is
//! when nothing is differentiated), where the bias add and GELU were a pass each. Under
//! autodiff it is one node that keeps `x` and `b`, and its backward writes `grad · gelu'(x +
//! b)` into the upstream gradient's buffer where that is held alone; the sums and the
//! gradients are those of the add followed by GELU, bit for bit.
//!
//! The fills work in blocks as wide as the vectors (16 values on AVX-512, 8 on AVX2, 4
//! elsewhere). Where all of a block's `x / √2` lie in `erf`'s first interval (`|x| < √2`,
//! which holds for most blocks: 79 % of 16-value blocks in a fresh model's training step, 89 %
//! when the shipped model ranks the test split) the block skips `erf`'s second formula and its
//! `exp`; the bits are the same either way ([`erf_near`]). The gradient computes `Φ` in such
//! blocks into a buffer of [`SEGMENT`] values, then `grad · (Φ(x) + x φ(x))` in one loop over
//! it: written as one block computation, the compiler left its arithmetic scalar.
//!
//! Only f32 tensors on flex devices (with or without autodiff) take it, split across rayon's
//! threads from `PARALLEL_FROM` elements on (one thread in the browser build); every other
//! device (wgpu, a remote device) runs Burn's `gelu`, whose kernels fuse there anyway.

use super::backend::{
    CHUNK, flex_tensor, is_flex, map_chunks, map_chunks_of, row_width, update_chunks, values_of,
};
use super::erf::{EXP_FROM, erf_lane, erf_near, exp_lane, is_near};
use super::product::row_gradient;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};
use core::f32::consts::FRAC_1_SQRT_2;

/// GELU and its gradient as one backend operation each.
#[backend_extension(Flex, Autodiff)]
pub trait GeluOps: Backend {
    /// `0.5 x (1 + erf(x / √2))`.
    ///
    /// # Shapes
    /// - x: any; output: as x
    fn gelu_chunked(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `grad (Φ(x) + x φ(x))`, the gradient of GELU at `x` times `grad`.
    ///
    /// # Shapes
    /// - x, grad: the same shape; output: as x
    fn gelu_chunked_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `gelu(x + row)`, the row added to every row of `x`: a linear layer's bias and its
    /// activation in one pass over the product's output.
    ///
    /// # Shapes
    /// - x `[rows, n]`, row `[1, n]`; output as x
    fn bias_gelu(x: FloatTensor<Self>, row: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `grad · gelu'(x + row)`, the gradient with respect to `x` (and, summed over the rows,
    /// to `row`).
    ///
    /// # Shapes
    /// - x, grad `[rows, n]`, row `[1, n]`; output as x
    fn bias_gelu_backward(
        x: FloatTensor<Self>,
        row: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// GELU of `x`: chunked across threads on flex, Burn's `gelu` elsewhere.
///
/// # Shapes
/// - x: any; output: as x
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_chunked(&x) {
        Tensor::from_dispatch(<burn::backend::Dispatch as GeluOps>::gelu_chunked(
            x.into_dispatch(),
        ))
    } else {
        burn::tensor::activation::gelu(x)
    }
}

/// GELU of `x` plus `bias` on every row: `gelu(x + bias)`, the sums those of Burn's broadcast
/// add. On flex, one pass over `x` (in place where `x` is held alone, as a product's fresh
/// output is outside autodiff); elsewhere Burn's add and `gelu`.
///
/// # Shapes
/// - x `[rows, n]`, bias `[n]`; output as x
pub fn bias_gelu(x: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    let n = bias.dims()[0];
    let row = bias.reshape([1, n]);
    if runs_chunked(&x) {
        Tensor::from_dispatch(<burn::backend::Dispatch as GeluOps>::bias_gelu(
            x.into_dispatch(),
            row.into_dispatch(),
        ))
    } else {
        gelu(x + row)
    }
}

/// Whether `x` is an f32 tensor on a flex device (with or without autodiff).
pub fn runs_chunked<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && is_flex(&x.device())
}

/// `1 / √(2π)`, φ(0).
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// GELU at `x`, `0.5 · x · (1 + erf(x / √2))`, with `erf` one of [`erf_lane`] and [`erf_near`].
#[inline(always)]
fn gelu_with(x: f32, erf: impl Fn(f32) -> f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// GELU at `x`.
#[inline(always)]
fn gelu_at(x: f32) -> f32 {
    gelu_with(x, erf_lane)
}

/// `φ(x) = e^(−x²/2) / √(2π)` (0 where `e^(−x²/2)` is below f32's normal range: `|x| > 13.2`).
#[inline(always)]
fn pdf_at(x: f32) -> f32 {
    let exponent = -0.5 * x * x;
    if exponent >= EXP_FROM {
        INV_SQRT_2PI * exp_lane(exponent)
    } else {
        0.0
    }
}

/// Whether `erf`'s first formula covers all of a block's arguments `x / √2` (the vector
/// compare and one branch per block; NaN is not covered).
#[inline(always)]
fn all_near<const W: usize>(x: &[f32; W]) -> bool {
    x.iter()
        .fold(true, |all, &x| all & is_near(x * FRAC_1_SQRT_2))
}

/// `near` or `far` on each of a block of `W` values: `near` (computed with [`erf_near`]) where
/// `erf`'s first formula covers the whole block, `far` (with [`erf_lane`]) elsewhere. Most
/// blocks take `near` (its interval is `|x| < √2`); the bits are `far`'s either way.
#[inline(always)]
fn by_block<const W: usize>(
    x: [f32; W],
    near: impl Fn(f32) -> f32,
    far: impl Fn(f32) -> f32,
) -> [f32; W] {
    let mut out = [0.0; W];
    if all_near(&x) {
        for j in 0..W {
            out[j] = near(x[j]);
        }
    } else {
        for j in 0..W {
            out[j] = far(x[j]);
        }
    }
    out
}

/// GELU of a block of `W` values (the bits of [`gelu_at`]).
#[inline(always)]
fn gelu_block<const W: usize>(x: [f32; W]) -> [f32; W] {
    by_block(x, |x| gelu_with(x, erf_near), gelu_at)
}

/// `Φ(x) = 0.5 (1 + erf(x / √2))`, with `erf` one of [`erf_lane`] and [`erf_near`].
#[inline(always)]
fn cdf_with(x: f32, erf: impl Fn(f32) -> f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// `Φ` over a block of `W` values (the bits of `cdf_with(x, erf_lane)`).
#[inline(always)]
fn cdf_block<const W: usize>(x: [f32; W]) -> [f32; W] {
    by_block(x, |x| cdf_with(x, erf_near), |x| cdf_with(x, erf_lane))
}

/// `out = Φ(x)` in blocks of `W` (as [`cdf_block`]), the rest value by value.
#[inline(always)]
fn cdf_fill<const W: usize>(x: &[f32], out: &mut [f32]) {
    let mut outs = out.chunks_exact_mut(W);
    let mut xs = x.chunks_exact(W);
    for (out, x) in (&mut outs).zip(&mut xs) {
        out.copy_from_slice(&cdf_block::<W>(block(x)));
    }
    for (out, &x) in outs.into_remainder().iter_mut().zip(xs.remainder()) {
        *out = cdf_with(x, erf_lane);
    }
}

/// Values per segment of the gradient fills: `Φ` is computed in blocks into a buffer of this
/// many, then `grad · (Φ(x) + x φ(x))` in one loop over it. (As one block computation the
/// compiler leaves the gradient's arithmetic scalar.)
const SEGMENT: usize = 128;

/// `out = grad · (Φ(x) + x φ(x))`, GELU's gradient times `grad`, over at most [`SEGMENT`]
/// values.
#[inline(always)]
fn grad_segment<const W: usize>(x: &[f32], grad: &[f32], out: &mut [f32]) {
    let mut cdf = [0.0f32; SEGMENT];
    let cdf = &mut cdf[..x.len()];
    cdf_fill::<W>(x, cdf);
    for ((out, &g), (&x, &c)) in out.iter_mut().zip(grad).zip(x.iter().zip(cdf.iter())) {
        *out = g * (c + x * pdf_at(x));
    }
}

/// The block of `W` values at the start of `values` (which holds at least `W`).
#[inline(always)]
fn block<const W: usize>(values: &[f32]) -> [f32; W] {
    std::array::from_fn(|j| values[j])
}

/// `x + bias` over a block of `W` values.
#[inline(always)]
fn sum_block<const W: usize>(x: &[f32], bias: &[f32]) -> [f32; W] {
    let (x, bias) = (block::<W>(x), block::<W>(bias));
    std::array::from_fn(|j| x[j] + bias[j])
}

/// `out = gelu(x)`, in blocks of `W`.
#[inline(always)]
fn gelu_fill<const W: usize>(x: &[f32], out: &mut [f32]) {
    let mut outs = out.chunks_exact_mut(W);
    let mut xs = x.chunks_exact(W);
    for (out, x) in (&mut outs).zip(&mut xs) {
        out.copy_from_slice(&gelu_block::<W>(block(x)));
    }
    for (out, &x) in outs.into_remainder().iter_mut().zip(xs.remainder()) {
        *out = gelu_at(x);
    }
}

/// `out = grad · gelu'(x)`, `Φ` in blocks of `W`.
#[inline(always)]
fn gelu_grad_fill<const W: usize>(x: &[f32], grad: &[f32], out: &mut [f32]) {
    let segments = x.chunks(SEGMENT).zip(grad.chunks(SEGMENT));
    for ((x, grad), out) in segments.zip(out.chunks_mut(SEGMENT)) {
        grad_segment::<W>(x, grad, out);
    }
}

/// `out = gelu(x + bias)`, whole rows as wide as `bias`, in blocks of `W` within a row.
#[inline(always)]
fn bias_gelu_fill<const W: usize>(x: &[f32], bias: &[f32], out: &mut [f32]) {
    for (x, out) in x.chunks(bias.len()).zip(out.chunks_mut(bias.len())) {
        let bias = &bias[..x.len()];
        let mut outs = out.chunks_exact_mut(W);
        let (mut xs, mut biases) = (x.chunks_exact(W), bias.chunks_exact(W));
        for ((out, x), bias) in (&mut outs).zip(&mut xs).zip(&mut biases) {
            out.copy_from_slice(&gelu_block(sum_block::<W>(x, bias)));
        }
        let rest = outs.into_remainder().iter_mut();
        for ((out, &x), &b) in rest.zip(xs.remainder()).zip(biases.remainder()) {
            *out = gelu_at(x + b);
        }
    }
}

/// `values = gelu(values + bias)`, whole rows as wide as `bias`, in blocks of `W` within a
/// row.
#[inline(always)]
fn bias_gelu_fill_in_place<const W: usize>(values: &mut [f32], bias: &[f32]) {
    for row in values.chunks_mut(bias.len()) {
        let bias = &bias[..row.len()];
        let mut values = row.chunks_exact_mut(W);
        let mut biases = bias.chunks_exact(W);
        for (values, bias) in (&mut values).zip(&mut biases) {
            let sum = sum_block::<W>(values, bias);
            values.copy_from_slice(&gelu_block(sum));
        }
        for (value, &b) in values.into_remainder().iter_mut().zip(biases.remainder()) {
            *value = gelu_at(*value + b);
        }
    }
}

/// `grad = grad · gelu'(x + bias)`, whole rows as wide as `bias`, `Φ` in blocks of `W`.
#[inline(always)]
fn bias_gelu_grad_fill_in_place<const W: usize>(x: &[f32], bias: &[f32], grad: &mut [f32]) {
    for (x, grad) in x.chunks(bias.len()).zip(grad.chunks_mut(bias.len())) {
        let segments = x.chunks(SEGMENT).zip(bias.chunks(SEGMENT));
        for ((x, bias), grad) in segments.zip(grad.chunks_mut(SEGMENT)) {
            let mut sum = [0.0f32; SEGMENT];
            let sum = &mut sum[..x.len()];
            for ((sum, &x), &b) in sum.iter_mut().zip(x).zip(bias) {
                *sum = x + b;
            }
            let mut out = [0.0f32; SEGMENT];
            let out = &mut out[..x.len()];
            grad_segment::<W>(sum, grad, out);
            grad.copy_from_slice(out);
        }
    }
}

/// Each `fn name(..) = fill;` becomes `name`, which runs `fill` compiled for the widest
/// vectors this processor has (AVX-512, AVX2; chosen at run time, so the binary still runs on
/// any x86-64), and `avx512::name` and `avx2::name`, the builds themselves, with blocks as
/// wide as their vectors (16 and 8 values; 4 elsewhere). Only instruction selection and the
/// blocks differ: the operations, and so the bits, are the same.
macro_rules! widest {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) = $fill:ident;)*) => {
        #[cfg(target_arch = "x86_64")]
        mod avx512 {
            $(
                #[target_feature(enable = "avx512f")]
                pub fn $name($($arg: $ty),*) {
                    super::$fill::<16>($($arg),*)
                }
            )*
        }

        #[cfg(target_arch = "x86_64")]
        mod avx2 {
            $(
                #[target_feature(enable = "avx2")]
                pub fn $name($($arg: $ty),*) {
                    super::$fill::<8>($($arg),*)
                }
            )*
        }

        $(
            $(#[$doc])*
            fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        // SAFETY: the processor has AVX-512F (checked above).
                        return unsafe { avx512::$name($($arg),*) };
                    }
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: the processor has AVX2 (checked above).
                        return unsafe { avx2::$name($($arg),*) };
                    }
                }
                $fill::<4>($($arg),*)
            }
        )*
    };
}

widest! {
    /// `out = gelu(x)` on the widest vectors this processor has.
    fn gelu_slice(x: &[f32], out: &mut [f32]) = gelu_fill;
    /// `out = grad · gelu'(x)` on the widest vectors this processor has.
    fn gelu_grad_slice(x: &[f32], grad: &[f32], out: &mut [f32]) = gelu_grad_fill;
    /// `out = gelu(x + bias)` on the widest vectors this processor has.
    fn bias_gelu_slice(x: &[f32], bias: &[f32], out: &mut [f32]) = bias_gelu_fill;
    /// `values = gelu(values + bias)` on the widest vectors this processor has.
    fn bias_gelu_in_place(values: &mut [f32], bias: &[f32]) = bias_gelu_fill_in_place;
    /// `grad = grad · gelu'(x + bias)` on the widest vectors this processor has.
    fn bias_gelu_grad_in_place(x: &[f32], bias: &[f32], grad: &mut [f32]) = bias_gelu_grad_fill_in_place;
}

impl GeluOps for Flex {
    fn gelu_chunked(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return Flex::gelu(x);
        }
        // A handle on the same buffer where it is contiguous already, else a copy.
        let x = x.to_contiguous();
        let values = values_of(&x);
        flex_tensor(
            map_chunks(values, values, CHUNK, |x, _, out| gelu_slice(x, out)),
            x.shape(),
        )
    }

    fn gelu_chunked_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 || grad.dtype() != DType::F32 || x.shape() != grad.shape() {
            return Flex::gelu_backward(x, grad);
        }
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let out = map_chunks(values_of(&x), values_of(&grad), CHUNK, gelu_grad_slice);
        flex_tensor(out, x.shape())
    }

    fn bias_gelu(mut x: FlexTensor, row: FlexTensor) -> FlexTensor {
        let row = row.to_contiguous();
        let Some(n) = row_width(&x, &row) else {
            return Self::gelu_chunked(Flex::float_add(x, row));
        };
        let bias = values_of(&row);
        let shape = x.shape();
        let len = shape.num_elements();
        if x.is_contiguous()
            && x.layout().start_offset() == 0
            && let Some(values) = x.try_storage_mut::<f32>()
        {
            update_chunks(&mut values[..len], row_chunk(n), |_, values| {
                bias_gelu_in_place(values, bias)
            });
            return x;
        }
        let x = x.to_contiguous();
        let out = map_chunks_of(values_of(&x), row_chunk(n), |x, out| {
            bias_gelu_slice(x, bias, out)
        });
        flex_tensor(out, shape)
    }

    /// Into `grad`'s buffer where it is a contiguous matrix held here alone (as a product's
    /// gradient is), else into a new one.
    fn bias_gelu_backward(x: FlexTensor, row: FlexTensor, mut grad: FlexTensor) -> FlexTensor {
        let row = row.to_contiguous();
        let n = match row_width(&x, &row) {
            Some(n) if grad.dtype() == DType::F32 && grad.shape() == x.shape() => n,
            _ => return Self::gelu_chunked_backward(Flex::float_add(x, row), grad),
        };
        let bias = values_of(&row);
        let x = x.to_contiguous();
        let shape = x.shape();
        let len = shape.num_elements();
        let xs = values_of(&x);
        if grad.is_contiguous()
            && grad.layout().start_offset() == 0
            && let Some(values) = grad.try_storage_mut::<f32>()
        {
            update_chunks(&mut values[..len], row_chunk(n), |start, grad| {
                bias_gelu_grad_in_place(&xs[start..start + grad.len()], bias, grad)
            });
            return grad;
        }
        // Held elsewhere too, or strided: a copy, updated in place (a rare path; two passes).
        let grad = grad.to_contiguous();
        let mut out = values_of(&grad).to_vec();
        update_chunks(&mut out, row_chunk(n), |start, grad| {
            bias_gelu_grad_in_place(&xs[start..start + grad.len()], bias, grad)
        });
        flex_tensor(out, shape)
    }
}

/// Elements per chunk for rows of `n`: whole rows, about [`CHUNK`] values.
fn row_chunk(n: usize) -> usize {
    n * (CHUNK / n).max(1)
}

impl<B: Backend + GeluOps, C: CheckpointStrategy> GeluOps for Autodiff<B, C> {
    fn gelu_chunked(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluBackward;

        impl<B: Backend + GeluOps> Backward<B, 1> for GeluBackward {
            /// The input.
            type State = B::FloatTensorPrimitive;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let input = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::gelu_chunked_backward(input, grad)
                });
            }
        }

        let node = x.node();
        let input = x.into_primitive();
        match GeluBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::gelu_chunked(input.clone());
                prep.finish(input, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_chunked(input)),
        }
    }

    /// One node with the gradients of Burn's add followed by GELU (`x`'s is `grad ·
    /// gelu'(x + row)`, the row's that summed over the rows with `float_sum_dim`, as Burn
    /// reduces a broadcast). It keeps `x` and the row rather than their sum: the forward then
    /// reads `x` once and writes the output once.
    fn bias_gelu(x: FloatTensor<Self>, row: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct BiasGeluBackward;

        impl<B: Backend + GeluOps> Backward<B, 2> for BiasGeluBackward {
            /// `x` and the row.
            type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (x, row) = ops.state;
                let [x_parent, row_parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let pre_grad = B::bias_gelu_backward(x, row, grad);
                if let Some(node) = x_parent {
                    grads.register::<B>(node.id, pre_grad.clone());
                }
                if let Some(node) = row_parent {
                    grads.register::<B>(node.id, row_gradient::<B>(pre_grad));
                }
            }
        }

        let (x_node, row_node) = (x.node(), row.node());
        let (x, row) = (x.into_primitive(), row.into_primitive());
        match BiasGeluBackward
            .prepare::<C>([x_node, row_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::bias_gelu(x.clone(), row.clone());
                prep.finish((x, row), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bias_gelu(x, row)),
        }
    }

    /// Composed of differentiable operations, as [`Self::gelu_chunked_backward`].
    fn bias_gelu_backward(
        x: FloatTensor<Self>,
        row: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::gelu_chunked_backward(Self::float_add(x, row), grad)
    }

    /// The exact gradient from differentiable operations (the project never differentiates it
    /// again; Burn's default `gelu_backward` is the tanh approximation's, so it is not used).
    fn gelu_chunked_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let inv_sqrt_2pi: f32 = 1.0 / (2.0 * core::f32::consts::PI).sqrt();
        let scaled = Self::float_div_scalar(x.clone(), core::f32::consts::SQRT_2.into());
        let cdf = Self::float_mul_scalar(
            Self::float_add_scalar(Self::float_erf(scaled), 1.0f32.into()),
            0.5f32.into(),
        );
        let square = Self::float_mul(x.clone(), x.clone());
        let pdf = Self::float_mul_scalar(
            Self::float_exp(Self::float_mul_scalar(square, (-0.5f32).into())),
            inv_sqrt_2pi.into(),
        );
        let slope = Self::float_add(cdf, Self::float_mul(x, pdf));
        Self::float_mul(grad, slope)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Shape, TensorData};

    use super::super::backend::PARALLEL_FROM;
    use super::*;

    /// Inputs that cover GELU's range, including both tails and exact zeros, larger than one
    /// parallel share so that the chunked path runs.
    fn inputs(device: &Device) -> Tensor<2> {
        // 17 columns, so that the last chunk is a partial one.
        let rows = 3 * PARALLEL_FROM / 17 + 1;
        let values: Vec<f32> = (0..rows * 17)
            .map(|i| ((i * 7919) % 20_011) as f32 / 1_000.0 - 10.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [rows, 17]), device)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    /// The largest difference between `ours` and `burns` in units of `TOLERANCE · (1 + |x|)`
    /// at the inputs `x`: GELU's (and its gradient's) error from `erf` is at most
    /// `0.5 |x| δ` (times the bounded `grad`), and δ, `erf`'s own, at most about 2 ULP of
    /// values below 1 against `libm::erff`'s own.
    fn worst_difference(x: &[f32], ours: &[f32], burns: &[f32]) -> f32 {
        x.iter()
            .zip(ours.iter().zip(burns))
            .map(|(x, (a, b))| (a - b).abs() / (TOLERANCE * (1.0 + x.abs())))
            .fold(0.0, f32::max)
    }

    /// 2.5e-7 = about 2 ULP of 1 (2⁻²³ = 1.2e-7).
    const TOLERANCE: f32 = 2.5e-7;

    #[test]
    fn chunked_gelu_is_burns_within_two_ulp_of_erf() {
        let device = Device::flex();
        let x = inputs(&device);
        let xs = values(x.clone());
        let ours = values(gelu(x.clone()));
        let burns = values(burn::tensor::activation::gelu(x.clone()));
        let worst = worst_difference(&xs, &ours, &burns);
        assert!(worst <= 1.0, "{worst}");
        // Not the same function: another `erf`.
        assert_ne!(ours, burns);
        // A strided view (transposed) takes the copy path and gives the same values.
        let t = x.transpose();
        assert_eq!(
            values(gelu(t.clone())),
            values(gelu(Tensor::<2>::from_data(t.clone().into_data(), &device)))
        );
    }

    #[test]
    fn chunked_gelu_gradient_is_burns_within_two_ulp_of_erf() {
        let device = Device::flex().autodiff();
        let grad_of = |chunked: bool| {
            let x = inputs(&device).require_grad();
            let weights = inputs(&device).mul_scalar(0.37).sin();
            let y = if chunked {
                gelu(x.clone())
            } else {
                burn::tensor::activation::gelu(x.clone())
            };
            let grads = (y * weights).sum().backward();
            values(x.grad(&grads).expect("a gradient"))
        };
        let (ours, burns) = (grad_of(true), grad_of(false));
        assert!(ours.iter().any(|g| *g != 0.0));
        let xs = values(inputs(&Device::flex()));
        let worst = worst_difference(&xs, &ours, &burns);
        assert!(worst <= 1.0, "{worst}");
    }

    /// Every build of the fills (blocks of 1 and 4, the latter what other processors and the
    /// browser run, and AVX2's 8 and AVX-512's 16 where the processor has them) gives the bits
    /// of GELU and its gradient computed value by value with `erf_lane`, on values mostly
    /// beyond `erf`'s first interval and on values mostly within it, where most blocks take
    /// the shorter formula. The tests above run only the widest build the processor has.
    #[test]
    fn every_build_gives_the_bits_of_gelu_value_by_value() {
        let wide = values(inputs(&Device::flex()));
        // Within |x| < √2 but for every 97th value, so that some blocks take each path.
        let narrow: Vec<f32> = wide
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 97 == 0 { v } else { v * 0.12 })
            .collect();
        let near_blocks = |x: &[f32]| {
            x.chunks_exact(8)
                .filter(|b| all_near::<8>(&block(b)))
                .count()
        };
        let share = near_blocks(&narrow) as f64 / (narrow.len() / 8) as f64;
        assert!(share > 0.5 && share < 0.99, "{share}");
        for (x, scale) in [(wide, 1.0), (narrow, 0.1)] {
            let g: Vec<f32> = x.iter().map(|v| (v * 0.37).sin()).collect();
            let bias: Vec<f32> = (0..17).map(|j| (j as f32 * 0.3 - 2.0) * scale).collect();
            // The five fills' outputs.
            type Fills = [Vec<u32>; 5];
            let run = |gelu: fn(&[f32], &mut [f32]),
                       grad: fn(&[f32], &[f32], &mut [f32]),
                       biased: fn(&[f32], &[f32], &mut [f32]),
                       in_place: fn(&mut [f32], &[f32]),
                       grad_in_place: fn(&[f32], &[f32], &mut [f32])|
             -> Fills {
                let n = x.len();
                let mut outs: [Vec<f32>; 5] = std::array::from_fn(|_| vec![0.0; n]);
                gelu(&x, &mut outs[0]);
                grad(&x, &g, &mut outs[1]);
                biased(&x, &bias, &mut outs[2]);
                outs[3].copy_from_slice(&x);
                in_place(&mut outs[3], &bias);
                outs[4].copy_from_slice(&g);
                grad_in_place(&x, &bias, &mut outs[4]);
                outs.map(|out| bits(&out))
            };
            // GELU's gradient at `x`: `Φ(x) + x φ(x)`.
            let slope = |x: f32| 0.5 * (1.0 + erf_lane(x * FRAC_1_SQRT_2)) + x * pdf_at(x);
            let (n, width) = (x.len(), bias.len());
            let expected: Fills = [
                bits(&x.iter().map(|&x| gelu_at(x)).collect::<Vec<_>>()),
                bits(&(0..n).map(|i| g[i] * slope(x[i])).collect::<Vec<_>>()),
                bits(
                    &(0..n)
                        .map(|i| gelu_at(x[i] + bias[i % width]))
                        .collect::<Vec<_>>(),
                ),
                bits(
                    &(0..n)
                        .map(|i| gelu_at(x[i] + bias[i % width]))
                        .collect::<Vec<_>>(),
                ),
                bits(
                    &(0..n)
                        .map(|i| g[i] * slope(x[i] + bias[i % width]))
                        .collect::<Vec<_>>(),
                ),
            ];
            let one = run(
                gelu_fill::<1>,
                gelu_grad_fill::<1>,
                bias_gelu_fill::<1>,
                bias_gelu_fill_in_place::<1>,
                bias_gelu_grad_fill_in_place::<1>,
            );
            assert_eq!(one, expected);
            let four = run(
                gelu_fill::<4>,
                gelu_grad_fill::<4>,
                bias_gelu_fill::<4>,
                bias_gelu_fill_in_place::<4>,
                bias_gelu_grad_fill_in_place::<4>,
            );
            assert_eq!(four, expected);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY (each call): the processor has AVX2 (checked above).
                let avx2 = run(
                    |x, out| unsafe { avx2::gelu_slice(x, out) },
                    |x, g, out| unsafe { avx2::gelu_grad_slice(x, g, out) },
                    |x, b, out| unsafe { avx2::bias_gelu_slice(x, b, out) },
                    |values, b| unsafe { avx2::bias_gelu_in_place(values, b) },
                    |x, b, g| unsafe { avx2::bias_gelu_grad_in_place(x, b, g) },
                );
                assert_eq!(avx2, expected);
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY (each call): the processor has AVX-512F (checked above).
                let avx512 = run(
                    |x, out| unsafe { avx512::gelu_slice(x, out) },
                    |x, g, out| unsafe { avx512::gelu_grad_slice(x, g, out) },
                    |x, b, out| unsafe { avx512::bias_gelu_slice(x, b, out) },
                    |values, b| unsafe { avx512::bias_gelu_in_place(values, b) },
                    |x, b, g| unsafe { avx512::bias_gelu_grad_in_place(x, b, g) },
                );
                assert_eq!(avx512, expected);
            }
        }
    }

    #[test]
    fn the_gradient_on_an_autodiff_device_is_the_exact_one() {
        let x = inputs(&Device::flex());
        let grad = x.clone().mul_scalar(0.37).sin();
        let expected = values(Tensor::<2>::from_dispatch(
            <burn::backend::Dispatch as GeluOps>::gelu_chunked_backward(
                x.clone().into_dispatch(),
                grad.clone().into_dispatch(),
            ),
        ));
        // Tracked inputs on an autodiff device take the autodiff implementation.
        let autodiff = Device::flex().autodiff();
        let x = inputs(&autodiff).require_grad();
        let grad = x.clone().mul_scalar(0.37).sin().detach().require_grad();
        let on_autodiff = values(Tensor::<2>::from_dispatch(
            <burn::backend::Dispatch as GeluOps>::gelu_chunked_backward(
                x.into_dispatch(),
                grad.into_dispatch(),
            ),
        ));
        // Composed of other operations, so equal within rounding, not bit for bit.
        let worst = expected
            .iter()
            .zip(&on_autodiff)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
    }

    /// The values' bits (so that `-0.0` and `0.0` differ).
    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// `bias_gelu` and its gradient on flex, in place and into new buffers, give the bits of
    /// the broadcast add followed by GELU and of GELU's gradient at the sum; a tensor held
    /// alone is written in place, and one held elsewhere too is read, never written.
    #[test]
    fn bias_gelu_is_the_sum_then_gelu_bit_for_bit() {
        type Ops = burn::backend::Dispatch;
        let device = Device::flex();
        let x = inputs(&device);
        let n = x.dims()[1];
        let bias = Tensor::<1>::from_data(
            TensorData::new(
                (0..n).map(|j| j as f32 * 0.3 - 2.0).collect::<Vec<_>>(),
                [n],
            ),
            &device,
        );
        let row = bias.clone().reshape([1, n]);
        let grad = x.clone().mul_scalar(0.37).sin();
        let pre = x.clone() + row.clone();
        let expected = bits(&values(gelu(pre.clone())));
        let expected_grad = values(Tensor::<2>::from_dispatch(Ops::gelu_chunked_backward(
            pre.into_dispatch(),
            grad.clone().into_dispatch(),
        )));
        assert!(expected_grad.iter().any(|g| *g != 0.0));
        let expected_grad = bits(&expected_grad);

        // Held only here (a copy of the values): written in place.
        let fresh = || Tensor::<2>::from_data(x.clone().into_data(), &device);
        assert_eq!(bits(&values(bias_gelu(fresh(), bias.clone()))), expected);
        // Held elsewhere too: a new buffer, and `x` unchanged.
        let before = bits(&values(x.clone()));
        assert_eq!(bits(&values(bias_gelu(x.clone(), bias.clone()))), expected);
        assert_eq!(bits(&values(x.clone())), before);

        let backward = |grad: Tensor<2>| {
            bits(&values(Tensor::<2>::from_dispatch(
                Ops::bias_gelu_backward(
                    x.clone().into_dispatch(),
                    row.clone().into_dispatch(),
                    grad.into_dispatch(),
                ),
            )))
        };
        let own_grad = Tensor::<2>::from_data(grad.clone().into_data(), &device);
        assert_eq!(backward(own_grad), expected_grad);
        let grad_before = bits(&values(grad.clone()));
        assert_eq!(backward(grad.clone()), expected_grad);
        assert_eq!(bits(&values(grad.clone())), grad_before);

        // On flex itself: the output of each is the buffer it was given, held there alone.
        let flex = |t: &Tensor<2>| flex_tensor(values(t.clone()), Shape::new(t.dims()));
        let own = flex(&x);
        let at = own.bytes().as_ptr();
        let out = Flex::bias_gelu(own, flex(&row));
        assert_eq!(out.bytes().as_ptr(), at);
        assert_eq!(bits(out.storage::<f32>()), expected);
        let own_grad = flex(&grad);
        let at = own_grad.bytes().as_ptr();
        let out = Flex::bias_gelu_backward(flex(&x), flex(&row), own_grad);
        assert_eq!(out.bytes().as_ptr(), at);
        assert_eq!(bits(out.storage::<f32>()), expected_grad);
    }
}
