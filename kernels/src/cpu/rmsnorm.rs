//! RMSNorm with HF semantics: y = w * (x * rsqrt(mean(x²) + eps)), in f32.

use rayon::prelude::*;

use super::par::rows_per_task;

/// Σ x² of one row with independent partial sums (vectorisable).
#[inline]
fn row_sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l] * c[l];
        }
    }
    let tail: f32 = rest.iter().map(|v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// Forward; `rstd` (len rows) receives 1/sqrt(mean(x²)+eps) for the backward.
pub fn rmsnorm_forward(
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    y: &mut [f32],
    rstd: &mut [f32],
) {
    assert_eq!(x.len(), rows * dim, "rmsnorm_forward: x");
    assert_eq!(w.len(), dim, "rmsnorm_forward: w");
    assert_eq!(y.len(), rows * dim, "rmsnorm_forward: y");
    assert_eq!(rstd.len(), rows, "rmsnorm_forward: rstd");
    if rows == 0 || dim == 0 {
        return;
    }
    let rpt = rows_per_task(dim, 1 << 14);
    y.par_chunks_mut(rpt * dim)
        .zip(rstd.par_chunks_mut(rpt))
        .zip(x.par_chunks(rpt * dim))
        .for_each(|((yb, rb), xb)| {
            for ((yr, r), xr) in yb
                .chunks_exact_mut(dim)
                .zip(rb.iter_mut())
                .zip(xb.chunks_exact(dim))
            {
                let inv = 1.0 / (row_sum_sq(xr) / dim as f32 + eps).sqrt();
                *r = inv;
                for ((yv, xv), wv) in yr.iter_mut().zip(xr).zip(w) {
                    *yv = wv * (xv * inv);
                }
            }
        });
}

/// Backward: dx (set), dw (acc).
///
/// With r = rstd: dx_i = r·(w_i·dy_i − x_i·r²·Σ_j(dy_j·w_j·x_j)/dim), dw_j += Σ_rows dy_j·x_j·r.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    rows: usize,
    dim: usize,
    dx: &mut [f32],
    dw: &mut [f32],
) {
    assert_eq!(dy.len(), rows * dim, "rmsnorm_backward: dy");
    assert_eq!(x.len(), rows * dim, "rmsnorm_backward: x");
    assert_eq!(w.len(), dim, "rmsnorm_backward: w");
    assert_eq!(rstd.len(), rows, "rmsnorm_backward: rstd");
    assert_eq!(dx.len(), rows * dim, "rmsnorm_backward: dx");
    assert_eq!(dw.len(), dim, "rmsnorm_backward: dw");
    if rows == 0 || dim == 0 {
        return;
    }
    let rpt = rows_per_task(dim, 1 << 14);
    let partial = dx
        .par_chunks_mut(rpt * dim)
        .zip(dy.par_chunks(rpt * dim))
        .zip(x.par_chunks(rpt * dim))
        .zip(rstd.par_chunks(rpt))
        .map(|(((dxb, dyb), xb), rb)| {
            let mut dw_part = vec![0.0f32; dim];
            for (((dxr, dyr), xr), &r) in dxb
                .chunks_exact_mut(dim)
                .zip(dyb.chunks_exact(dim))
                .zip(xb.chunks_exact(dim))
                .zip(rb)
            {
                let mut s = 0.0f32;
                for ((g, xv), wv) in dyr.iter().zip(xr).zip(w) {
                    s += g * wv * xv;
                }
                let c = r * r * s / dim as f32;
                for ((((d, g), xv), wv), dwp) in dxr
                    .iter_mut()
                    .zip(dyr)
                    .zip(xr)
                    .zip(w)
                    .zip(dw_part.iter_mut())
                {
                    *d = r * (wv * g - xv * c);
                    *dwp += g * xv * r;
                }
            }
            dw_part
        })
        // One partial row a chunk, added in chunk order: a fold/reduce
        // would add in a tree shaped by work stealing, so the weight
        // gradient would depend on the threads and their timing.
        .collect::<Vec<Vec<f32>>>();
    for part in &partial {
        for (d, p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
}
