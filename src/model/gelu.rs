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
//! over the product's output `x` (in place where `x` is held alone, as a product's output is),
//! where the bias add and GELU were a pass each. Under autodiff it is one node whose forward
//! also writes GELU's slope `gelu'(x + b) = Φ + x φ` from the same `erf`, and keeps the slope
//! in place of `x` (the same memory where `x` is held alone, as a product's output is: the
//! output takes `x`'s buffer); its backward is then one
//! multiplication, `grad · slope`, into the upstream gradient's buffer where that is held
//! alone, with no `erf` or `exp` computed again. The sums and the gradients are those of the
//! add followed by GELU, bit for bit.
//!
//! The fills work in blocks as wide as the vectors (16 values on AVX-512, 8 on AVX2, 4
//! elsewhere). Where all of a block's `x / √2` lie in `erf`'s first interval (`|x| < √2`,
//! which holds for most blocks: 79 % of 16-value blocks in a fresh model's training step, 89 %
//! when the shipped model ranks the test split) the block skips `erf`'s second formula and its
//! `exp`; the bits are the same either way ([`erf_near`]). The gradient and the slope compute `erf` in
//! such blocks into a buffer of [`SEGMENT`] values, then `Φ(x) + x φ(x)` in one loop over it:
//! written as one block computation, the compiler left its arithmetic scalar.
//!
//! Only f32 tensors on flex devices (with or without autodiff) take it, split across rayon's
//! threads from `PARALLEL_FROM` elements on (one thread in the browser build); every other
//! device (wgpu, a remote device) runs Burn's `gelu`, whose kernels fuse there anyway.

#[cfg(not(target_arch = "wasm32"))]
use super::backend::PARALLEL_FROM;
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
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};
use core::f32::consts::FRAC_1_SQRT_2;
use core::mem::MaybeUninit;

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
    /// `gelu(x + row)` and GELU's slope there, `gelu'(x + row)`: [`Self::bias_gelu`]'s forward
    /// under autodiff, which keeps the slope for the backward pass in place of `x`.
    ///
    /// # Shapes
    /// - x `[rows, n]`, row `[1, n]`; both outputs as x
    fn bias_gelu_slope(
        x: FloatTensor<Self>,
        row: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// `grad · slope`, element by element: the gradient with respect to `x` (and, summed over
    /// the rows, to `row`) from the slope [`Self::bias_gelu_slope`] kept.
    ///
    /// # Shapes
    /// - grad, slope: the same shape; output as grad
    fn times_slope(grad: FloatTensor<Self>, slope: FloatTensor<Self>) -> FloatTensor<Self>;
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
/// output is; under autodiff the pass also writes GELU's slope for the backward pass);
/// elsewhere Burn's add and `gelu`.
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
    gelu_from(x, erf(x * FRAC_1_SQRT_2))
}

/// GELU at `x` from `e = erf(x / √2)`.
#[inline(always)]
fn gelu_from(x: f32, e: f32) -> f32 {
    0.5 * x * (1.0 + e)
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

/// GELU's slope at `x`, `Φ(x) + x φ(x)`, from `e = erf(x / √2)` (`Φ(x) = 0.5 (1 + e)`).
#[inline(always)]
fn slope_from(x: f32, e: f32) -> f32 {
    0.5 * (1.0 + e) + x * pdf_at(x)
}

/// Values per segment of the gradient fills: `erf` is computed in blocks into a buffer of this
/// many ([`erf_fill`]), then the slope `Φ(x) + x φ(x)` in one loop over it. (As one block
/// computation the compiler leaves the slope's arithmetic scalar.)
const SEGMENT: usize = 128;

/// `out = grad · (Φ(x) + x φ(x))`, GELU's gradient times `grad`, over at most [`SEGMENT`]
/// values.
#[inline(always)]
fn grad_segment<const W: usize>(x: &[f32], grad: &[f32], out: &mut [f32]) {
    let mut erf = [0.0f32; SEGMENT];
    let erf = &mut erf[..x.len()];
    erf_fill::<W>(x, erf);
    for ((out, &g), (&x, &e)) in out.iter_mut().zip(grad).zip(x.iter().zip(erf.iter())) {
        *out = g * slope_from(x, e);
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

/// `out = grad · gelu'(x)`, `erf` in blocks of `W`.
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

/// `out = erf(x / √2)` in blocks of `W` (a block within `erf`'s first interval with
/// [`erf_near`], the bits of [`erf_lane`] either way), the rest value by value.
#[inline(always)]
fn erf_fill<const W: usize>(x: &[f32], out: &mut [f32]) {
    let near = |x: f32| erf_near(x * FRAC_1_SQRT_2);
    let far = |x: f32| erf_lane(x * FRAC_1_SQRT_2);
    let mut outs = out.chunks_exact_mut(W);
    let mut xs = x.chunks_exact(W);
    for (out, x) in (&mut outs).zip(&mut xs) {
        out.copy_from_slice(&by_block::<W>(block(x), near, far));
    }
    for (out, &x) in outs.into_remainder().iter_mut().zip(xs.remainder()) {
        *out = far(x);
    }
}

/// `values = gelu(values + bias)` and `slope = gelu'(values + bias)`, whole rows as wide as
/// `bias`, in segments of at most [`SEGMENT`] values: the sums, their `erf` in blocks of `W`,
/// then GELU ([`gelu_from`]) and its slope ([`slope_from`], as [`grad_segment`] computes it)
/// from the same `erf` in one loop.
#[inline(always)]
fn bias_gelu_slope_fill_in_place<const W: usize>(
    values: &mut [f32],
    bias: &[f32],
    slope: &mut [MaybeUninit<f32>],
) {
    let rows = values
        .chunks_mut(bias.len())
        .zip(slope.chunks_mut(bias.len()));
    for (row, slope) in rows {
        let segments = row.chunks_mut(SEGMENT).zip(bias.chunks(SEGMENT));
        for ((values, bias), slope) in segments.zip(slope.chunks_mut(SEGMENT)) {
            let mut sum = [0.0f32; SEGMENT];
            let sum = &mut sum[..values.len()];
            for ((sum, &x), &b) in sum.iter_mut().zip(values.iter()).zip(bias) {
                *sum = x + b;
            }
            let mut erf = [0.0f32; SEGMENT];
            let erf = &mut erf[..values.len()];
            erf_fill::<W>(sum, erf);
            let outs = values.iter_mut().zip(slope.iter_mut());
            for ((value, slope), (&x, &e)) in outs.zip(sum.iter().zip(erf.iter())) {
                *value = gelu_from(x, e);
                slope.write(slope_from(x, e));
            }
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
    /// `values = gelu(values + bias)`, `slope = gelu'(values + bias)` on the widest vectors
    /// this processor has.
    fn bias_gelu_slope_in_place(values: &mut [f32], bias: &[f32], slope: &mut [core::mem::MaybeUninit<f32>]) = bias_gelu_slope_fill_in_place;
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

    /// The output in place of `x` where it is a contiguous matrix held here alone (as a
    /// product's fresh output is), else in a new buffer; the slope in a new one, each chunk
    /// written by the thread that fills the output's.
    fn bias_gelu_slope(mut x: FlexTensor, row: FlexTensor) -> (FlexTensor, FlexTensor) {
        let row = row.to_contiguous();
        let Some(n) = row_width(&x, &row) else {
            let sum = Flex::float_add(x, row);
            let ones = Flex::float_ones(sum.shape(), &Default::default(), sum.dtype().into());
            let slope = Self::gelu_chunked_backward(sum.clone(), ones);
            return (Self::gelu_chunked(sum), slope);
        };
        let bias = values_of(&row);
        let shape = x.shape();
        let len = shape.num_elements();
        if x.is_contiguous()
            && x.layout().start_offset() == 0
            && let Some(values) = x.try_storage_mut::<f32>()
        {
            let slope = fill_with_slope(&mut values[..len], n, bias);
            return (x, flex_tensor(slope, shape));
        }
        // Held elsewhere too, or strided: a copy, updated in place (a rare path).
        let mut values = values_of(&x.to_contiguous()).to_vec();
        let slope = fill_with_slope(&mut values, n, bias);
        (
            flex_tensor(values, shape.clone()),
            flex_tensor(slope, shape),
        )
    }

    /// Into `grad`'s buffer where it is a contiguous tensor held here alone (as a product's
    /// gradient is), else into a new one.
    fn times_slope(mut grad: FlexTensor, slope: FlexTensor) -> FlexTensor {
        let fits = grad.dtype() == DType::F32
            && slope.dtype() == DType::F32
            && grad.shape() == slope.shape();
        if !fits {
            return Flex::float_mul(grad, slope);
        }
        let slope = slope.to_contiguous();
        let slopes = values_of(&slope);
        let len = grad.shape().num_elements();
        if grad.is_contiguous()
            && grad.layout().start_offset() == 0
            && let Some(values) = grad.try_storage_mut::<f32>()
        {
            update_chunks(&mut values[..len], CHUNK, |start, grad| {
                for (grad, &slope) in grad.iter_mut().zip(&slopes[start..]) {
                    *grad *= slope;
                }
            });
            return grad;
        }
        let grad = grad.to_contiguous();
        let out = map_chunks(values_of(&grad), slopes, CHUNK, |grad, slope, out| {
            for ((out, &grad), &slope) in out.iter_mut().zip(grad).zip(slope) {
                *out = grad * slope;
            }
        });
        flex_tensor(out, grad.shape())
    }
}

/// `values = gelu(values + bias)` (rows of `n`) and the slope `gelu'(values + bias)`, returned
/// as a new buffer, on rayon's threads where there is enough work: each chunk of the slope is
/// written by the thread that updates the same chunk of `values`.
fn fill_with_slope(values: &mut [f32], n: usize, bias: &[f32]) -> Vec<f32> {
    let len = values.len();
    let chunk = row_chunk(n);
    let mut slope: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut slope.spare_capacity_mut()[..len];
    let one = |(values, slope): (&mut [f32], &mut [MaybeUninit<f32>])| {
        bias_gelu_slope_in_place(values, bias, slope)
    };
    #[cfg(not(target_arch = "wasm32"))]
    if len >= PARALLEL_FROM {
        use rayon::prelude::*;
        let chunks = spare.par_chunks_mut(chunk);
        values.par_chunks_mut(chunk).zip(chunks).for_each(one);
        // SAFETY: the fill wrote every element of every chunk of the slope (the chunks of
        // `values` and of the slope have the same lengths, and cover `len` elements).
        unsafe { slope.set_len(len) };
        return slope;
    }
    let chunks = spare.chunks_mut(chunk);
    values.chunks_mut(chunk).zip(chunks).for_each(one);
    // SAFETY: as above.
    unsafe { slope.set_len(len) };
    slope
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
    /// reduces a broadcast). Its forward computes GELU's slope `gelu'(x + row)` from the same
    /// `erf` as the output and keeps it in place of `x` and the row (the same memory; the output
    /// takes `x`'s buffer), so that the backward pass is one multiplication: `erf` and `exp`
    /// are not computed again.
    fn bias_gelu(x: FloatTensor<Self>, row: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct BiasGeluBackward;

        impl<B: Backend + GeluOps> Backward<B, 2> for BiasGeluBackward {
            /// GELU's slope at `x + row`.
            type State = B::FloatTensorPrimitive;

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [x_parent, row_parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let pre_grad = B::times_slope(grad, ops.state);
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
                let (output, slope) = B::bias_gelu_slope(x, row);
                prep.finish(slope, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bias_gelu(x, row)),
        }
    }

    /// Not differentiated in this project: the inner backend's, untracked.
    fn bias_gelu_slope(
        x: FloatTensor<Self>,
        row: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (output, slope) = B::bias_gelu_slope(Self::inner(x), Self::inner(row));
        (Self::from_inner(output), Self::from_inner(slope))
    }

    /// A differentiable product.
    fn times_slope(grad: FloatTensor<Self>, slope: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(grad, slope)
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
            // The fills' outputs: GELU, its gradient, the biased fills' outputs, and the slope
            // fill's output and slope.
            type Fills = [Vec<u32>; 6];
            let run = |gelu: fn(&[f32], &mut [f32]),
                       grad: fn(&[f32], &[f32], &mut [f32]),
                       biased: fn(&[f32], &[f32], &mut [f32]),
                       in_place: fn(&mut [f32], &[f32]),
                       with_slope: fn(&mut [f32], &[f32], &mut [MaybeUninit<f32>])|
             -> Fills {
                let n = x.len();
                let mut outs: [Vec<f32>; 6] = std::array::from_fn(|_| vec![0.0; n]);
                gelu(&x, &mut outs[0]);
                grad(&x, &g, &mut outs[1]);
                biased(&x, &bias, &mut outs[2]);
                outs[3].copy_from_slice(&x);
                in_place(&mut outs[3], &bias);
                outs[4].copy_from_slice(&x);
                let [.., values, slope] = &mut outs;
                // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the fill writes only
                // initialised values.
                let slope = unsafe {
                    &mut *(slope.as_mut_slice() as *mut [f32] as *mut [MaybeUninit<f32>])
                };
                with_slope(values, &bias, slope);
                outs.map(|out| bits(&out))
            };
            // GELU's gradient at `x`: `Φ(x) + x φ(x)`.
            let slope = |x: f32| 0.5 * (1.0 + erf_lane(x * FRAC_1_SQRT_2)) + x * pdf_at(x);
            let (n, width) = (x.len(), bias.len());
            let biased = bits(
                &(0..n)
                    .map(|i| gelu_at(x[i] + bias[i % width]))
                    .collect::<Vec<_>>(),
            );
            let expected: Fills = [
                bits(&x.iter().map(|&x| gelu_at(x)).collect::<Vec<_>>()),
                bits(&(0..n).map(|i| g[i] * slope(x[i])).collect::<Vec<_>>()),
                biased.clone(),
                biased.clone(),
                biased,
                bits(
                    &(0..n)
                        .map(|i| slope(x[i] + bias[i % width]))
                        .collect::<Vec<_>>(),
                ),
            ];
            let one = run(
                gelu_fill::<1>,
                gelu_grad_fill::<1>,
                bias_gelu_fill::<1>,
                bias_gelu_fill_in_place::<1>,
                bias_gelu_slope_fill_in_place::<1>,
            );
            assert_eq!(one, expected);
            let four = run(
                gelu_fill::<4>,
                gelu_grad_fill::<4>,
                bias_gelu_fill::<4>,
                bias_gelu_fill_in_place::<4>,
                bias_gelu_slope_fill_in_place::<4>,
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
                    |values, b, slope| unsafe { avx2::bias_gelu_slope_in_place(values, b, slope) },
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
                    |values, b, slope| unsafe {
                        avx512::bias_gelu_slope_in_place(values, b, slope)
                    },
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

    /// `bias_gelu`, its forward with the slope and the gradient from the slope on flex, in place
    /// and into new buffers, give the bits of the broadcast add followed by GELU and of GELU's
    /// gradient at the sum; a tensor held alone is written in place, and one held elsewhere too
    /// is read, never written.
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

        // The output and slope, then the gradient from the slope.
        let forward = |x: Tensor<2>| {
            let (out, slope) = Ops::bias_gelu_slope(x.into_dispatch(), row.clone().into_dispatch());
            (
                bits(&values(Tensor::<2>::from_dispatch(out))),
                Tensor::<2>::from_dispatch(slope),
            )
        };
        let (out, slope) = forward(fresh());
        assert_eq!(out, expected);
        let (out, shared_slope) = forward(x.clone());
        assert_eq!(out, expected);
        assert_eq!(bits(&values(x.clone())), before);
        assert_eq!(bits(&values(slope.clone())), bits(&values(shared_slope)));
        let backward = |grad: Tensor<2>| {
            bits(&values(Tensor::<2>::from_dispatch(Ops::times_slope(
                grad.into_dispatch(),
                slope.clone().into_dispatch(),
            ))))
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
        let own = flex(&x);
        let at = own.bytes().as_ptr();
        let (out, flex_slope) = Flex::bias_gelu_slope(own, flex(&row));
        assert_eq!(out.bytes().as_ptr(), at);
        assert_eq!(bits(out.storage::<f32>()), expected);
        let own_grad = flex(&grad);
        let at = own_grad.bytes().as_ptr();
        let out = Flex::times_slope(own_grad, flex_slope);
        assert_eq!(out.bytes().as_ptr(), at);
        assert_eq!(bits(out.storage::<f32>()), expected_grad);
    }
}
