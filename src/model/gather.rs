//! Small tensor helpers shared by the models.

use burn::tensor::{Device, Distribution, IndexingUpdateOp, Int, Tensor};

use super::backend::is_flex;

/// Rows of `values` picked by `index` per batch element.
///
/// On the CPU backend the rows are taken with one `select` over the flattened `[B·N, d]` rows
/// (whole rows copied, and in the backward pass added back row by row), which is faster there
/// than a `gather` along dim 1 with an index per element; elsewhere the `gather` is one kernel
/// where the `select` takes three. Both give the same values and gradients.
///
/// # Shapes
/// - values: `[B, N, d]`, index: `[B, M]` (values in `0..N`)
/// - output: `[B, M, d]`
pub fn gather_rows(values: Tensor<3>, index: Tensor<2, Int>) -> Tensor<3> {
    if is_flex(&values.device()) && values.dims()[1] > 0 {
        select_rows(values, index)
    } else {
        gather_along_rows(values, index)
    }
}

/// [`gather_rows`] as one `select` over the flattened rows.
///
/// # Shapes
/// - values: `[B, N, d]` (N > 0), index: `[B, M]`
/// - output: `[B, M, d]`
fn select_rows(values: Tensor<3>, index: Tensor<2, Int>) -> Tensor<3> {
    let [b, m] = index.dims();
    let [_, n, d] = values.dims();
    let offsets =
        Tensor::<1, Int>::arange_step(0..(b * n) as i64, n, &index.device()).reshape([b, 1]);
    let rows = (index + offsets).reshape([b * m]);
    values
        .reshape([b * n, d])
        .select(0, rows)
        .reshape([b, m, d])
}

/// [`gather_rows`] as a `gather` along dim 1.
///
/// # Shapes
/// - values: `[B, N, d]`, index: `[B, M]`
/// - output: `[B, M, d]`
fn gather_along_rows(values: Tensor<3>, index: Tensor<2, Int>) -> Tensor<3> {
    let [b, m] = index.dims();
    let d = values.dims()[2];
    values.gather(1, index.reshape([b, m, 1]).expand([b, m, d]))
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
    top_indices(perturbed, l)
}

/// Indices of the `l` largest entries along the last dim, largest first, by repeated argmax.
/// (Burn's wgpu backend sorts by reading the tensor back to the host, which a browser cannot
/// wait for; L argmax passes stay on the device and are cheap for small L.)
///
/// # Shapes
/// - values: `[B, K, N]` (finite)
/// - output: `[B, K, min(L, N)]`
pub fn top_indices(values: Tensor<3>, l: usize) -> Tensor<3, Int> {
    let [b, k, n] = values.dims();
    let device = values.device();
    let taken = Tensor::<3>::full([b, k, 1], -1e30, &device);
    let mut values = values;
    let mut picks = Vec::with_capacity(l.min(n));
    for _ in 0..l.min(n) {
        let pick = values.clone().argmax(2); // [B, K, 1]
        values = values.scatter(2, pick.clone(), taken.clone(), IndexingUpdateOp::Add);
        picks.push(pick);
    }
    Tensor::cat(picks, 2)
}

/// One-hot encoding of `indices` along a new last dim of size `n`, built with a scatter (Burn's
/// `one_hot` checks its argument by reading it back to the host, which a browser cannot wait
/// for).
///
/// # Shapes
/// - indices: `[B, K, L]` (values in `0..N`)
/// - output: `[B, K, L, N]`
pub fn one_hot(indices: Tensor<3, Int>, n: usize) -> Tensor<4> {
    let [b, k, l] = indices.dims();
    let device = indices.device();
    Tensor::<4>::zeros([b, k, l, n], &device).scatter(
        3,
        indices.reshape([b, k, l, 1]),
        Tensor::<4>::ones([b, k, l, 1], &device),
        IndexingUpdateOp::Add,
    )
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;

    #[test]
    fn selected_rows_and_their_gradients_are_the_gathered_ones() {
        let device = Device::flex().autodiff();
        let (b, n, d, m) = (3, 5, 4, 7);
        let values: Vec<f32> = (0..b * n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        // Repeated rows (their gradients add up) and every request's own rows.
        let index: Vec<i64> = (0..b * m).map(|i| ((i * 3) % n) as i64).collect();
        let weights: Vec<f32> = (0..b * m * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let run = |select: bool| {
            let x = Tensor::<3>::from_data(TensorData::new(values.clone(), [b, n, d]), &device)
                .require_grad();
            let index =
                Tensor::<2, Int>::from_data(TensorData::new(index.clone(), [b, m]), &device);
            let w = Tensor::<3>::from_data(TensorData::new(weights.clone(), [b, m, d]), &device);
            let rows = if select {
                select_rows(x.clone(), index)
            } else {
                gather_along_rows(x.clone(), index)
            };
            let grads = (rows.clone() * w).sum().backward();
            let grad = x.grad(&grads).expect("a gradient");
            (
                rows.into_data().try_to_vec::<f32>().expect("f32"),
                grad.into_data().try_to_vec::<f32>().expect("f32"),
            )
        };
        let (rows, grad) = run(true);
        let (expected_rows, expected_grad) = run(false);
        assert_eq!(rows, expected_rows);
        assert_eq!(grad, expected_grad);
        // Request 1's first row is its own candidate, not request 0's.
        let first = (n + index[m] as usize) * d;
        assert_eq!(rows[m * d..m * d + d], values[first..first + d]);
    }
}
