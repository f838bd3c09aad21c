//! SwiGLU gate: out = silu(gate) * up.

use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// out = silu(gate) * up, elementwise.
pub fn swiglu_forward(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu_forward: gate/up");
    assert_eq!(gate.len(), out.len(), "swiglu_forward: out");
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .for_each(|((o, g), u)| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
}

/// dgate (set) = dout·up·silu'(gate), dup (set) = dout·silu(gate),
/// with silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
pub fn swiglu_backward(gate: &[f32], up: &[f32], dout: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    let n = gate.len();
    assert!(
        up.len() == n && dout.len() == n && dgate.len() == n && dup.len() == n,
        "swiglu_backward: lengths"
    );
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .zip(dout.par_chunks(CHUNK))
        .for_each(|((((dg, du), g), u), d)| {
            for ((((dg, du), &g), &u), &d) in dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(d)
            {
                let s = sigmoid(g);
                *du = d * g * s;
                *dg = d * u * s * (1.0 + g * (1.0 - s));
            }
        });
}
