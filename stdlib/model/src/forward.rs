//! The decoder's forward pass, written once for inference and training.
//!
//! A pass runs a batch as *segments*: the tokens of every sequence are
//! concatenated into one `[T, hidden]` matrix so that every projection is one
//! large gemm, while attention runs per segment (in parallel), against either
//! the segment's KV cache (inference: the new keys are appended and the
//! segment attends to all cached positions) or only the segment's own
//! positions, kept apart by document ids (training on packed data).
//!
//! What a pass keeps is chosen by [`Record`]: nothing (inference reuses one
//! set of buffers for every layer), each layer's input (activation
//! checkpointing: the backward recomputes a layer from it), or each layer's
//! input and activations (the backward reads them).

use rayon::prelude::*;

use crate::model::{KvCache, Model};
use crate::primitives as p;
use crate::weights::LayerIdx;

/// The token ids and positions of a batch of segments.
pub(crate) struct Segments {
    /// The ids of every segment, concatenated.
    pub ids: Vec<u32>,
    /// The RoPE position of each id.
    pub positions: Vec<u32>,
    /// Number of ids in each segment.
    pub lens: Vec<usize>,
    /// One past the largest position the RoPE table must cover.
    pub max_pos: usize,
}

impl Segments {
    /// New tokens that continue each segment's cache: positions start at the cache's length.
    pub fn after_caches(segs: &[(&[u32], &mut KvCache)]) -> Segments {
        let t: usize = segs.iter().map(|(toks, _)| toks.len()).sum();
        let mut ids = Vec::with_capacity(t);
        let mut positions = Vec::with_capacity(t);
        let mut max_pos = 0;
        for (toks, cache) in segs {
            ids.extend_from_slice(toks);
            positions.extend((0..toks.len()).map(|i| (cache.len() + i) as u32));
            max_pos = max_pos.max(cache.len() + toks.len());
        }
        Segments {
            ids,
            positions,
            lens: segs.iter().map(|(toks, _)| toks.len()).collect(),
            max_pos,
        }
    }

    /// Whole sequences with their own positions (restarting at each document of packed data).
    pub fn new(sequences: Vec<(Vec<u32>, Vec<u32>)>) -> Segments {
        let lens = sequences.iter().map(|(ids, _)| ids.len()).collect();
        let max_pos = sequences
            .iter()
            .flat_map(|(_, pos)| pos.iter().copied())
            .max()
            .unwrap_or(0) as usize
            + 1;
        let (ids, positions): (Vec<Vec<u32>>, Vec<Vec<u32>>) = sequences.into_iter().unzip();
        Segments {
            ids: ids.concat(),
            positions: positions.concat(),
            lens,
            max_pos,
        }
    }

    /// Total number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The keys and values one segment attends to.
pub(crate) enum Keys<'a> {
    /// The segment's new keys and values are appended to the cache; it attends to all of it.
    Cache(&'a mut KvCache),
    /// Only the segment's own positions, never across documents (`None`: one document).
    Own(Option<&'a [u32]>),
}

/// What a forward pass keeps for a backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// Nothing: inference.
    Nothing,
    /// Each layer's input; the backward recomputes the layer (activation checkpointing).
    LayerInputs,
    /// Each layer's input and activations.
    Activations,
}

/// One layer's activations, as the backward reads them.
#[derive(Default)]
pub(crate) struct LayerActs {
    /// Reciprocal RMS of the input norm, `[T]`.
    pub rstd1: Vec<f32>,
    /// The normed input, `[T, hidden]`.
    pub h1: Vec<f32>,
    /// q and k before their per-head norms (Qwen3; empty otherwise), and those norms' rstd.
    pub q_pre: Vec<f32>,
    pub rstd_q: Vec<f32>,
    pub k_pre: Vec<f32>,
    pub rstd_k: Vec<f32>,
    /// q, k (after norm and RoPE) and v.
    pub q: Vec<f32>,
    pub kk: Vec<f32>,
    pub vv: Vec<f32>,
    /// Attention output and its log-sum-exp per head and query.
    pub attn: Vec<f32>,
    pub lse: Vec<f32>,
    /// The residual stream after attention (empty when not recorded).
    pub x_mid: Vec<f32>,
    pub rstd2: Vec<f32>,
    pub h2: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    /// silu(gate)·up.
    pub act: Vec<f32>,
}

impl LayerActs {
    /// Zeroed buffers for `t` tokens of `model`'s layer `lw`.
    pub(crate) fn new(model: &Model, lw: &LayerIdx, t: usize) -> LayerActs {
        let c = &model.config;
        let (h, inter, qd, kvd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
        let qk_norm = lw.q_norm.is_some() && lw.k_norm.is_some();
        let qk = |n: usize| if qk_norm { vec![0.0; n] } else { Vec::new() };
        LayerActs {
            rstd1: vec![0.0; t],
            h1: vec![0.0; t * h],
            q_pre: qk(t * qd),
            rstd_q: qk(t * c.num_attention_heads),
            k_pre: qk(t * kvd),
            rstd_k: qk(t * c.num_key_value_heads),
            q: vec![0.0; t * qd],
            kk: vec![0.0; t * kvd],
            vv: vec![0.0; t * kvd],
            attn: vec![0.0; t * qd],
            lse: vec![0.0; t * c.num_attention_heads],
            x_mid: Vec::new(),
            rstd2: vec![0.0; t],
            h2: vec![0.0; t * h],
            gate: vec![0.0; t * inter],
            up: vec![0.0; t * inter],
            act: vec![0.0; t * inter],
        }
    }
}

/// What a forward pass returns.
pub(crate) struct Forward {
    /// The final normed hidden states, `[T, hidden]`.
    pub hidden: Vec<f32>,
    /// Reciprocal RMS of the final norm, `[T]`.
    pub final_rstd: Vec<f32>,
    /// The residual stream before the final norm (recorded passes only).
    pub final_input: Vec<f32>,
    /// Each layer's input (recorded passes only).
    pub layer_inputs: Vec<Vec<f32>>,
    /// Each layer's activations (`Record::Activations` only).
    pub layer_acts: Vec<LayerActs>,
}

/// One segment's share of a layer's attention: q, new k, new v, output, lse, and its keys.
type SegmentWork<'s, 'k> = (
    &'s [f32],
    &'s [f32],
    &'s [f32],
    &'s mut [f32],
    &'s mut [f32],
    &'s mut Keys<'k>,
);

/// Splits `buf` into consecutive chunks of `lens[i] * width`.
pub(crate) fn split_rows<'b>(buf: &'b [f32], lens: &[usize], width: usize) -> Vec<&'b [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rest = buf;
    for &n in lens {
        let (a, b) = rest.split_at(n * width);
        out.push(a);
        rest = b;
    }
    out
}

pub(crate) fn split_rows_mut<'b>(
    buf: &'b mut [f32],
    lens: &[usize],
    width: usize,
) -> Vec<&'b mut [f32]> {
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
    pub(crate) fn attn_params(&self, layer: usize) -> p::AttnParams {
        let c = &self.config;
        p::AttnParams {
            q_heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: c.layer_windows[layer],
        }
    }

    /// The forward pass: embedding, every layer, the final norm. `keys` has one entry per
    /// segment. Token ids must be in range (callers check them).
    pub(crate) fn forward(&self, segs: &Segments, keys: &mut [Keys], record: Record) -> Forward {
        let c = &self.config;
        let h = c.hidden_size;
        let t = segs.len();
        let bigger = self.bigger_rope(segs.max_pos);
        let rope = bigger.as_ref().unwrap_or(self.rope());
        let mut x = vec![0.0f32; t * h];
        p::embedding_forward(&segs.ids, self.w(self.layout.embed), h, &mut x);
        let mut layer_inputs = Vec::new();
        let mut layer_acts = Vec::new();
        // Inference and checkpointed passes reuse one set of buffers for every layer.
        let mut scratch = None;
        for (li, lw) in self.layout.layers.iter().enumerate() {
            if record != Record::Nothing {
                layer_inputs.push(x.clone());
            }
            if record == Record::Activations {
                let mut acts = LayerActs::new(self, lw, t);
                self.layer_forward(li, segs, keys, rope, &mut x, &mut acts, true);
                layer_acts.push(acts);
            } else {
                let acts = scratch.get_or_insert_with(|| LayerActs::new(self, lw, t));
                self.layer_forward(li, segs, keys, rope, &mut x, acts, false);
            }
        }
        for (keys, &n) in keys.iter_mut().zip(&segs.lens) {
            if let Keys::Cache(cache) = keys {
                cache.advance(n);
            }
        }
        let mut hidden = vec![0.0f32; t * h];
        let mut final_rstd = vec![0.0f32; t];
        p::rmsnorm_forward(
            &x,
            self.w(self.layout.norm),
            c.rms_norm_eps as f32,
            t,
            h,
            &mut hidden,
            &mut final_rstd,
        );
        Forward {
            hidden,
            final_rstd,
            final_input: if record == Record::Nothing {
                Vec::new()
            } else {
                x
            },
            layer_inputs,
            layer_acts,
        }
    }

    /// One decoder layer: `x` goes from the layer's input to its output, the activations land
    /// in `a` (whose buffers are sized for the batch), `x_mid` only when `keep_mid`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_forward(
        &self,
        li: usize,
        segs: &Segments,
        keys: &mut [Keys],
        rope: &p::RopeTable,
        x: &mut [f32],
        a: &mut LayerActs,
        keep_mid: bool,
    ) {
        let c = &self.config;
        let lw = &self.layout.layers[li];
        let (h, inter, qd, kvd, hd) = (
            c.hidden_size,
            c.intermediate_size,
            c.q_dim(),
            c.kv_dim(),
            c.head_dim,
        );
        let (qh, kvh) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps as f32;
        let t = segs.len();
        p::rmsnorm_forward(x, self.w(lw.input_norm), eps, t, h, &mut a.h1, &mut a.rstd1);
        let w_b = |w: usize, b: Option<usize>| (self.w(w), b.map(|b| self.w(b)));
        let (qw, qb) = w_b(lw.q_w, lw.q_b);
        p::linear_forward(&a.h1, qw, qb, t, h, qd, &mut a.q);
        let (kw, kb) = w_b(lw.k_w, lw.k_b);
        p::linear_forward(&a.h1, kw, kb, t, h, kvd, &mut a.kk);
        let (vw, vb) = w_b(lw.v_w, lw.v_b);
        p::linear_forward(&a.h1, vw, vb, t, h, kvd, &mut a.vv);
        if let (Some(qn), Some(kn)) = (lw.q_norm, lw.k_norm) {
            std::mem::swap(&mut a.q, &mut a.q_pre);
            p::rmsnorm_forward(
                &a.q_pre,
                self.w(qn),
                eps,
                t * qh,
                hd,
                &mut a.q,
                &mut a.rstd_q,
            );
            std::mem::swap(&mut a.kk, &mut a.k_pre);
            p::rmsnorm_forward(
                &a.k_pre,
                self.w(kn),
                eps,
                t * kvh,
                hd,
                &mut a.kk,
                &mut a.rstd_k,
            );
        }
        p::rope_forward(&mut a.q, &segs.positions, qh, rope);
        p::rope_forward(&mut a.kk, &segs.positions, kvh, rope);
        let params = self.attn_params(li);
        {
            let qs = split_rows(&a.q, &segs.lens, qd);
            let ks = split_rows(&a.kk, &segs.lens, kvd);
            let vs = split_rows(&a.vv, &segs.lens, kvd);
            let outs = split_rows_mut(&mut a.attn, &segs.lens, qd);
            let lses = split_rows_mut(&mut a.lse, &segs.lens, qh);
            let work: Vec<SegmentWork> = qs
                .into_iter()
                .zip(ks)
                .zip(vs)
                .zip(outs)
                .zip(lses)
                .zip(keys.iter_mut())
                .map(|(((((q, k), v), out), lse), keys)| (q, k, v, out, lse, keys))
                .collect();
            work.into_par_iter()
                .for_each(|(qs, ks, vs, out, lse, keys)| {
                    let n = qs.len() / qd;
                    if n == 0 {
                        return;
                    }
                    match keys {
                        Keys::Cache(cache) => {
                            let (kc, vc) = cache.append(li, ks, vs);
                            let s = kc.len() / kvd;
                            p::attention_forward(&params, n, s, qs, kc, vc, None, out, lse);
                        }
                        Keys::Own(docs) => {
                            p::attention_forward(&params, n, n, qs, ks, vs, *docs, out, lse);
                        }
                    }
                });
        }
        let mut tmp = vec![0.0; t * h];
        let (ow, ob) = w_b(lw.o_w, lw.o_b);
        p::linear_forward(&a.attn, ow, ob, t, qd, h, &mut tmp);
        p::add_in_place(x, &tmp);
        if keep_mid {
            a.x_mid = x.to_vec();
        }
        p::rmsnorm_forward(x, self.w(lw.post_norm), eps, t, h, &mut a.h2, &mut a.rstd2);
        p::linear_forward(&a.h2, self.w(lw.gate), None, t, h, inter, &mut a.gate);
        p::linear_forward(&a.h2, self.w(lw.up), None, t, h, inter, &mut a.up);
        p::swiglu_forward(&a.gate, &a.up, &mut a.act);
        p::linear_forward(&a.act, self.w(lw.down), None, t, inter, h, &mut tmp);
        p::add_in_place(x, &tmp);
    }
}
