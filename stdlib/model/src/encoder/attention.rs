//! Bidirectional multi-head attention over a ragged batch: each sequence
//! attends to all of its own tokens (padding is never materialised, which is
//! what HF's padding mask computes: a masked key gets exp(−inf) = 0 weight).
//! Work is split over (sequence, head); each task gathers its head's rows,
//! multiplies with the kernels' gemm and keeps its probabilities for the
//! backward.

use flow_kernels::cpu::gemm;
use rayon::prelude::*;

use super::dropout::{apply, masked, Dropout, Site};

/// Probabilities of every (sequence, head), kept for the backward.
#[derive(Clone, Debug, Default)]
pub struct AttnCache {
    /// Concatenated L×L blocks, sequence-major then head.
    pub probs: Vec<f32>,
    /// Start of block (s, h) in `probs`.
    pub starts: Vec<usize>,
    /// Dropout masks of the probabilities, laid out as `probs` (empty
    /// without dropout).
    pub masks: Vec<f32>,
}

fn gather(x: &[f32], rows: std::ops::Range<usize>, width: usize, col: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * d);
    for r in rows {
        out.extend_from_slice(&x[r * width + col..r * width + col + d]);
    }
    out
}

fn scatter(dst: &mut [f32], src: &[f32], start: usize, width: usize, col: usize, d: usize) {
    for (i, row) in src.chunks_exact(d).enumerate() {
        let r = start + i;
        dst[r * width + col..r * width + col + d].copy_from_slice(row);
    }
}

/// One (sequence, head) block's probabilities, dropout mask and output rows.
type BlockForward = (Vec<f32>, Option<Vec<f32>>, Vec<f32>);

/// ctx (set, T×H) from q, k, v (T×H); `offsets` has B+1 sequence bounds.
/// With `dropout` (and the layer's index) the probabilities are dropped
/// before they weight the values, as `BertSelfAttention` does in training.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    offsets: &[usize],
    heads: usize,
    head_dim: usize,
    ctx: &mut [f32],
    keep: bool,
    dropout: Option<(&Dropout, usize)>,
) -> AttnCache {
    let width = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..offsets.len() - 1)
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    let results: Vec<BlockForward> = tasks
        .par_iter()
        .enumerate()
        .map(|(block, &(s, h))| {
            let rows = offsets[s]..offsets[s + 1];
            let n = rows.len();
            let col = h * head_dim;
            let qh = gather(q, rows.clone(), width, col, head_dim);
            let kh = gather(k, rows.clone(), width, col, head_dim);
            let vh = gather(v, rows, width, col, head_dim);
            let mut p = vec![0.0f32; n * n];
            gemm(n, n, head_dim, &qh, false, &kh, true, &mut p, 0.0);
            for row in p.chunks_exact_mut(n) {
                let mut m = f32::NEG_INFINITY;
                for x in row.iter_mut() {
                    *x *= scale;
                    m = m.max(*x);
                }
                let mut sum = 0.0f32;
                for x in row.iter_mut() {
                    *x = (*x - m).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                for x in row.iter_mut() {
                    *x *= inv;
                }
            }
            let mask = dropout.and_then(|(d, layer)| {
                d.mask(Site::Attention { layer, block }, n * n, d.attention)
            });
            let mut o = vec![0.0f32; n * head_dim];
            let weights = masked(&p, mask.as_deref());
            gemm(n, head_dim, n, &weights, false, &vh, false, &mut o, 0.0);
            (p, mask, o)
        })
        .collect();
    let mut cache = AttnCache::default();
    for (&(s, h), (p, mask, o)) in tasks.iter().zip(results) {
        scatter(ctx, &o, offsets[s], width, h * head_dim, head_dim);
        if keep {
            cache.starts.push(cache.probs.len());
            cache.probs.extend_from_slice(&p);
            if let Some(m) = mask {
                cache.masks.extend_from_slice(&m);
            }
        }
    }
    cache
}

/// dq, dk, dv (set, T×H) from dctx.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dctx: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cache: &AttnCache,
    offsets: &[usize],
    heads: usize,
    head_dim: usize,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let width = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..offsets.len() - 1)
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    let results: Vec<[Vec<f32>; 3]> = tasks
        .par_iter()
        .enumerate()
        .map(|(t, &(s, h))| {
            let rows = offsets[s]..offsets[s + 1];
            let n = rows.len();
            let col = h * head_dim;
            let block = cache.starts[t]..cache.starts[t] + n * n;
            let p = &cache.probs[block.clone()];
            let mask = (!cache.masks.is_empty()).then(|| &cache.masks[block]);
            let doh = gather(dctx, rows.clone(), width, col, head_dim);
            let qh = gather(q, rows.clone(), width, col, head_dim);
            let kh = gather(k, rows.clone(), width, col, head_dim);
            let vh = gather(v, rows, width, col, head_dim);
            // with the dropped probabilities D = P∘M: dV = Dᵀ·dO, and
            // dP = (dO·Vᵀ)∘M
            let mut dvh = vec![0.0f32; n * head_dim];
            let mut ds = vec![0.0f32; n * n];
            gemm(n, n, head_dim, &doh, false, &vh, true, &mut ds, 0.0);
            gemm(
                n,
                head_dim,
                n,
                &masked(p, mask),
                true,
                &doh,
                false,
                &mut dvh,
                0.0,
            );
            apply(&mut ds, mask);
            // dS = P ∘ (dP − Σ_j dP∘P), times the scale of the scores
            for (dr, pr) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (d, &pv) in dr.iter_mut().zip(pr) {
                    *d = pv * (*d - dot) * scale;
                }
            }
            let mut dqh = vec![0.0f32; n * head_dim];
            gemm(n, head_dim, n, &ds, false, &kh, false, &mut dqh, 0.0);
            let mut dkh = vec![0.0f32; n * head_dim];
            gemm(n, head_dim, n, &ds, true, &qh, false, &mut dkh, 0.0);
            [dqh, dkh, dvh]
        })
        .collect();
    for (&(s, h), [a, b, c]) in tasks.iter().zip(results) {
        let col = h * head_dim;
        scatter(dq, &a, offsets[s], width, col, head_dim);
        scatter(dk, &b, offsets[s], width, col, head_dim);
        scatter(dv, &c, offsets[s], width, col, head_dim);
    }
}
