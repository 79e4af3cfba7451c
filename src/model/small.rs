//! Small matrix products in AVX2 without `gemm`'s per-call cost.
//!
//! A GoalRank step runs tens of thousands of small products a batch: each head's attention in
//! the transformer (`[51, 32] · [32, 51]` and `[51, 51] · [51, 32]`, 2,048 of each at batch
//! 512, and their gradients), and the pointer decoder's scores (`[20, 128] · [128, 50]` and
//! its gradients, one per request). `gemm` packs both operands and sets up its blocking for
//! each call, about 1–2 µs, as long as the arithmetic of such a product: on this project's
//! reference machine it ran these shapes at 40–80 GFLOP/s. Here each is one pass of a 6 × 16
//! register tile over the inner dimension, the right-hand side read in place where its rows
//! are contiguous, and otherwise transposed into a buffer first (8 × 8 at a time).
//!
//! The values are `gemm`'s bit for bit. For these shapes `gemm` computes each output element
//! as one chain of fused multiply-adds over the inner dimension in order, starting from zero
//! (its depth blocks hold at least 512 terms), which is what [`product`] does. Where `gemm`
//! sums in another order, or runs a route of its own, [`fits`] declines: an inner size
//! above 512 or below 3, one row or one column (matrix-vector routes), outputs of at most 256
//! elements whose operands both run along the inner dimension (its horizontal kernels), and
//! processors without AVX2 and FMA. A test compares both on shapes of every kind [`fits`]
//! takes.
//!
//! x86-64 only; elsewhere `gemm` runs every product.

use std::arch::x86_64::{
    __m256, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_permute2f128_ps,
    _mm256_setzero_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
};
use std::cell::RefCell;

use super::backend::Matrix;

/// The largest inner size: `gemm` sums at least 512 terms in one chain.
const MAX_DEPTH: usize = 512;

/// Rows of the register tile.
const TILE_ROWS: usize = 6;

/// Columns of the register tile (two vectors of 8).
const TILE_COLUMNS: usize = 16;

/// Whether a `[m, k] · [k, n]` product whose left-hand side's column stride is `lhs_col` and
/// right-hand side's row stride is `rhs_row` takes [`product`] on this processor.
pub fn fits(m: usize, n: usize, k: usize, lhs_col: isize, rhs_row: isize) -> bool {
    let horizontal = lhs_col == 1 && rhs_row == 1 && m * n <= 256;
    m >= 2
        && n >= 2
        && (3..=MAX_DEPTH).contains(&k)
        && !horizontal
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

thread_local! {
    /// The packed right-hand side, one per thread, reused from call to call.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dst = lhs · rhs`, row-major `[m, n]`, each element one chain of fused multiply-adds over
/// the inner dimension in order.
///
/// # Safety
/// [`fits`] holds for the shape and strides; `lhs` addresses an `[m, k]` f32 matrix and `rhs`
/// a `[k, n]` one, and `dst` points at `m · n` writable f32 that overlap neither.
pub unsafe fn product([m, n, k]: [usize; 3], dst: *mut f32, lhs: Matrix, rhs: Matrix) {
    let whole = n / TILE_COLUMNS * TILE_COLUMNS;
    let width = n - whole;
    PACKED.with_borrow_mut(|packed| {
        // The right-hand side's rows as the tiles read them: in place where they are
        // contiguous, with the columns after the last whole tile packed (zero-padded) apart;
        // all of it packed otherwise.
        let (rhs, rest) = if rhs.col == 1 {
            if width > 0 {
                // SAFETY: the columns `whole..n` lie in `rhs`.
                unsafe { pack(packed, k, rhs.from(0, whole), width) };
            }
            let rest = Matrix {
                at: packed.as_ptr(),
                row: padded(width) as isize,
                col: 1,
            };
            (rhs, rest)
        } else {
            // SAFETY: all `n` columns lie in `rhs`.
            unsafe { pack(packed, k, rhs, n) };
            let all = Matrix {
                at: packed.as_ptr(),
                row: padded(n) as isize,
                col: 1,
            };
            // SAFETY: `whole <= n`, a column of the packed rows.
            (all, unsafe { all.from(0, whole) })
        };
        for j in (0..whole).step_by(TILE_COLUMNS) {
            // SAFETY: columns `j..j + 16` lie in `rhs` and in `dst`'s rows.
            unsafe { rows::<2>([m, k], lhs, rhs.from(0, j), dst.add(j), n, TILE_COLUMNS) };
        }
        // SAFETY: the packed rest holds `k` rows of `padded(width)` (8 or 16) columns, the
        // first `width` of them the right-hand side's last columns, which `dst`'s rows hold.
        unsafe {
            if width > 8 {
                rows::<2>([m, k], lhs, rest, dst.add(whole), n, width);
            } else if width > 0 {
                rows::<1>([m, k], lhs, rest, dst.add(whole), n, width);
            }
        }
    });
}

/// `width` rounded up to a multiple of 8: the row stride of packed values.
fn padded(width: usize) -> usize {
    width.div_ceil(8) * 8
}

/// Columns `0..width` of `rhs`'s `k` rows into `packed`, row by row at a stride of
/// [`padded`]`(width)` (the padding zeroed).
///
/// # Safety
/// `rhs` addresses a `[k, width]` f32 matrix, `width > 0`, and AVX2 is present.
unsafe fn pack(packed: &mut Vec<f32>, k: usize, rhs: Matrix, width: usize) {
    let stride = padded(width);
    packed.clear();
    packed.resize(k * stride, 0.0);
    if rhs.col == 1 {
        for (p, row) in packed.chunks_exact_mut(stride).enumerate() {
            // SAFETY: row `p` of `rhs` holds `width` contiguous values.
            let from = unsafe { std::slice::from_raw_parts(rhs.from(p, 0).at, width) };
            row[..width].copy_from_slice(from);
        }
    } else if rhs.row == 1 {
        // SAFETY: `fits` checked AVX2; by the caller for the matrix.
        unsafe { transpose(packed, k, rhs, width, stride) };
    } else {
        for (p, row) in packed.chunks_exact_mut(stride).enumerate() {
            for (j, value) in row[..width].iter_mut().enumerate() {
                // SAFETY: element `(p, j)` lies in `rhs`.
                *value = unsafe { *rhs.from(p, j).at };
            }
        }
    }
}

/// `packed[p · stride + j] = rhs[p, j]` for a right-hand side whose columns are contiguous
/// (`rhs.row == 1`), eight columns by eight rows at a time.
///
/// # Safety
/// AVX2 is present; `rhs` addresses a `[k, width]` f32 matrix; `packed` holds `k · stride`
/// values and `width <= stride`.
#[target_feature(enable = "avx2")]
unsafe fn transpose(packed: &mut [f32], k: usize, rhs: Matrix, width: usize, stride: usize) {
    let out = packed.as_mut_ptr();
    let (columns, depth) = (width / 8 * 8, k / 8 * 8);
    // SAFETY (the whole body): every `(p, j)` read has `p < k` and `j < width`, and every
    // write goes to `p · stride + j < k · stride`.
    unsafe {
        for j in (0..columns).step_by(8) {
            let column = |t: usize| rhs.from(0, j + t).at;
            for p in (0..depth).step_by(8) {
                let r: [__m256; 8] = std::array::from_fn(|t| _mm256_loadu_ps(column(t).add(p)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let row = |q: usize| out.add((p + q) * stride + j);
                _mm256_storeu_ps(row(0), _mm256_permute2f128_ps::<0x20>(u0, u4));
                _mm256_storeu_ps(row(1), _mm256_permute2f128_ps::<0x20>(u1, u5));
                _mm256_storeu_ps(row(2), _mm256_permute2f128_ps::<0x20>(u2, u6));
                _mm256_storeu_ps(row(3), _mm256_permute2f128_ps::<0x20>(u3, u7));
                _mm256_storeu_ps(row(4), _mm256_permute2f128_ps::<0x31>(u0, u4));
                _mm256_storeu_ps(row(5), _mm256_permute2f128_ps::<0x31>(u1, u5));
                _mm256_storeu_ps(row(6), _mm256_permute2f128_ps::<0x31>(u2, u6));
                _mm256_storeu_ps(row(7), _mm256_permute2f128_ps::<0x31>(u3, u7));
            }
            for p in depth..k {
                for t in 0..8 {
                    *out.add(p * stride + j + t) = *column(t).add(p);
                }
            }
        }
        for j in columns..width {
            for p in 0..k {
                *out.add(p * stride + j) = *rhs.from(p, j).at;
            }
        }
    }
}

/// All `m` rows of one column tile (`8 · VECTORS` columns of `rhs`, the first `width` of them
/// written to `dst`, whose rows are `dst_row` apart): whole tiles of 6 rows, then the rest.
///
/// # Safety
/// AVX2 and FMA are present; `lhs` addresses `[m, k]`, `rhs` `[k, 8 · VECTORS]` with
/// contiguous rows, and `dst` `m` rows of `width <= 8 · VECTORS` writable values.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows<const VECTORS: usize>(
    [m, k]: [usize; 2],
    lhs: Matrix,
    rhs: Matrix,
    dst: *mut f32,
    dst_row: usize,
    width: usize,
) {
    let whole = m / TILE_ROWS * TILE_ROWS;
    // SAFETY (the whole body): each tile reads rows `i..i + R` of `lhs` and writes those rows
    // of `dst`, all within the `m` rows.
    unsafe {
        for i in (0..whole).step_by(TILE_ROWS) {
            let out = dst.add(i * dst_row);
            tile::<TILE_ROWS, VECTORS>(k, lhs.from(i, 0), rhs, out, dst_row, width);
        }
        let (lhs, out) = (lhs.from(whole, 0), dst.add(whole * dst_row));
        match m - whole {
            1 => tile::<1, VECTORS>(k, lhs, rhs, out, dst_row, width),
            2 => tile::<2, VECTORS>(k, lhs, rhs, out, dst_row, width),
            3 => tile::<3, VECTORS>(k, lhs, rhs, out, dst_row, width),
            4 => tile::<4, VECTORS>(k, lhs, rhs, out, dst_row, width),
            5 => tile::<5, VECTORS>(k, lhs, rhs, out, dst_row, width),
            _ => {}
        }
    }
}

/// One register tile: `R` rows by `8 · VECTORS` columns, each element `Σ_p lhs[i, p] ·
/// rhs[p, j]` as one chain of fused multiply-adds from zero, `p` in order.
///
/// # Safety
/// As [`rows`], for `R` rows.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const R: usize, const VECTORS: usize>(
    k: usize,
    lhs: Matrix,
    rhs: Matrix,
    dst: *mut f32,
    dst_row: usize,
    width: usize,
) {
    let mut sums = [[_mm256_setzero_ps(); VECTORS]; R];
    // SAFETY (the whole body): `p < k`, `i < R` and the columns `< 8 · VECTORS` address the
    // operands; the stores go to the `R` rows of `dst`, `width` values each.
    unsafe {
        let (mut a, mut b) = (lhs.at, rhs.at);
        for _ in 0..k {
            let row: [__m256; VECTORS] = std::array::from_fn(|v| _mm256_loadu_ps(b.add(8 * v)));
            for (i, sums) in sums.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.offset(i as isize * lhs.row));
                for (sum, &y) in sums.iter_mut().zip(&row) {
                    *sum = _mm256_fmadd_ps(x, y, *sum);
                }
            }
            a = a.offset(lhs.col);
            b = b.offset(rhs.row);
        }
        for (i, sums) in sums.iter().enumerate() {
            let out = dst.add(i * dst_row);
            if width == 8 * VECTORS {
                for (v, sum) in sums.iter().enumerate() {
                    _mm256_storeu_ps(out.add(8 * v), *sum);
                }
            } else {
                let mut row = [0f32; TILE_COLUMNS];
                for (v, sum) in sums.iter().enumerate() {
                    _mm256_storeu_ps(row.as_mut_ptr().add(8 * v), *sum);
                }
                std::ptr::copy_nonoverlapping(row.as_ptr(), out, width);
            }
        }
    }
}

/// What the tests of this module and `model::tiny` hold their products to.
#[cfg(test)]
pub mod reference {
    use super::super::backend;
    use super::Matrix;

    /// Deterministic values in [-1, 1).
    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 23) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// `lhs · rhs` by `gemm` on one thread, row-major `[m, n]`.
    ///
    /// # Safety
    /// `lhs` addresses an `[m, k]` f32 matrix and `rhs` a `[k, n]` one.
    pub unsafe fn gemm_product([m, n, k]: [usize; 3], lhs: Matrix, rhs: Matrix) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        let one_thread = gemm::Parallelism::None;
        // SAFETY: by the caller; `out` holds `m · n`.
        unsafe { backend::gemm_product([m, n, k], out.as_mut_ptr(), lhs, rhs, one_thread) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{gemm_product, values};
    use super::*;

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|x| x.to_bits()).collect()
    }

    /// `[m, k] · [k, n]` by [`product`] and by `gemm`, the operands' strides as given
    /// (`(row, col)`, in elements, into `lhs` and `rhs`).
    fn both(
        [m, n, k]: [usize; 3],
        (lhs, (lhs_row, lhs_col)): (&[f32], (isize, isize)),
        (rhs, (rhs_row, rhs_col)): (&[f32], (isize, isize)),
    ) -> (Vec<f32>, Vec<f32>) {
        let mut ours = vec![f32::NAN; m * n];
        let view = |values: &[f32], row, col| Matrix {
            at: values.as_ptr(),
            row,
            col,
        };
        let (lhs, rhs) = (view(lhs, lhs_row, lhs_col), view(rhs, rhs_row, rhs_col));
        // SAFETY: the callers' strides address `[m, k]` within `lhs` and `[k, n]` within
        // `rhs`; `ours` holds `m · n`.
        let theirs = unsafe {
            product([m, n, k], ours.as_mut_ptr(), lhs, rhs);
            gemm_product([m, n, k], lhs, rhs)
        };
        (ours, theirs)
    }

    #[test]
    fn small_products_are_gemms_bit_for_bit() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let (lhs, rhs) = (values(64 * 512 * 2, 1), values(512 * 64 * 2, 2));
        let mut checked = 0;
        // Rows: within, at and past a tile of 6; columns: within, at and past a tile of 16
        // and a vector of 8; inner sizes up to gemm's depth block.
        for m in [2, 5, 6, 7, 13, 20, 51, 64] {
            for n in [2, 7, 8, 9, 16, 17, 33, 50, 51, 64] {
                for k in [3, 8, 13, 32, 51, 128, 512] {
                    if m * n * k > 1 << 20 {
                        continue;
                    }
                    let (m_, n_, k_) = (m as isize, n as isize, k as isize);
                    // Row-major, transposed (column-major), and rows spaced as one head's in a
                    // `[rows, 2 · width]` block.
                    let lhs_layouts = [(k_, 1), (1, m_), (2 * k_, 1)];
                    let rhs_layouts = [(n_, 1), (1, k_), (2 * n_, 1), (2, 2 * k_)];
                    for lhs_strides in lhs_layouts {
                        for rhs_strides in rhs_layouts {
                            if !fits(m, n, k, lhs_strides.1, rhs_strides.0) {
                                assert!(m * n <= 256, "[{m}, {k}] · [{k}, {n}] declined");
                                continue;
                            }
                            let (ours, theirs) =
                                both([m, n, k], (&lhs, lhs_strides), (&rhs, rhs_strides));
                            assert_eq!(
                                bits(&ours),
                                bits(&theirs),
                                "[{m}, {k}] · [{k}, {n}], strides {lhs_strides:?} {rhs_strides:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} products compared");
    }

    #[test]
    fn the_shapes_it_declines_are_summed_otherwise_by_gemm() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let (lhs, rhs) = (values(64 * 1024, 3), values(1024 * 64, 4));
        // An inner size past gemm's depth block: two chains, added.
        let (m, n, k) = (20, 50, 1024);
        assert!(!fits(m, n, k, 1, n as isize));
        let (ours, theirs) = both([m, n, k], (&lhs, (k as isize, 1)), (&rhs, (n as isize, 1)));
        assert_ne!(bits(&ours), bits(&theirs), "a depth of 1,024");
        // Both operands along the inner dimension with a small output: horizontal kernels.
        let (m, n, k) = (6, 16, 6);
        assert!(!fits(m, n, k, 1, 1));
        let (ours, theirs) = both([m, n, k], (&lhs, (k as isize, 1)), (&rhs, (1, k as isize)));
        assert_ne!(bits(&ours), bits(&theirs), "a horizontal product");
        // Matrix-vector products and inner sizes below 3 are gemm's routes of their own.
        assert!(!fits(1, 16, 6, 6, 16) && !fits(6, 1, 6, 6, 1));
        assert!(!fits(20, 20, 2, 2, 20));
        assert!(fits(20, 20, 3, 3, 20) && fits(20, 20, 512, 512, 20));
    }
}
