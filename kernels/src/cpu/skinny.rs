//! `y = x·Wᵀ` for a few rows of `x`: the products of decoding and of scoring
//! a short continuation, with f32 or bf16 weights.
//!
//! A decoding step reads every weight once for a handful of rows, so its
//! speed is the memory bandwidth over the weights' bytes. Here each task
//! streams its weight rows one after the other (one sequential stream per
//! core: on the machines measured, interleaving several rows' streams cost
//! half the bandwidth, docs/performance.md) and dots each row, while it is in
//! L1, with every row of `x`. The `gemm` crate is three to five times slower
//! at these shapes for more than one row (it packs for a large product).
//! bf16 weights are widened to f32 in registers: exact, since a bf16 is the
//! high half of an f32, so only the bytes read change, by half.
//!
//! The vector width is chosen at run time (AVX-512, AVX2+FMA, or portable
//! code): one binary for every x86-64 machine.

use half::bf16;
use rayon::prelude::*;

use super::matmul::gemm;

/// Rows of `x` up to which the streaming kernel runs (above it `gemm` wins).
pub const SKINNY_ROWS: usize = 8;
/// Weight rows widened at a time when a bf16 product has many rows.
const WIDEN_BLOCK: usize = 256;
/// Weight rows one rayon task streams.
const TASK_ROWS: usize = 32;

/// The weight element types the streaming kernel reads.
pub trait WeightElem: Copy + Send + Sync + 'static {
    /// Whether the element is f32 (else bf16).
    const F32: bool;
    fn to_f32(self) -> f32;
}
impl WeightElem for f32 {
    const F32: bool = true;
    fn to_f32(self) -> f32 {
        self
    }
}
impl WeightElem for bf16 {
    const F32: bool = false;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// `y[t×out] = x[t×in]·Wᵀ + bias`, W `out×in` (nn.Linear's layout) in bf16,
/// for any number of rows.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_bf16(
    x: &[f32],
    w: &[bf16],
    bias: Option<&[bf16]>,
    t: usize,
    in_f: usize,
    out_f: usize,
    y: &mut [f32],
) {
    assert_eq!(x.len(), t * in_f, "linear_forward_bf16: x");
    assert_eq!(w.len(), out_f * in_f, "linear_forward_bf16: w");
    assert_eq!(y.len(), t * out_f, "linear_forward_bf16: y");
    if let Some(b) = bias {
        assert_eq!(b.len(), out_f, "linear_forward_bf16: bias");
    }
    if t <= SKINNY_ROWS {
        skinny_product(x, w, t, in_f, out_f, y);
    } else {
        widened_product(x, w, t, in_f, out_f, y);
    }
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(out_f.max(1)) {
            for (o, b) in row.iter_mut().zip(b) {
                *o += b.to_f32();
            }
        }
    }
}

/// `y[t×out] = x[t×in]·Wᵀ` (set) by streaming the weight rows; for `t` up to
/// [`SKINNY_ROWS`] (any `t` works).
pub fn skinny_product<W: WeightElem>(
    x: &[f32],
    w: &[W],
    t: usize,
    in_f: usize,
    out_f: usize,
    y: &mut [f32],
) {
    skinny_products(x, t, in_f, &mut [(w, out_f, y)]);
}

/// Several products of one input, `y_i[t×out_i] = x[t×in]·W_iᵀ` (set), as
/// [`skinny_product`] each, in one parallel pass over all their weight rows:
/// a decoding step's q, k and v (or gate and up) cost one fork and join of
/// the threads, not three. Each output is what `skinny_product` gives.
pub fn skinny_products<W: WeightElem>(
    x: &[f32],
    t: usize,
    in_f: usize,
    products: &mut [(&[W], usize, &mut [f32])],
) {
    assert_eq!(x.len(), t * in_f, "skinny_products: x");
    for (w, out_f, y) in products.iter() {
        assert_eq!(w.len(), out_f * in_f, "skinny_products: w");
        assert_eq!(y.len(), t * out_f, "skinny_products: y");
    }
    if t == 0 {
        return;
    }
    if in_f == 0 {
        for (_, _, y) in products.iter_mut() {
            y.fill(0.0);
        }
        return;
    }
    let kernel = row_kernel::<W>();
    // (product, first weight row) of every task
    let tasks: Vec<(usize, usize)> = products
        .iter()
        .enumerate()
        .flat_map(|(p, (_, out_f, _))| (0..*out_f).step_by(TASK_ROWS).map(move |j| (p, j)))
        .collect();
    // each task's outputs, weight row by weight row (`t` each), then placed
    let columns: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(p, j0)| {
            let (w, out_f, _) = &products[p];
            let n = TASK_ROWS.min(out_f - j0);
            let mut out = vec![0.0f32; n * t];
            for (j, row) in w[j0 * in_f..(j0 + n) * in_f].chunks_exact(in_f).enumerate() {
                // SAFETY: `row` and every row of `x` are `in_f` long; the
                // kernel was chosen for this machine's features.
                unsafe {
                    kernel(
                        x.as_ptr(),
                        t,
                        in_f,
                        row.as_ptr().cast(),
                        &mut out[j * t..][..t],
                    )
                };
            }
            out
        })
        .collect();
    for (&(p, j0), cols) in tasks.iter().zip(&columns) {
        let (_, out_f, y) = &mut products[p];
        for (jj, col) in cols.chunks_exact(t).enumerate() {
            for (ti, v) in col.iter().enumerate() {
                y[ti * *out_f + j0 + jj] = *v;
            }
        }
    }
}

/// Many rows, bf16: widen `WIDEN_BLOCK` weight rows at a time and multiply
/// them by the f32 `gemm`, writing those output columns of every row.
fn widened_product(x: &[f32], w: &[bf16], t: usize, in_f: usize, out_f: usize, y: &mut [f32]) {
    if out_f == 0 {
        return;
    }
    let block = WIDEN_BLOCK.min(out_f);
    let mut wide = vec![0.0f32; block * in_f];
    let mut part = vec![0.0f32; t * block];
    for j0 in (0..out_f).step_by(block) {
        let n = block.min(out_f - j0);
        let dst = &mut wide[..n * in_f];
        dst.par_chunks_mut(4096)
            .zip(w[j0 * in_f..(j0 + n) * in_f].par_chunks(4096))
            .for_each(|(d, s)| super::convert::bf16_to_f32(s, d));
        let part = &mut part[..t * n];
        gemm(t, n, in_f, x, false, dst, true, part, 0.0);
        for (ti, row) in part.chunks_exact(n).enumerate() {
            y[ti * out_f + j0..ti * out_f + j0 + n].copy_from_slice(row);
        }
    }
}

/// `out[i] = x[i]·w` for the `t` rows of `x` (`in_f > 0` each) and one weight
/// row `w` of f32 or bf16 elements.
///
/// # Safety
/// `x` holds `t·in_f` f32, `w` `in_f` elements of the kernel's type, and the
/// machine has the kernel's features.
type RowKernel = unsafe fn(x: *const f32, t: usize, in_f: usize, w: *const u8, out: &mut [f32]);

/// The widest kernel for `W` this machine runs, chosen once per type.
fn row_kernel<W: WeightElem>() -> RowKernel {
    static F32: std::sync::OnceLock<RowKernel> = std::sync::OnceLock::new();
    static BF16: std::sync::OnceLock<RowKernel> = std::sync::OnceLock::new();
    let cell = if W::F32 { &F32 } else { &BF16 };
    *cell.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return if W::F32 {
                    x86::row_avx512::<true>
                } else {
                    x86::row_avx512::<false>
                };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return if W::F32 {
                    x86::row_avx2::<true>
                } else {
                    x86::row_avx2::<false>
                };
            }
        }
        if W::F32 {
            row_portable::<f32>
        } else {
            row_portable::<bf16>
        }
    })
}

/// The portable kernel (and the vector kernels' reference in the tests).
///
/// # Safety
/// As [`RowKernel`].
unsafe fn row_portable<W: WeightElem>(
    x: *const f32,
    t: usize,
    in_f: usize,
    w: *const u8,
    out: &mut [f32],
) {
    // SAFETY: the caller passes `in_f` elements of `W` and `t·in_f` of x.
    let (w, x) = unsafe {
        (
            std::slice::from_raw_parts(w.cast::<W>(), in_f),
            std::slice::from_raw_parts(x, t * in_f),
        )
    };
    for (i, o) in out.iter_mut().enumerate().take(t) {
        let xs = &x[i * in_f..(i + 1) * in_f];
        let mut acc = [0.0f32; 8];
        let (wc, xc) = (w.chunks_exact(8), xs.chunks_exact(8));
        let (wr, xr) = (wc.remainder(), xc.remainder());
        for (a, b) in wc.zip(xc) {
            for l in 0..8 {
                acc[l] += a[l].to_f32() * b[l];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (a, b) in wr.iter().zip(xr) {
            s += a.to_f32() * b;
        }
        *o = s;
    }
}

// Index loops: one index walks the accumulators, the inputs and the outputs
// together, as the registers are laid out.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod x86 {
    use std::arch::x86_64::*;

    /// Element `k` of the weight row as f32 (f32, or the bits of a bf16).
    #[inline(always)]
    unsafe fn weight_at<const F32: bool>(w: *const u8, k: usize) -> f32 {
        if F32 {
            *w.cast::<f32>().add(k)
        } else {
            f32::from_bits(u32::from(*w.cast::<u16>().add(k)) << 16)
        }
    }

    /// 16 weights from element `k` on, as f32.
    #[inline(always)]
    unsafe fn weights16<const F32: bool>(w: *const u8, k: usize) -> __m512 {
        if F32 {
            _mm512_loadu_ps(w.cast::<f32>().add(k))
        } else {
            let bits = _mm256_loadu_si256(w.cast::<u16>().add(k).cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
        }
    }

    /// 8 weights from element `k` on, as f32.
    #[inline(always)]
    unsafe fn weights8<const F32: bool>(w: *const u8, k: usize) -> __m256 {
        if F32 {
            _mm256_loadu_ps(w.cast::<f32>().add(k))
        } else {
            let bits = _mm_loadu_si128(w.cast::<u16>().add(k).cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(bits)))
        }
    }

    /// AVX-512: the rows of `x` four at a time, two accumulators each (even
    /// and odd 16-element chunks) so the fused multiply-adds do not wait on
    /// each other: 8 accumulators, the weights and one input in registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_avx512<const F32: bool>(
        x: *const f32,
        t: usize,
        in_f: usize,
        w: *const u8,
        out: &mut [f32],
    ) {
        let mut i = 0;
        while i < t {
            match t - i {
                1 => rows_avx512::<F32, 1>(x.add(i * in_f), in_f, w, &mut out[i..]),
                2 => rows_avx512::<F32, 2>(x.add(i * in_f), in_f, w, &mut out[i..]),
                3 => rows_avx512::<F32, 3>(x.add(i * in_f), in_f, w, &mut out[i..]),
                _ => rows_avx512::<F32, 4>(x.add(i * in_f), in_f, w, &mut out[i..]),
            }
            i += 4;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows_avx512<const F32: bool, const N: usize>(
        x: *const f32,
        in_f: usize,
        w: *const u8,
        out: &mut [f32],
    ) {
        let mut even = [_mm512_setzero_ps(); N];
        let mut odd = [_mm512_setzero_ps(); N];
        let pairs = in_f / 32 * 32;
        let mut k = 0;
        while k < pairs {
            let w0 = weights16::<F32>(w, k);
            let w1 = weights16::<F32>(w, k + 16);
            for i in 0..N {
                let xi = x.add(i * in_f + k);
                even[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xi), even[i]);
                odd[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xi.add(16)), odd[i]);
            }
            k += 32;
        }
        if k + 16 <= in_f {
            let w0 = weights16::<F32>(w, k);
            for i in 0..N {
                even[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x.add(i * in_f + k)), even[i]);
            }
            k += 16;
        }
        for i in 0..N {
            let mut s = _mm512_reduce_add_ps(_mm512_add_ps(even[i], odd[i]));
            for kk in k..in_f {
                s += weight_at::<F32>(w, kk) * *x.add(i * in_f + kk);
            }
            out[i] = s;
        }
    }

    /// AVX2+FMA: as the AVX-512 kernel with 8 lanes (8 accumulators, the
    /// weights and one input fit the 16 registers).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2<const F32: bool>(
        x: *const f32,
        t: usize,
        in_f: usize,
        w: *const u8,
        out: &mut [f32],
    ) {
        let mut i = 0;
        while i < t {
            match t - i {
                1 => rows_avx2::<F32, 1>(x.add(i * in_f), in_f, w, &mut out[i..]),
                2 => rows_avx2::<F32, 2>(x.add(i * in_f), in_f, w, &mut out[i..]),
                3 => rows_avx2::<F32, 3>(x.add(i * in_f), in_f, w, &mut out[i..]),
                _ => rows_avx2::<F32, 4>(x.add(i * in_f), in_f, w, &mut out[i..]),
            }
            i += 4;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows_avx2<const F32: bool, const N: usize>(
        x: *const f32,
        in_f: usize,
        w: *const u8,
        out: &mut [f32],
    ) {
        let mut even = [_mm256_setzero_ps(); N];
        let mut odd = [_mm256_setzero_ps(); N];
        let pairs = in_f / 16 * 16;
        let mut k = 0;
        while k < pairs {
            let w0 = weights8::<F32>(w, k);
            let w1 = weights8::<F32>(w, k + 8);
            for i in 0..N {
                let xi = x.add(i * in_f + k);
                even[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xi), even[i]);
                odd[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xi.add(8)), odd[i]);
            }
            k += 16;
        }
        if k + 8 <= in_f {
            let w0 = weights8::<F32>(w, k);
            for i in 0..N {
                even[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.add(i * in_f + k)), even[i]);
            }
            k += 8;
        }
        for i in 0..N {
            let v = _mm256_add_ps(even[i], odd[i]);
            let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
            let mut s = _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
            for kk in k..in_f {
                s += weight_at::<F32>(w, kk) * *x.add(i * in_f + kk);
            }
            out[i] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this machine can run computes what the portable one
    /// does, for both weight types, every count of rows and odd depths.
    #[test]
    fn each_vector_width_computes_the_same_dots() {
        let mut kernels: Vec<(&str, RowKernel, RowKernel)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(("avx512", x86::row_avx512::<true>, x86::row_avx512::<false>));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                kernels.push(("avx2", x86::row_avx2::<true>, x86::row_avx2::<false>));
            }
        }
        for in_f in [1, 7, 8, 15, 16, 31, 32, 33, 47, 64, 77] {
            for t in 1..=9 {
                // small integers: every order of summation is exact
                let x: Vec<f32> = (0..t * in_f).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
                let w: Vec<f32> = (0..in_f).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
                let w16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
                let mut want = vec![0.0; t];
                unsafe { row_portable::<f32>(x.as_ptr(), t, in_f, w.as_ptr().cast(), &mut want) };
                for (name, k32, k16) in &kernels {
                    let mut got = vec![f32::NAN; t];
                    unsafe { k32(x.as_ptr(), t, in_f, w.as_ptr().cast(), &mut got) };
                    assert_eq!(got, want, "{name} f32, t={t} in={in_f}");
                    let mut got = vec![f32::NAN; t];
                    unsafe { k16(x.as_ptr(), t, in_f, w16.as_ptr().cast(), &mut got) };
                    assert_eq!(got, want, "{name} bf16, t={t} in={in_f}");
                }
            }
        }
    }
}
