//! The training forward pass (saving activations) and the hand-written
//! backward pass of every layer.
//!
//! A micro-batch is a list of sequences concatenated into one `[T, hidden]`
//! matrix: projections are single gemms, attention runs per sequence (in
//! parallel), with packed documents kept apart by their doc ids.

use flow_kernels::cpu as k;
use rayon::prelude::*;

use crate::model::{add_in_place, Model};
use crate::weights::{LayerIdx, Params};

/// One training sequence.
#[derive(Clone, Debug)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    /// Per position, the id of the next token to predict, or `IGNORE_INDEX` (-100).
    pub targets: Vec<i32>,
    /// Per position, the document index within the sequence (packed data); `None`: one document.
    /// Attention never crosses documents and positions restart at 0 in each document.
    pub doc_ids: Option<Vec<u32>>,
}

impl Sequence {
    /// A plain causal-LM sequence: every position predicts the next token (HF `labels = input_ids`).
    pub fn causal(tokens: &[u32]) -> Sequence {
        Sequence::with_labels(
            tokens,
            &tokens.iter().map(|&t| t as i32).collect::<Vec<_>>(),
        )
    }

    /// HF semantics of `labels` (same length as the tokens, -100 ignored): position `i` predicts `labels[i+1]`.
    pub fn with_labels(tokens: &[u32], labels: &[i32]) -> Sequence {
        let mut targets: Vec<i32> = labels.iter().skip(1).copied().collect();
        targets.push(k::IGNORE_INDEX);
        targets.truncate(tokens.len());
        Sequence {
            tokens: tokens.to_vec(),
            targets,
            doc_ids: None,
        }
    }

    /// A packed sequence: targets only where the next token is in the same document;
    /// `u32::MAX` doc ids mark padding.
    pub fn packed(tokens: &[u32], doc_ids: &[u32]) -> Sequence {
        let n = tokens.len();
        let targets = (0..n)
            .map(|i| {
                if i + 1 < n && doc_ids[i] != u32::MAX && doc_ids[i + 1] == doc_ids[i] {
                    tokens[i + 1] as i32
                } else {
                    k::IGNORE_INDEX
                }
            })
            .collect();
        Sequence {
            tokens: tokens.to_vec(),
            targets,
            doc_ids: Some(doc_ids.to_vec()),
        }
    }

    /// Number of positions that count in the loss.
    pub fn counted(&self) -> usize {
        self.targets
            .iter()
            .filter(|&&t| t != k::IGNORE_INDEX)
            .count()
    }

    fn positions(&self) -> Vec<u32> {
        match &self.doc_ids {
            None => (0..self.tokens.len() as u32).collect(),
            Some(d) => {
                let mut pos = Vec::with_capacity(d.len());
                let mut p = 0u32;
                for i in 0..d.len() {
                    if i > 0 && d[i] != d[i - 1] {
                        p = 0;
                    }
                    pos.push(p);
                    p += 1;
                }
                pos
            }
        }
    }
}

/// Saved activations of one layer.
struct LayerActs {
    rstd1: Vec<f32>,
    h1: Vec<f32>,
    q_pre: Vec<f32>,
    rstd_q: Vec<f32>,
    k_pre: Vec<f32>,
    rstd_k: Vec<f32>,
    q: Vec<f32>,
    kk: Vec<f32>,
    vv: Vec<f32>,
    attn: Vec<f32>,
    lse: Vec<f32>,
    x_mid: Vec<f32>,
    rstd2: Vec<f32>,
    h2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
}

/// The shape of the concatenated micro-batch.
struct Batch<'a> {
    seqs: &'a [Sequence],
    lens: Vec<usize>,
    t: usize,
    ids: Vec<u32>,
    positions: Vec<u32>,
}

impl<'a> Batch<'a> {
    fn new(seqs: &'a [Sequence]) -> Batch<'a> {
        let lens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
        let t = lens.iter().sum();
        let ids = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let positions = seqs.iter().flat_map(|s| s.positions()).collect();
        Batch {
            seqs,
            lens,
            t,
            ids,
            positions,
        }
    }
}

/// Splits `buf` into consecutive chunks of `lens[i] * width`.
fn split_rows<'b>(buf: &'b [f32], lens: &[usize], width: usize) -> Vec<&'b [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rest = buf;
    for &n in lens {
        let (a, b) = rest.split_at(n * width);
        out.push(a);
        rest = b;
    }
    out
}

fn split_rows_mut<'b>(buf: &'b mut [f32], lens: &[usize], width: usize) -> Vec<&'b mut [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rest = buf;
    for &n in lens {
        let (a, b) = std::mem::take(&mut rest).split_at_mut(n * width);
        out.push(a);
        rest = b;
    }
    out
}

impl Model {
    fn attn_params(&self, layer: usize) -> k::AttnParams {
        let c = &self.config;
        k::AttnParams {
            q_heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: c.layer_windows[layer],
        }
    }

    /// One layer forward on the concatenated batch; `x` goes from layer input to layer output.
    fn layer_forward(
        &self,
        li: usize,
        lw: &LayerIdx,
        b: &Batch,
        rope: &k::RopeTable,
        x: &mut [f32],
    ) -> LayerActs {
        let c = &self.config;
        let (h, inter, qd, kvd, hd) = (
            c.hidden_size,
            c.intermediate_size,
            c.q_dim(),
            c.kv_dim(),
            c.head_dim,
        );
        let (qh, kvh) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps as f32;
        let t = b.t;
        let mut rstd1 = vec![0.0; t];
        let mut h1 = vec![0.0; t * h];
        k::rmsnorm_forward(x, self.w(lw.input_norm), eps, t, h, &mut h1, &mut rstd1);
        let mut q = vec![0.0; t * qd];
        let mut kk = vec![0.0; t * kvd];
        let mut vv = vec![0.0; t * kvd];
        k::linear_forward(
            &h1,
            self.w(lw.q_w),
            lw.q_b.map(|i| self.w(i)),
            t,
            h,
            qd,
            &mut q,
        );
        k::linear_forward(
            &h1,
            self.w(lw.k_w),
            lw.k_b.map(|i| self.w(i)),
            t,
            h,
            kvd,
            &mut kk,
        );
        k::linear_forward(
            &h1,
            self.w(lw.v_w),
            lw.v_b.map(|i| self.w(i)),
            t,
            h,
            kvd,
            &mut vv,
        );
        let (mut q_pre, mut rstd_q, mut k_pre, mut rstd_k) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let (Some(qn), Some(kn)) = (lw.q_norm, lw.k_norm) {
            q_pre = std::mem::replace(&mut q, vec![0.0; t * qd]);
            rstd_q = vec![0.0; t * qh];
            k::rmsnorm_forward(&q_pre, self.w(qn), eps, t * qh, hd, &mut q, &mut rstd_q);
            k_pre = std::mem::replace(&mut kk, vec![0.0; t * kvd]);
            rstd_k = vec![0.0; t * kvh];
            k::rmsnorm_forward(&k_pre, self.w(kn), eps, t * kvh, hd, &mut kk, &mut rstd_k);
        }
        k::rope_forward(&mut q, &b.positions, qh, rope);
        k::rope_forward(&mut kk, &b.positions, kvh, rope);
        let p = self.attn_params(li);
        let mut attn = vec![0.0; t * qd];
        let mut lse = vec![0.0; t * qh];
        {
            let qs = split_rows(&q, &b.lens, qd);
            let ks = split_rows(&kk, &b.lens, kvd);
            let vs = split_rows(&vv, &b.lens, kvd);
            let outs = split_rows_mut(&mut attn, &b.lens, qd);
            let lses = split_rows_mut(&mut lse, &b.lens, qh);
            outs.into_par_iter()
                .zip(lses)
                .enumerate()
                .for_each(|(s, (out, l))| {
                    let n = b.lens[s];
                    if n > 0 {
                        k::attention_forward(
                            &p,
                            n,
                            n,
                            qs[s],
                            ks[s],
                            vs[s],
                            b.seqs[s].doc_ids.as_deref(),
                            out,
                            l,
                        );
                    }
                });
        }
        let mut tmp = vec![0.0; t * h];
        k::linear_forward(
            &attn,
            self.w(lw.o_w),
            lw.o_b.map(|i| self.w(i)),
            t,
            qd,
            h,
            &mut tmp,
        );
        add_in_place(x, &tmp);
        let x_mid = x.to_vec();
        let mut rstd2 = vec![0.0; t];
        let mut h2 = vec![0.0; t * h];
        k::rmsnorm_forward(x, self.w(lw.post_norm), eps, t, h, &mut h2, &mut rstd2);
        let mut gate = vec![0.0; t * inter];
        let mut up = vec![0.0; t * inter];
        k::linear_forward(&h2, self.w(lw.gate), None, t, h, inter, &mut gate);
        k::linear_forward(&h2, self.w(lw.up), None, t, h, inter, &mut up);
        let mut act = vec![0.0; t * inter];
        k::swiglu_forward(&gate, &up, &mut act);
        k::linear_forward(&act, self.w(lw.down), None, t, inter, h, &mut tmp);
        add_in_place(x, &tmp);
        LayerActs {
            rstd1,
            h1,
            q_pre,
            rstd_q,
            k_pre,
            rstd_k,
            q,
            kk,
            vv,
            attn,
            lse,
            x_mid,
            rstd2,
            h2,
            gate,
            up,
            act,
        }
    }

    /// Backward of one layer: `dx` holds d(layer output) on entry and d(layer input) on exit.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        li: usize,
        lw: &LayerIdx,
        b: &Batch,
        rope: &k::RopeTable,
        x_in: &[f32],
        a: &LayerActs,
        dx: &mut [f32],
        grads: &mut Params,
    ) {
        let c = &self.config;
        let (h, inter, qd, kvd, hd) = (
            c.hidden_size,
            c.intermediate_size,
            c.q_dim(),
            c.kv_dim(),
            c.head_dim,
        );
        let (qh, kvh) = (c.num_attention_heads, c.num_key_value_heads);
        let t = b.t;
        let g = &mut grads.data;
        // MLP
        let mut d_act = vec![0.0; t * inter];
        k::linear_backward(
            dx,
            &a.act,
            self.w(lw.down),
            t,
            inter,
            h,
            Some(&mut d_act),
            &mut g[lw.down],
            None,
        );
        let mut d_gate = vec![0.0; t * inter];
        let mut d_up = vec![0.0; t * inter];
        k::swiglu_backward(&a.gate, &a.up, &d_act, &mut d_gate, &mut d_up);
        drop(d_act);
        let mut dh = vec![0.0; t * h];
        let mut dh_b = vec![0.0; t * h];
        k::linear_backward(
            &d_gate,
            &a.h2,
            self.w(lw.gate),
            t,
            h,
            inter,
            Some(&mut dh),
            &mut g[lw.gate],
            None,
        );
        k::linear_backward(
            &d_up,
            &a.h2,
            self.w(lw.up),
            t,
            h,
            inter,
            Some(&mut dh_b),
            &mut g[lw.up],
            None,
        );
        add_in_place(&mut dh, &dh_b);
        k::rmsnorm_backward(
            &dh,
            &a.x_mid,
            self.w(lw.post_norm),
            &a.rstd2,
            t,
            h,
            &mut dh_b,
            &mut g[lw.post_norm],
        );
        add_in_place(dx, &dh_b);
        // attention output projection
        let mut d_attn = vec![0.0; t * qd];
        {
            let (ow, ob) = (lw.o_w, lw.o_b);
            let mut gb = ob.map(|i| std::mem::take(&mut g[i]));
            k::linear_backward(
                dx,
                &a.attn,
                self.w(ow),
                t,
                qd,
                h,
                Some(&mut d_attn),
                &mut g[ow],
                gb.as_deref_mut(),
            );
            if let (Some(i), Some(v)) = (ob, gb) {
                g[i] = v;
            }
        }
        let p = self.attn_params(li);
        let mut dq = vec![0.0; t * qd];
        let mut dk = vec![0.0; t * kvd];
        let mut dv = vec![0.0; t * kvd];
        {
            let qs = split_rows(&a.q, &b.lens, qd);
            let ks = split_rows(&a.kk, &b.lens, kvd);
            let vs = split_rows(&a.vv, &b.lens, kvd);
            let os = split_rows(&a.attn, &b.lens, qd);
            let ls = split_rows(&a.lse, &b.lens, qh);
            let dos = split_rows(&d_attn, &b.lens, qd);
            let dqs = split_rows_mut(&mut dq, &b.lens, qd);
            let dks = split_rows_mut(&mut dk, &b.lens, kvd);
            let dvs = split_rows_mut(&mut dv, &b.lens, kvd);
            dqs.into_par_iter()
                .zip(dks)
                .zip(dvs)
                .enumerate()
                .for_each(|(s, ((dqs, dks), dvs))| {
                    let n = b.lens[s];
                    if n > 0 {
                        let docs = b.seqs[s].doc_ids.as_deref();
                        k::attention_backward(
                            &p, n, n, qs[s], ks[s], vs[s], docs, os[s], ls[s], dos[s], dqs, dks,
                            dvs,
                        );
                    }
                });
        }
        drop(d_attn);
        k::rope_backward(&mut dq, &b.positions, qh, rope);
        k::rope_backward(&mut dk, &b.positions, kvh, rope);
        if let (Some(qn), Some(kn)) = (lw.q_norm, lw.k_norm) {
            let mut tmp = vec![0.0; t * qd];
            k::rmsnorm_backward(
                &dq,
                &a.q_pre,
                self.w(qn),
                &a.rstd_q,
                t * qh,
                hd,
                &mut tmp,
                &mut g[qn],
            );
            dq = tmp;
            let mut tmp = vec![0.0; t * kvd];
            k::rmsnorm_backward(
                &dk,
                &a.k_pre,
                self.w(kn),
                &a.rstd_k,
                t * kvh,
                hd,
                &mut tmp,
                &mut g[kn],
            );
            dk = tmp;
        }
        let lin_back = |g: &mut Vec<Vec<f32>>,
                        dy: &[f32],
                        w: usize,
                        bias: Option<usize>,
                        out_f: usize,
                        dxo: &mut [f32]| {
            let mut gb = bias.map(|i| std::mem::take(&mut g[i]));
            k::linear_backward(
                dy,
                &a.h1,
                self.w(w),
                t,
                h,
                out_f,
                Some(dxo),
                &mut g[w],
                gb.as_deref_mut(),
            );
            if let (Some(i), Some(v)) = (bias, gb) {
                g[i] = v;
            }
        };
        lin_back(g, &dq, lw.q_w, lw.q_b, qd, &mut dh);
        lin_back(g, &dk, lw.k_w, lw.k_b, kvd, &mut dh_b);
        add_in_place(&mut dh, &dh_b);
        lin_back(g, &dv, lw.v_w, lw.v_b, kvd, &mut dh_b);
        add_in_place(&mut dh, &dh_b);
        k::rmsnorm_backward(
            &dh,
            x_in,
            self.w(lw.input_norm),
            &a.rstd1,
            t,
            h,
            &mut dh_b,
            &mut g[lw.input_norm],
        );
        add_in_place(dx, &dh_b);
    }

    /// Forward and backward of one micro-batch: adds `scale ×` the gradient of the summed token
    /// loss into `grads` and returns (summed token loss, counted tokens). With
    /// `checkpointing`, only each layer's input is kept and the layer is recomputed in backward.
    /// Tokens must be in range (the trainer checks them).
    pub(crate) fn loss_and_grad(
        &self,
        seqs: &[Sequence],
        scale: f32,
        grads: &mut Params,
        checkpointing: bool,
    ) -> (f64, usize) {
        let c = &self.config;
        let (h, v) = (c.hidden_size, c.vocab_size);
        let eps = c.rms_norm_eps as f32;
        let b = Batch::new(seqs);
        let t = b.t;
        if t == 0 {
            return (0.0, 0);
        }
        let max_pos = b.positions.iter().copied().max().unwrap_or(0) as usize + 1;
        let bigger = self.bigger_rope(max_pos);
        let rope = bigger.as_ref().unwrap_or(self.rope());
        let mut x = vec![0.0f32; t * h];
        k::embedding_forward(&b.ids, self.w(self.layout.embed), h, &mut x);
        let mut inputs: Vec<Vec<f32>> = Vec::with_capacity(c.num_hidden_layers);
        let mut acts: Vec<Option<LayerActs>> = Vec::with_capacity(c.num_hidden_layers);
        for (li, lw) in self.layout.layers.iter().enumerate() {
            inputs.push(x.clone());
            let a = self.layer_forward(li, lw, &b, rope, &mut x);
            acts.push(if checkpointing { None } else { Some(a) });
        }
        let mut rstd_f = vec![0.0; t];
        let mut hf = vec![0.0; t * h];
        k::rmsnorm_forward(
            &x,
            self.w(self.layout.norm),
            eps,
            t,
            h,
            &mut hf,
            &mut rstd_f,
        );
        // loss and d(hf), a chunk of rows at a time so the full logits never exist
        let targets: Vec<i32> = seqs
            .iter()
            .flat_map(|s| s.targets.iter().copied())
            .collect();
        let mut dhf = vec![0.0f32; t * h];
        let mut loss_sum = 0.0f64;
        let mut counted = 0usize;
        // rows per chunk: ~64 MB of logits, but never so few that the lm_head gemms get thin
        let chunk = ((1usize << 24) / v.max(1)).clamp(128, 4096);
        let mut logits = vec![0.0f32; chunk.min(t) * v];
        let mut r0 = 0;
        while r0 < t {
            let n = chunk.min(t - r0);
            let lg = &mut logits[..n * v];
            let rows = &hf[r0 * h..(r0 + n) * h];
            k::linear_forward(rows, self.w(self.layout.lm_head), None, n, h, v, lg);
            let mut dl = vec![0.0f32; n * v];
            let (s, cnt) = k::cross_entropy(lg, &targets[r0..r0 + n], n, v, Some((&mut dl, scale)));
            loss_sum += s;
            counted += cnt;
            if cnt > 0 {
                k::linear_backward(
                    &dl,
                    rows,
                    self.w(self.layout.lm_head),
                    n,
                    h,
                    v,
                    Some(&mut dhf[r0 * h..(r0 + n) * h]),
                    &mut grads.data[self.layout.lm_head],
                    None,
                );
            }
            r0 += n;
        }
        let mut dx = vec![0.0f32; t * h];
        k::rmsnorm_backward(
            &dhf,
            &x,
            self.w(self.layout.norm),
            &rstd_f,
            t,
            h,
            &mut dx,
            &mut grads.data[self.layout.norm],
        );
        drop(dhf);
        for li in (0..c.num_hidden_layers).rev() {
            let lw = &self.layout.layers[li];
            let x_in = &inputs[li];
            let a = match acts[li].take() {
                Some(a) => a,
                None => {
                    let mut x2 = x_in.clone();
                    self.layer_forward(li, lw, &b, rope, &mut x2)
                }
            };
            self.layer_backward(li, lw, &b, rope, x_in, &a, &mut dx, grads);
        }
        k::embedding_backward(&b.ids, &dx, h, &mut grads.data[self.layout.embed]);
        (loss_sum, counted)
    }
}
