//! Spherical linear interpolation with mergekit's rules.

use rayon::prelude::*;

/// Above this |cos| the vectors count as colinear and are interpolated linearly.
pub const SLERP_DOT_THRESHOLD: f64 = 0.9995;
/// A side with a norm not above this is not normalised.
pub const SLERP_NORM_EPS: f64 = 1e-8;

const CHUNK: usize = 1 << 15;

/// out = slerp(t, a, b) per mergekit: the angle comes from the normalised
/// copies (a side with norm ≤ 1e-8 is left as is), the dot is clamped to
/// [−1, 1]; when |dot| > 0.9995 the result is the linear interpolation
/// (1−t)·a + t·b, else sin((1−t)θ)/sinθ·a + sin(tθ)/sinθ·b, always of the
/// ORIGINAL tensors. Reductions are accumulated in f64.
pub fn slerp(t: f32, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && a.len() == out.len(), "slerp: lengths");
    let (aa, bb, ab) = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(x, y)| {
            let (mut aa, mut bb, mut ab) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in x.iter().zip(y) {
                let (x, y) = (x as f64, y as f64);
                aa += x * x;
                bb += y * y;
                ab += x * y;
            }
            (aa, bb, ab)
        })
        // Summed in chunk order, not rayon's work-stealing tree: the same
        // bytes whatever the threads.
        .collect::<Vec<(f64, f64, f64)>>()
        .into_iter()
        .fold((0.0, 0.0, 0.0), |p, q| (p.0 + q.0, p.1 + q.1, p.2 + q.2));
    let na = aa.sqrt();
    let nb = bb.sqrt();
    let na = if na > SLERP_NORM_EPS { na } else { 1.0 };
    let nb = if nb > SLERP_NORM_EPS { nb } else { 1.0 };
    let dot = (ab / (na * nb)).clamp(-1.0, 1.0);
    let t = t as f64;
    let (ca, cb) = if dot.abs() > SLERP_DOT_THRESHOLD {
        (1.0 - t, t)
    } else {
        let theta = dot.acos();
        let s = theta.sin();
        (((1.0 - t) * theta).sin() / s, (t * theta).sin() / s)
    };
    let (ca, cb) = (ca as f32, cb as f32);
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .zip(b.par_chunks(CHUNK))
        .for_each(|((o, x), y)| {
            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                *o = ca * x + cb * y;
            }
        });
}
