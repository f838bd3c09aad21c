//! The hand-written backward pass of every layer, over the activations the
//! forward pass (`forward.rs`) records.
//!
//! A micro-batch is a list of sequences concatenated into one `[T, hidden]`
//! matrix: projections are single gemms, attention runs per sequence (in
//! parallel), with packed documents kept apart by their doc ids. It is written
//! once, over the model's [`Backend`].

use flow_kernels::cpu as k;

use crate::backend::{Backend, Keys};
use crate::forward::{LayerActs, Record, Segments};
use crate::model::ModelOn;

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

impl<B: Backend> ModelOn<B> {
    /// Backward of one layer: `dx` holds d(layer output) on entry and d(layer input) on exit.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        li: usize,
        segs: &Segments,
        positions: &B::Ids,
        docs: &[Option<&[u32]>],
        rope: &B::Rope,
        x_in: &B::Buf,
        a: &LayerActs<B>,
        dx: &mut B::Buf,
        grads: &mut B::Grads,
    ) -> Result<(), B::Error> {
        let c = &self.config;
        let b = &self.backend;
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
        let x_mid = a
            .x_mid
            .as_ref()
            .expect("the passes feeding the backward record x_mid");
        // MLP
        let mut d_act = b.zeros(t * inter)?;
        b.linear_backward(
            dx,
            &a.act,
            self.w(lw.down),
            t,
            inter,
            h,
            Some(&mut d_act),
            B::grad_and_bias(grads, lw.down, None).0,
            None,
        )?;
        let mut d_gate = b.zeros(t * inter)?;
        let mut d_up = b.zeros(t * inter)?;
        b.swiglu_backward(&a.gate, &a.up, &d_act, &mut d_gate, &mut d_up)?;
        drop(d_act);
        let mut dh = b.zeros(t * h)?;
        let mut dh_b = b.zeros(t * h)?;
        b.linear_backward(
            &d_gate,
            &a.h2,
            self.w(lw.gate),
            t,
            h,
            inter,
            Some(&mut dh),
            B::grad_and_bias(grads, lw.gate, None).0,
            None,
        )?;
        b.linear_backward(
            &d_up,
            &a.h2,
            self.w(lw.up),
            t,
            h,
            inter,
            Some(&mut dh_b),
            B::grad_and_bias(grads, lw.up, None).0,
            None,
        )?;
        b.add_in_place(&mut dh, &dh_b)?;
        b.rmsnorm_backward(
            &dh,
            x_mid,
            self.w(lw.post_norm),
            &a.rstd2,
            t,
            h,
            &mut dh_b,
            B::grad_and_bias(grads, lw.post_norm, None).0,
        )?;
        b.add_in_place(dx, &dh_b)?;
        // attention output projection
        let mut d_attn = b.zeros(t * qd)?;
        {
            let (gw, gb) = B::grad_and_bias(grads, lw.o_w, lw.o_b);
            b.linear_backward(
                dx,
                &a.attn,
                self.w(lw.o_w),
                t,
                qd,
                h,
                Some(&mut d_attn),
                gw,
                gb,
            )?;
        }
        let params = self.attn_params(li);
        let mut dq = b.zeros(t * qd)?;
        let mut dk = b.zeros(t * kvd)?;
        let mut dv = b.zeros(t * kvd)?;
        b.attention_backward(
            &params, &segs.lens, docs, &a.q, &a.kk, &a.vv, &a.attn, &a.lse, &d_attn, &mut dq,
            &mut dk, &mut dv,
        )?;
        drop(d_attn);
        b.rope_backward(&mut dq, positions, qh, rope)?;
        b.rope_backward(&mut dk, positions, kvh, rope)?;
        if let (Some(qn), Some(kn), Some(n)) = (lw.q_norm, lw.k_norm, a.qk_norm.as_ref()) {
            let mut tmp = b.zeros(t * qd)?;
            b.rmsnorm_backward(
                &dq,
                &n.q_pre,
                self.w(qn),
                &n.rstd_q,
                t * qh,
                hd,
                &mut tmp,
                B::grad_and_bias(grads, qn, None).0,
            )?;
            dq = tmp;
            let mut tmp = b.zeros(t * kvd)?;
            b.rmsnorm_backward(
                &dk,
                &n.k_pre,
                self.w(kn),
                &n.rstd_k,
                t * kvh,
                hd,
                &mut tmp,
                B::grad_and_bias(grads, kn, None).0,
            )?;
            dk = tmp;
        }
        let lin_back = |g: &mut B::Grads,
                        dy: &B::Buf,
                        w: usize,
                        bias: Option<usize>,
                        out_f: usize,
                        dxo: &mut B::Buf| {
            let (gw, gb) = B::grad_and_bias(g, w, bias);
            b.linear_backward(dy, &a.h1, self.w(w), t, h, out_f, Some(dxo), gw, gb)
        };
        lin_back(grads, &dq, lw.q_w, lw.q_b, qd, &mut dh)?;
        lin_back(grads, &dk, lw.k_w, lw.k_b, kvd, &mut dh_b)?;
        b.add_in_place(&mut dh, &dh_b)?;
        lin_back(grads, &dv, lw.v_w, lw.v_b, kvd, &mut dh_b)?;
        b.add_in_place(&mut dh, &dh_b)?;
        b.rmsnorm_backward(
            &dh,
            x_in,
            self.w(lw.input_norm),
            &a.rstd1,
            t,
            h,
            &mut dh_b,
            B::grad_and_bias(grads, lw.input_norm, None).0,
        )?;
        b.add_in_place(dx, &dh_b)
    }

    /// Forward and backward of one micro-batch: adds `scale ×` the gradient of the summed token
    /// loss into `grads` and returns (summed token loss, counted tokens). With
    /// `checkpointing`, only each layer's input is kept and the layer is recomputed in backward.
    /// Tokens must be in range (the trainer checks them).
    pub(crate) fn loss_and_grad(
        &self,
        seqs: &[Sequence],
        scale: f32,
        grads: &mut B::Grads,
        checkpointing: bool,
    ) -> Result<(f64, usize), B::Error> {
        let c = &self.config;
        let b = &self.backend;
        let (h, v) = (c.hidden_size, c.vocab_size);
        let segs = Segments::new(
            seqs.iter()
                .map(|s| (s.tokens.clone(), s.positions()))
                .collect(),
        );
        let t = segs.len();
        if t == 0 {
            return Ok((0.0, 0));
        }
        let docs: Vec<Option<&[u32]>> = seqs.iter().map(|s| s.doc_ids.as_deref()).collect();
        let own_keys = || docs.iter().map(|d| Keys::Own(*d)).collect::<Vec<_>>();
        let record = if checkpointing {
            Record::LayerInputs
        } else {
            Record::Activations
        };
        let fwd = self.forward(&segs, &mut own_keys(), record)?;
        let hf = &fwd.hidden;
        // loss and d(hf), a chunk of rows at a time so the full logits never exist
        let targets: Vec<i32> = seqs
            .iter()
            .flat_map(|s| s.targets.iter().copied())
            .collect();
        let mut dhf = b.zeros(t * h)?;
        let mut loss_sum = 0.0f64;
        let mut counted = 0usize;
        // rows per chunk: ~64 MB of logits, but never so few that the lm_head gemms get thin
        let chunk = ((1usize << 24) / v.max(1)).clamp(128, 4096);
        let mut r0 = 0;
        while r0 < t {
            let n = chunk.min(t - r0);
            // one chunk: the rows themselves; more: a copy of each chunk's rows
            let chunk_rows;
            let rows = if n == t {
                hf
            } else {
                chunk_rows = b.gather_rows(hf, &(r0..r0 + n).collect::<Vec<_>>(), h)?;
                &chunk_rows
            };
            let lg = self.logits(rows, n)?;
            let mut dl = b.zeros(n * v)?;
            let (s, cnt) =
                b.cross_entropy(&lg, &targets[r0..r0 + n], n, v, Some((&mut dl, scale)))?;
            drop(lg);
            loss_sum += s;
            counted += cnt;
            if cnt > 0 {
                let mut d_rows = b.zeros(n * h)?;
                b.linear_backward(
                    &dl,
                    rows,
                    self.w(self.layout.lm_head),
                    n,
                    h,
                    v,
                    Some(&mut d_rows),
                    B::grad_and_bias(grads, self.layout.lm_head, None).0,
                    None,
                )?;
                b.write_rows(&mut dhf, r0, h, &d_rows)?;
            }
            r0 += n;
        }
        let final_input = fwd
            .final_input
            .as_ref()
            .expect("recorded passes keep the final norm's input");
        let mut dx = b.zeros(t * h)?;
        b.rmsnorm_backward(
            &dhf,
            final_input,
            self.w(self.layout.norm),
            &fwd.final_rstd,
            t,
            h,
            &mut dx,
            B::grad_and_bias(grads, self.layout.norm, None).0,
        )?;
        drop(dhf);
        let bigger = self.bigger_rope(segs.max_pos)?;
        let rope = bigger.as_ref().unwrap_or(self.rope());
        let positions = b.upload_ids(&segs.positions)?;
        let mut layer_acts = fwd.layer_acts;
        for li in (0..c.num_hidden_layers).rev() {
            let x_in = &fwd.layer_inputs[li];
            let a = match layer_acts.pop() {
                Some(a) => a,
                None => {
                    let mut a = LayerActs::new(self, &self.layout.layers[li], t)?;
                    let mut x2 = b.duplicate(x_in)?;
                    self.layer_forward(
                        li,
                        &segs,
                        &positions,
                        &mut own_keys(),
                        rope,
                        &mut x2,
                        &mut a,
                        true,
                    )?;
                    a
                }
            };
            self.layer_backward(li, &segs, &positions, &docs, rope, x_in, &a, &mut dx, grads)?;
        }
        b.embedding_backward(
            &segs.ids,
            &dx,
            h,
            B::grad_and_bias(grads, self.layout.embed, None).0,
        )?;
        Ok((loss_sum, counted))
    }
}
