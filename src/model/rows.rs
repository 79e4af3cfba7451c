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

use burn::nn::Linear;
use burn::tensor::Tensor;

/// `layer` applied to every row of `input` at once.
///
/// # Shapes
/// - input `[.., d_in]`
/// - output `[.., d_out]`
pub fn linear_rows<const D: usize>(layer: &Linear, input: Tensor<D>) -> Tensor<D> {
    if D <= 2 {
        return layer.forward(input);
    }
    let dims = input.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let output = layer.forward(input.reshape([rows, d_in]));
    let mut out_dims = dims;
    out_dims[D - 1] = output.dims()[1];
    output.reshape(out_dims)
}

#[cfg(test)]
mod tests {
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
}
