//! Linear layers applied to all rows of a batch as one matrix product.
//!
//! Burn 0.22.1 runs `Linear::forward` on an input with leading dimensions (`[B, S, d]`,
//! `[B, K, L, d]`) as a batched matrix product against the weight broadcast over the batch,
//! unless its GPU tiling rule folds the batch into the rows (it does not for the shapes here).
//! On the CPU backend that is B small products, and autodiff then builds the weight's gradient
//! as one `[d_in, d_out]` product per batch entry before summing them: for the decoder's MLP at
//! batch 512 and K = 20, 10,752 products and 2.8 GB of partial gradients per step. Folding the
//! leading dimensions into the rows makes the forward and both gradients one product each.
//! The result is the same function; only the order of floating-point sums differs.
//!
//! The product and the bias run as [`product_bias`] (flex: the output written once, the bias
//! added on all threads), with the values of `Linear::forward` on the folded rows, bit for bit.
//! A layer followed by GELU runs as [`linear_gelu`]: on flex the product, then the bias and
//! GELU in one pass ([`bias_gelu`]), the bits of the layer and then [`gelu`].
//!
//! On a GPU (CubeCL's wgpu) the bias is added after the rows are unfolded. Burn's fusion ends a
//! block of element-wise operations at a reshape, so a bias added before it runs as a kernel
//! of its own; added after it, it joins what follows (GELU, a residual sum, a layer norm's
//! reduction). Each element gets the same sum; only the bias gradient's sum runs over the
//! leading dimensions instead of the folded rows.

use burn::nn::Linear;
use burn::tensor::Tensor;

use super::backend::is_cube;
use super::gelu::{bias_gelu, gelu, runs_chunked};
use super::product::{product, product_bias};

/// `layer` applied to every row of `input` at once.
///
/// # Shapes
/// - input `[.., d_in]`
/// - output `[.., d_out]`
pub fn linear_rows<const D: usize>(layer: &Linear, input: Tensor<D>) -> Tensor<D> {
    if D < 2 {
        return layer.forward(input);
    }
    let (x, out_dims) = fold(layer, input);
    if is_cube(&x.device()) {
        let output = product(x, layer.weight.val()).reshape(out_dims);
        return match &layer.bias {
            Some(bias) => output + bias.val().unsqueeze::<D>(),
            None => output,
        };
    }
    rows_times(layer, x).reshape(out_dims)
}

/// `gelu(layer(input))`, the exact GELU. On the CPU backend the bias and GELU run as one
/// operation ([`bias_gelu`]: one pass over the product's output rather than one for the bias
/// and one for GELU); elsewhere [`linear_rows`], then [`gelu`].
///
/// # Shapes
/// - input `[.., d_in]`
/// - output `[.., d_out]`
pub fn linear_gelu<const D: usize>(layer: &Linear, input: Tensor<D>) -> Tensor<D> {
    match &layer.bias {
        Some(bias) if D >= 2 && runs_chunked(&input) => {
            let (x, out_dims) = fold(layer, input);
            bias_gelu(product(x, layer.weight.val()), bias.val()).reshape(out_dims)
        }
        _ => gelu(linear_rows(layer, input)),
    }
}

/// `input`'s rows as one matrix, and the dimensions of `layer`'s output for them.
///
/// # Shapes
/// - input `[.., d_in]` (at least two dimensions)
/// - output: the rows `[rows, d_in]`, and `[.., d_out]`
fn fold<const D: usize>(layer: &Linear, input: Tensor<D>) -> (Tensor<2>, [usize; D]) {
    let dims = input.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out_dims = dims;
    out_dims[D - 1] = layer.weight.dims()[1];
    (input.reshape([rows, dims[D - 1]]), out_dims)
}

/// `x · W + b`, as `Linear::forward` computes it for a matrix (the bias as a `[1, d_out]` row).
///
/// # Shapes
/// - x `[rows, d_in]`
/// - output `[rows, d_out]`
fn rows_times(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    match &layer.bias {
        Some(bias) => product_bias(x, layer.weight.val(), bias.val()),
        None => product(x, layer.weight.val()),
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution};

    use super::*;

    #[test]
    fn folded_rows_give_burns_linear_output() {
        let device = Device::flex();
        device.seed(4);
        let layer = LinearConfig::new(8, 5).init(&device);
        let input = Tensor::<4>::random([2, 3, 7, 8], Distribution::Normal(0.0, 1.0), &device);
        let folded = linear_rows(&layer, input.clone());
        assert_eq!(folded.dims(), [2, 3, 7, 5]);
        let diff: f32 = (folded - layer.forward(input)).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }

    /// The values' bits (so that `-0.0` and `0.0` differ).
    fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
        let values = t.into_data().try_to_vec::<f32>().expect("f32 data");
        values.into_iter().map(f32::to_bits).collect()
    }

    /// The output of `f(layer, input)` and the gradients of a loss on it: the input's, the
    /// weight's and the bias's.
    type Run = (
        Vec<u32>,
        Option<Vec<u32>>,
        Option<Vec<u32>>,
        Option<Vec<u32>>,
    );

    fn forward_and_gradients<const D: usize>(
        layer: &Linear,
        input: Tensor<D>,
        f: impl Fn(&Linear, Tensor<D>) -> Tensor<D>,
    ) -> Run {
        let x = input.require_grad();
        let y = f(layer, x.clone());
        let out = bits(y.clone());
        let grads = (y.clone() * y.detach().sin()).sum().backward();
        let bias = layer.bias.as_ref().expect("a bias").grad(&grads);
        (
            out,
            x.grad(&grads).map(bits),
            layer.weight.grad(&grads).map(bits),
            bias.map(bits),
        )
    }

    /// On a matrix under autodiff (the product, then `ProductOps::add_row`'s node with Burn's
    /// add's gradients), the same bits as Burn's `Linear::forward`, and the same gradients: for
    /// one row (nothing broadcast), a small matrix and two large enough for the threaded
    /// in-place add. The plain device's threaded bias is tested in `model::product`.
    #[test]
    fn rows_give_burns_linear_bits_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(5);
        for (m, k, n) in [(1, 5, 3), (7, 64, 2), (1000, 64, 96), (3000, 128, 96)] {
            let layer = LinearConfig::new(k, n).init(&device);
            let input = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                forward_and_gradients(&layer, input.clone(), |layer, x| {
                    if ours {
                        linear_rows(layer, x)
                    } else {
                        layer.forward(x)
                    }
                })
            };
            let (ours, burns) = (run(true), run(false));
            assert!(ours.1.is_some() && ours.2.is_some() && ours.3.is_some());
            assert_eq!(ours, burns, "{m}x{k}x{n}");
        }
    }

    /// [`linear_gelu`] (the product, then `GeluOps::bias_gelu`'s node) gives the bits of the
    /// layer followed by GELU, and the same gradients, under autodiff (the output into the
    /// product's buffer with GELU's slope kept beside it, the gradient into the upstream one)
    /// and on a plain device (the output into the product's), for one row, a small matrix, and
    /// inputs large enough for the threaded pass.
    #[test]
    fn linear_gelu_gives_the_bits_and_gradients_of_the_layer_then_gelu() {
        let device = Device::flex();
        let autodiff = device.clone().autodiff();
        autodiff.seed(6);
        for (m, k, n) in [(1, 5, 3), (7, 64, 2), (1000, 64, 96), (300, 128, 512)] {
            let layer = LinearConfig::new(k, n).init(&autodiff);
            // One request of m rows, then two: the first case is a single row.
            let requests = if m == 1 { 1 } else { 2 };
            let input =
                Tensor::<3>::random([requests, m, k], Distribution::Normal(0.0, 1.0), &autodiff);
            let run = |fused: bool| {
                forward_and_gradients(&layer, input.clone(), |layer, x| {
                    if fused {
                        linear_gelu(layer, x)
                    } else {
                        gelu(linear_rows(layer, x))
                    }
                })
            };
            let (fused, apart) = (run(true), run(false));
            assert!(fused.1.is_some() && fused.2.is_some() && fused.3.is_some());
            assert_eq!(fused, apart, "{m}x{k}x{n}");

            let plain = layer.valid();
            let x = input.clone().inner();
            let y = linear_gelu(&plain, x.clone());
            assert_eq!(y.dims(), [requests, m, n]);
            assert_eq!(bits(y), bits(gelu(linear_rows(&plain, x))));
        }
    }
}
