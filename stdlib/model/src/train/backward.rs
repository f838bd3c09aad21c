//! The hand-written backward pass of every layer, over the activations the
//! forward pass (`forward.rs`) records.
//!
//! A micro-batch is a list of sequences concatenated into one `[T, hidden]`
//! matrix: projections are single gemms, attention runs per sequence (in
//! parallel), with packed documents kept apart by their doc ids.

use flow_kernels::cpu as k;
use rayon::prelude::*;

use crate::forward::{split_rows, split_rows_mut, Keys, LayerActs, Record, Segments};
use crate::model::Model;
use crate::primitives::{self as p, add_in_place};
use crate::weights::Params;

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

impl Model {
    /// Backward of one layer: `dx` holds d(layer output) on entry and d(layer input) on exit.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        li: usize,
        segs: &Segments,
        docs: &[Option<&[u32]>],
        rope: &p::RopeTable,
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
        let lw = &self.layout.layers[li];
        let t = segs.len();
        let g = &mut grads.data;
        // MLP
        let mut d_act = vec![0.0; t * inter];
        p::linear_backward(
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
        p::swiglu_backward(&a.gate, &a.up, &d_act, &mut d_gate, &mut d_up);
        drop(d_act);
        let mut dh = vec![0.0; t * h];
        let mut dh_b = vec![0.0; t * h];
        p::linear_backward(
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
        p::linear_backward(
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
        p::rmsnorm_backward(
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
            p::linear_backward(
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
        let params = self.attn_params(li);
        let mut dq = vec![0.0; t * qd];
        let mut dk = vec![0.0; t * kvd];
        let mut dv = vec![0.0; t * kvd];
        {
            let qs = split_rows(&a.q, &segs.lens, qd);
            let ks = split_rows(&a.kk, &segs.lens, kvd);
            let vs = split_rows(&a.vv, &segs.lens, kvd);
            let os = split_rows(&a.attn, &segs.lens, qd);
            let ls = split_rows(&a.lse, &segs.lens, qh);
            let dos = split_rows(&d_attn, &segs.lens, qd);
            let dqs = split_rows_mut(&mut dq, &segs.lens, qd);
            let dks = split_rows_mut(&mut dk, &segs.lens, kvd);
            let dvs = split_rows_mut(&mut dv, &segs.lens, kvd);
            dqs.into_par_iter()
                .zip(dks)
                .zip(dvs)
                .enumerate()
                .for_each(|(s, ((dqs, dks), dvs))| {
                    let n = segs.lens[s];
                    if n > 0 {
                        let docs = docs[s];
                        p::attention_backward(
                            &params, n, n, qs[s], ks[s], vs[s], docs, os[s], ls[s], dos[s], dqs,
                            dks, dvs,
                        );
                    }
                });
        }
        drop(d_attn);
        p::rope_backward(&mut dq, &segs.positions, qh, rope);
        p::rope_backward(&mut dk, &segs.positions, kvh, rope);
        if let (Some(qn), Some(kn)) = (lw.q_norm, lw.k_norm) {
            let mut tmp = vec![0.0; t * qd];
            p::rmsnorm_backward(
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
            p::rmsnorm_backward(
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
            p::linear_backward(
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
        p::rmsnorm_backward(
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
        let segs = Segments::new(
            seqs.iter()
                .map(|s| (s.tokens.clone(), s.positions()))
                .collect(),
        );
        let t = segs.len();
        if t == 0 {
            return (0.0, 0);
        }
        let docs: Vec<Option<&[u32]>> = seqs.iter().map(|s| s.doc_ids.as_deref()).collect();
        let own_keys = || docs.iter().map(|d| Keys::Own(*d)).collect::<Vec<_>>();
        let record = if checkpointing {
            Record::LayerInputs
        } else {
            Record::Activations
        };
        let fwd = self.forward(&segs, &mut own_keys(), record);
        let hf = &fwd.hidden;
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
            p::linear_forward(rows, self.w(self.layout.lm_head), None, n, h, v, lg);
            let mut dl = vec![0.0f32; n * v];
            let (s, cnt) = p::cross_entropy(lg, &targets[r0..r0 + n], n, v, Some((&mut dl, scale)));
            loss_sum += s;
            counted += cnt;
            if cnt > 0 {
                p::linear_backward(
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
        p::rmsnorm_backward(
            &dhf,
            &fwd.final_input,
            self.w(self.layout.norm),
            &fwd.final_rstd,
            t,
            h,
            &mut dx,
            &mut grads.data[self.layout.norm],
        );
        drop(dhf);
        let bigger = self.bigger_rope(segs.max_pos);
        let rope = bigger.as_ref().unwrap_or(self.rope());
        let mut layer_acts = fwd.layer_acts;
        for li in (0..c.num_hidden_layers).rev() {
            let x_in = &fwd.layer_inputs[li];
            let a = match layer_acts.pop() {
                Some(a) => a,
                None => {
                    let mut a = LayerActs::new(self, &self.layout.layers[li], t);
                    let mut x2 = x_in.clone();
                    self.layer_forward(li, &segs, &mut own_keys(), rope, &mut x2, &mut a, true);
                    a
                }
            };
            self.layer_backward(li, &segs, &docs, rope, x_in, &a, &mut dx, grads);
        }
        p::embedding_backward(&segs.ids, &dx, h, &mut grads.data[self.layout.embed]);
        (loss_sum, counted)
    }
}
