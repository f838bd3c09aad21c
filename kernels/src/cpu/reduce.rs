//! Reductions used by gradient clipping.

use rayon::prelude::*;

const CHUNK: usize = 1 << 15;

/// Σ x², each chunk summed in f32 lanes and the chunks in f64.
pub fn sum_of_squares(x: &[f32]) -> f64 {
    x.par_chunks(CHUNK)
        .map(|c| {
            let mut acc = [0.0f64; 4];
            let it = c.chunks_exact(4);
            let rest = it.remainder();
            for q in it {
                for l in 0..4 {
                    acc[l] += (q[l] as f64) * (q[l] as f64);
                }
            }
            acc.iter().sum::<f64>() + rest.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()
        })
        // Summed in chunk order: rayon's `sum` adds in a tree shaped by
        // work stealing, so the total would depend on threads and timing.
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

/// x *= s.
pub fn scale_in_place(x: &mut [f32], s: f32) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            *v *= s;
        }
    });
}
