//! `exp` on f32 slices in vector code, bit for bit the C library's `expf` (what `f32::exp`, and
//! so Burn's CPU backend, calls).
//!
//! On x86-64 Linux with glibc, `expf` is the table-driven routine glibc took from Arm's
//! optimized-routines (`sysdeps/ieee754/flt-32/e_expf.c`): in double precision,
//! `x · 32/ln 2 = k + r`, `2^(k/32)` from a 32-entry table and the exponent bits, and a cubic in
//! `r`. On processors with AVX2 and FMA glibc runs a build of it compiled with fused
//! multiply-adds, in which the reduction `k + r` is two of them (the cubic's are fused too, but
//! fusing them or not changes no result: checked over all inputs). `lane` is that routine's
//! operations in the same order, the same multiply-adds fused, without branches, so that loops
//! over it vectorise; inputs with `|x| ≥ 88` or NaN (overflow, underflow, infinities) take
//! `expf` itself. The vector code runs only where glibc would run its fused build (AVX2 and
//! FMA, x86-64 Linux with glibc) and, checked once per process, gives the C library's values
//! on inputs that tell the builds apart; everywhere else these functions call `f32::exp` per
//! value.
//! The test `exp_in_place_is_expf_for_every_f32` compares all 2³² inputs with `f32::exp` (run
//! with `--ignored`); the fast one compares a spread of 2²² inputs and the edges of the range.

/// glibc's routine in vector code (x86-64 Linux with glibc only).
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::arch::x86_64::*;

    /// Inputs from which `expf` takes its special cases: `|x| ≥ 88` (the bits of 88.0),
    /// infinities and NaN.
    const SPECIAL_FROM: u32 = 0x42b0_0000;

    /// Whether `expf` takes a special case at `x`.
    #[inline(always)]
    fn is_special(x: f32) -> bool {
        (x.to_bits() & 0x7fff_ffff) >= SPECIAL_FROM
    }

    /// `bits(2^(i/32)) − i·2^47`: adding `k · 2^47` (`k ≡ i mod 32`) gives `2^(k/32)`.
    static TABLE: [u64; 32] = [
        0x3ff0_0000_0000_0000,
        0x3fef_d9b0_d315_8574,
        0x3fef_b558_6cf9_890f,
        0x3fef_9301_d012_5b51,
        0x3fef_72b8_3c7d_517b,
        0x3fef_5487_3168_b9aa,
        0x3fef_387a_6e75_6238,
        0x3fef_1e9d_f51f_dee1,
        0x3fef_06fe_0a31_b715,
        0x3fee_f1a7_373a_a9cb,
        0x3fee_dea6_4c12_3422,
        0x3fee_ce08_6061_892d,
        0x3fee_bfda_d536_2a27,
        0x3fee_b42b_569d_4f82,
        0x3fee_ab07_dd48_5429,
        0x3fee_a47e_b03a_5585,
        0x3fee_a09e_667f_3bcd,
        0x3fee_9f75_e8ec_5f74,
        0x3fee_a114_73eb_0187,
        0x3fee_a589_994c_ce13,
        0x3fee_ace5_422a_a0db,
        0x3fee_b737_b0cd_c5e5,
        0x3fee_c491_82a3_f090,
        0x3fee_d503_b23e_255d,
        0x3fee_e89f_995a_d3ad,
        0x3fee_ff76_f2fb_5e47,
        0x3fef_199b_dd85_529c,
        0x3fef_3720_dcef_9069,
        0x3fef_5818_dcfb_a487,
        0x3fef_7c97_337b_9b5f,
        0x3fef_a4af_a2a4_90da,
        0x3fef_d076_5b6e_4540,
    ];

    /// The cubic's coefficients, scaled for `r` in units of 1/32: `0x1.c6af84b912394p-5 / 32³`,
    /// `0x1.ebfce50fac4f3p-3 / 32²`, `0x1.62e42ff0c52d6p-1 / 32`.
    const C0: f64 = f64::from_bits(0x3ebc_6af8_4b91_2394);
    const C1: f64 = f64::from_bits(0x3f2e_bfce_50fa_c4f3);
    const C2: f64 = f64::from_bits(0x3f96_2e42_ff0c_52d6);
    /// `32 / ln 2` (`0x1.71547652b82fep+0 · 32`).
    const INV_LN2_32: f64 = f64::from_bits(0x4047_1547_652b_82fe);
    /// `0x1.8p52`: adding it rounds to an integer, left in the low bits.
    const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);

    /// Values per block in the AVX2 build.
    const LANES: usize = 8;

    /// glibc's `expf(x)` for `|x| < 88`, without branches; other inputs give a value that
    /// `fix_special` replaces. `mul_add` is always fused (a call to `fma` where the processor
    /// has no such instruction): the callers enable FMA for speed.
    #[inline(always)]
    fn lane(x: f32) -> f32 {
        let xd = f64::from(x);
        // x·32/ln 2 = k + r: k rounded to nearest (ties to even) by the shift, r in [-1/2, 1/2].
        let shifted = INV_LN2_32.mul_add(xd, SHIFT);
        let ki = shifted.to_bits();
        let kd = shifted - SHIFT;
        let r = INV_LN2_32.mul_add(xd, -kd);
        // 2^(k/32): the table's mantissa for k mod 32, k / 32 added to the exponent.
        let s = f64::from_bits(TABLE[(ki % 32) as usize].wrapping_add(ki << 47));
        let z = C0.mul_add(r, C1);
        let r2 = r * r;
        let y = C2.mul_add(r, 1.0);
        let y = z.mul_add(r2, y);
        (y * s) as f32
    }

    /// `out[i] = expf(x[i])` for the inputs `lane` does not cover.
    #[inline(always)]
    fn fix_special(x: &[f32], out: &mut [f32]) {
        for (out, &x) in out.iter_mut().zip(x) {
            if is_special(x) {
                *out = x.exp();
            }
        }
    }

    /// `values[i] = expf(values[i])` with `lane` in blocks of [`LANES`] the compiler vectorises
    /// (its table lookup becomes one load per value), the rest in one shorter block. The
    /// blocks' inputs are kept in a fixed-size array: copying a block of a length known only at
    /// run time was a call to `memcpy` per block, 13 % of this function's time.
    #[target_feature(enable = "avx2,fma")]
    pub fn exp_avx2(values: &mut [f32]) {
        let mut blocks = values.chunks_exact_mut(LANES);
        for block in &mut blocks {
            let inputs: [f32; LANES] = std::array::from_fn(|j| block[j]);
            for (value, &x) in block.iter_mut().zip(inputs.iter()) {
                *value = lane(x);
            }
            if inputs.iter().fold(false, |any, &x| any | is_special(x)) {
                fix_special(&inputs, block);
            }
        }
        let rest = blocks.into_remainder();
        let mut inputs = [0.0f32; LANES];
        let inputs = &mut inputs[..rest.len()];
        inputs.copy_from_slice(rest);
        for (value, &x) in rest.iter_mut().zip(inputs.iter()) {
            *value = lane(x);
        }
        fix_special(inputs, rest);
    }

    /// `lane` on eight doubles: the same operations, the table from four registers.
    ///
    /// # Shapes
    /// - x: 8 f32; output 8 f32
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn eight(x: __m256, table: [__m512d; 4]) -> __m256 {
        let xd = _mm512_cvtps_pd(x);
        let inv = _mm512_set1_pd(INV_LN2_32);
        let shift = _mm512_set1_pd(SHIFT);
        let shifted = _mm512_fmadd_pd(inv, xd, shift);
        let ki = _mm512_castpd_si512(shifted);
        let kd = _mm512_sub_pd(shifted, shift);
        // fma(inv, xd, −kd), exactly.
        let r = _mm512_fmsub_pd(inv, xd, kd);
        // Bits 0–3 of k pick one of 16 entries from two registers, bit 4 the pair.
        let first = _mm512_permutex2var_pd(table[0], ki, table[1]);
        let second = _mm512_permutex2var_pd(table[2], ki, table[3]);
        let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
        let t = _mm512_castpd_si512(_mm512_mask_blend_pd(upper, first, second));
        let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
        let z = _mm512_fmadd_pd(_mm512_set1_pd(C0), r, _mm512_set1_pd(C1));
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(_mm512_set1_pd(C2), r, _mm512_set1_pd(1.0));
        let y = _mm512_fmadd_pd(z, r2, y);
        _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
    }

    /// `values[i] = expf(values[i])`, 16 values at a time, the rest one by one.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub fn exp_avx512(values: &mut [f32]) {
        // SAFETY: each load reads 8 of TABLE's 32 values.
        let table = unsafe {
            let at = |i: usize| _mm512_loadu_pd(TABLE.as_ptr().add(i).cast::<f64>());
            [at(0), at(8), at(16), at(24)]
        };
        let limit = _mm512_set1_epi32(SPECIAL_FROM as i32);
        let magnitude = _mm512_set1_epi32(0x7fff_ffff);
        let mut blocks = values.chunks_exact_mut(16);
        for block in &mut blocks {
            // SAFETY: `block` holds 16 f32.
            let x = unsafe { _mm512_loadu_ps(block.as_ptr()) };
            let low = eight(_mm512_castps512_ps256(x), table);
            let high = eight(
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))),
                table,
            );
            let y = _mm512_insertf64x4::<1>(
                _mm512_castps_pd(_mm512_castps256_ps512(low)),
                _mm256_castps_pd(high),
            );
            let special =
                _mm512_cmpge_epu32_mask(_mm512_and_si512(_mm512_castps_si512(x), magnitude), limit);
            // SAFETY: `block` holds 16 f32.
            unsafe { _mm512_storeu_ps(block.as_mut_ptr(), _mm512_castpd_ps(y)) };
            if special != 0 {
                // The inputs are still in `x`.
                let mut inputs = [0.0f32; 16];
                // SAFETY: `inputs` holds 16 f32.
                unsafe { _mm512_storeu_ps(inputs.as_mut_ptr(), x) };
                fix_special(&inputs, block);
            }
        }
        for value in blocks.into_remainder() {
            *value = value.exp();
        }
    }
}

/// Which routine this process runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    Avx512,
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    Avx2,
    Scalar,
}

/// The vector routine where the processor has AVX2 and FMA and it gives the C library's values
/// on inputs that tell glibc's builds apart (the fused reduction changes 32.564632's result)
/// and on a spread of others: a C library with another `expf`, or glibc told not to use its
/// FMA build (`GLIBC_TUNABLES`), keeps `f32::exp`.
fn route() -> Route {
    static ROUTE: std::sync::OnceLock<Route> = std::sync::OnceLock::new();
    *ROUTE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("fma") && has!("avx2") {
                let route = if has!("avx512f") {
                    Route::Avx512
                } else {
                    Route::Avx2
                };
                let probes: Vec<f32> = [32.564_632f32, -87.9, 1e-30, 0.5]
                    .into_iter()
                    .chain((0..4096).map(|i| (i as f32 - 2048.0) * 0.042_7))
                    .collect();
                let mut values = probes.clone();
                run(route, &mut values);
                let same = probes
                    .iter()
                    .zip(&values)
                    .all(|(x, y)| x.exp().to_bits() == y.to_bits());
                if same {
                    return route;
                }
            }
        }
        Route::Scalar
    })
}

/// `values[i] = exp(values[i])` by `route`.
fn run(route: Route, values: &mut [f32]) {
    match route {
        // SAFETY: `route` picks this only where the processor has AVX-512F, AVX2 and FMA.
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        Route::Avx512 => unsafe { glibc::exp_avx512(values) },
        // SAFETY: `route` picks this only where the processor has AVX2 and FMA.
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        Route::Avx2 => unsafe { glibc::exp_avx2(values) },
        Route::Scalar => {
            for value in values.iter_mut() {
                *value = value.exp();
            }
        }
    }
}

/// `values[i] = values[i].exp()`, bit for bit, on the widest vectors this processor has.
pub fn exp_in_place(values: &mut [f32]) {
    run(route(), values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `inputs` `exp_in_place` maps to other bits than `f32::exp` (NaN to any NaN).
    fn mismatches(inputs: &[f32]) -> usize {
        let mut values = inputs.to_vec();
        exp_in_place(&mut values);
        let mut wrong = count(inputs, &values);
        // Both vector builds directly, whichever route this process took.
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                let mut values = inputs.to_vec();
                // SAFETY: the processor has AVX2 and FMA (checked above).
                unsafe { glibc::exp_avx2(&mut values) };
                wrong += count(inputs, &values);
                if has!("avx512f") {
                    let mut values = inputs.to_vec();
                    // SAFETY: the processor has AVX-512F, AVX2 and FMA (checked above).
                    unsafe { glibc::exp_avx512(&mut values) };
                    wrong += count(inputs, &values);
                }
            }
        }
        wrong
    }

    /// How many of `values` differ from `f32::exp` of `inputs` (NaN matches any NaN).
    fn count(inputs: &[f32], values: &[f32]) -> usize {
        inputs
            .iter()
            .zip(values)
            .filter(|(x, y)| {
                let want = x.exp();
                !(want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan()))
            })
            .count()
    }

    #[test]
    fn exp_in_place_is_expf() {
        // A spread of 2²² bit patterns (every sign, exponent and some mantissas), the range's
        // edges and the special cases, in a length that leaves a partial block.
        let mut inputs: Vec<f32> = (0..1u32 << 22)
            .map(|i| f32::from_bits(i.wrapping_mul(1023)))
            .collect();
        for edge in [
            88.0f32, 88.72, 89.0, -88.0, -103.0, -104.0, 0.0, -0.0, 1e-30,
        ] {
            for ulps in -3i32..=3 {
                inputs.push(f32::from_bits(edge.to_bits().wrapping_add_signed(ulps)));
            }
        }
        inputs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -1e9, 32.564_632]);
        assert_eq!(mismatches(&inputs), 0);
    }

    #[test]
    fn the_vector_routine_runs_where_the_processor_has_it() {
        // The once-per-process check keeps `f32::exp` only where the C library's values differ;
        // on x86-64 Linux with glibc, AVX2 and FMA (as here) they must not.
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            assert!(route() != Route::Scalar);
        }
        let mut values = [0.0f32, 1.0, -1.0];
        exp_in_place(&mut values);
        assert_eq!(values, [1.0, 1.0f32.exp(), (-1.0f32).exp()]);
    }

    #[test]
    #[ignore = "2³² inputs: about a minute in a release build"]
    fn exp_in_place_is_expf_for_every_f32() {
        let block = 1u64 << 24;
        let mut wrong = 0;
        for start in (0..1u64 << 32).step_by(block as usize) {
            let inputs: Vec<f32> = (start..start + block)
                .map(|b| f32::from_bits(b as u32))
                .collect();
            wrong += mismatches(&inputs);
        }
        assert_eq!(wrong, 0);
    }
}
