//! Matrix products on the CPU backend with their output written once.
//!
//! Burn 0.22.1's CPU backend (flex) allocates every matrix product's output as a zeroed byte
//! vector (`FlexTensor::empty`), and then copies it into a new allocation, because a byte
//! vector does not meet the 16-byte alignment its byte buffers enforce: two passes over the
//! output before the product writes it. In a GoalRank training step those passes were over a
//! quarter of the main thread's time, all of it serial. [`product`] is flex's own product, the
//! same `gemm` call with the same strides, into an f32 buffer that `gemm` writes first, so the
//! results are bit for bit Burn's. It is a Burn backend extension (`#[backend_extension]`) with
//! its own backward pass for autodiff, which runs the two gradient products the same way.
//!
//! [`product_bias`] is a linear layer: on a plain flex device the bias is added to the rows in
//! place, on rayon's threads (flex adds it on the calling thread, into another new buffer);
//! under autodiff it is the product followed by Burn's broadcast add.
//!
//! Only 2-D f32 products on flex devices (with or without autodiff) take them; every other
//! device runs Burn's `matmul` (and `add`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Bytes, DType, Shape, Tensor};

use super::backend::is_flex;

/// Products with at least this many multiply-adds run on rayon's threads (flex's threshold).
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_FROM: usize = 192 * 192 * 192;

/// Bias additions over at least this many elements run on rayon's threads.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_ADD_FROM: usize = 64 * 1024;

/// The 2-D matrix product as one backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait ProductOps: Backend {
    /// `lhs · rhs`.
    ///
    /// # Shapes
    /// - lhs `[m, k]`, rhs `[k, n]` (either may be a strided view, such as a transpose)
    /// - output `[m, n]`
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `lhs · rhs + bias`, the bias added to every row (a linear layer).
    ///
    /// # Shapes
    /// - lhs `[m, k]`, rhs `[k, n]`, bias `[n]`
    /// - output `[m, n]`
    fn product_bias(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// `lhs · rhs`: written once on flex, Burn's `matmul` elsewhere.
///
/// # Shapes
/// - lhs `[m, k]`, rhs `[k, n]`
/// - output `[m, n]`
pub fn product(lhs: Tensor<2>, rhs: Tensor<2>) -> Tensor<2> {
    if runs_here(&lhs) && runs_here(&rhs) {
        Tensor::from_dispatch(<burn::backend::Dispatch as ProductOps>::product(
            lhs.into_dispatch(),
            rhs.into_dispatch(),
        ))
    } else {
        lhs.matmul(rhs)
    }
}

/// `lhs · rhs + bias` (the bias added to every row): one operation on flex, Burn's `matmul`
/// and `add` elsewhere. The same values as Burn's `Linear::forward` on a matrix.
///
/// # Shapes
/// - lhs `[m, k]`, rhs `[k, n]`, bias `[n]`
/// - output `[m, n]`
pub fn product_bias(lhs: Tensor<2>, rhs: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    if runs_here(&lhs) && runs_here(&rhs) && bias.dtype() == DType::F32 {
        Tensor::from_dispatch(<burn::backend::Dispatch as ProductOps>::product_bias(
            lhs.into_dispatch(),
            rhs.into_dispatch(),
            bias.into_dispatch(),
        ))
    } else {
        lhs.matmul(rhs) + bias.unsqueeze::<2>()
    }
}

/// Whether `x` is an f32 tensor on a flex device (with or without autodiff).
fn runs_here(x: &Tensor<2>) -> bool {
    x.dtype() == DType::F32 && is_flex(&x.device())
}

/// The row and column strides of a 2-D layout, in elements.
fn strides_2d(layout: &Layout) -> (isize, isize) {
    let strides = layout.strides();
    (strides[0], strides[1])
}

/// `lhs · rhs` as flex computes it (the same `gemm` call), row-major `[m, n]` values; `None`
/// where flex's own product must run (not 2-D f32 operands of matching inner size).
fn gemm_values(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<(Vec<f32>, [usize; 2])> {
    let (lhs_shape, rhs_shape) = (lhs.shape(), rhs.shape());
    let plain = lhs.dtype() == DType::F32
        && rhs.dtype() == DType::F32
        && lhs_shape.num_dims() == 2
        && rhs_shape.num_dims() == 2
        && lhs_shape[1] == rhs_shape[0];
    if !plain {
        return None;
    }
    let (m, k, n) = (lhs_shape[0], lhs_shape[1], rhs_shape[1]);
    let (lhs_row, lhs_col) = strides_2d(lhs.layout());
    let (rhs_row, rhs_col) = strides_2d(rhs.layout());
    let lhs_values: &[f32] = lhs.storage();
    let rhs_values: &[f32] = rhs.storage();
    let lhs_start = &lhs_values[lhs.layout().start_offset()..];
    let rhs_start = &rhs_values[rhs.layout().start_offset()..];

    #[cfg(not(target_arch = "wasm32"))]
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_FROM {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    #[cfg(target_arch = "wasm32")]
    let parallelism = gemm::Parallelism::None;

    let len = m * n;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: the two operands are f32 views whose shapes, strides and start offsets are
    // their layouts' (as flex's own product reads them), so every element `gemm` reads lies
    // in their storage. The destination is `len` f32 of reserved capacity, row-major
    // `[m, n]`; without `read_dst`, `gemm` writes each of its elements (zeros when k = 0)
    // and reads none of them before, so all `len` are initialised when it returns.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs_start.as_ptr(),
            lhs_col,
            lhs_row,
            rhs_start.as_ptr(),
            rhs_col,
            rhs_row,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(len);
    }
    Some((out, [m, n]))
}

/// A contiguous f32 flex tensor of `shape` holding `values`.
fn flex_tensor(values: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::new(shape)),
        DType::F32,
    )
}

/// `bias` added to every row of the row-major `values` (`out + b`, as flex's broadcast add
/// computes each element), on rayon's threads where there is enough work.
fn add_rows(values: &mut [f32], bias: &[f32]) {
    let n = bias.len().max(1);
    let add = |rows: &mut [f32]| {
        for row in rows.chunks_mut(n) {
            for (value, b) in row.iter_mut().zip(bias) {
                *value += *b;
            }
        }
    };
    #[cfg(not(target_arch = "wasm32"))]
    if values.len() >= PARALLEL_ADD_FROM {
        use rayon::prelude::*;
        // Whole rows per chunk, about 64 KB each.
        let chunk = n * (16 * 1024 / n).max(1);
        values.par_chunks_mut(chunk).for_each(add);
        return;
    }
    add(values)
}

impl ProductOps for Flex {
    fn product(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        match gemm_values(&lhs, &rhs) {
            Some((values, shape)) => flex_tensor(values, shape),
            None => Flex::float_matmul(lhs, rhs),
        }
    }

    fn product_bias(lhs: FlexTensor, rhs: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let bias = bias.to_contiguous();
        let bias_values = (bias.dtype() == DType::F32 && bias.shape().num_dims() == 1)
            .then(|| &bias.storage::<f32>()[bias.layout().start_offset()..][..bias.shape()[0]]);
        match (gemm_values(&lhs, &rhs), bias_values) {
            (Some((mut values, [m, n])), Some(bias_values)) if bias_values.len() == n => {
                add_rows(&mut values, bias_values);
                flex_tensor(values, [m, n])
            }
            _ => {
                let n = bias.shape().num_elements();
                let row = Flex::float_reshape(bias.clone(), Shape::new([1, n]));
                Flex::float_add(Flex::product(lhs, rhs), row)
            }
        }
    }
}

impl<B: Backend + ProductOps, C: CheckpointStrategy> ProductOps for Autodiff<B, C> {
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ProductBackward;

        impl<B: Backend + ProductOps> Backward<B, 2> for ProductBackward {
            /// The left operand (kept when the right one needs a gradient) and the right one
            /// (kept when the left one does).
            type State = (
                Option<B::FloatTensorPrimitive>,
                Option<B::FloatTensorPrimitive>,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (lhs, rhs) = ops.state;
                // Burn's matmul backward: grad · rhsᵀ and lhsᵀ · grad, on transposed views.
                binary::<B, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |grad| match rhs {
                        Some(rhs) => B::product(grad, B::float_transpose(rhs)),
                        None => unreachable!("the right operand is kept for the left gradient"),
                    },
                    |grad| match lhs {
                        Some(lhs) => B::product(B::float_transpose(lhs), grad),
                        None => unreachable!("the left operand is kept for the right gradient"),
                    },
                );
            }
        }

        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        let (lhs_node, rhs_node) = (lhs.node(), rhs.node());
        let (lhs, rhs) = (lhs.into_primitive(), rhs.into_primitive());
        match ProductBackward
            .prepare::<C>([lhs_node, rhs_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (
                    rhs_tracked.then(|| lhs.clone()),
                    lhs_tracked.then(|| rhs.clone()),
                );
                prep.finish(state, B::product(lhs, rhs))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::product(lhs, rhs)),
        }
    }

    /// Composed of differentiable operations: the product, then Burn's broadcast add. (One
    /// backward node for both, with the same gradients, changed the order in which autodiff
    /// sums some gradients, and with it a trained reward model's last bits.)
    fn product_bias(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let n = bias.shape().num_elements();
        let row = Self::float_reshape(bias, Shape::new([1, n]));
        Self::float_add(Self::product(lhs, rhs), row)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    fn matrix(rows: usize, cols: usize, seed: usize, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (((i + seed) * 7919) % 20_011) as f32 / 1_000.0 - 10.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [rows, cols]), device)
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    /// Small and large (threaded) products, plain and on transposed views, against Burn's.
    #[test]
    fn the_product_is_burns_bit_for_bit() {
        let device = Device::flex();
        for (m, k, n) in [
            (3, 5, 4),
            (1, 7, 1),
            (600, 130, 260),
            (257, 512, 129),
            (4, 0, 3),
        ] {
            let (a, b) = (matrix(m, k, 1, &device), matrix(k, n, 2, &device));
            assert_eq!(
                values(product(a.clone(), b.clone())),
                values(a.clone().matmul(b.clone())),
                "{m}x{k}x{n}"
            );
            let (at, bt) = (a.transpose(), b.transpose());
            assert_eq!(
                values(product(bt.clone(), at.clone())),
                values(bt.matmul(at)),
                "transposed {m}x{k}x{n}"
            );
        }
    }

    /// On a plain device (ranking, reward scoring) the bias is added by `add_rows`, on several
    /// threads for the larger shapes: the same bits as Burn's linear layer.
    #[test]
    fn the_biased_product_is_burns_linear_bit_for_bit() {
        use burn::nn::LinearConfig;
        let device = Device::flex();
        for (m, k, n) in [
            (1, 1, 1),
            (7, 64, 1),
            (70_000, 8, 1),
            (3000, 128, 96),
            (1, 5, 0),
        ] {
            let layer = LinearConfig::new(k, n).init(&device);
            let bias = layer.bias.as_ref().expect("a bias").val();
            let x = matrix(m, k, 7, &device).mul_scalar(0.01);
            assert_eq!(
                values(product_bias(x.clone(), layer.weight.val(), bias)),
                values(layer.forward(x)),
                "{m}x{k}x{n}"
            );
        }
    }

    #[test]
    fn the_gradients_are_burns_bit_for_bit() {
        let device = Device::flex().autodiff();
        let grads_of = |ours: bool, track_lhs: bool| {
            let a = matrix(300, 200, 3, &device);
            let a = if track_lhs { a.require_grad() } else { a };
            let b = matrix(200, 150, 4, &device).require_grad();
            let weights = matrix(300, 150, 5, &device).mul_scalar(0.01).sin();
            let y = if ours {
                product(a.clone(), b.clone())
            } else {
                a.clone().matmul(b.clone())
            };
            let grads = (y * weights).sum().backward();
            let grad_a = a.grad(&grads).map(values);
            let grad_b = values(b.grad(&grads).expect("a gradient"));
            (grad_a, grad_b)
        };
        for track_lhs in [true, false] {
            let (ours, burns) = (grads_of(true, track_lhs), grads_of(false, track_lhs));
            assert_eq!(ours.0.is_some(), track_lhs);
            assert!(ours.1.iter().any(|g| *g != 0.0));
            assert_eq!(ours, burns);
        }
    }
}
