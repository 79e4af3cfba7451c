//! A matrix product on the CPU backend with its output written once.
//!
//! Burn 0.22.1's CPU backend (flex) allocates every matrix product's output as a zeroed byte
//! vector (`FlexTensor::empty`), and then copies it into a new allocation, because a byte
//! vector does not meet the 16-byte alignment its byte buffers enforce: two passes over the
//! output before the product writes it. In a GoalRank training step those passes were a
//! quarter of the main thread's time, all of it serial. This is flex's own product, the same
//! `gemm` call with the same strides, into an f32 buffer that `gemm` writes first, so the
//! results are bit for bit Burn's. It is a Burn backend extension (`#[backend_extension]`) with
//! its own backward pass for autodiff, which runs the two gradient products the same way.
//!
//! Only 2-D f32 products on flex devices (with or without autodiff) take it; every other device
//! runs Burn's `matmul`.

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

/// The 2-D matrix product as one backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait ProductOps: Backend {
    /// `lhs · rhs`.
    ///
    /// # Shapes
    /// - lhs `[m, k]`, rhs `[k, n]` (either may be a strided view, such as a transpose)
    /// - output `[m, n]`
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
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

/// Whether `x` is an f32 tensor on a flex device (with or without autodiff).
fn runs_here(x: &Tensor<2>) -> bool {
    x.dtype() == DType::F32 && is_flex(&x.device())
}

/// The row and column strides of a 2-D layout, in elements.
fn strides_2d(layout: &Layout) -> (isize, isize) {
    let strides = layout.strides();
    (strides[0], strides[1])
}

impl ProductOps for Flex {
    fn product(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        let (lhs_shape, rhs_shape) = (lhs.shape(), rhs.shape());
        let plain = lhs.dtype() == DType::F32
            && rhs.dtype() == DType::F32
            && lhs_shape.num_dims() == 2
            && rhs_shape.num_dims() == 2
            && lhs_shape[1] == rhs_shape[0];
        if !plain {
            return Flex::float_matmul(lhs, rhs);
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
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(Shape::new([m, n])),
            DType::F32,
        )
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
