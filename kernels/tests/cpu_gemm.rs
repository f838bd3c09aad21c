//! The matrix product on every instruction set this CPU has (AVX-512,
//! AVX2+FMA, the `gemm` crate) against a naive f64 product written here,
//! element by element, over shapes that are not multiples of any tile or
//! block, all four transposes and both betas.

mod common;

use common::*;
use flow_kernels::cpu::{self, GemmIsa};

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

/// m, n, k straddling the tiles (14×32 and 6×16), the A block (112 / 48
/// rows), the KC slice (256), the small-m path (m < 4) and the threading
/// threshold.
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

fn check_isa(isa: GemmIsa) {
    let mut r = rng(41);
    for &(m, n, k) in SHAPES {
        for a_t in [false, true] {
            for b_t in [false, true] {
                let a = randn(&mut r, m * k, 1.0);
                let b = randn(&mut r, k * n, 1.0);
                let (want, mag) = naive(m, n, k, &a, a_t, &b, b_t);
                let what = format!("{isa:?} {m}x{n}x{k} a_t={a_t} b_t={b_t}");
                // beta = 0 must never read C (NaN there must not leak)
                let mut c = vec![f32::NAN; m * n];
                cpu::gemm_on(isa, m, n, k, &a, a_t, &b, b_t, &mut c, 0.0);
                assert_each_close(&format!("{what} beta 0"), &c, &want, &mag);
                // beta = 1 adds into C
                let c0 = randn(&mut r, m * n, 1.0);
                let mut c = c0.clone();
                cpu::gemm_on(isa, m, n, k, &a, a_t, &b, b_t, &mut c, 1.0);
                let want1: Vec<f64> = want.iter().zip(&c0).map(|(w, c)| w + *c as f64).collect();
                assert_each_close(&format!("{what} beta 1"), &c, &want1, &mag);
            }
        }
    }
}

#[test]
fn avx512_path_matches_naive_where_the_cpu_has_it() {
    if !GemmIsa::Avx512.is_available() {
        eprintln!("skipped: this CPU has no avx512f");
        return;
    }
    check_isa(GemmIsa::Avx512);
}

#[test]
fn avx2_path_matches_naive_forced_even_on_avx512_cpus() {
    if !GemmIsa::Avx2Fma.is_available() {
        eprintln!("skipped: this CPU has no avx2+fma");
        return;
    }
    check_isa(GemmIsa::Avx2Fma);
}

#[test]
fn gemm_crate_path_matches_naive() {
    check_isa(GemmIsa::GemmCrate);
}

#[test]
fn k_zero_sets_or_keeps_c() {
    for isa in GemmIsa::available() {
        let mut c = vec![f32::NAN; 6];
        cpu::gemm_on(isa, 2, 3, 0, &[], false, &[], false, &mut c, 0.0);
        assert_eq!(c, vec![0.0; 6], "{isa:?} k = 0, beta 0");
        let mut c = vec![1.5f32; 6];
        cpu::gemm_on(isa, 2, 3, 0, &[], false, &[], false, &mut c, 1.0);
        assert_eq!(c, vec![1.5; 6], "{isa:?} k = 0, beta 1");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut r = rng(42);
    let (m, n, k) = (300, 700, 600);
    let a = randn(&mut r, m * k, 1.0);
    let b = randn(&mut r, k * n, 1.0);
    for isa in GemmIsa::available() {
        if isa == GemmIsa::GemmCrate {
            continue; // the crate's own split may change summation order
        }
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0.0f32; m * n];
            pool.install(|| cpu::gemm_on(isa, m, n, k, &a, false, &b, true, &mut c, 0.0));
            c
        };
        let one = run(1);
        let three = run(3);
        assert!(
            one.iter().zip(&three).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{isa:?}: 1 and 3 threads differ"
        );
    }
}

#[test]
fn detected_isa_is_the_widest_available() {
    let avail = GemmIsa::available();
    assert_eq!(GemmIsa::detected(), avail[0]);
    assert_eq!(avail.last(), Some(&GemmIsa::GemmCrate));
}
