//! Packed f32 matrix products for x86-64 with a register-blocked microkernel
//! per vector width: AVX-512 (14×32 tile, 28 zmm accumulators) and
//! AVX2+FMA (6×16 tile, 12 ymm accumulators). The caller picks the ISA at
//! run time (`matmul::GemmIsa`); both are compiled into every binary through
//! `#[target_feature]`.
//!
//! Layout (BLIS order): for each NC-column block and KC-deep slice, B's
//! slice is packed once into NR-wide column panels (shared by all tasks);
//! each task packs an MC×KC block of A into MR-high row panels and runs the
//! microkernel over its tiles. Every element of C is summed in the same
//! order (k ascending inside a KC slice, slices added in order) whatever the
//! task split, so results do not depend on the number of threads.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

/// Depth of one packed slice: 256 keeps an AVX-512 B micro-panel (KC×32
/// floats, 32 KiB) and an A micro-panel (14×KC, 14 KiB) within L1+L2 reach.
const KC: usize = 256;
/// Columns per packed B block (KC×NC floats = 2 MiB, shared by the cores).
const NC: usize = 2048;
/// Work of one product (m·n·k) under which it runs on the calling thread.
const SERIAL_FLOPS: usize = 1 << 18;

/// A strided read-only matrix: element (i, j) at `ptr[i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(crate) ptr: *const f32,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

/// The destination: row-major with row stride `ld`.
#[derive(Clone, Copy)]
pub(crate) struct Dst {
    pub(crate) ptr: *mut f32,
    pub(crate) ld: usize,
}

// SAFETY: tasks read A and B only, and write disjoint tiles of C.
unsafe impl Send for View {}
unsafe impl Sync for View {}
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

/// Vector width of the microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    Avx512,
    Avx2,
}

impl Width {
    fn mr(self) -> usize {
        match self {
            Width::Avx512 => 14,
            Width::Avx2 => 6,
        }
    }
    fn nr(self) -> usize {
        match self {
            Width::Avx512 => 32,
            Width::Avx2 => 16,
        }
    }
    /// Rows of A per task block (a multiple of MR, ~100 KiB at KC).
    fn mc(self) -> usize {
        self.mr() * 8
    }
}

/// C[m×n] = scale·A[m×k]·B[k×n] (+ C if `accumulate`; C is never read
/// otherwise). `parallel` = false keeps everything on the calling thread
/// (for callers that are themselves rayon tasks).
///
/// # Safety
/// The CPU must support `width`'s instructions; every (i, j) addressed
/// through the views lies inside its allocation; C's rows do not overlap
/// A or B.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_packed(
    width: Width,
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    c: Dst,
    scale: f32,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(c.ptr.add(i * c.ld), n).fill(0.0);
            }
        }
        return;
    }
    let (mr, nr, mc) = (width.mr(), width.nr(), width.mc());
    let parallel = parallel && m * n * k >= SERIAL_FLOPS && rayon::current_num_threads() > 1;
    let kc_max = KC.min(k);
    let nc_max = NC.min(n);
    let mut bpack = vec![0.0f32; kc_max * nc_max.div_ceil(nr) * nr];
    let n_ic = m.div_ceil(mc);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let panels = nc.div_ceil(nr);
        // With few row blocks, split the panels too so both cores get work.
        let threads = if parallel {
            rayon::current_num_threads()
        } else {
            1
        };
        let splits = (2 * threads).div_ceil(n_ic).clamp(1, panels);
        let per_split = panels.div_ceil(splits);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let acc = accumulate || pc > 0;
            let b_blk = View {
                ptr: b.ptr.add(pc * b.rs + jc * b.cs),
                ..b
            };
            let bp = &mut bpack[..kc * panels * nr];
            if parallel {
                bp.par_chunks_mut(kc * nr)
                    .enumerate()
                    .for_each(|(p, dst)| pack_b_panel(b_blk, kc, nc, p * nr, nr, dst));
            } else {
                for (p, dst) in bp.chunks_mut(kc * nr).enumerate() {
                    pack_b_panel(b_blk, kc, nc, p * nr, nr, dst);
                }
            }
            let bp: &[f32] = bp;
            let task = |t: usize, apack: &mut Vec<f32>| {
                let (ic_blk, split) = (t / splits, t % splits);
                let ic = ic_blk * mc;
                let mcur = mc.min(m - ic);
                let p0 = split * per_split;
                let p1 = (p0 + per_split).min(panels);
                if p0 >= p1 {
                    return;
                }
                let a_panels = mcur.div_ceil(mr);
                apack.resize(a_panels * mr * kc, 0.0);
                let a_blk = View {
                    ptr: a.ptr.add(ic * a.rs + pc * a.cs),
                    ..a
                };
                for (ip, dst) in apack.chunks_mut(kc * mr).enumerate() {
                    pack_a_panel(a_blk, kc, mcur, ip * mr, mr, dst);
                }
                for jp in p0..p1 {
                    let j = jp * nr;
                    let cols = nr.min(nc - j);
                    let bpp = bp.as_ptr().add(jp * kc * nr);
                    for ip in 0..a_panels {
                        let i = ip * mr;
                        let rows = mr.min(mcur - i);
                        let cptr = c.ptr.add((ic + i) * c.ld + jc + j);
                        let app = apack.as_ptr().add(ip * kc * mr);
                        match width {
                            Width::Avx512 => {
                                tile_avx512(kc, app, bpp, cptr, c.ld, rows, cols, scale, acc)
                            }
                            Width::Avx2 => {
                                tile_avx2(kc, app, bpp, cptr, c.ld, rows, cols, scale, acc)
                            }
                        }
                    }
                }
            };
            let tasks = n_ic * splits;
            if parallel {
                (0..tasks)
                    .into_par_iter()
                    .for_each_init(Vec::new, |apack, t| task(t, apack));
            } else {
                let mut apack = Vec::new();
                for t in 0..tasks {
                    task(t, &mut apack);
                }
            }
        }
    }
}

/// Packs columns j0..j0+nr of a kc×nc block of B into `dst[p*nr + c]`,
/// zero past column nc. Reads along whichever stride of B is 1.
unsafe fn pack_b_panel(b: View, kc: usize, nc: usize, j0: usize, nr: usize, dst: &mut [f32]) {
    let cols = nr.min(nc - j0);
    if b.cs == 1 {
        for p in 0..kc {
            let src = b.ptr.add(p * b.rs + j0);
            let d = &mut dst[p * nr..(p + 1) * nr];
            for (c, x) in d[..cols].iter_mut().enumerate() {
                *x = *src.add(c);
            }
            d[cols..].fill(0.0);
        }
    } else {
        for c in 0..nr {
            if c < cols {
                let src = b.ptr.add((j0 + c) * b.cs);
                for p in 0..kc {
                    dst[p * nr + c] = *src.add(p * b.rs);
                }
            } else {
                for p in 0..kc {
                    dst[p * nr + c] = 0.0;
                }
            }
        }
    }
}

/// Packs rows i0..i0+mr of an mc×kc block of A into `dst[p*mr + r]`, zero
/// past row mc.
unsafe fn pack_a_panel(a: View, kc: usize, mc: usize, i0: usize, mr: usize, dst: &mut [f32]) {
    let rows = mr.min(mc - i0);
    if a.rs == 1 {
        for p in 0..kc {
            let src = a.ptr.add(p * a.cs + i0);
            let d = &mut dst[p * mr..(p + 1) * mr];
            for (r, x) in d[..rows].iter_mut().enumerate() {
                *x = *src.add(r);
            }
            d[rows..].fill(0.0);
        }
    } else {
        for r in 0..mr {
            if r < rows {
                let src = a.ptr.add((i0 + r) * a.rs);
                for p in 0..kc {
                    dst[p * mr + r] = *src.add(p * a.cs);
                }
            } else {
                for p in 0..kc {
                    dst[p * mr + r] = 0.0;
                }
            }
        }
    }
}

/// One 14×32 tile: acc = Σ_p a[p]ᵀ·b[p] over kc packed steps, then
/// C[rows×cols] = scale·acc (+ C). Columns past `cols` are masked off.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    scale: f32,
    accumulate: bool,
) {
    const MR: usize = 14;
    let mut lo = [_mm512_setzero_ps(); MR];
    let mut hi = [_mm512_setzero_ps(); MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for r in 0..MR {
            let ar = _mm512_set1_ps(*a.add(r));
            lo[r] = _mm512_fmadd_ps(ar, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(ar, b1, hi[r]);
        }
        a = a.add(MR);
        b = b.add(32);
    }
    let vs = _mm512_set1_ps(scale);
    let m0: __mmask16 = if cols >= 16 {
        0xffff
    } else {
        ((1u32 << cols) - 1) as __mmask16
    };
    let m1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as __mmask16
    } else {
        0
    };
    for r in 0..rows.min(MR) {
        let p = c.add(r * ldc);
        let mut v0 = _mm512_mul_ps(lo[r], vs);
        let mut v1 = _mm512_mul_ps(hi[r], vs);
        if accumulate {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, p));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, p.add(16)));
        }
        _mm512_mask_storeu_ps(p, m0, v0);
        _mm512_mask_storeu_ps(p.add(16), m1, v1);
    }
}

/// One 6×16 tile (AVX2+FMA); edge tiles go through a stack buffer.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    scale: f32,
    accumulate: bool,
) {
    const MR: usize = 6;
    let mut lo = [_mm256_setzero_ps(); MR];
    let mut hi = [_mm256_setzero_ps(); MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for r in 0..MR {
            let ar = _mm256_broadcast_ss(&*a.add(r));
            lo[r] = _mm256_fmadd_ps(ar, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(ar, b1, hi[r]);
        }
        a = a.add(MR);
        b = b.add(16);
    }
    let vs = _mm256_set1_ps(scale);
    if cols == 16 {
        for r in 0..rows.min(MR) {
            let p = c.add(r * ldc);
            let mut v0 = _mm256_mul_ps(lo[r], vs);
            let mut v1 = _mm256_mul_ps(hi[r], vs);
            if accumulate {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.add(8)));
            }
            _mm256_storeu_ps(p, v0);
            _mm256_storeu_ps(p.add(8), v1);
        }
    } else {
        let mut buf = [0.0f32; 16];
        for r in 0..rows.min(MR) {
            _mm256_storeu_ps(buf.as_mut_ptr(), _mm256_mul_ps(lo[r], vs));
            _mm256_storeu_ps(buf.as_mut_ptr().add(8), _mm256_mul_ps(hi[r], vs));
            let p = c.add(r * ldc);
            for (j, x) in buf[..cols].iter().enumerate() {
                if accumulate {
                    *p.add(j) += x;
                } else {
                    *p.add(j) = *x;
                }
            }
        }
    }
}

/// Rows of C under which a product skips packing: packing B costs a pass
/// over it, as much as the whole product for a single row (decoding).
pub(crate) const SMALL_M: usize = 4;

/// C[m×n] for m < [`SMALL_M`] without packing: dot products against B's
/// columns when they are contiguous (a linear layer's weight rows), row
/// updates when B's rows are. Work is split over columns.
///
/// # Safety
/// As [`gemm_packed`], on a CPU with AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_small_m(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    c: Dst,
    accumulate: bool,
    parallel: bool,
) {
    const COLS_PER_TASK: usize = 64;
    let mut arow = vec![0.0f32; k];
    for i in 0..m {
        for (p, x) in arow.iter_mut().enumerate() {
            *x = *a.ptr.add(i * a.rs + p * a.cs);
        }
        let arow = &arow[..];
        let crow = Dst {
            ptr: c.ptr.add(i * c.ld),
            ld: 0,
        };
        let chunk = |j0: usize| {
            let j1 = (j0 + COLS_PER_TASK).min(n);
            let out = std::slice::from_raw_parts_mut(crow.ptr.add(j0), j1 - j0);
            if b.rs == 1 {
                for (jj, o) in out.iter_mut().enumerate() {
                    let col = std::slice::from_raw_parts(b.ptr.add((j0 + jj) * b.cs), k);
                    let v = dot_avx2(arow, col);
                    *o = if accumulate { *o + v } else { v };
                }
            } else {
                let mut acc = [0.0f32; COLS_PER_TASK];
                let acc = &mut acc[..j1 - j0];
                for (p, &x) in arow.iter().enumerate() {
                    let brow = b.ptr.add(p * b.rs + j0 * b.cs);
                    if b.cs == 1 {
                        axpy_avx2(x, std::slice::from_raw_parts(brow, j1 - j0), acc);
                    } else {
                        for (jj, y) in acc.iter_mut().enumerate() {
                            *y += x * *brow.add(jj * b.cs);
                        }
                    }
                }
                for (o, v) in out.iter_mut().zip(acc.iter()) {
                    *o = if accumulate { *o + v } else { *v };
                }
            }
        };
        let starts = (0..n).step_by(COLS_PER_TASK);
        if parallel && n * k >= SERIAL_FLOPS {
            starts.collect::<Vec<_>>().into_par_iter().for_each(chunk);
        } else {
            starts.for_each(chunk);
        }
    }
}

/// Σ a·b with four 8-lane FMA accumulators.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut p = 0;
    while p + 32 <= n {
        for (l, s) in acc.iter_mut().enumerate() {
            *s = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(p + 8 * l)),
                _mm256_loadu_ps(pb.add(p + 8 * l)),
                *s,
            );
        }
        p += 32;
    }
    while p + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(p)), _mm256_loadu_ps(pb.add(p)), acc[0]);
        p += 8;
    }
    let v = _mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    );
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    while p < n {
        s += a[p] * b[p];
        p += 1;
    }
    s
}

/// y += x·b.
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(x: f32, b: &[f32], y: &mut [f32]) {
    let n = b.len().min(y.len());
    let vx = _mm256_set1_ps(x);
    let mut p = 0;
    while p + 8 <= n {
        let yp = y.as_mut_ptr().add(p);
        _mm256_storeu_ps(
            yp,
            _mm256_fmadd_ps(vx, _mm256_loadu_ps(b.as_ptr().add(p)), _mm256_loadu_ps(yp)),
        );
        p += 8;
    }
    while p < n {
        y[p] += x * b[p];
        p += 1;
    }
}
