//! Matrix products through the `gemm` crate (rayon-parallel above its own
//! size threshold). Its `x86-v4` feature (workspace Cargo.toml) compiles the
//! AVX-512 microkernels in beside the AVX2+FMA ones; the crate picks one at
//! run time (`avx512f` detected once), so one binary runs both kinds of x86
//! machine. A hand-written packed AVX-512/AVX2 kernel was measured against it
//! and lost (docs/performance.md, "Matrix products").

use gemm::Parallelism;

/// C (m×n) = op(A)·op(B) + beta·C. A is m×k (k×m if a_t), B is k×n (n×k if b_t). beta ∈ {0.0, 1.0}.
/// With beta = 0 the previous contents of C are never read (NaN garbage is fine).
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
    // Strides as (column stride, row stride) of the logical matrices.
    let (a_cs, a_rs) = if a_t {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    let (b_cs, b_rs) = if b_t {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    // SAFETY: the asserts above bound every index gemm touches: A spans
    // m·k, B k·n and C m·n elements with the strides given.
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
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta, // gemm's alpha scales the old C
            1.0,  // gemm's beta scales the product
            false,
            false,
            false,
            Parallelism::Rayon(0),
        );
    }
}

/// y[t×out] = x[t×in]·Wᵀ + bias  (W is out×in, the HF nn.Linear layout); up to
/// `SKINNY_ROWS` rows by streaming the weights, above through `gemm`.
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
    if t <= super::skinny::SKINNY_ROWS {
        // decoding and short continuations: stream the weights (skinny.rs)
        super::skinny::skinny_product(x, w, t, in_f, out_f, y);
        if let Some(b) = bias {
            assert_eq!(b.len(), out_f, "linear_forward: bias");
            for row in y.chunks_exact_mut(out_f.max(1)) {
                for (o, b) in row.iter_mut().zip(b) {
                    *o += b;
                }
            }
        }
        return;
    }
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
