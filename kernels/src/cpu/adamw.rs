//! AdamW with torch.optim.AdamW semantics (the single-tensor path):
//! p ← p·(1 − lr·wd); m ← lerp(m, g, 1 − β1); v ← β2·v + (1 − β2)·g²;
//! p ← p − (lr / (1 − β1^step)) · m / (sqrt(v) / sqrt(1 − β2^step) + eps).

use rayon::prelude::*;

/// Hyper-parameters of AdamW.
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

const CHUNK: usize = 1 << 14;

/// The f64 a hyper-parameter was written as: configs give decimals such as
/// 0.999, which PyTorch keeps as Python floats; `0.999f32 as f64` differs
/// from them by 1e-8, enough to shift 1 − β2 by 1e-5 relative. The shortest
/// decimal that round-trips the f32 recovers the written value.
fn widen(x: f32) -> f64 {
    x.to_string().parse::<f64>().unwrap_or(x as f64)
}

/// One AdamW update of `param` with `grad`, moments `m` and `v`; step is 1-based.
///
/// Scalars are formed in f64 and the element updates done in f32 in the same
/// order as PyTorch, so results agree with torch to f32 rounding.
pub fn adamw_step(
    cfg: &AdamW,
    step: u64,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adamw_step: lengths"
    );
    assert!(step >= 1, "adamw_step: step is 1-based");
    let lr = widen(cfg.lr);
    let (b1, b2) = (widen(cfg.beta1), widen(cfg.beta2));
    let decay = (1.0 - lr * widen(cfg.weight_decay)) as f32;
    let bc1 = 1.0 - b1.powf(step as f64);
    let bc2_sqrt = (1.0 - b2.powf(step as f64)).sqrt() as f32;
    let step_size = (lr / bc1) as f32;
    let w1 = (1.0 - b1) as f32;
    let beta2 = cfg.beta2;
    let w2 = (1.0 - b2) as f32;
    let eps = cfg.eps;
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *p *= decay;
                // torch's lerp with weight < 0.5: m + w·(g − m)
                *m += w1 * (g - *m);
                *v = *v * beta2 + w2 * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *p -= step_size * (*m / denom);
            }
        });
}
