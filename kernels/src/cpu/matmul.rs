//! Matrix products. On x86-64 they run flow's own packed kernels
//! (`gemm_x86`) on the widest vector unit the CPU has, chosen once at run
//! time: AVX-512 where `avx512f` is present, AVX2+FMA otherwise; one binary
//! serves both. Elsewhere (or on an x86 CPU without AVX2/FMA) they go
//! through the `gemm` crate.

use std::sync::OnceLock;

use gemm::Parallelism;

#[cfg(target_arch = "x86_64")]
use super::gemm_x86::{gemm_packed, gemm_small_m, Dst, View, Width, SMALL_M};

/// The instruction set a matrix product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmIsa {
    /// 512-bit vectors (x86-64 `avx512f`).
    Avx512,
    /// 256-bit vectors with fused multiply-add (x86-64 `avx2` + `fma`).
    Avx2Fma,
    /// The `gemm` crate's own dispatch (any other CPU).
    GemmCrate,
}

impl GemmIsa {
    /// Whether this CPU can run `self`.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            GemmIsa::Avx512 | GemmIsa::Avx2Fma => false,
            GemmIsa::GemmCrate => true,
        }
    }

    /// Every instruction set this CPU can run, widest first.
    pub fn available() -> Vec<GemmIsa> {
        [GemmIsa::Avx512, GemmIsa::Avx2Fma, GemmIsa::GemmCrate]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// The one `gemm` uses: the widest available (detected once).
    pub fn detected() -> GemmIsa {
        static ISA: OnceLock<GemmIsa> = OnceLock::new();
        *ISA.get_or_init(|| GemmIsa::available()[0])
    }
}

/// C (m×n) = op(A)·op(B) + beta·C. A is m×k (k×m if a_t), B is k×n (n×k if b_t). beta ∈ {0.0, 1.0}.
/// With beta = 0 the previous contents of C are never read (NaN garbage is fine).
/// Runs on [`GemmIsa::detected`], on all rayon threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    c: &mut [f32],
    beta: f32,
) {
    gemm_on(GemmIsa::detected(), m, n, k, a, a_t, b, b_t, c, beta)
}

/// [`gemm`] on a given instruction set (tests run each one the CPU has).
/// Panics if the CPU lacks it (see [`GemmIsa::is_available`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_on(
    isa: GemmIsa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    c: &mut [f32],
    beta: f32,
) {
    assert!(
        isa.is_available(),
        "gemm: this CPU cannot run {isa:?}; pick one of GemmIsa::available()"
    );
    assert!(
        beta == 0.0 || beta == 1.0,
        "gemm: beta must be 0 or 1, got {beta}"
    );
    assert!(
        a.len() >= m * k,
        "gemm: A has {} elements, need {}",
        a.len(),
        m * k
    );
    assert!(
        b.len() >= k * n,
        "gemm: B has {} elements, need {}",
        b.len(),
        k * n
    );
    assert!(
        c.len() >= m * n,
        "gemm: C has {} elements, need {}",
        c.len(),
        m * n
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == 0.0 {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // (row stride, column stride) of the logical matrices.
    let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
    #[cfg(target_arch = "x86_64")]
    {
        let width = match isa {
            GemmIsa::Avx512 => Some(Width::Avx512),
            GemmIsa::Avx2Fma => Some(Width::Avx2),
            GemmIsa::GemmCrate => None,
        };
        if let Some(width) = width {
            let (av, bv) = (
                View {
                    ptr: a.as_ptr(),
                    rs: a_rs,
                    cs: a_cs,
                },
                View {
                    ptr: b.as_ptr(),
                    rs: b_rs,
                    cs: b_cs,
                },
            );
            let cd = Dst {
                ptr: c.as_mut_ptr(),
                ld: n,
            };
            // SAFETY: the asserts above bound every index (A spans m·k, B k·n,
            // C m·n elements with these strides) and `isa` was checked (both
            // widths imply AVX2+FMA for the small-m path).
            unsafe {
                if m < SMALL_M {
                    gemm_small_m(m, n, k, av, bv, cd, beta != 0.0, true);
                } else {
                    gemm_packed(width, m, n, k, av, bv, cd, 1.0, beta != 0.0, true);
                }
            }
            return;
        }
    }
    // SAFETY: as above; gemm's (column stride, row stride) order.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            beta, // gemm's alpha scales the old C
            1.0,  // gemm's beta scales the product
            false,
            false,
            false,
            Parallelism::Rayon(0),
        );
    }
}

/// y[t×out] = x[t×in]·Wᵀ + bias  (W is out×in, the HF nn.Linear layout).
pub fn linear_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    t: usize,
    in_f: usize,
    out_f: usize,
    y: &mut [f32],
) {
    assert_eq!(x.len(), t * in_f, "linear_forward: x");
    assert_eq!(w.len(), out_f * in_f, "linear_forward: w");
    assert_eq!(y.len(), t * out_f, "linear_forward: y");
    match bias {
        Some(b) => {
            assert_eq!(b.len(), out_f, "linear_forward: bias");
            for row in y.chunks_exact_mut(out_f) {
                row.copy_from_slice(b);
            }
            gemm(t, out_f, in_f, x, false, w, true, y, 1.0);
        }
        None => gemm(t, out_f, in_f, x, false, w, true, y, 0.0),
    }
}

/// dx (set, if Some) = dy·W; dw (acc) += dyᵀ·x; dbias (acc) += Σ_rows dy.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    t: usize,
    in_f: usize,
    out_f: usize,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    assert_eq!(dy.len(), t * out_f, "linear_backward: dy");
    assert_eq!(x.len(), t * in_f, "linear_backward: x");
    assert_eq!(w.len(), out_f * in_f, "linear_backward: w");
    assert_eq!(dw.len(), out_f * in_f, "linear_backward: dw");
    if let Some(dx) = dx {
        assert_eq!(dx.len(), t * in_f, "linear_backward: dx");
        gemm(t, in_f, out_f, dy, false, w, false, dx, 0.0);
    }
    gemm(out_f, in_f, t, dy, true, x, false, dw, 1.0);
    if let Some(db) = dbias {
        assert_eq!(db.len(), out_f, "linear_backward: dbias");
        for row in dy.chunks_exact(out_f) {
            for (b, g) in db.iter_mut().zip(row) {
                *b += g;
            }
        }
    }
}
