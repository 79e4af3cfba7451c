//! `erf` and a bounded `exp` on f32 values in vector code: GELU's two transcendental functions
//! on the CPU backend.
//!
//! Both are written without branches or calls, so that loops over them vectorise at any width
//! (AVX2, AVX-512, wasm's 128-bit lanes), and with plain multiplies and adds: Rust never
//! contracts them into fused multiply-adds, so every build gives the same bits.
//!
//! `erf_lane` computes two formulas for every value and keeps one:
//! - `|x| < 1`: `x + x·P(x²)`, P of degree 6 ([`erf_near`], about a third of the arithmetic);
//! - `|x| ≥ 1`: `±(1 − exp(R(|x| − 2.5) − x²))`, R of degree 8 fitted to `ln erfc(a) + a²` on
//!   `[1, 4]`; from `|x| = 4` on `erf` rounds to ±1 in f32, so `|x|` is clamped there.
//!
//! A caller whose whole vector of arguments lies in the first interval ([`is_near`]) can call
//! `erf_near` alone and get the same bits (`model::gelu` does, block by block).
//!
//! P and R are least-maximum-error fits (Lawson's reweighted least squares on Chebyshev nodes
//! against a 30-digit `erf`), rounded to f32. Over all 2³² f32 inputs the result is within
//! 1.501 ULP of the exact `erf` (the worst near |x| = 0.996, the end of P's interval, where its
//! roundings add up; a C library's `erff` is within about 1). `erf_lane_is_within_ulp_bound`
//! checks a spread of 2²² inputs, every formula's edges and the special values against
//! `libm::erf` in f64, `erf_lane_is_accurate_for_every_f32` all 2³² (run with `--ignored`). It
//! replaced a bit-for-bit port of `libm::erff`, whose five formulas, three to five divisions per
//! value and second pass over `1.25 ≤ |x| < 6` made GELU over `[57,856, 512]` take 90–100 ms on
//! an AVX2 processor, against about 60 with this one (its gradient 126–139 against about 80; a
//! timing test, not kept).

// P: `erf(x) / x − 1` in `s = x²` on `0 < x < 1`.
const P0: f32 = f32::from_bits(0x3e03_75d4); // 1.2837916613e-01
const P1: f32 = f32::from_bits(0xbec0_939f); // -3.7612625957e-01
const P2: f32 = f32::from_bits(0x3de7_1690); // 1.1283600330e-01
const P3: f32 = f32::from_bits(0xbcdb_fddb); // -2.6854446158e-02
const P4: f32 = f32::from_bits(0x3baa_0d03); // 5.1895393990e-03
const P5: f32 = f32::from_bits(0xba52_4329); // -8.0208719010e-04
const P6: f32 = f32::from_bits(0x38a5_72e2); // 7.8892117017e-05
// R: `ln erfc(a) + a²` in `u = a − 2.5` on `1 ≤ a ≤ 4`.
const R0: f32 = f32::from_bits(0xbfc7_45b9); // -1.5568152666e+00
const R1: f32 = f32::from_bits(0xbeb4_9290); // -3.5268068314e-01
const R2: f32 = f32::from_bits(0x3d65_cfd1); // 5.6106392294e-02
const R3: f32 = f32::from_bits(0xbc31_e7cc); // -1.0858487338e-02
const R4: f32 = f32::from_bits(0x3b0d_e40a); // 2.1650814451e-03
const R5: f32 = f32::from_bits(0xb9dc_4aae); // -4.2017310625e-04
const R6: f32 = f32::from_bits(0x38a2_6f4e); // 7.7454940765e-05
const R7: f32 = f32::from_bits(0xb75f_2a6b); // -1.3301711988e-05
const R8: f32 = f32::from_bits(0x35d6_b939); // 1.5998149365e-06

/// `log2 e`.
const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 1.4426950216e+00
/// `ln 2` split in two: the high part has 15 significant bits, so `n · LN2_HI` is exact.
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 6.9314575195e-01
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 1.4286067653e-06
/// `1.5 · 2²³`: adding and subtracting it rounds to the nearest integer.
const ROUND: f32 = f32::from_bits(0x4b40_0000);
/// Below this, `exp_lane`'s power of two would leave the normal range.
pub const EXP_FROM: f32 = -87.0;

/// `e^x` for `EXP_FROM ≤ x ≤ 0`, within about 1 ULP: `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// `e^r` by its Taylor polynomial of degree 7 (truncation below 6e-9 relative), times `2^n`
/// built from its exponent bits.
#[inline(always)]
pub fn exp_lane(x: f32) -> f32 {
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 720.0 + r * (1.0 / 5040.0);
    let p = 1.0 / 120.0 + r * p;
    let p = 1.0 / 24.0 + r * p;
    let p = 1.0 / 6.0 + r * p;
    let p = 0.5 + r * p;
    let p = 1.0 + r * p;
    let p = 1.0 + r * p;
    // n as an integer: the low bits of `shifted` hold it (two's complement around ROUND's),
    // which vectorises where a float-to-integer cast (saturating in Rust) would not. Wrapping:
    // overflow checks (on in release builds here) would branch and keep loops scalar.
    let n = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n.wrapping_add(127) << 23);
    p * scale
}

/// Whether [`erf_lane`] takes its first formula at `x` (`|x| < 1`), where [`erf_near`] gives
/// its bits.
#[inline(always)]
pub fn is_near(x: f32) -> bool {
    x.abs() < 1.0
}

/// [`erf_lane`]'s first formula alone, `x + x·P(x²)`: its value wherever [`is_near`] holds,
/// bit for bit, at about a third of its arithmetic (no `exp`). A loop whose arguments all lie
/// there can skip the second formula.
#[inline(always)]
pub fn erf_near(x: f32) -> f32 {
    let s = x * x;
    let p = P5 + s * P6;
    let p = P4 + s * p;
    let p = P3 + s * p;
    let p = P2 + s * p;
    let p = P1 + s * p;
    let p = P0 + s * p;
    x + x * p
}

/// `erf(x)` within 1.501 ULP, for every f32 (NaN gives NaN, ±∞ gives ±1).
#[inline(always)]
pub fn erf_lane(x: f32) -> f32 {
    let a = x.abs();
    let near = erf_near(x);
    // |x| ≥ 1 (and NaN, passed through below).
    let a4 = if a < 4.0 { a } else { 4.0 };
    let u = a4 - 2.5;
    let r = R7 + u * R8;
    let r = R6 + u * r;
    let r = R5 + u * r;
    let r = R4 + u * r;
    let r = R3 + u * r;
    let r = R2 + u * r;
    let r = R1 + u * r;
    let r = R0 + u * r;
    let far = (1.0 - exp_lane(r - a4 * a4)).copysign(x);
    if is_near(x) {
        near
    } else if x.is_nan() {
        x
    } else {
        far
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `values[i] = erf(values[i])`, inlined into the wider builds below.
    #[inline(always)]
    fn erf_in_place(values: &mut [f32]) {
        for v in values.iter_mut() {
            *v = erf_lane(*v);
        }
    }

    /// `erf_in_place` compiled for the widest vectors the processor has (as `model::gelu`
    /// runs it).
    fn widest(values: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn avx512(values: &mut [f32]) {
                erf_in_place(values)
            }
            #[target_feature(enable = "avx2")]
            fn avx2(values: &mut [f32]) {
                erf_in_place(values)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the processor has AVX-512F (checked above).
                return unsafe { avx512(values) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has AVX2 (checked above).
                return unsafe { avx2(values) };
            }
        }
        erf_in_place(values)
    }

    /// The largest error of `erf` at `inputs` in units in the last place of the f32 nearest
    /// the exact value (`libm::erf` in f64), after checking that the vector build gives the
    /// scalar one's bits. NaN must give NaN.
    fn worst_ulps(inputs: &[f32]) -> f64 {
        let mut values = inputs.to_vec();
        widest(&mut values);
        let mut worst = 0.0f64;
        for (&x, &y) in inputs.iter().zip(&values) {
            assert_eq!(y.to_bits(), erf_lane(x).to_bits(), "vector build at {x}");
            if x.is_nan() {
                assert!(y.is_nan());
                continue;
            }
            let exact = libm::erf(f64::from(x));
            let nearest = exact as f32;
            // The spacing of f32 values at the exact result (towards zero at a power of 2).
            let ulp = if nearest == 0.0 {
                f64::from(f32::from_bits(1))
            } else {
                let below = f32::from_bits(nearest.abs().to_bits() - 1);
                f64::from(nearest.abs() - below)
            };
            worst = worst.max((f64::from(y) - exact).abs() / ulp);
        }
        worst
    }

    /// Each formula's edges and the clamp (and their neighbours), zeros, infinities, NaN, and
    /// a spread of 2^22 bit patterns over the whole range.
    #[test]
    fn erf_lane_is_within_ulp_bound() {
        let edges = [0x3f80_0000u32, 0x4080_0000, 0x0080_0000, 0x7f80_0000];
        let mut inputs: Vec<f32> = edges
            .iter()
            .flat_map(|b| b - 64..b + 64)
            .flat_map(|bits| [bits, bits | 0x8000_0000])
            .map(f32::from_bits)
            .collect();
        inputs.extend([
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            2.5,
            -7.0,
        ]);
        inputs.extend((0..(1u32 << 22)).map(|i| f32::from_bits(i.wrapping_mul(1021) ^ (i << 10))));
        // GELU's arguments: dense over [-6, 6].
        inputs.extend((0..1_200_001).map(|i| i as f32 / 100_000.0 - 6.0));
        let worst = worst_ulps(&inputs);
        assert!(worst <= ULP_BOUND, "{worst} ULP");
        assert_eq!(erf_lane(f32::INFINITY), 1.0);
        assert_eq!(erf_lane(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf_lane(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    /// The largest error allowed, in ULP of the exact value: all 2³² inputs give 1.501.
    const ULP_BOUND: f64 = 1.51;

    /// Below 1 in magnitude `erf_near` is `erf_lane`, bit for bit (every 61st f32 of each sign
    /// and the last 4,096 below 1), and `is_near` holds exactly there.
    #[test]
    fn erf_near_is_erf_lane_below_one() {
        let one = 1.0f32.to_bits();
        let below = (0..one).step_by(61).chain(one - 4096..one);
        for bits in below.flat_map(|b| [b, b | 0x8000_0000]) {
            let x = f32::from_bits(bits);
            assert!(is_near(x), "{x}");
            assert_eq!(erf_near(x).to_bits(), erf_lane(x).to_bits(), "at {x}");
        }
        for x in [1.0f32, -1.0, 1.5, f32::INFINITY, f32::NAN] {
            assert!(!is_near(x), "{x}");
        }
    }

    /// `exp_lane` over its range, against `libm::exp` in f64.
    #[test]
    fn exp_lane_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let x = EXP_FROM * i as f32 / 1_000_000.0;
            let exact = libm::exp(f64::from(x));
            let ulp = f64::from(f32::EPSILON) * exact;
            worst = worst.max((f64::from(exp_lane(x)) - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ULP");
    }

    /// All 2^32 inputs (about a minute on two threads):
    /// `cargo test --release erf -- --ignored`.
    #[test]
    #[ignore]
    fn erf_lane_is_accurate_for_every_f32() {
        use rayon::prelude::*;
        let worst = (0..=u16::MAX)
            .into_par_iter()
            .map(|high| {
                let inputs: Vec<f32> = (0..=u16::MAX)
                    .map(|low| f32::from_bits((u32::from(high) << 16) | u32::from(low)))
                    .collect();
                worst_ulps(&inputs)
            })
            .reduce(|| 0.0, f64::max);
        assert!(worst <= ULP_BOUND, "{worst} ULP");
    }
}
