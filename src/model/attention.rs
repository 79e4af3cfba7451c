//! Multi-head attention on the CPU backend without autodiff, one (request, head) at a time.
//!
//! The transformer's attention is three projections of its input (queries, keys, values) and
//! five of Burn's operations: the scores `q kᵀ` as one batched product `[B, H, S, S]`, their
//! division by `√d_k`, the softmax, the product with the values, and the copy that puts the
//! heads side by side again (`swap_dims` and `reshape`). At batch 512
//! and S = 51 each of the first three writes 21 MB and the next reads it back, and each is
//! one backend call with its own output buffer. When nothing needs a gradient (ranking,
//! evaluation, the frozen reward model) [`attention`] runs all five for one request's heads
//! while its scores are in the cache, on rayon's threads one request at a time, and writes the
//! heads straight into their columns of the output. It reads the three projections as three
//! tensors ([`attention`]) or side by side in one `[B, S, 3d]` tensor ([`attention_joined`]):
//! for a batch the transformer computes them as one product against the three weights joined
//! (`model::transformer`), each value the same chain of multiply-adds as in its own product.
//!
//! The values are those five operations' bit for bit: the same products (`product::
//! matrix_product`, the routine `model::product` runs for each matrix of a batch), the same
//! division, the same softmax (`softmax::softmax_forward_block`, each row on its own), and a
//! copy.
//!
//! Only f32 tensors on flex devices without autodiff take it; everything else runs the
//! composition.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Tensor};
use core::mem::MaybeUninit;

use super::backend::Matrix;
use super::backend::{flex_tensor, is_flex, values_of};
use super::product::{count_multiply_adds, matrix_product};
use super::softmax::softmax_forward_block;

/// Requests whose attention has at least this many multiply-adds in all run on rayon's
/// threads, one request per task (the threshold of `model::product`'s batches).
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_FROM: usize = 128 * 128 * 128;

/// Multi-head attention as one backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait AttentionOps: Backend {
    /// `softmax(q kᵀ / √d_k) v` for each of `heads` heads (`d_k = d / heads` columns each), the
    /// heads side by side in the output's last dimension.
    ///
    /// # Shapes
    /// - q, k, v `[B, S, d]`
    /// - output `[B, S, d]`
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;

    /// [`AttentionOps::attention`] with `q`, `k` and `v` side by side in `qkv`'s last dimension.
    ///
    /// # Shapes
    /// - qkv `[B, S, 3d]`
    /// - output `[B, S, d]`
    fn attention_joined(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self>;
}

/// Whether the attention of `x` (its input, or a projection of it: the same width) takes
/// [`attention`]: f32 on a flex device without autodiff, its last dimension split evenly into
/// `heads` heads.
pub fn runs_here(x: &Tensor<3>, heads: usize) -> bool {
    let device = x.device();
    let d = x.dims()[2];
    x.dtype() == DType::F32
        && is_flex(&device)
        && !device.is_autodiff()
        && heads > 0
        && d.is_multiple_of(heads)
}

/// `softmax(q kᵀ / √d_k) v` per head, heads side by side: the values of the transformer's
/// composition (see the module's documentation). Call it where [`runs_here`] holds.
///
/// # Shapes
/// - q, k, v `[B, S, d]`
/// - output `[B, S, d]`
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(<burn::backend::Dispatch as AttentionOps>::attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        heads,
    ))
}

/// [`attention`] with `qkv` = `[q, k, v]` side by side (the same values).
///
/// # Shapes
/// - qkv `[B, S, 3d]`
/// - output `[B, S, d]`
pub fn attention_joined(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(<burn::backend::Dispatch as AttentionOps>::attention_joined(
        qkv.into_dispatch(),
        heads,
    ))
}

/// One request's attention, all heads, into its `[S, d]` rows of the output; `q`, `k` and `v`
/// hold its `S` rows `stride` apart (`d` for tensors of their own, `3d` side by side).
///
/// # Shapes
/// - q, k, v `[S, d]` (row-major, rows `stride` apart), out `[S, d]`
fn request(
    [q, k, v]: [&[f32]; 3],
    stride: usize,
    out: &mut [MaybeUninit<f32>],
    [s, d, heads]: [usize; 3],
) {
    let dk = d / heads;
    let scale = (dk as f32).sqrt();
    let (mut scores, mut weights) = (vec![0.0f32; s * s], vec![0.0f32; s * s]);
    let mut context = vec![0.0f32; s * dk];
    for h in 0..heads {
        let column = |x: &[f32], row: isize, col: isize| Matrix {
            at: x[h * dk..].as_ptr(),
            row,
            col,
        };
        let (d_, s_) = (stride as isize, s as isize);
        // SAFETY: head `h`'s `[S, d_k]` columns of `q`, `k` and `v` (rows `stride` apart) lie
        // in their slices (by the callers); `kᵀ` reads the same elements as `k`; `weights` is
        // `[S, S]` row-major; the outputs are initialised buffers of the products' sizes.
        unsafe {
            matrix_product(
                [s, s, dk],
                scores.as_mut_ptr(),
                column(q, d_, 1),
                column(k, 1, d_),
                gemm::Parallelism::None,
            );
        }
        // The division as flex's `div_scalar` computes it.
        for score in scores.iter_mut() {
            *score /= scale;
        }
        softmax_forward_block(&scores, &mut weights, s);
        // SAFETY: as above.
        unsafe {
            let weights = Matrix {
                at: weights.as_ptr(),
                row: s_,
                col: 1,
            };
            matrix_product(
                [s, dk, s],
                context.as_mut_ptr(),
                weights,
                column(v, d_, 1),
                gemm::Parallelism::None,
            );
        }
        for (row, values) in out.chunks_exact_mut(d).zip(context.chunks_exact(dk)) {
            row[h * dk..(h + 1) * dk].write_copy_of_slice(values);
        }
    }
}

impl AttentionOps for Flex {
    fn attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, heads: usize) -> FlexTensor {
        let (q, k, v) = (q.to_contiguous(), k.to_contiguous(), v.to_contiguous());
        let shape = q.shape();
        let [s, d] = [shape[1], shape[2]];
        let (q, k, v) = (values_of(&q), values_of(&k), values_of(&v));
        run_requests(shape, heads, |i, len, out| {
            let [q, k, v] = [q, k, v].map(|x| &x[i * len..(i + 1) * len]);
            request([q, k, v], d, out, [s, d, heads]);
        })
    }

    fn attention_joined(qkv: FlexTensor, heads: usize) -> FlexTensor {
        let qkv = qkv.to_contiguous();
        let joined = qkv.shape();
        let [b, s, d] = [joined[0], joined[1], joined[2] / 3];
        assert!(
            joined[2] == 3 * d,
            "q, k and v side by side: width {}",
            joined[2]
        );
        let qkv = values_of(&qkv);
        run_requests(Shape::new([b, s, d]), heads, |i, len, out| {
            // The request's `[S, 3d]` rows: q, then k `d` in, then v `2d` in.
            let rows = &qkv[3 * i * len..3 * (i + 1) * len];
            let [q, k, v] = [0, d, 2 * d].map(|from| &rows[from..]);
            request([q, k, v], 3 * d, out, [s, d, heads]);
        })
    }
}

/// The `[B, S, d]` output of `one(i, S · d, rows)` for each request `i`, which writes request
/// `i`'s `S · d` values (its `heads` heads side by side) into `rows`: on rayon's threads one
/// request per task where there is enough work.
fn run_requests(
    shape: Shape,
    heads: usize,
    one: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync,
) -> FlexTensor {
    let [b, s, d] = [shape[0], shape[1], shape[2]];
    // Every column of the output is written only where the heads split it evenly.
    assert!(
        heads > 0 && d.is_multiple_of(heads),
        "{heads} heads for width {d}"
    );
    let len = b * s * d;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let rows = (s * d).max(1);
    let one = |(i, out): (usize, &mut [MaybeUninit<f32>])| one(i, rows, out);
    let spare = &mut out.spare_capacity_mut()[..len];
    #[cfg(not(target_arch = "wasm32"))]
    if b > 1 && len * s * 2 >= PARALLEL_FROM {
        use rayon::prelude::*;
        spare.par_chunks_mut(rows).enumerate().for_each(one);
    } else {
        spare.chunks_mut(rows).enumerate().for_each(one);
    }
    #[cfg(target_arch = "wasm32")]
    spare.chunks_mut(rows).enumerate().for_each(one);
    // SAFETY: each request wrote every column of each of its rows (its heads side by side).
    unsafe { out.set_len(len) };
    // Two products per head: `[S, d_k] · [d_k, S]` and `[S, S] · [S, d_k]`.
    count_multiply_adds((2 * len * s) as u64);
    flex_tensor(out, shape)
}

/// Not taken under autodiff ([`runs_here`] declines such devices): the inner backend's
/// attention, untracked.
impl<B: Backend + AttentionOps, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        Self::from_inner(<B as AttentionOps>::attention(
            Self::inner(q),
            Self::inner(k),
            Self::inner(v),
            heads,
        ))
    }

    fn attention_joined(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        Self::from_inner(<B as AttentionOps>::attention_joined(
            Self::inner(qkv),
            heads,
        ))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::softmax as burns_softmax;
    use burn::tensor::{Device, TensorData};

    use super::super::product::multiply_adds;
    use super::*;

    fn values(tensor: Tensor<3>) -> Vec<u32> {
        let values = tensor.into_data().try_into_vec_as::<f32>().expect("f32");
        values.iter().map(|x| x.to_bits()).collect()
    }

    /// A fixed, non-trivial tensor (no random stream: tests share the device's).
    fn fixed(dims: [usize; 3], phase: f32, device: &Device) -> Tensor<3> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.731 + phase).sin() * 3.0)
            .collect();
        Tensor::from_data(TensorData::new(data, dims), device)
    }

    /// The transformer's composition: scores, division, softmax, weighted values, heads side by
    /// side.
    fn composed(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, ours: bool) -> Tensor<3> {
        let [b, s, d] = q.dims();
        let dk = d / heads;
        let split = |x: Tensor<3>| x.reshape([b, s, heads, dk]).swap_dims(1, 2);
        let (q, k, v) = (split(q), split(k), split(v));
        let product = |x: Tensor<4>, y: Tensor<4>| {
            if ours {
                super::super::product::product(x, y)
            } else {
                x.matmul(y)
            }
        };
        let scores = product(q, k.transpose()).div_scalar((dk as f32).sqrt());
        let weights = if ours {
            super::super::softmax::softmax(scores, 3)
        } else {
            burns_softmax(scores, 3)
        };
        product(weights, v).swap_dims(1, 2).reshape([b, s, d])
    }

    #[test]
    fn the_fused_attention_is_the_composition_bit_for_bit() {
        let device = Device::flex();
        // The generator's (51 tokens, 4 heads of 32), the reward model's lists (6 tokens, 4
        // heads of 16), one request on one thread and odd sizes.
        for (dims, heads) in [
            ([40, 51, 128], 4),
            ([64, 6, 64], 4),
            ([1, 51, 128], 4),
            ([3, 7, 12], 3),
            ([2, 1, 8], 2),
        ] {
            let (q, k, v) = (
                fixed(dims, 0.0, &device),
                fixed(dims, 1.0, &device),
                fixed(dims, 2.0, &device),
            );
            assert!(runs_here(&q, heads));
            let before = multiply_adds();
            let fused = attention(q.clone(), k.clone(), v.clone(), heads);
            let joined = Tensor::cat(vec![q.clone(), k.clone(), v.clone()], 2);
            assert_eq!(
                values(attention_joined(joined, heads)),
                values(fused.clone()),
                "{dims:?}, joined"
            );
            // Its products are counted (other tests' may be too, meanwhile).
            let [b, s, d] = dims;
            assert!(multiply_adds() - before >= (2 * b * s * s * d) as u64);
            let reference = composed(q.clone(), k.clone(), v.clone(), heads, true);
            assert_eq!(values(fused), values(reference.clone()), "{dims:?}");
            // And the composition of Burn's own operations gives the same values.
            assert_eq!(
                values(reference),
                values(composed(q, k, v, heads, false)),
                "{dims:?}, Burn's operations"
            );
        }
    }

    #[test]
    fn devices_with_autodiff_and_uneven_heads_take_the_composition() {
        let device = Device::flex();
        assert!(!runs_here(&fixed([1, 4, 10], 0.0, &device), 4));
        assert!(!runs_here(
            &fixed([1, 4, 8], 0.0, &device.clone().autodiff()),
            4
        ));
        assert!(!runs_here(&fixed([1, 4, 8], 0.0, &device), 0));
    }
}
