//! Small tensor helpers shared by the models.

use burn::tensor::{Int, Tensor};

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
