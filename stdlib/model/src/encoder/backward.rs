//! The hand-written backward of [`super::forward::forward`]: gradients of
//! every tensor (accumulated into `grads`) from the gradient of the logits.

use flow_kernels::cpu as k;

use super::attention::attention_backward;
use super::config::EncoderConfig;
use super::dropout::{apply, masked};
use super::forward::{Batch, Cache};
use super::params::{l, EncoderParams};

/// Mean cross-entropy of the logits (B×2) against `labels`, and its gradient
/// d loss / d logits — torch's `CrossEntropyLoss()` (mean reduction).
pub fn cross_entropy(logits: &[f32], labels: &[u32]) -> (f64, Vec<f32>) {
    let b = labels.len();
    let mut loss = 0.0f64;
    let mut d = vec![0.0f32; b * 2];
    for (i, &y) in labels.iter().enumerate() {
        let (a, c) = (logits[2 * i], logits[2 * i + 1]);
        let m = a.max(c);
        let lse = m + ((a - m).exp() + (c - m).exp()).ln();
        loss += (lse - logits[2 * i + y as usize]) as f64;
        for j in 0..2 {
            let p = (logits[2 * i + j] - lse).exp();
            d[2 * i + j] = (p - if j == y as usize { 1.0 } else { 0.0 }) / b as f32;
        }
    }
    (loss / b as f64, d)
}

/// Accumulates into `grads` the gradient of a loss whose gradient with
/// respect to the logits is `dlogits` (B×2).
pub fn backward(
    c: &EncoderConfig,
    p: &EncoderParams,
    batch: &Batch,
    cache: &Cache,
    dlogits: &[f32],
    grads: &mut EncoderParams,
) {
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let t = batch.tokens.len();
    let b = batch.sequences();
    let (i0, i1, i2, i3) = (p.hi(0), p.hi(1), p.hi(2), p.hi(3));
    // head: logits = out(dropout(pooled)); pooled = tanh(dense(cls))
    let pooled_dropped = masked(&cache.pooled, cache.pooled_mask.as_deref());
    let mut dpooled = vec![0.0f32; b * h];
    {
        let (dw2, rest) = grads.data.split_at_mut(i3);
        k::linear_backward(
            dlogits,
            &pooled_dropped,
            &p.data[i2],
            b,
            h,
            2,
            Some(&mut dpooled),
            &mut dw2[i2],
            Some(&mut rest[0]),
        );
    }
    apply(&mut dpooled, cache.pooled_mask.as_deref());
    for (d, &y) in dpooled.iter_mut().zip(&cache.pooled) {
        *d *= 1.0 - y * y;
    }
    let mut dcls = vec![0.0f32; b * h];
    {
        let (a, rest) = grads.data.split_at_mut(i1);
        k::linear_backward(
            &dpooled,
            &cache.cls,
            &p.data[i0],
            b,
            h,
            h,
            Some(&mut dcls),
            &mut a[i0],
            Some(&mut rest[0]),
        );
    }
    apply(&mut dcls, cache.cls_mask.as_deref());
    let mut dx = vec![0.0f32; t * h];
    for s in 0..b {
        let o = batch.offsets[s];
        dx[o * h..(o + 1) * h].copy_from_slice(&dcls[s * h..(s + 1) * h]);
    }
    for layer in (0..c.num_hidden_layers).rev() {
        let lc = &cache.layers[layer];
        let idx = |kk: usize| EncoderParams::li(layer, kk);
        let w = |kk: usize| &p.data[idx(kk)][..];
        // out = LN2(r2)
        let mut dr2 = vec![0.0f32; t * h];
        {
            let (a, rest) = grads.data.split_at_mut(idx(l::LN2_B));
            k::layernorm_backward(
                &dx,
                &lc.r2,
                w(l::LN2_W),
                &lc.m2,
                &lc.s2,
                t,
                h,
                &mut dr2,
                &mut a[idx(l::LN2_W)],
                &mut rest[0],
            );
        }
        // r2 = dropout(gelu(u)·Woᵀ + bo) + h1
        let dz2 = masked(&dr2, lc.out_mask.as_deref());
        let mut dgu = vec![0.0f32; t * inter];
        {
            let (a, rest) = grads.data.split_at_mut(idx(l::O_B));
            k::linear_backward(
                &dz2,
                &lc.gu,
                w(l::O_W),
                t,
                inter,
                h,
                Some(&mut dgu),
                &mut a[idx(l::O_W)],
                Some(&mut rest[0]),
            );
        }
        let mut du = vec![0.0f32; t * inter];
        k::gelu_backward(&dgu, &lc.u, &mut du);
        let mut dh1 = vec![0.0f32; t * h];
        {
            let (a, rest) = grads.data.split_at_mut(idx(l::I_B));
            k::linear_backward(
                &du,
                &lc.h1,
                w(l::I_W),
                t,
                h,
                inter,
                Some(&mut dh1),
                &mut a[idx(l::I_W)],
                Some(&mut rest[0]),
            );
        }
        for (a, b) in dh1.iter_mut().zip(&dr2) {
            *a += b;
        }
        // h1 = LN1(r1)
        let mut dr1 = vec![0.0f32; t * h];
        {
            let (a, rest) = grads.data.split_at_mut(idx(l::LN1_B));
            k::layernorm_backward(
                &dh1,
                &lc.r1,
                w(l::LN1_W),
                &lc.m1,
                &lc.s1,
                t,
                h,
                &mut dr1,
                &mut a[idx(l::LN1_W)],
                &mut rest[0],
            );
        }
        // r1 = dropout(ctx·Waoᵀ + bao) + x
        let dz1 = masked(&dr1, lc.attn_out_mask.as_deref());
        let mut dctx = vec![0.0f32; t * h];
        {
            let (a, rest) = grads.data.split_at_mut(idx(l::AO_B));
            k::linear_backward(
                &dz1,
                &lc.ctx,
                w(l::AO_W),
                t,
                h,
                h,
                Some(&mut dctx),
                &mut a[idx(l::AO_W)],
                Some(&mut rest[0]),
            );
        }
        let (mut dq, mut dk, mut dv) = (
            vec![0.0f32; t * h],
            vec![0.0f32; t * h],
            vec![0.0f32; t * h],
        );
        attention_backward(
            &dctx,
            &lc.q,
            &lc.k,
            &lc.v,
            &lc.attn,
            &batch.offsets,
            c.num_attention_heads,
            c.head_dim(),
            &mut dq,
            &mut dk,
            &mut dv,
        );
        let mut dnext = dr1;
        let mut tmp = vec![0.0f32; t * h];
        for (dy, wk, bk) in [
            (&dq, l::Q_W, l::Q_B),
            (&dk, l::K_W, l::K_B),
            (&dv, l::V_W, l::V_B),
        ] {
            let (a, rest) = grads.data.split_at_mut(idx(bk));
            k::linear_backward(
                dy,
                &lc.x,
                w(wk),
                t,
                h,
                h,
                Some(&mut tmp),
                &mut a[idx(wk)],
                Some(&mut rest[0]),
            );
            for (a, b) in dnext.iter_mut().zip(&tmp) {
                *a += b;
            }
        }
        dx = dnext;
    }
    // embeddings: x = dropout(LN(word + position + type))
    apply(&mut dx, cache.emb_mask.as_deref());
    let mut de = vec![0.0f32; t * h];
    {
        let (a, rest) = grads.data.split_at_mut(4);
        k::layernorm_backward(
            &dx,
            &cache.emb,
            &p.data[3],
            &cache.m0,
            &cache.s0,
            t,
            h,
            &mut de,
            &mut a[3],
            &mut rest[0],
        );
    }
    for (i, row) in de.chunks_exact(h).enumerate() {
        let wt = batch.tokens[i] as usize * h;
        let ps = batch.positions[i] as usize * h;
        for (j, &g) in row.iter().enumerate() {
            grads.data[0][wt + j] += g;
            grads.data[1][ps + j] += g;
            grads.data[2][j] += g;
        }
    }
}
