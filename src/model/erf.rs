//! `erf` on f32 slices in vector code, bit for bit `libm::erff` (the `erff` Burn's CPU backend
//! uses).
//!
//! `libm::erff` (FreeBSD's `s_erff.c`) picks one of five formulas by the size of `|x|` and calls
//! `expf` twice for `1.25 ≤ |x| < 6`; called per element, its branches and calls keep a loop over
//! it scalar. Here the formulas are the same operations in the same order, written without
//! branches or calls so that loops over them vectorise, and each value takes the formula `erff`
//! would have taken: `near_lane` covers every range but `1.25 ≤ |x| < 6`, `far_lane` that one,
//! with `expf` as FreeBSD's `e_expf.c` that `libm` ports, for the arguments `erff` gives it. IEEE
//! arithmetic is exact per operation and Rust never contracts a multiply and an add into one, so
//! the results are `erff`'s bit for bit, whatever the vector width. The test
//! `erf_in_place_is_libm_erff_for_every_f32` checks all 2³² inputs through the vector code (run
//! with `--ignored`); the fast one checks a spread of 2²² of them and every branch boundary.

const ERX: f32 = f32::from_bits(0x3f58_560b); // 8.4506291151e-01
const EFX8: f32 = f32::from_bits(0x3f83_75d4); // 1.0270333290e+00
const PP0: f32 = f32::from_bits(0x3e03_75d4); // 1.2837916613e-01
const PP1: f32 = f32::from_bits(0xbea6_6beb); // -3.2504209876e-01
const PP2: f32 = f32::from_bits(0xbce9_528f); // -2.8481749818e-02
const PP3: f32 = f32::from_bits(0xbbbd_1489); // -5.7702702470e-03
const PP4: f32 = f32::from_bits(0xb7c7_56b1); // -2.3763017452e-05
const QQ1: f32 = f32::from_bits(0x3ecb_bbce); // 3.9791721106e-01
const QQ2: f32 = f32::from_bits(0x3d85_2a63); // 6.5022252500e-02
const QQ3: f32 = f32::from_bits(0x3ba6_8116); // 5.0813062117e-03
const QQ4: f32 = f32::from_bits(0x390a_ee49); // 1.3249473704e-04
const QQ5: f32 = f32::from_bits(0xb684_e21a); // -3.9602282413e-06
const PA0: f32 = f32::from_bits(0xbb1a_cdc6); // -2.3621185683e-03
const PA1: f32 = f32::from_bits(0x3ed4_6805); // 4.1485610604e-01
const PA2: f32 = f32::from_bits(0xbebe_9208); // -3.7220788002e-01
const PA3: f32 = f32::from_bits(0x3ea2_fe54); // 3.1834661961e-01
const PA4: f32 = f32::from_bits(0xbde3_1cc2); // -1.1089469492e-01
const PA5: f32 = f32::from_bits(0x3d11_51b3); // 3.5478305072e-02
const PA6: f32 = f32::from_bits(0xbb0d_f9c0); // -2.1663755178e-03
const QA1: f32 = f32::from_bits(0x3dd9_f331); // 1.0642088205e-01
const QA2: f32 = f32::from_bits(0x3f0a_5785); // 5.4039794207e-01
const QA3: f32 = f32::from_bits(0x3d93_1ae7); // 7.1828655899e-02
const QA4: f32 = f32::from_bits(0x3e01_3307); // 1.2617121637e-01
const QA5: f32 = f32::from_bits(0x3c5f_6e13); // 1.3637083583e-02
const QA6: f32 = f32::from_bits(0x3c44_5aa3); // 1.1984500103e-02
const RA0: f32 = f32::from_bits(0xbc21_a093); // -9.8649440333e-03
const RA1: f32 = f32::from_bits(0xbf31_a0b7); // -6.9385856390e-01
const RA2: f32 = f32::from_bits(0xc128_f022); // -1.0558626175e+01
const RA3: f32 = f32::from_bits(0xc279_8057); // -6.2375331879e+01
const RA4: f32 = f32::from_bits(0xc322_658c); // -1.6239666748e+02
const RA5: f32 = f32::from_bits(0xc338_9ae7); // -1.8460508728e+02
const RA6: f32 = f32::from_bits(0xc2a2_932b); // -8.1287437439e+01
const RA7: f32 = f32::from_bits(0xc11d_077e); // -9.8143291473e+00
const SA1: f32 = f32::from_bits(0x419d_35ce); // 1.9651271820e+01
const SA2: f32 = f32::from_bits(0x4309_a863); // 1.3765776062e+02
const SA3: f32 = f32::from_bits(0x43d9_486f); // 4.3456588745e+02
const SA4: f32 = f32::from_bits(0x4421_58c9); // 6.4538726807e+02
const SA5: f32 = f32::from_bits(0x43d6_810b); // 4.2900814819e+02
const SA6: f32 = f32::from_bits(0x42d9_451f); // 1.0863500214e+02
const SA7: f32 = f32::from_bits(0x40d2_3f7c); // 6.5702495575e+00
const SA8: f32 = f32::from_bits(0xbd77_7f97); // -6.0424413532e-02
const RB0: f32 = f32::from_bits(0xbc21_a092); // -9.8649431020e-03
const RB1: f32 = f32::from_bits(0xbf4c_9dd4); // -7.9928326607e-01
const RB2: f32 = f32::from_bits(0xc18e_104b); // -1.7757955551e+01
const RB3: f32 = f32::from_bits(0xc320_a2ea); // -1.6063638306e+02
const RB4: f32 = f32::from_bits(0xc41f_6441); // -6.3756646729e+02
const RB5: f32 = f32::from_bits(0xc480_230b); // -1.0250950928e+03
const RB6: f32 = f32::from_bits(0xc3f1_c275); // -4.8351919556e+02
const SB1: f32 = f32::from_bits(0x41f2_b459); // 3.0338060379e+01
const SB2: f32 = f32::from_bits(0x43a2_e571); // 3.2579251099e+02
const SB3: f32 = f32::from_bits(0x44c0_1759); // 1.5367296143e+03
const SB4: f32 = f32::from_bits(0x4547_fdbb); // 3.1998581543e+03
const SB5: f32 = f32::from_bits(0x451f_90ce); // 2.5530502930e+03
const SB6: f32 = f32::from_bits(0x43ed_43a7); // 4.7452853394e+02
const SB7: f32 = f32::from_bits(0xc1b3_8712); // -2.2440952301e+01

const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 6.9314575195e-01
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 1.4286067653e-06
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b); // 1.4426950216e+00
const P1: f32 = f32::from_bits(0x3e2a_aa8f); // 1.6666625440e-1
const P2: f32 = f32::from_bits(0xbb35_5215); // -2.7667332906e-3

/// Whether `erff` takes its costly formula (`1.25 ≤ |x| < 6`: `erfc2`, two `expf`) at `x`.
#[inline(always)]
fn is_far(x: f32) -> bool {
    let ix = x.to_bits() & 0x7fff_ffff;
    (0x3fa0_0000..0x40c0_0000).contains(&ix)
}

/// `libm::erff(x)`, bit for bit, without branches or calls, where `x` is not far (`is_far`);
/// `x` itself where it is.
#[inline(always)]
fn near_lane(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits >> 31;
    let ix = bits & 0x7fff_ffff;
    let a = f32::from_bits(ix);

    // |x| < 2^-28.
    let tiny = 0.125 * (8.0 * x + EFX8 * x);
    // |x| < 0.84375.
    let z = x * x;
    let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
    let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
    let small = x + x * (r / s);
    // 0.84375 ≤ |x| < 1.25: 1 - erfc1; from 6 on: 1 - 2^-120.
    let s = a - 1.0;
    let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
    let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
    let erfc1 = 1.0 - ERX - p / q;
    let y = if ix < 0x40c0_0000 {
        1.0 - erfc1
    } else {
        1.0 - f32::from_bits(0x0380_0000)
    };
    let large = if sign != 0 { -y } else { y };
    // NaN, ±∞.
    let special = 1.0 - 2.0 * (sign as f32) + 1.0 / x;

    if ix >= 0x7f80_0000 {
        special
    } else if ix < 0x3180_0000 {
        tiny
    } else if ix < 0x3f58_0000 {
        small
    } else if !(0x3fa0_0000..0x40c0_0000).contains(&ix) {
        large
    } else {
        x
    }
}

/// `libm::erff(x)`, bit for bit, without branches or calls, where `x` is far (`is_far`).
#[inline(always)]
fn far_lane(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits >> 31;
    let ix = bits & 0x7fff_ffff;
    let a = f32::from_bits(ix);

    let s = 1.0 / (a * a);
    let ra = RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7))))));
    let sa = 1.0
        + s * (SA1
            + s * (SA2 + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8)))))));
    let rb = RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6)))));
    let sb = 1.0 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7))))));
    let (r, big_s) = if ix < 0x4036_db6d { (ra, sa) } else { (rb, sb) };
    let z = f32::from_bits(ix & 0xffff_e000);
    let erfc2 = exp_lane(-z * z - 0.5625) * exp_lane((z - a) * (z + a) + r / big_s) / a;
    let y = 1.0 - erfc2;
    if sign != 0 { -y } else { y }
}

/// `libm::expf(x)` for the arguments `far_lane` passes (`-36.6 < x < -0.02`: no overflow,
/// underflow or NaN), bit for bit, without branches.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = (bits >> 31) as i32;
    let hx = bits & 0x7fff_ffff;

    // |x| > 1.5 ln 2: k from the nearest integer to x / ln 2; 0.5 ln 2 < |x|: ±1; else 0.
    let half = if sign != 0 { -0.5 } else { 0.5 };
    let k_far = (INV_LN2 * x + half) as i32;
    let k = if hx > 0x3f85_1592 {
        k_far
    } else if hx > 0x3eb1_7218 {
        1i32.wrapping_sub(sign).wrapping_sub(sign)
    } else {
        0
    };
    let kf = k as f32;
    let reduced_hi = x - kf * LN2_HI;
    let reduced_lo = kf * LN2_LO;
    let (x_r, hi, lo) = if hx > 0x3eb1_7218 {
        (reduced_hi - reduced_lo, reduced_hi, reduced_lo)
    } else {
        (x, x, 0.0)
    };
    let xx = x_r * x_r;
    let c = x_r - xx * (P1 + xx * P2);
    let y = 1. + (x_r * c / (2. - c) - lo + hi);
    // scalbnf(y, k) for -126 ≤ k ≤ 127: a multiply by 2^k.
    // Wrapping: overflow checks (on in release builds here) would branch and keep the loop scalar.
    let scale = f32::from_bits((k.wrapping_add(0x7f) as u32) << 23);
    let scaled = if k == 0 { y } else { y * scale };
    // |x| ≤ 2^-14.
    if hx > 0x3900_0000 { scaled } else { 1. + x }
}

/// Values per block: 16 f32, one AVX-512 register.
pub const LANES: usize = 16;

/// `values[i] = libm::erff(values[i])`, bit for bit, in two vectorising passes: every value
/// through the cheap formulas, then the far ones (`1.25 ≤ |x| < 6`: 8 % of GELU's arguments
/// where its inputs are standard normal) gathered into blocks of their own for `erfc2`. Inlined
/// into callers compiled for wider vectors.
#[inline(always)]
pub fn erf_in_place(values: &mut [f32]) {
    let mut far = Vec::new();
    let len = values.len();
    let (blocks, rest) = values.as_chunks_mut::<LANES>();
    for (b, block) in blocks.iter_mut().enumerate() {
        let x = *block;
        for (v, &x) in block.iter_mut().zip(&x) {
            *v = near_lane(x);
        }
        for (i, &x) in x.iter().enumerate() {
            if is_far(x) {
                far.push(b * LANES + i);
            }
        }
    }
    let start = len - rest.len();
    for (i, v) in rest.iter_mut().enumerate() {
        let x = *v;
        *v = near_lane(x);
        if is_far(x) {
            far.push(start + i);
        }
    }
    let (blocks, rest) = far.as_chunks::<LANES>();
    for block in blocks {
        let x: [f32; LANES] = std::array::from_fn(|i| values[block[i]]);
        let mut y = [0.0f32; LANES];
        for (y, &x) in y.iter_mut().zip(&x) {
            *y = far_lane(x);
        }
        for (&i, y) in block.iter().zip(y) {
            values[i] = y;
        }
    }
    for &i in rest {
        values[i] = far_lane(values[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `erf_in_place` compiled for AVX-512 where the processor has it (as `model::gelu` runs it).
    fn widest(values: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn avx512(values: &mut [f32]) {
            erf_in_place(values)
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F (checked above).
            return unsafe { avx512(values) };
        }
        erf_in_place(values)
    }

    fn check(inputs: &[f32]) -> usize {
        let mut values = inputs.to_vec();
        widest(&mut values);
        inputs
            .iter()
            .zip(&values)
            .filter(|&(x, y)| {
                let expected = libm::erff(*x);
                y.to_bits() != expected.to_bits() && !(y.is_nan() && expected.is_nan())
            })
            .count()
    }

    /// Every branch boundary of `erff` (and its neighbours), zeros, infinities, NaN, and a
    /// spread of 2^22 bit patterns over the whole range, through the vector code.
    #[test]
    fn erf_in_place_is_libm_erff() {
        let boundaries = [
            0x3180_0000u32,
            0x3f58_0000,
            0x3fa0_0000,
            0x4036_db6d,
            0x40c0_0000,
            0x7f80_0000,
        ];
        let mut inputs: Vec<f32> = boundaries
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
            1.0,
            -1.0,
        ]);
        inputs.extend((0..(1u32 << 22)).map(|i| f32::from_bits(i.wrapping_mul(1021) ^ (i << 10))));
        assert_eq!(check(&inputs), 0);
        // A length that leaves partial blocks of both passes.
        assert_eq!(check(&inputs[..1_000_003]), 0);
    }

    /// All 2^32 inputs through the vector code (about 15 s on two threads):
    /// `cargo test --release erf -- --ignored`.
    #[test]
    #[ignore]
    fn erf_in_place_is_libm_erff_for_every_f32() {
        use rayon::prelude::*;
        let wrong = (0..=u16::MAX)
            .into_par_iter()
            .map(|high| {
                let inputs: Vec<f32> = (0..=u16::MAX)
                    .map(|low| f32::from_bits((u32::from(high) << 16) | u32::from(low)))
                    .collect();
                check(&inputs)
            })
            .sum::<usize>();
        assert_eq!(wrong, 0);
    }
}
