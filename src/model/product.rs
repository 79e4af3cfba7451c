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
//! under autodiff it is the product followed by an add node with the gradients of Burn's
//! broadcast add, whose forward adds the bias in place on rayon's threads ([`ProductOps::add_row`]).
//!
//! Each matrix of a product runs [`matrix_product`]: `gemm`, or on x86-64 the tiny and small
//! ones `model::tiny` and `model::small` compute without `gemm`'s per-call set-up, `gemm`'s
//! values bit for bit. A large product has its rows split into parts, each computed on one
//! thread ([`row_parts`]; by `gemm`, or by `model::small` where a part is small): one part per
//! thread where it is deeper than `gemm`'s depth block (the weight gradients, summed over
//! thousands of rows), blocks of about 1,024 rows where a batch's rows pass a linear layer:
//! again the same values.
//!
//! Only f32 products on flex devices (with or without autodiff) take them, batched ones where
//! both sides have the same leading dimensions; every other device runs Burn's `matmul` (and
//! `add`).

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

use super::backend::{Matrix, flex_tensor, gemm_product, is_flex, row_width, values_of, zeroed};
#[cfg(target_arch = "x86_64")]
use super::{small, tiny};

/// Products with at least this many multiply-adds run on rayon's threads. flex's threshold is
/// 192³; one request's products (51 rows by 128 to 512) lie between the two, and splitting them
/// cut the batch-1 ranking latency by about a tenth. Each output element is still computed by
/// one thread in the same order, so the values do not change.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_FROM: usize = 64 * 64 * 64;

/// Batches of products with at least this many multiply-adds in all run one product per
/// thread (flex's threshold).
#[cfg(not(target_arch = "wasm32"))]
const BATCH_PARALLEL_FROM: usize = 128 * 128 * 128;

/// `gemm` sums at least this many terms of the inner dimension in one pass (its depth block:
/// 512 with a 32 KB first-level cache, more with a larger one; it depends on the depth and the
/// cache alone); a deeper product on several threads makes them meet after each block.
#[cfg(not(target_arch = "wasm32"))]
const DEPTH_BLOCK: usize = 512;

/// The fewest rows each thread takes when a deep product's rows are split between threads.
#[cfg(not(target_arch = "wasm32"))]
const SPLIT_ROWS: usize = 64;

/// The rows of a block where a product within one depth block has its rows split ([`row_parts`]).
#[cfg(not(target_arch = "wasm32"))]
const ROW_BLOCK: usize = 1024;

/// `gemm` blocks the depth of products with at most this many rows and columns its own way.
#[cfg(not(target_arch = "wasm32"))]
const SMALL_SIDE: usize = 64;

/// Bias additions over at least this many elements run on rayon's threads.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_ADD_FROM: usize = 64 * 1024;

/// Multiply-adds of the products run here (forward and backward) since the process started.
static MULTIPLY_ADDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// [`this_thread_products`]: the products' time and multiply-adds on this thread.
    static THIS_THREAD: core::cell::Cell<(u64, u64)> = const { core::cell::Cell::new((0, 0)) };
}

/// Wall-clock nanoseconds and multiply-adds of the products called on this thread since it
/// started (a product's threads work inside its call, so on a training thread this is the
/// time the step spent in matrix products; `goalrank bench --profile` charges it to each
/// phase). Per thread: data-parallel copies each call their own on a thread of their own, at
/// the same time, and their sum would add up more product time than passed. Native builds
/// only time the products: in the browser the time is 0.
pub fn this_thread_products() -> (u64, u64) {
    THIS_THREAD.with(|c| c.get())
}

/// Adds a product's time and multiply-adds to this thread's [`this_thread_products`].
fn count_on_this_thread(nanos: u64, multiply_adds: u64) {
    THIS_THREAD.with(|c| {
        let (n, m) = c.get();
        c.set((n + nanos, m + multiply_adds));
    });
}

/// Multiply-adds of every product [`product`] and [`product_bias`] have run on the CPU backend
/// since the process started (and those inside `model::attention`), their backward passes'
/// included (`goalrank bench` reports the FLOPs of a step from it). Products on other devices
/// are not counted.
pub fn multiply_adds() -> u64 {
    MULTIPLY_ADDS.load(Ordering::Relaxed)
}

/// Adds `count` multiply-adds of products run elsewhere on the CPU backend (`model::attention`'s,
/// whose time is not counted apart from the attention's other steps) to [`multiply_adds`].
pub fn count_multiply_adds(count: u64) {
    MULTIPLY_ADDS.fetch_add(count, Ordering::Relaxed);
    count_on_this_thread(0, count);
}

/// The matrix product as one backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait ProductOps: Backend {
    /// `lhs · rhs`, matrix by matrix over the leading dimensions.
    ///
    /// # Shapes
    /// - lhs `[.., m, k]`, rhs `[.., k, n]` (either may be a strided view, such as a
    ///   transpose)
    /// - output `[.., m, n]`
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
    /// `x + row`: `row` added to every row of `x`, each element as Burn's broadcast add
    /// computes it (a linear layer's bias under autodiff).
    ///
    /// # Shapes
    /// - x `[m, n]`, row `[1, n]`
    /// - output `[m, n]`
    fn add_row(x: FloatTensor<Self>, row: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `lhs · rhs` (matrix by matrix over the leading dimensions): written once on flex, Burn's
/// `matmul` elsewhere.
///
/// # Shapes
/// - lhs `[.., m, k]`, rhs `[.., k, n]` (the same leading dimensions; Burn's `matmul` runs
///   where they differ)
/// - output `[.., m, n]`
pub fn product<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    if runs_here(&lhs) && runs_here(&rhs) && fits(&lhs.dims(), &rhs.dims()) {
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
    let bias_fits = bias.dtype() == DType::F32 && bias.dims()[0] == rhs.dims()[1];
    if runs_here(&lhs) && runs_here(&rhs) && bias_fits && fits(&lhs.dims(), &rhs.dims()) {
        Tensor::from_dispatch(<burn::backend::Dispatch as ProductOps>::product_bias(
            lhs.into_dispatch(),
            rhs.into_dispatch(),
            bias.into_dispatch(),
        ))
    } else {
        lhs.matmul(rhs) + bias.unsqueeze::<2>()
    }
}

/// Whether `[.., m, k] · [.., k, n]` has the same leading dimensions on both sides and
/// matching inner sizes. Other shapes take Burn's `matmul`, which checks them (with a clear
/// error) and broadcasts the leading dimensions where it can.
fn fits(lhs: &[usize], rhs: &[usize]) -> bool {
    let d = lhs.len();
    d >= 2 && rhs.len() == d && lhs[..d - 2] == rhs[..d - 2] && lhs[d - 1] == rhs[d - 2]
}

/// Whether `x` is an f32 tensor on a flex device (with or without autodiff).
fn runs_here<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && is_flex(&x.device())
}

/// The row and column strides of a layout's last two dimensions, in elements.
fn matrix_strides(layout: &Layout) -> (isize, isize) {
    let strides = layout.strides();
    let d = strides.len();
    (strides[d - 2], strides[d - 1])
}

/// `dst = lhs · rhs`, row-major `[m, n]`, as flex's `gemm` call computes it (bit for bit):
/// tiny and small products by [`tiny`] and [`small`] without `gemm`'s per-call cost on x86-64,
/// the rest by `gemm` with `parallelism`.
///
/// # Safety
/// `lhs` addresses an `[m, k]` f32 matrix and `rhs` a `[k, n]` one; `dst` points at `m · n`
/// writable f32 that overlap neither, initialised where `m` or `n` is 1 (`gemm` reads such a
/// destination through a slice before writing it).
pub unsafe fn matrix_product(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    lhs: Matrix,
    rhs: Matrix,
    parallelism: gemm::Parallelism,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if tiny::fits(m, n, k, rhs.col) {
            // SAFETY: by the caller; `tiny::fits` holds.
            unsafe {
                tiny::product(
                    [m, n, k],
                    dst,
                    (lhs.at, lhs.row, lhs.col),
                    (rhs.at, rhs.row),
                )
            };
            return;
        }
        // Small products on one thread skip `gemm`'s set-up.
        if m.saturating_mul(n).saturating_mul(k) < PARALLEL_FROM
            && small::fits(m, n, k, lhs.col, rhs.row)
        {
            // SAFETY: by the caller; `small::fits` holds.
            unsafe { small::product([m, n, k], dst, lhs, rhs) };
            return;
        }
    }
    // SAFETY: by the caller.
    unsafe { gemm_product([m, n, k], dst, lhs, rhs, parallelism) }
}

/// `lhs · rhs` with the values flex computes (its `gemm` calls, or the same values in parts on
/// the threads: [`row_parts`], [`matrix_product`]), row-major values and their shape; `None`
/// where flex's own product must run (not f32, batch dimensions that differ, inner sizes that
/// do not match).
///
/// # Shapes
/// - lhs `[.., m, k]`, rhs `[.., k, n]` with the same leading (batch) dimensions
/// - output `[.., m, n]`
fn gemm_values(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<(Vec<f32>, Shape)> {
    let (lhs_shape, rhs_shape) = (lhs.shape(), rhs.shape());
    let plain = lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32;
    if !plain || !fits(&lhs_shape, &rhs_shape) {
        return None;
    }
    let rank = lhs_shape.num_dims();
    let (m, k, n) = (
        lhs_shape[rank - 2],
        lhs_shape[rank - 1],
        rhs_shape[rank - 1],
    );
    let batch_dims = &lhs_shape[..rank - 2];
    let batches: usize = batch_dims.iter().product();
    let mut out_dims = batch_dims.to_vec();
    out_dims.extend([m, n]);
    let (matrix, len) = (m * n, batches * m * n);
    #[cfg(not(target_arch = "wasm32"))]
    let started = std::time::Instant::now();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return Some((out, Shape::from(out_dims)));
    }

    let (lhs_row, lhs_col) = matrix_strides(lhs.layout());
    let (rhs_row, rhs_col) = matrix_strides(rhs.layout());
    let lhs_values: &[f32] = lhs.storage();
    let rhs_values: &[f32] = rhs.storage();
    let (lhs_start, rhs_start) = (lhs.layout().start_offset(), rhs.layout().start_offset());
    // Element offset of batch `b`'s matrix (row-major batch index over the batch dimensions).
    let offset = |b: usize, strides: &[isize]| -> isize {
        let mut rest = b;
        let mut offset = 0isize;
        for (&size, &stride) in batch_dims.iter().zip(strides).rev() {
            offset += (rest % size) as isize * stride;
            rest /= size;
        }
        offset
    };
    // Rows `first..first + rows` of product `b` into `out` (all `m` rows but where the rows are
    // split between threads).
    let part = |out: *mut f32, b: usize, [first, rows]: [usize; 2], parallelism| {
        let lhs_at = lhs_start as isize + offset(b, lhs.layout().strides());
        let rhs_at = rhs_start as isize + offset(b, rhs.layout().strides());
        // SAFETY: the operands are f32 views whose shapes, strides and start offsets are their
        // layouts' (as flex's own product reads them), so rows `first..first + rows` of the
        // left one and all of the right one lie in their storage. `out` points at
        // `rows · n` f32 of reserved capacity, initialised where a side is 1 (below).
        unsafe {
            let lhs = Matrix {
                at: lhs_values.as_ptr().offset(lhs_at),
                row: lhs_row,
                col: lhs_col,
            }
            .from(first, 0);
            let rhs = Matrix {
                at: rhs_values.as_ptr().offset(rhs_at),
                row: rhs_row,
                col: rhs_col,
            };
            matrix_product([rows, n, k], out, lhs, rhs, parallelism)
        }
    };

    // All rows of product `b` into its chunk of the output.
    let whole = |chunk: &mut [MaybeUninit<f32>], b: usize, parallelism| {
        part(chunk.as_mut_ptr().cast(), b, [0, m], parallelism)
    };

    let spare = &mut out.spare_capacity_mut()[..len];
    if m == 1 || n == 1 {
        // `gemm` computes a matrix-vector product for these through a `&mut [f32]` over the
        // destination (it writes before it reads), and such a slice must hold initialised
        // values: zero them first (one row or column per product, cheap).
        zeroed(spare);
    }
    // One large product at a time, its rows in parts on the threads ([`row_parts`]) or split
    // by `gemm` itself, or many small ones each on one thread (flex's split).
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        let per_matrix = m.saturating_mul(n).saturating_mul(k);
        let total = batches.saturating_mul(per_matrix);
        let many_small = batches >= 4 && total >= BATCH_PARALLEL_FROM;
        if per_matrix >= PARALLEL_FROM && !many_small {
            let parts = row_parts(m, n, k);
            let rows = m.div_ceil(parts);
            for (b, chunk) in spare.chunks_mut(matrix).enumerate() {
                if parts > 1 {
                    chunk
                        .par_chunks_mut(rows * n)
                        .enumerate()
                        .for_each(|(i, chunk)| {
                            let range = [i * rows, chunk.len() / n];
                            part(chunk.as_mut_ptr().cast(), b, range, gemm::Parallelism::None)
                        });
                } else {
                    whole(chunk, b, gemm::Parallelism::Rayon(0));
                }
            }
        } else if total >= BATCH_PARALLEL_FROM && batches > 1 {
            spare
                .par_chunks_mut(matrix)
                .enumerate()
                .for_each(|(b, chunk)| whole(chunk, b, gemm::Parallelism::None));
        } else {
            for (b, chunk) in spare.chunks_mut(matrix).enumerate() {
                whole(chunk, b, gemm::Parallelism::None);
            }
        }
    }
    #[cfg(target_arch = "wasm32")]
    for (b, chunk) in spare.chunks_mut(matrix).enumerate() {
        whole(chunk, b, gemm::Parallelism::None);
    }
    // SAFETY: the chunks cover the first `len` elements and `gemm` wrote each of them.
    unsafe { out.set_len(len) };
    let count = (batches * m * k * n) as u64;
    MULTIPLY_ADDS.fetch_add(count, Ordering::Relaxed);
    #[cfg(not(target_arch = "wasm32"))]
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    #[cfg(target_arch = "wasm32")]
    let nanos = 0;
    count_on_this_thread(nanos, count);
    Some((out, Shape::from(out_dims)))
}

/// Into how many parts the rows of a large `[m, k] · [k, n]` product are split, each part
/// computed on one thread ([`matrix_product`]; rayon hands the parts to the threads):
/// - deeper than `gemm`'s depth block, with at least [`SPLIT_ROWS`] rows a thread: one part
///   per thread. `gemm` on all threads meets them after each depth block, the weight
///   gradients' thousands of rows in about 50 blocks; each part runs its depth blocks without
///   waiting, at the cost of packing the right-hand side once per part.
/// - within one depth block, at least two blocks of [`ROW_BLOCK`] rows: blocks of about that
///   many rows. `gemm` on all threads ran the linear layers' products over a batch's rows
///   (26,112 by 128 by 512, say) at about two thirds of the rate it reaches on blocks of 1,024
///   rows, one per thread at a time.
/// - otherwise 1 (`gemm` splits the product itself).
///
/// Each output element is still one thread's sum in `gemm`'s order (its depth block depends on
/// the depth alone), so the values do not change, as long as every part has at least 64 rows
/// and none is a product of at most 64 × 64: `gemm` cuts the depth of those into blocks of its
/// own, and sends parts of a few rows to routes that sum in another order (its horizontal
/// kernels, matrix-vector products). Where the last part would break that (a product of about a
/// million rows cut into blocks), the product is not split.
#[cfg(not(target_arch = "wasm32"))]
fn row_parts(m: usize, n: usize, k: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads < 2 || m == 0 {
        return 1;
    }
    let parts = if k > DEPTH_BLOCK && m.div_ceil(threads) >= SPLIT_ROWS {
        threads
    } else if k <= DEPTH_BLOCK && m >= 2 * ROW_BLOCK {
        m.div_ceil(ROW_BLOCK)
    } else {
        return 1;
    };
    // The last part's rows (the others have `rows ≥ 1`, as `m ≥ 1`).
    let rows = m.div_ceil(parts);
    let last = (m - 1) % rows + 1;
    if last > SMALL_SIDE || (last == SMALL_SIDE && n > SMALL_SIDE) {
        parts
    } else {
        1
    }
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

/// The gradient of a row added to every row of a matrix (`[1, n]` broadcast over `[m, n]`),
/// given the sum's gradient: its sum over the rows (`float_sum_dim`, as Burn reduces a
/// broadcast), or for one row the gradient itself (nothing was broadcast, and Burn passes it on
/// as it is).
///
/// # Shapes
/// - grad `[m, n]`; output `[1, n]`
pub fn row_gradient<B: Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    match grad.shape()[0] {
        1 => grad,
        _ => B::float_sum_dim(grad, 0),
    }
}

/// `lhs · rhs + bias` as three operations of `B`: the product, the bias reshaped to a row,
/// and the row added to every row of the product (as Burn's `Linear::forward` adds it).
///
/// # Shapes
/// - lhs `[m, k]`, rhs `[k, n]`, bias `[n]`
/// - output `[m, n]`
fn product_then_add<B: Backend + ProductOps>(
    lhs: FloatTensor<B>,
    rhs: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let n = bias.shape().num_elements();
    let row = B::float_reshape(bias, Shape::new([1, n]));
    B::add_row(B::product(lhs, rhs), row)
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
        let bias_values =
            (bias.dtype() == DType::F32 && bias.shape().num_dims() == 1).then(|| values_of(&bias));
        match (gemm_values(&lhs, &rhs), bias_values) {
            (Some((mut values, shape)), Some(bias_values))
                if shape.num_dims() == 2 && bias_values.len() == shape[1] =>
            {
                add_rows(&mut values, bias_values);
                flex_tensor(values, shape)
            }
            _ => product_then_add::<Flex>(lhs, rhs, bias.clone()),
        }
    }

    /// In place and on rayon's threads (`add_rows`) where `x` is a contiguous f32 matrix held
    /// here alone (a product's fresh output); flex's broadcast add (one thread, the same sums)
    /// otherwise.
    fn add_row(mut x: FlexTensor, row: FlexTensor) -> FlexTensor {
        let row = row.to_contiguous();
        let len = x.shape().num_elements();
        if row_width(&x, &row).is_some()
            && x.is_contiguous()
            && x.layout().start_offset() == 0
            && let Some(values) = x.try_storage_mut::<f32>()
        {
            add_rows(&mut values[..len], values_of(&row));
            return x;
        }
        Flex::float_add(x, row)
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

    /// Composed of differentiable operations: the product, the reshape and the row's add, the
    /// nodes Burn's `Linear::forward` gives autodiff (Burn's dispatch backend has no `linear` of
    /// its own, so autodiff sees a matmul node, a reshape node and an add node). One backward
    /// node for all, with the same gradients, changed the graph's depths, by which autodiff
    /// orders its backward steps, and so the order in which some gradients are summed: a
    /// trained reward model's last bits.
    fn product_bias(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        product_then_add::<Self>(lhs, rhs, bias)
    }

    /// One node with Burn's add's gradients (`x`'s is the output's, the row's its sum over the
    /// rows, `float_sum_dim` as Burn reduces a broadcast), so the graph and every gradient are
    /// Burn's; only the forward runs as `B::add_row` (on flex: in place, on all threads, where
    /// flex's add runs on the calling thread).
    fn add_row(x: FloatTensor<Self>, row: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AddRowBackward;

        impl<B: Backend> Backward<B, 2> for AddRowBackward {
            type State = ();

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                binary::<B, _, _>(ops.parents, ops.node, grads, |grad| grad, row_gradient::<B>);
            }
        }

        let (x_node, row_node) = (x.node(), row.node());
        let (x, row) = (x.into_primitive(), row.into_primitive());
        match AddRowBackward
            .prepare::<C>([x_node, row_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), B::add_row(x, row)),
            OpsKind::UnTracked(prep) => prep.finish(B::add_row(x, row)),
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
            // Split across threads here, on one thread in flex's own product.
            (51, 128, 512),
            (96, 96, 96),
            (4, 0, 3),
        ] {
            let (a, b) = (matrix(m, k, 1, &device), matrix(k, n, 2, &device));
            same_as_burns(a.clone(), b.clone(), &format!("{m}x{k}x{n}"));
            same_as_burns(
                b.transpose(),
                a.transpose(),
                &format!("transposed {m}x{k}x{n}"),
            );
        }
    }

    /// `product(a, b)` has the bits of Burn's `matmul`.
    fn same_as_burns(a: Tensor<2>, b: Tensor<2>, what: &str) {
        assert_eq!(
            values(product(a.clone(), b.clone())),
            values(a.matmul(b)),
            "{what}"
        );
    }

    /// A thread pool of `count` threads, for the splits that depend on how many there are.
    fn threads(count: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(count)
            .build()
            .expect("a thread pool")
    }

    /// Products deeper than `gemm`'s depth block (as the weight gradients are, the left side a
    /// transposed view), their rows split between two threads: Burn's values.
    #[test]
    fn deep_products_split_by_rows_are_burns_bit_for_bit() {
        let device = Device::flex();
        threads(2).install(|| {
            for (m, k, n) in [(128, 1100, 65), (130, 1100, 64), (301, 2048, 128)] {
                assert_eq!(row_parts(m, n, k), 2, "{m}x{k}x{n}");
                let a = matrix(k, m, 1, &device).transpose();
                same_as_burns(a, matrix(k, n, 2, &device), &format!("{m}x{k}x{n}"));
            }
            assert_eq!(row_parts(120, 128, 2048), 1, "too few rows");
            assert_eq!(row_parts(128, 64, 1100), 1, "parts of 64 × 64");
        });
    }

    /// Products within one depth block over thousands of rows (a linear layer over a batch),
    /// their rows split into blocks of about `ROW_BLOCK`: Burn's values, plain and with the
    /// right side a transposed view (as in the backward pass).
    #[test]
    fn tall_products_split_into_row_blocks_are_burns_bit_for_bit() {
        let device = Device::flex();
        threads(2).install(|| {
            // The last shape's parts (683 × 64 × 4) run `model::small`, the whole product `gemm`.
            let shapes = [
                (2048, 128, 65, 2),
                (3001, 19, 128, 3),
                (2500, 64, 64, 3),
                (2049, 64, 4, 3),
            ];
            for (m, k, n, parts) in shapes {
                assert_eq!(row_parts(m, n, k), parts, "{m}x{k}x{n}");
                let a = matrix(m, k, 1, &device);
                let what = format!("{m}x{k}x{n}");
                same_as_burns(a.clone(), matrix(k, n, 2, &device), &what);
                let bt = matrix(n, k, 3, &device).transpose();
                same_as_burns(a, bt, &format!("{what}, the right side transposed"));
            }
            assert_eq!(row_parts(2047, 128, 512), 1, "fewer than two blocks");
            assert_eq!(row_parts(4096, 128, 512), 4, "four blocks");
            // 960 blocks of 1,024 rows and a last one of 64; then a last one of 2.
            assert_eq!(row_parts(983_104, 64, 64), 1, "a last part of 64 × 64");
            assert_eq!(row_parts(983_104, 128, 65), 961, "a last part of 64 × 65");
            assert_eq!(row_parts(1_046_530, 128, 128), 1, "a last part of 2 rows");
        });
        threads(1).install(|| assert_eq!(row_parts(4096, 128, 512), 1, "one thread"));
    }

    fn tensor4(dims: [usize; 4], seed: usize, device: &Device) -> Tensor<4> {
        let rows = dims[0] * dims[1] * dims[2];
        matrix(rows, dims[3], seed, device).reshape(dims)
    }

    fn values4(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    /// Batched products in flex's three regimes (2 × 15 M multiply-adds: one product at a time
    /// on all threads; 32 × 166 K: many small ones each on one thread; 4 × 60 and 6 × 7: on the
    /// calling thread, the last a matrix-vector product), the right side a transposed view,
    /// values and both gradients, against Burn's.
    #[test]
    fn batched_products_and_gradients_are_burns_bit_for_bit() {
        let device = Device::flex().autodiff();
        for (batch, m, k, n) in [
            ([1, 2], 300, 200, 250),
            ([16, 2], 51, 64, 51),
            ([2, 2], 3, 4, 5),
            ([3, 2], 1, 7, 1),
        ] {
            let run = |ours: bool| {
                let a = tensor4([batch[0], batch[1], m, k], 1, &device).require_grad();
                let b = tensor4([batch[0], batch[1], n, k], 2, &device).require_grad();
                // The right side as a transposed view, as attention's keys are.
                let bt = b.clone().transpose();
                let y = if ours {
                    product(a.clone(), bt)
                } else {
                    a.clone().matmul(bt)
                };
                let w = y.clone().detach().mul_scalar(0.37).sin();
                let grads = (y.clone() * w).sum().backward();
                (
                    values4(y),
                    a.grad(&grads).map(values4),
                    b.grad(&grads).map(values4),
                )
            };
            let (ours, burns) = (run(true), run(false));
            assert_eq!(ours, burns, "{batch:?} {m}x{k}x{n}");
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
