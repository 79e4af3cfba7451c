//! Tiny matrix products without `gemm`'s per-call cost.
//!
//! The reward model's attention within a list multiplies each head's `[L, L]` probabilities by
//! its `[L, d / heads]` values: at batch 512, K = 20 and L = 6 that is 43,008 products of
//! `[6, 6] · [6, 16]` per layer, and `gemm` spent about 16 ms on each batch of them (0.4 µs a
//! product, almost all of it the call's own set-up). Here each is three plain loops.
//!
//! The values are `gemm`'s bit for bit. For these shapes `gemm`'s general kernel computes each
//! output element as one chain of fused multiply-adds over the inner dimension in order,
//! starting from zero, which is what [`product`] does. Where `gemm` sums in another order
//! [`fits`] declines: outputs of at most 16 × 16 whose operands both run along the inner
//! dimension (a route of its own), an inner size of 2 (found by the test, with `gemm`'s AVX2
//! and AVX-512 kernels alike), and processors without FMA (there `gemm` multiplies and adds
//! apart). A test compares both on every shape [`fits`] takes, with either left-hand layout.
//!
//! x86-64 only; elsewhere `gemm` runs every product.

/// The most rows, output columns and inner size a tiny product may have.
const MAX: usize = 16;

/// Whether a `[m, k] · [k, n]` product whose right-hand side's column stride is `rhs_col`
/// takes [`product`] on this processor.
pub fn fits(m: usize, n: usize, k: usize, rhs_col: isize) -> bool {
    (2..=MAX).contains(&m)
        && (2..=MAX).contains(&n)
        && (3..=MAX).contains(&k)
        && rhs_col == 1
        && std::arch::is_x86_feature_detected!("fma")
}

/// `dst = lhs · rhs`, row-major `[m, n]`, each element one chain of fused multiply-adds over
/// the inner dimension in order.
///
/// # Safety
/// [`fits`] holds for `[m, n, k]`; `lhs` (pointer, row stride, column stride) addresses an
/// `[m, k]` f32 matrix and `rhs` (pointer, row stride) a `[k, n]` one whose rows are contiguous
/// (strides in elements), and `dst` points at `m · n` writable f32.
#[target_feature(enable = "fma")]
pub unsafe fn product(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    (lhs, lhs_row, lhs_col): (*const f32, isize, isize),
    (rhs, rhs_row): (*const f32, isize),
) {
    let mut acc = [0f32; MAX];
    for i in 0..m {
        let acc = &mut acc[..n];
        acc.fill(0.0);
        for p in 0..k {
            // SAFETY: `i < m`, `p < k` and `j < n` address elements of the matrices.
            let a = unsafe { *lhs.offset(i as isize * lhs_row + p as isize * lhs_col) };
            let row = unsafe { std::slice::from_raw_parts(rhs.offset(p as isize * rhs_row), n) };
            for (sum, &b) in acc.iter_mut().zip(row) {
                *sum = a.mul_add(b, *sum);
            }
        }
        // SAFETY: row `i` of `dst` holds `n` writable f32.
        unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), dst.add(i * n), n) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::Matrix;
    use super::super::small::reference::{gemm_product, values};
    use super::*;

    #[test]
    fn tiny_products_are_gemms_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("fma") {
            return;
        }
        // Every shape `fits` takes, with the left-hand side row-major and transposed, and the
        // right-hand side's rows spaced as one head's in a `[L, 4 · 16]` block.
        let (lhs, rhs) = (values(MAX * MAX, 1), values(MAX * 64, 2));
        for m in 2..=MAX {
            for n in 2..=MAX {
                for k in 3..=MAX {
                    assert!(fits(m, n, k, 1));
                    for (lhs_row, lhs_col) in [(k as isize, 1), (1, m as isize)] {
                        let mut ours = vec![0f32; m * n];
                        let left = Matrix {
                            at: lhs.as_ptr(),
                            row: lhs_row,
                            col: lhs_col,
                        };
                        let right = Matrix {
                            at: rhs.as_ptr(),
                            row: 64,
                            col: 1,
                        };
                        // SAFETY: the strides address `[m, k]` within `MAX²` values and
                        // `[k, n]` within `MAX · 64`; `ours` holds `m · n`.
                        let theirs = unsafe {
                            product(
                                [m, n, k],
                                ours.as_mut_ptr(),
                                (left.at, left.row, left.col),
                                (right.at, right.row),
                            );
                            gemm_product([m, n, k], left, right)
                        };
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&ours), bits(&theirs), "[{m}, {k}] · [{k}, {n}]");
                    }
                }
            }
        }
        assert!(
            !fits(6, 6, 16, 64),
            "a right-hand side along the inner dimension"
        );
        assert!(
            !fits(6, 16, 2, 1),
            "an inner size of 2, where gemm sums in another order"
        );
        assert!(
            !fits(1, 16, 6, 1) && !fits(6, 1, 6, 1),
            "matrix-vector products"
        );
        assert!(!fits(17, 16, 6, 1) && !fits(6, 17, 6, 1) && !fits(6, 16, 17, 1));
    }
}
