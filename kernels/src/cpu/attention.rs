//! Causal multi-head attention for one sequence (GQA, packed-document
//! masks, sliding window), flash-style: the forward streams over key blocks
//! with an online softmax, so no t×s score matrix is ever materialised; the
//! backward recomputes probabilities from the saved log-sum-exp.
//!
//! Work is split over (head, query block) for the forward and dq, and over
//! (kv head, key block) for dk/dv, so every task owns its outputs and no
//! atomics or per-thread gradient copies are needed.

use rayon::prelude::*;

use super::par::{dot, SharedMut};

/// Shape and masking parameters of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    /// Query heads.
    pub q_heads: usize,
    /// Key/value heads (divides `q_heads`).
    pub kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Multiplier of q·k (usually 1/sqrt(head_dim)).
    pub scale: f32,
    /// Mistral sliding window: key allowed iff q_pos - k_pos < window.
    pub window: Option<usize>,
}

/// Query rows per task.
const BQ: usize = 32;
/// Keys per block.
const BK: usize = 64;

/// Which keys each query may see.
struct Mask<'a> {
    /// Key index of query 0 (s − t).
    offset: usize,
    window: Option<usize>,
    doc: Option<&'a [u32]>,
    /// When doc ids never decrease, each document is one contiguous run and
    /// the mask is a key range: run_start/run_end per key index.
    runs: Option<(Vec<usize>, Vec<usize>)>,
}

impl<'a> Mask<'a> {
    fn new(p: &AttnParams, t: usize, s: usize, doc: Option<&'a [u32]>) -> Self {
        if let Some(w) = p.window {
            assert!(w >= 1, "attention: window must be at least 1");
        }
        let runs = doc.and_then(|d| {
            assert_eq!(d.len(), s, "attention: doc_ids must have one id per key");
            if !d.windows(2).all(|w| w[0] <= w[1]) {
                return None;
            }
            let mut start = vec![0usize; s];
            let mut end = vec![0usize; s];
            for j in 1..s {
                start[j] = if d[j] == d[j - 1] { start[j - 1] } else { j };
            }
            if s > 0 {
                end[s - 1] = s - 1;
            }
            for j in (0..s.saturating_sub(1)).rev() {
                end[j] = if d[j] == d[j + 1] { end[j + 1] } else { j };
            }
            Some((start, end))
        });
        Mask {
            offset: s - t,
            window: p.window,
            doc,
            runs,
        }
    }

    /// First key the query at key index `qi` may see (its last is `qi`).
    #[inline]
    fn key_lo(&self, qi: usize) -> usize {
        let mut lo = match self.window {
            Some(w) => (qi + 1).saturating_sub(w),
            None => 0,
        };
        if let Some((start, _)) = &self.runs {
            lo = lo.max(start[qi]);
        }
        lo
    }

    /// Last query key index that may see key `j`.
    #[inline]
    fn query_hi(&self, j: usize, s: usize) -> usize {
        let mut hi = s - 1;
        if let Some(w) = self.window {
            hi = hi.min(j + w - 1);
        }
        if let Some((_, end)) = &self.runs {
            hi = hi.min(end[j]);
        }
        hi
    }

    /// Whether a document check per key is still needed beyond the range.
    #[inline]
    fn needs_doc_check(&self) -> bool {
        self.doc.is_some() && self.runs.is_none()
    }

    #[inline]
    fn same_doc(&self, qi: usize, j: usize) -> bool {
        match self.doc {
            Some(d) => d[qi] == d[j],
            None => true,
        }
    }
}

/// dst[m×n] = dst_alpha·dst + beta·lhs[m×k]·rhs[k×n], single-threaded (we are
/// inside a rayon task). Operands are (pointer, row stride, column stride);
/// dst is (pointer, row stride, read dst, dst_alpha) with unit column stride.
///
/// # Safety
/// Every addressed element must lie inside its allocation.
unsafe fn small_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, usize, bool, f32),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        dst.2,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        dst.3,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

fn check_shapes(p: &AttnParams, t: usize, s: usize, q: &[f32], k: &[f32], v: &[f32]) {
    assert!(
        p.q_heads.checked_rem(p.kv_heads) == Some(0),
        "attention: q_heads must be a multiple of kv_heads"
    );
    assert!(s >= t, "attention: s ({s}) must be >= t ({t})");
    assert_eq!(q.len(), t * p.q_heads * p.head_dim, "attention: q");
    assert_eq!(k.len(), s * p.kv_heads * p.head_dim, "attention: k");
    assert_eq!(v.len(), s * p.kv_heads * p.head_dim, "attention: v");
}

/// q: [t, q_heads, d]; k, v: [s, kv_heads, d] with s >= t; query i sits at key index s - t + i (causal: attends keys 0..=s-t+i).
/// doc_ids: None, or Some(slice of len s): query i attends only keys with doc_ids equal to its own key index's id.
/// GQA: query head h uses kv head h / (q_heads / kv_heads). out: [t, q_heads, d] (set); lse: [q_heads, t] log-sum-exp of the scaled scores (set).
/// A query that sees no key (only possible with doc ids and a window of 0, which is rejected) would get zeros and lse −∞.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    p: &AttnParams,
    t: usize,
    s: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    doc_ids: Option<&[u32]>,
    out: &mut [f32],
    lse: &mut [f32],
) {
    check_shapes(p, t, s, q, k, v);
    let (hq, hkv, d) = (p.q_heads, p.kv_heads, p.head_dim);
    assert_eq!(out.len(), t * hq * d, "attention_forward: out");
    assert_eq!(lse.len(), hq * t, "attention_forward: lse");
    if t == 0 || hq == 0 {
        return;
    }
    let mask = Mask::new(p, t, s, doc_ids);
    let group = hq / hkv;
    let n_qb = t.div_ceil(BQ);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let lse_ptr = SharedMut(lse.as_mut_ptr());
    let doc_check = mask.needs_doc_check();

    (0..hq * n_qb).into_par_iter().for_each_init(
        || (vec![0.0f32; BQ * d], vec![0.0f32; BQ * BK]),
        |(acc, scores), task| {
            let h = task / n_qb;
            let qb = task % n_qb;
            let kvh = h / group;
            let i0 = qb * BQ;
            let i1 = (i0 + BQ).min(t);
            let rows = i1 - i0;
            let mut m_run = [f32::NEG_INFINITY; BQ];
            let mut l_run = [0.0f32; BQ];
            acc[..rows * d].fill(0.0);
            let lo = (i0..i1)
                .map(|i| mask.key_lo(mask.offset + i))
                .min()
                .unwrap_or(0);
            let hi = mask.offset + i1 - 1; // inclusive
            let mut kb0 = lo;
            while kb0 <= hi {
                let kb1 = (kb0 + BK).min(hi + 1);
                let nk = kb1 - kb0;
                // S[rows × nk] = scale · Q_blk · K_blkᵀ (q rows of head h are hq·d apart)
                // SAFETY: rows i0..i1 of head h lie in q, keys kb0..kb1 of kv head kvh in k,
                // and scores holds BQ·BK ≥ rows·nk elements with row stride BK.
                unsafe {
                    small_gemm(
                        rows,
                        nk,
                        d,
                        (scores.as_mut_ptr(), BK, false, 0.0),
                        (q.as_ptr().add((i0 * hq + h) * d), hq * d, 1),
                        (k.as_ptr().add((kb0 * hkv + kvh) * d), 1, hkv * d),
                        p.scale,
                    );
                }
                for r in 0..rows {
                    let qi = mask.offset + i0 + r;
                    let j_lo = mask.key_lo(qi);
                    let row = &mut scores[r * BK..r * BK + nk];
                    let mut bmax = f32::NEG_INFINITY;
                    for (c, x) in row.iter_mut().enumerate() {
                        let j = kb0 + c;
                        if j < j_lo || j > qi || (doc_check && !mask.same_doc(qi, j)) {
                            *x = f32::NEG_INFINITY;
                        }
                        bmax = bmax.max(*x);
                    }
                    if bmax == f32::NEG_INFINITY {
                        row.fill(0.0);
                        continue;
                    }
                    let m_new = m_run[r].max(bmax);
                    let alpha = (m_run[r] - m_new).exp();
                    if alpha != 1.0 {
                        for x in acc[r * d..(r + 1) * d].iter_mut() {
                            *x *= alpha;
                        }
                    }
                    let mut l = 0.0f32;
                    for x in row.iter_mut() {
                        *x = (*x - m_new).exp();
                        l += *x;
                    }
                    l_run[r] = l_run[r] * alpha + l;
                    m_run[r] = m_new;
                }
                // acc[rows × d] += P · V_blk
                // SAFETY: as above; acc holds BQ·d elements.
                unsafe {
                    small_gemm(
                        rows,
                        d,
                        nk,
                        (acc.as_mut_ptr(), d, true, 1.0),
                        (scores.as_ptr(), BK, 1),
                        (v.as_ptr().add((kb0 * hkv + kvh) * d), hkv * d, 1),
                        1.0,
                    );
                }
                kb0 = kb1;
            }
            for r in 0..rows {
                let i = i0 + r;
                // SAFETY: task (h, qb) alone writes rows i0..i1 of head h.
                let o = unsafe { out_ptr.slice((i * hq + h) * d, d) };
                let a = &acc[r * d..(r + 1) * d];
                let lse_i = unsafe { lse_ptr.slice(h * t + i, 1) };
                if l_run[r] > 0.0 {
                    let inv = 1.0 / l_run[r];
                    for (o, x) in o.iter_mut().zip(a) {
                        *o = x * inv;
                    }
                    lse_i[0] = m_run[r] + l_run[r].ln();
                } else {
                    o.fill(0.0);
                    lse_i[0] = f32::NEG_INFINITY;
                }
            }
        },
    );
}

/// dq (set) [t,q_heads,d]; dk, dv (set) [s,kv_heads,d].
///
/// With P = exp(scale·q·k − lse), D_i = Σ dout_i·out_i and dS = P·(dout·v − D):
/// dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dout.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    p: &AttnParams,
    t: usize,
    s: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    doc_ids: Option<&[u32]>,
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    check_shapes(p, t, s, q, k, v);
    let (hq, hkv, d) = (p.q_heads, p.kv_heads, p.head_dim);
    assert_eq!(out.len(), t * hq * d, "attention_backward: out");
    assert_eq!(dout.len(), t * hq * d, "attention_backward: dout");
    assert_eq!(lse.len(), hq * t, "attention_backward: lse");
    assert_eq!(dq.len(), t * hq * d, "attention_backward: dq");
    assert_eq!(dk.len(), s * hkv * d, "attention_backward: dk");
    assert_eq!(dv.len(), s * hkv * d, "attention_backward: dv");
    let mask = Mask::new(p, t, s, doc_ids);
    let group = hq / hkv;
    let doc_check = mask.needs_doc_check();

    // D[h, i] = dout_i · out_i
    let mut delta = vec![0.0f32; hq * t];
    delta
        .par_chunks_mut(t.max(1))
        .enumerate()
        .for_each(|(h, dh)| {
            for (i, x) in dh.iter_mut().enumerate() {
                let o = (i * hq + h) * d;
                *x = dot(&dout[o..o + d], &out[o..o + d]);
            }
        });
    let delta = &delta;

    // Pass 1: dq over (q head, query block), key block by key block:
    // S = scale·Q·Kᵀ, dP = dO·Vᵀ, dS = P⊙(dP − D), dQ += scale·dS·K.
    let n_qb = t.div_ceil(BQ);
    let dq_ptr = SharedMut(dq.as_mut_ptr());
    (0..hq * n_qb).into_par_iter().for_each_init(
        || {
            (
                vec![0.0f32; BQ * BK],
                vec![0.0f32; BQ * BK],
                vec![0.0f32; BQ * d],
            )
        },
        |(sbuf, dpbuf, dq_blk), task| {
            let h = task / n_qb;
            let qb = task % n_qb;
            let kvh = h / group;
            let i0 = qb * BQ;
            let i1 = (i0 + BQ).min(t);
            let rows = i1 - i0;
            dq_blk[..rows * d].fill(0.0);
            let lo = (i0..i1)
                .map(|i| mask.key_lo(mask.offset + i))
                .min()
                .unwrap_or(0);
            let hi = mask.offset + i1 - 1;
            let mut kb0 = lo;
            while kb0 <= hi {
                let kb1 = (kb0 + BK).min(hi + 1);
                let nk = kb1 - kb0;
                let kp = (kb0 * hkv + kvh) * d;
                let qp = (i0 * hq + h) * d;
                // SAFETY: rows i0..i1 of head h lie in q/dout, keys kb0..kb1 of
                // kv head kvh in k/v; the buffers hold BQ·BK and BQ·d elements.
                unsafe {
                    small_gemm(
                        rows,
                        nk,
                        d,
                        (sbuf.as_mut_ptr(), BK, false, 0.0),
                        (q.as_ptr().add(qp), hq * d, 1),
                        (k.as_ptr().add(kp), 1, hkv * d),
                        p.scale,
                    );
                    small_gemm(
                        rows,
                        nk,
                        d,
                        (dpbuf.as_mut_ptr(), BK, false, 0.0),
                        (dout.as_ptr().add(qp), hq * d, 1),
                        (v.as_ptr().add(kp), 1, hkv * d),
                        1.0,
                    );
                }
                for r in 0..rows {
                    let i = i0 + r;
                    let qi = mask.offset + i;
                    let (l, di) = (lse[h * t + i], delta[h * t + i]);
                    let j_lo = mask.key_lo(qi);
                    for c in 0..nk {
                        let j = kb0 + c;
                        let x = &mut sbuf[r * BK + c];
                        if l == f32::NEG_INFINITY
                            || j < j_lo
                            || j > qi
                            || (doc_check && !mask.same_doc(qi, j))
                        {
                            *x = 0.0;
                        } else {
                            let pr = (*x - l).exp();
                            *x = pr * (dpbuf[r * BK + c] - di);
                        }
                    }
                }
                // SAFETY: as above.
                unsafe {
                    small_gemm(
                        rows,
                        d,
                        nk,
                        (dq_blk.as_mut_ptr(), d, true, 1.0),
                        (sbuf.as_ptr(), BK, 1),
                        (k.as_ptr().add(kp), hkv * d, 1),
                        p.scale,
                    );
                }
                kb0 = kb1;
            }
            for r in 0..rows {
                let i = i0 + r;
                // SAFETY: task (h, qb) alone writes rows i0..i1 of head h.
                unsafe { dq_ptr.slice((i * hq + h) * d, d) }
                    .copy_from_slice(&dq_blk[r * d..(r + 1) * d]);
            }
        },
    );

    // Pass 2: dk, dv over (kv head, key block), query block by query block
    // of every q head in the group: dV += Pᵀ·dO, dK += scale·dSᵀ·Q.
    let n_kb = s.div_ceil(BK);
    let dk_ptr = SharedMut(dk.as_mut_ptr());
    let dv_ptr = SharedMut(dv.as_mut_ptr());
    (0..hkv * n_kb).into_par_iter().for_each_init(
        || {
            (
                vec![0.0f32; BQ * BK],
                vec![0.0f32; BQ * BK],
                vec![0.0f32; BK * d],
                vec![0.0f32; BK * d],
            )
        },
        |(sbuf, dpbuf, dk_blk, dv_blk), task| {
            let g = task / n_kb;
            let kb = task % n_kb;
            let j0 = kb * BK;
            let j1 = (j0 + BK).min(s);
            let nk = j1 - j0;
            let kp = (j0 * hkv + g) * d;
            dk_blk.fill(0.0);
            dv_blk.fill(0.0);
            let qi_lo = j0.max(mask.offset);
            let qi_hi = (j0..j1).map(|j| mask.query_hi(j, s)).max().unwrap_or(0);
            if t > 0 && qi_lo <= qi_hi {
                for h in g * group..(g + 1) * group {
                    let mut qb0 = qi_lo;
                    while qb0 <= qi_hi {
                        let qb1 = (qb0 + BQ).min(qi_hi + 1);
                        let rows = qb1 - qb0;
                        let i0 = qb0 - mask.offset;
                        let qp = (i0 * hq + h) * d;
                        // SAFETY: queries i0..i0+rows of head h lie in q/dout (qb1 ≤ s),
                        // keys j0..j1 of kv head g in k/v.
                        unsafe {
                            small_gemm(
                                rows,
                                nk,
                                d,
                                (sbuf.as_mut_ptr(), BK, false, 0.0),
                                (q.as_ptr().add(qp), hq * d, 1),
                                (k.as_ptr().add(kp), 1, hkv * d),
                                p.scale,
                            );
                            small_gemm(
                                rows,
                                nk,
                                d,
                                (dpbuf.as_mut_ptr(), BK, false, 0.0),
                                (dout.as_ptr().add(qp), hq * d, 1),
                                (v.as_ptr().add(kp), 1, hkv * d),
                                1.0,
                            );
                        }
                        for r in 0..rows {
                            let qi = qb0 + r;
                            let i = i0 + r;
                            let (l, di) = (lse[h * t + i], delta[h * t + i]);
                            let j_lo = mask.key_lo(qi);
                            for c in 0..nk {
                                let j = j0 + c;
                                let (x, y) = (&mut sbuf[r * BK + c], &mut dpbuf[r * BK + c]);
                                if l == f32::NEG_INFINITY
                                    || j < j_lo
                                    || j > qi
                                    || (doc_check && !mask.same_doc(qi, j))
                                {
                                    *x = 0.0;
                                    *y = 0.0;
                                } else {
                                    let pr = (*x - l).exp();
                                    *y = pr * (*y - di);
                                    *x = pr;
                                }
                            }
                        }
                        // SAFETY: as above; Pᵀ and dSᵀ read the buffers transposed.
                        unsafe {
                            small_gemm(
                                nk,
                                d,
                                rows,
                                (dv_blk.as_mut_ptr(), d, true, 1.0),
                                (sbuf.as_ptr(), 1, BK),
                                (dout.as_ptr().add(qp), hq * d, 1),
                                1.0,
                            );
                            small_gemm(
                                nk,
                                d,
                                rows,
                                (dk_blk.as_mut_ptr(), d, true, 1.0),
                                (dpbuf.as_ptr(), 1, BK),
                                (q.as_ptr().add(qp), hq * d, 1),
                                p.scale,
                            );
                        }
                        qb0 = qb1;
                    }
                }
            }
            for j in j0..j1 {
                let c = j - j0;
                // SAFETY: task (g, kb) alone writes keys j0..j1 of kv head g.
                unsafe { dk_ptr.slice((j * hkv + g) * d, d) }
                    .copy_from_slice(&dk_blk[c * d..(c + 1) * d]);
                unsafe { dv_ptr.slice((j * hkv + g) * d, d) }
                    .copy_from_slice(&dv_blk[c * d..(c + 1) * d]);
            }
        },
    );
}
