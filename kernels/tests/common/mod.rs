//! Shared helpers for the CPU kernel tests: seeded random inputs and
//! comparisons. Included with `mod common;` by each test file.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale), never an all-zero tensor.
pub fn randn(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-scale..scale)).collect()
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// max|a − b| / max(1e-6, max|b|): error relative to the reference's scale.
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - y).abs()));
    diff / scale
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}");
}

/// Central finite differences in f64 of `loss(x)` with step h.
pub fn fd_grad(x: &[f64], h: f64, loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + h;
            let lp = loss(&xp);
            xp[i] = x[i] - h;
            let lm = loss(&xp);
            xp[i] = x[i];
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Textbook attention in f64 with an explicit score matrix per head.
/// Returns (out [t, hq, d], lse [hq, t]).
#[allow(clippy::too_many_arguments)]
pub fn naive_attention(
    hq: usize,
    hkv: usize,
    d: usize,
    scale: f64,
    window: Option<usize>,
    t: usize,
    s: usize,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    doc: Option<&[u32]>,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; t * hq * d];
    let mut lse = vec![0.0; hq * t];
    let group = hq / hkv;
    for h in 0..hq {
        let g = h / group;
        // explicit t×s score matrix
        let mut scores = vec![f64::NEG_INFINITY; t * s];
        for i in 0..t {
            let qi = s - t + i;
            for j in 0..s {
                let causal = j <= qi;
                let in_window = window.is_none_or(|w| j > qi || qi - j < w);
                let same_doc = doc.is_none_or(|dd| dd[qi] == dd[j]);
                if causal && in_window && same_doc {
                    let mut acc = 0.0;
                    for c in 0..d {
                        acc += q[(i * hq + h) * d + c] * k[(j * hkv + g) * d + c];
                    }
                    scores[i * s + j] = scale * acc;
                }
            }
        }
        for i in 0..t {
            let row = &scores[i * s..(i + 1) * s];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
            lse[h * t + i] = m + z.ln();
            for j in 0..s {
                let p = (row[j] - m).exp() / z;
                for c in 0..d {
                    out[(i * hq + h) * d + c] += p * v[(j * hkv + g) * d + c];
                }
            }
        }
    }
    (out, lse)
}
