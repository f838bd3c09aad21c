//! The hand-written backward of [`super::forward::forward_on`]: gradients
//! of every tensor (accumulated into `grads`) from the gradient of the
//! logits, written once over [`EncoderBackend`] ([`backward`] is the CPU's).

use super::config::EncoderConfig;
use super::forward::{drop_in_place, dropped, Batch, Cache, CacheOn};
use super::params::{head_index, l, layer_index, EncoderParams};
use crate::backend::{infallible, CpuBackend, EncoderBackend};

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
/// respect to the logits is `dlogits` (B×2), on the CPU.
pub fn backward(
    c: &EncoderConfig,
    p: &EncoderParams,
    batch: &Batch,
    cache: &Cache,
    dlogits: &[f32],
    grads: &mut EncoderParams,
) {
    infallible(backward_on(&CpuBackend, c, p, batch, cache, dlogits, grads))
}

/// [`backward`] on backend `b`.
pub fn backward_on<B: EncoderBackend>(
    b: &B,
    c: &EncoderConfig,
    p: &B::Params,
    batch: &Batch,
    cache: &CacheOn<B>,
    dlogits: &[f32],
    grads: &mut B::Grads,
) -> Result<(), B::Error> {
    let w = |i: usize| B::weight(p, i);
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let t = batch.tokens.len();
    let n = batch.sequences();
    let (i0, i1, i2, i3) = (
        head_index(c, 0),
        head_index(c, 1),
        head_index(c, 2),
        head_index(c, 3),
    );
    // head: logits = out(dropout(pooled)); pooled = tanh(dense(cls))
    let dlogits = b.upload(dlogits)?;
    let pooled_dropped = dropped(b, &cache.pooled, cache.pooled_mask.as_ref())?;
    let mut dpooled = b.zeros(n * h)?;
    {
        let (dw, db) = B::grad_and_bias(grads, i2, Some(i3));
        b.linear_backward(
            &dlogits,
            &pooled_dropped,
            w(i2),
            n,
            h,
            2,
            Some(&mut dpooled),
            dw,
            db,
        )?;
    }
    drop_in_place(b, &mut dpooled, cache.pooled_mask.as_ref())?;
    b.tanh_backward_in_place(&mut dpooled, &cache.pooled)?;
    let mut dcls = b.zeros(n * h)?;
    {
        let (dw, db) = B::grad_and_bias(grads, i0, Some(i1));
        b.linear_backward(
            &dpooled,
            &cache.cls,
            w(i0),
            n,
            h,
            h,
            Some(&mut dcls),
            dw,
            db,
        )?;
    }
    drop_in_place(b, &mut dcls, cache.cls_mask.as_ref())?;
    let mut dx = b.zeros(t * h)?;
    for s in 0..n {
        let row = b.gather_rows(&dcls, &[s], h)?;
        b.write_rows(&mut dx, batch.offsets[s], h, &row)?;
    }
    for layer in (0..c.num_hidden_layers).rev() {
        let lc = &cache.layers[layer];
        let idx = |kk: usize| layer_index(layer, kk);
        let lw = |kk: usize| w(idx(kk));
        // out = LN2(r2)
        let mut dr2 = b.zeros(t * h)?;
        {
            let (dw, db) = B::grad_and_bias(grads, idx(l::LN2_W), Some(idx(l::LN2_B)));
            b.layernorm_backward(
                &dx,
                &lc.r2,
                lw(l::LN2_W),
                &lc.m2,
                &lc.s2,
                t,
                h,
                &mut dr2,
                dw,
                db.expect("a bias"),
            )?;
        }
        // r2 = dropout(gelu(u)·Woᵀ + bo) + h1
        let dz2 = dropped(b, &dr2, lc.out_mask.as_ref())?;
        let mut dgu = b.zeros(t * inter)?;
        {
            let (dw, db) = B::grad_and_bias(grads, idx(l::O_W), Some(idx(l::O_B)));
            b.linear_backward(
                &dz2,
                &lc.gu,
                lw(l::O_W),
                t,
                inter,
                h,
                Some(&mut dgu),
                dw,
                db,
            )?;
        }
        let mut du = b.zeros(t * inter)?;
        b.gelu_backward(&dgu, &lc.u, &mut du)?;
        let mut dh1 = b.zeros(t * h)?;
        {
            let (dw, db) = B::grad_and_bias(grads, idx(l::I_W), Some(idx(l::I_B)));
            b.linear_backward(&du, &lc.h1, lw(l::I_W), t, h, inter, Some(&mut dh1), dw, db)?;
        }
        b.add_in_place(&mut dh1, &dr2)?;
        // h1 = LN1(r1)
        let mut dr1 = b.zeros(t * h)?;
        {
            let (dw, db) = B::grad_and_bias(grads, idx(l::LN1_W), Some(idx(l::LN1_B)));
            b.layernorm_backward(
                &dh1,
                &lc.r1,
                lw(l::LN1_W),
                &lc.m1,
                &lc.s1,
                t,
                h,
                &mut dr1,
                dw,
                db.expect("a bias"),
            )?;
        }
        // r1 = dropout(ctx·Waoᵀ + bao) + x
        let dz1 = dropped(b, &dr1, lc.attn_out_mask.as_ref())?;
        let mut dctx = b.zeros(t * h)?;
        {
            let (dw, db) = B::grad_and_bias(grads, idx(l::AO_W), Some(idx(l::AO_B)));
            b.linear_backward(&dz1, &lc.ctx, lw(l::AO_W), t, h, h, Some(&mut dctx), dw, db)?;
        }
        let (mut dq, mut dk, mut dv) = (b.zeros(t * h)?, b.zeros(t * h)?, b.zeros(t * h)?);
        b.bidirectional_attention_backward(
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
        )?;
        let mut dnext = dr1;
        let mut tmp = b.zeros(t * h)?;
        for (dy, wk, bk) in [
            (&dq, l::Q_W, l::Q_B),
            (&dk, l::K_W, l::K_B),
            (&dv, l::V_W, l::V_B),
        ] {
            let (dw, db) = B::grad_and_bias(grads, idx(wk), Some(idx(bk)));
            b.linear_backward(dy, &lc.x, lw(wk), t, h, h, Some(&mut tmp), dw, db)?;
            b.add_in_place(&mut dnext, &tmp)?;
        }
        dx = dnext;
    }
    // embeddings: x = dropout(LN(word + position + type))
    drop_in_place(b, &mut dx, cache.emb_mask.as_ref())?;
    let mut de = b.zeros(t * h)?;
    {
        let (dw, db) = B::grad_and_bias(grads, 3, Some(4));
        b.layernorm_backward(
            &dx,
            &cache.emb,
            w(3),
            &cache.m0,
            &cache.s0,
            t,
            h,
            &mut de,
            dw,
            db.expect("a bias"),
        )?;
    }
    // each table's rows summed in token order, as the forward gathered them
    for (ids, table) in [
        (&batch.tokens[..], 0),
        (&batch.positions[..], 1),
        (&vec![0; t][..], 2),
    ] {
        let (dtable, _) = B::grad_and_bias(grads, table, None);
        b.embedding_backward(ids, &de, h, dtable)?;
    }
    Ok(())
}
