//! Small tensor helpers shared by the models.

use burn::tensor::{Device, Distribution, Int, Tensor};

/// Rows of `values` picked by `index` per batch element.
///
/// # Shapes
/// - values: `[B, N, d]`, index: `[B, M]` (values in `0..N`)
/// - output: `[B, M, d]`
pub fn gather_rows(values: Tensor<3>, index: Tensor<2, Int>) -> Tensor<3> {
    let [b, m] = index.dims();
    let d = values.dims()[2];
    let index = index.reshape([b, m, 1]).expand([b, m, d]);
    values.gather(1, index)
}

/// Repeats every batch element `k` times along a new second dim.
///
/// # Shapes
/// - x: `[B, d]` → `[B, K, d]`
pub fn repeat_group(x: Tensor<2>, k: usize) -> Tensor<3> {
    let [b, d] = x.dims();
    x.reshape([b, 1, d]).expand([b, k, d])
}

/// Standard Gumbel noise.
pub fn gumbel<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    let u = Tensor::<D>::random(shape, Distribution::Uniform(1e-9, 1.0), device);
    u.log().neg().log().neg()
}

/// `k` Plackett–Luce lists of length `l` per row of `scores` (Gumbel-top-l of
/// `scores / temperature`): candidate positions, best first.
///
/// # Shapes
/// - scores: `[B, N]` (log-weights)
/// - output: `[B, K, L]`
pub fn plackett_luce(scores: Tensor<2>, k: usize, l: usize, temperature: f32) -> Tensor<3, Int> {
    let [b, n] = scores.dims();
    let device = scores.device();
    let perturbed =
        repeat_group(scores.div_scalar(temperature.max(1e-6)), k) + gumbel([b, k, n], &device);
    let (_, order) = perturbed.sort_descending_with_indices(2);
    order.slice([0..b, 0..k, 0..l.min(n)])
}
