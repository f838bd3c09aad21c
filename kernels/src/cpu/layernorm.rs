//! LayerNorm with torch semantics: y = (x − mean) · rsqrt(var + eps) · w + b,
//! var the biased variance of the row, in f32 (BERT / RoBERTa post-norm).

use rayon::prelude::*;

use super::par::rows_per_task;

/// Forward; `mean` and `rstd` (len rows) are kept for the backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    assert_eq!(x.len(), rows * dim, "layernorm_forward: x");
    assert_eq!(w.len(), dim, "layernorm_forward: w");
    assert_eq!(b.len(), dim, "layernorm_forward: b");
    assert_eq!(y.len(), rows * dim, "layernorm_forward: y");
    assert_eq!(mean.len(), rows, "layernorm_forward: mean");
    assert_eq!(rstd.len(), rows, "layernorm_forward: rstd");
    if rows == 0 || dim == 0 {
        return;
    }
    let rpt = rows_per_task(dim, 1 << 14);
    y.par_chunks_mut(rpt * dim)
        .zip(mean.par_chunks_mut(rpt))
        .zip(rstd.par_chunks_mut(rpt))
        .zip(x.par_chunks(rpt * dim))
        .for_each(|(((yb, mb), rb), xb)| {
            for (((yr, m), r), xr) in yb
                .chunks_exact_mut(dim)
                .zip(mb.iter_mut())
                .zip(rb.iter_mut())
                .zip(xb.chunks_exact(dim))
            {
                // two passes in f64 partial sums: the mean, then the centred squares
                let mu = (xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64) as f32;
                let var = (xr
                    .iter()
                    .map(|&v| {
                        let d = (v - mu) as f64;
                        d * d
                    })
                    .sum::<f64>()
                    / dim as f64) as f32;
                let inv = 1.0 / (var + eps).sqrt();
                *m = mu;
                *r = inv;
                for (((yv, &xv), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                    *yv = (xv - mu) * inv * wv + bv;
                }
            }
        });
}

/// Backward: dx (set), dw and db (acc).
///
/// With x̂ = (x − mean)·r and g = w·dy: dx = r·(g − mean(g) − x̂·mean(g·x̂)),
/// dw += Σ_rows dy·x̂, db += Σ_rows dy.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    rows: usize,
    dim: usize,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    assert_eq!(dy.len(), rows * dim, "layernorm_backward: dy");
    assert_eq!(x.len(), rows * dim, "layernorm_backward: x");
    assert_eq!(w.len(), dim, "layernorm_backward: w");
    assert_eq!(mean.len(), rows, "layernorm_backward: mean");
    assert_eq!(rstd.len(), rows, "layernorm_backward: rstd");
    assert_eq!(dx.len(), rows * dim, "layernorm_backward: dx");
    assert_eq!(dw.len(), dim, "layernorm_backward: dw");
    assert_eq!(db.len(), dim, "layernorm_backward: db");
    if rows == 0 || dim == 0 {
        return;
    }
    let rpt = rows_per_task(dim, 1 << 14);
    let partials = dx
        .par_chunks_mut(rpt * dim)
        .zip(dy.par_chunks(rpt * dim))
        .zip(x.par_chunks(rpt * dim))
        .zip(mean.par_chunks(rpt).zip(rstd.par_chunks(rpt)))
        .map(|(((dxb, dyb), xb), (mb, rb))| {
            let (mut dwp, mut dbp) = (vec![0.0f32; dim], vec![0.0f32; dim]);
            for ((((dxr, dyr), xr), &mu), &r) in dxb
                .chunks_exact_mut(dim)
                .zip(dyb.chunks_exact(dim))
                .zip(xb.chunks_exact(dim))
                .zip(mb)
                .zip(rb)
            {
                let (mut sg, mut sgx) = (0.0f32, 0.0f32);
                for ((&g, &xv), &wv) in dyr.iter().zip(xr).zip(w) {
                    let xh = (xv - mu) * r;
                    sg += g * wv;
                    sgx += g * wv * xh;
                }
                let (mg, mgx) = (sg / dim as f32, sgx / dim as f32);
                for (((((d, &g), &xv), &wv), a), c) in dxr
                    .iter_mut()
                    .zip(dyr)
                    .zip(xr)
                    .zip(w)
                    .zip(dwp.iter_mut())
                    .zip(dbp.iter_mut())
                {
                    let xh = (xv - mu) * r;
                    *d = r * (g * wv - mg - xh * mgx);
                    *a += g * xh;
                    *c += g;
                }
            }
            (dwp, dbp)
        })
        // Partial rows added in chunk order, whatever the threads (see
        // rmsnorm_backward).
        .collect::<Vec<(Vec<f32>, Vec<f32>)>>();
    for (pw, pb) in &partials {
        for (d, p) in dw.iter_mut().zip(pw) {
            *d += p;
        }
        for (d, p) in db.iter_mut().zip(pb) {
            *d += p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn loss(x: &[f32], w: &[f32], b: &[f32], c: &[f32], rows: usize, dim: usize) -> f64 {
        let mut y = vec![0.0; rows * dim];
        let (mut m, mut r) = (vec![0.0; rows], vec![0.0; rows]);
        layernorm_forward(x, w, b, 1e-5, rows, dim, &mut y, &mut m, &mut r);
        y.iter()
            .zip(c)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    #[test]
    fn forward_normalises_each_row() {
        let x = [1.0f32, 2.0, 3.0, 4.0, -2.0, 0.0, 2.0, 4.0];
        let w = [1.0f32, 2.0, 0.5, 1.0];
        let b = [0.0f32, 1.0, 0.0, -1.0];
        let mut y = [0.0f32; 8];
        let (mut m, mut r) = ([0.0f32; 2], [0.0f32; 2]);
        layernorm_forward(&x, &w, &b, 0.0, 2, 4, &mut y, &mut m, &mut r);
        // row 0: mean 2.5, var 1.25
        let s = 1.25f32.sqrt();
        let want0 = [
            -1.5 / s,
            2.0 * (-0.5 / s) + 1.0,
            0.5 * (0.5 / s),
            1.5 / s - 1.0,
        ];
        for (a, b) in y[..4].iter().zip(want0) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        assert_eq!(m, [2.5, 1.0]);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (rows, dim) = (3, 7);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut rnd = |n: usize| {
            (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>()
        };
        let x = rnd(rows * dim);
        let w: Vec<f32> = rnd(dim).iter().map(|v| 1.0 + v).collect();
        let b = rnd(dim);
        let c = rnd(rows * dim);
        let mut y = vec![0.0; rows * dim];
        let (mut m, mut r) = (vec![0.0; rows], vec![0.0; rows]);
        layernorm_forward(&x, &w, &b, 1e-5, rows, dim, &mut y, &mut m, &mut r);
        let mut dx = vec![0.0; rows * dim];
        let (mut dw, mut db) = (vec![0.0; dim], vec![0.0; dim]);
        layernorm_backward(&c, &x, &w, &m, &r, rows, dim, &mut dx, &mut dw, &mut db);
        let h = 1e-3f32;
        let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for i in 0..rows * dim {
            let g = fd(&|e| {
                let mut xx = x.clone();
                xx[i] += e;
                loss(&xx, &w, &b, &c, rows, dim)
            });
            assert!((g - dx[i] as f64).abs() < 2e-3, "dx[{i}] {g} {}", dx[i]);
        }
        for j in 0..dim {
            let gw = fd(&|e| {
                let mut ww = w.clone();
                ww[j] += e;
                loss(&x, &ww, &b, &c, rows, dim)
            });
            let gb = fd(&|e| {
                let mut bb = b.clone();
                bb[j] += e;
                loss(&x, &w, &bb, &c, rows, dim)
            });
            assert!((gw - dw[j] as f64).abs() < 2e-3, "dw[{j}] {gw} {}", dw[j]);
            assert!((gb - db[j] as f64).abs() < 2e-3, "db[{j}] {gb} {}", db[j]);
        }
    }
}
