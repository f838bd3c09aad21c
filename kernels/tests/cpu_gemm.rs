//! The matrix product against a naive f64 product written here, element by
//! element, over shapes that are not multiples of any microkernel tile or
//! block, all four transposes and both betas. The `gemm` crate picks its
//! microkernels at run time (AVX-512 where `avx512f` is present, else
//! AVX2+FMA) and offers no way to force one, so these tests cover the path
//! of the machine they run on (CI runs on both kinds).

mod common;

use common::*;
use flow_kernels::cpu;

/// C = op(A)·op(B) in f64, and Σ|a·b| per element (the scale of its
/// rounding error).
fn naive(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut c = vec![0.0f64; m * n];
    let mut mag = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut abs) = (0.0f64, 0.0f64);
            for p in 0..k {
                let av = if a_t { a[p * m + i] } else { a[i * k + p] } as f64;
                let bv = if b_t { b[j * k + p] } else { b[p * n + j] } as f64;
                acc += av * bv;
                abs += (av * bv).abs();
            }
            c[i * n + j] = acc;
            mag[i * n + j] = abs;
        }
    }
    (c, mag)
}

#[track_caller]
fn assert_each_close(what: &str, got: &[f32], want: &[f64], mag: &[f64]) {
    for (idx, ((g, w), s)) in got.iter().zip(want).zip(mag).enumerate() {
        // f32 accumulation: a few ulps of the sum of magnitudes
        let tol = 1e-6 * (s + 1.0) * 8.0;
        assert!(
            (*g as f64 - w).abs() <= tol,
            "{what}: element {idx}: got {g}, want {w} (tolerance {tol:.2e})"
        );
    }
}

/// m, n, k that are multiples of no vector width or tile (primes and
/// block edges ±1), including the crate's m = 1 and n = 1 special cases, a
/// depth past one cache block and sizes above its threading threshold.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 77, 300),
    (2, 33, 17),
    (3, 1, 5),
    (4, 31, 9),
    (5, 17, 1),
    (13, 15, 7),
    (15, 33, 258),
    (29, 47, 513),
    (113, 65, 31),
    (130, 97, 200),
    (64, 2051, 40),
];

#[test]
fn gemm_matches_naive_element_by_element() {
    let mut r = rng(41);
    for &(m, n, k) in SHAPES {
        for a_t in [false, true] {
            for b_t in [false, true] {
                let a = randn(&mut r, m * k, 1.0);
                let b = randn(&mut r, k * n, 1.0);
                let (want, mag) = naive(m, n, k, &a, a_t, &b, b_t);
                let what = format!("{m}x{n}x{k} a_t={a_t} b_t={b_t}");
                // beta = 0 must never read C (NaN there must not leak)
                let mut c = vec![f32::NAN; m * n];
                cpu::gemm(m, n, k, &a, a_t, &b, b_t, &mut c, 0.0);
                assert_each_close(&format!("{what} beta 0"), &c, &want, &mag);
                // beta = 1 adds into C
                let c0 = randn(&mut r, m * n, 1.0);
                let mut c = c0.clone();
                cpu::gemm(m, n, k, &a, a_t, &b, b_t, &mut c, 1.0);
                let want1: Vec<f64> = want.iter().zip(&c0).map(|(w, c)| w + *c as f64).collect();
                assert_each_close(&format!("{what} beta 1"), &c, &want1, &mag);
            }
        }
    }
}

#[test]
fn k_zero_sets_or_keeps_c() {
    let mut c = vec![f32::NAN; 6];
    cpu::gemm(2, 3, 0, &[], false, &[], false, &mut c, 0.0);
    assert_eq!(c, vec![0.0; 6], "k = 0, beta 0");
    let mut c = vec![1.5f32; 6];
    cpu::gemm(2, 3, 0, &[], false, &[], false, &mut c, 1.0);
    assert_eq!(c, vec![1.5; 6], "k = 0, beta 1");
}

/// The bf16-weight product (inference) against the naive f64 product of the
/// same weights widened to f64, on both of its paths (a few rows: the
/// register kernel; many rows: widened blocks through `gemm`) and shapes that
/// are multiples of neither its 16 or 8 lanes nor its blocks of weight rows.
#[test]
fn bf16_weight_product_matches_naive_element_by_element() {
    let mut r = rng(43);
    let shapes: &[(usize, usize, usize)] = &[
        // (rows of x, out features, in features)
        (1, 1, 1),
        (1, 77, 300),
        (1, 576, 576),
        (2, 33, 17),
        (3, 300, 15),
        (4, 31, 9),
        (5, 17, 64),
        (8, 129, 33),
        (9, 65, 31),
        (20, 257, 40),
        (33, 600, 7),
    ];
    for &(t, out_f, in_f) in shapes {
        for with_bias in [false, true] {
            let x = randn(&mut r, t * in_f, 1.0);
            let w: Vec<half::bf16> = randn(&mut r, out_f * in_f, 1.0)
                .iter()
                .map(|&v| half::bf16::from_f32(v))
                .collect();
            let bias: Vec<half::bf16> = randn(&mut r, out_f, 1.0)
                .iter()
                .map(|&v| half::bf16::from_f32(v))
                .collect();
            let wide: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let (mut want, mag) = naive(t, out_f, in_f, &x, false, &wide, true);
            if with_bias {
                for (i, v) in want.iter_mut().enumerate() {
                    *v += bias[i % out_f].to_f32() as f64;
                }
            }
            // every element is written: NaN left in y would show
            let mut y = vec![f32::NAN; t * out_f];
            cpu::linear_forward_bf16(
                &x,
                &w,
                with_bias.then_some(bias.as_slice()),
                t,
                in_f,
                out_f,
                &mut y,
            );
            let what = format!("t={t} out={out_f} in={in_f} bias={with_bias}");
            assert_each_close(&what, &y, &want, &mag);
        }
    }
}

#[test]
fn bf16_weight_product_of_zero_depth_is_the_bias() {
    let bias = [half::bf16::from_f32(1.5), half::bf16::from_f32(-2.0)];
    let mut y = vec![f32::NAN; 4];
    cpu::linear_forward_bf16(&[], &[], Some(&bias), 2, 0, 2, &mut y);
    assert_eq!(y, vec![1.5, -2.0, 1.5, -2.0]);
}

/// Products of one input run together (a decoding step's q, k and v) give,
/// bit for bit, what each gives alone, for f32 and bf16 weights.
#[test]
fn shared_input_products_equal_each_product_alone() {
    let mut r = rng(47);
    for t in [1, 3, 8] {
        let in_f = 77;
        let x = randn(&mut r, t * in_f, 1.0);
        let widths = [65, 1, 200];
        let ws: Vec<Vec<f32>> = widths
            .iter()
            .map(|&n| randn(&mut r, n * in_f, 1.0))
            .collect();
        let alone: Vec<Vec<f32>> = ws
            .iter()
            .zip(widths)
            .map(|(w, n)| {
                let mut y = vec![f32::NAN; t * n];
                cpu::skinny_product(&x, w, t, in_f, n, &mut y);
                y
            })
            .collect();
        let mut ys: Vec<Vec<f32>> = widths.iter().map(|&n| vec![f32::NAN; t * n]).collect();
        let mut products: Vec<(&[f32], usize, &mut [f32])> = ws
            .iter()
            .zip(widths)
            .zip(ys.iter_mut())
            .map(|((w, n), y)| (w.as_slice(), n, y.as_mut_slice()))
            .collect();
        cpu::skinny_products(&x, t, in_f, &mut products);
        assert_eq!(ys, alone, "f32, t={t}");
        let w16: Vec<Vec<half::bf16>> = ws
            .iter()
            .map(|w| w.iter().map(|&v| half::bf16::from_f32(v)).collect())
            .collect();
        let alone: Vec<Vec<f32>> = w16
            .iter()
            .zip(widths)
            .map(|(w, n)| {
                let mut y = vec![f32::NAN; t * n];
                cpu::skinny_product(&x, w, t, in_f, n, &mut y);
                y
            })
            .collect();
        let mut ys: Vec<Vec<f32>> = widths.iter().map(|&n| vec![f32::NAN; t * n]).collect();
        let mut products: Vec<(&[half::bf16], usize, &mut [f32])> = w16
            .iter()
            .zip(widths)
            .zip(ys.iter_mut())
            .map(|((w, n), y)| (w.as_slice(), n, y.as_mut_slice()))
            .collect();
        cpu::skinny_products(&x, t, in_f, &mut products);
        assert_eq!(ys, alone, "bf16, t={t}");
    }
}
