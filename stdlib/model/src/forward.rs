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

use crate::backend::{AttnParams, Backend, Keys, LinearOut};
use crate::model::{KvCacheOn, ModelOn};
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
    pub fn after_caches<B: Backend>(segs: &[(&[u32], &mut KvCacheOn<B>)]) -> Segments {
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
pub(crate) struct LayerActs<B: Backend> {
    /// Reciprocal RMS of the input norm, `[T]`.
    pub rstd1: B::Stats,
    /// The normed input, `[T, hidden]`.
    pub h1: B::Buf,
    /// q and k before their per-head norms, and those norms' rstd (Qwen3 only).
    pub qk_norm: Option<QkNormActs<B>>,
    /// q, k (after norm and RoPE) and v.
    pub q: B::Buf,
    pub kk: B::Buf,
    pub vv: B::Buf,
    /// Attention output and its log-sum-exp per head and query.
    pub attn: B::Buf,
    pub lse: B::Stats,
    /// The residual stream after attention (recorded passes only).
    pub x_mid: Option<B::Buf>,
    pub rstd2: B::Stats,
    pub h2: B::Buf,
    pub gate: B::Buf,
    pub up: B::Buf,
    /// silu(gate)·up.
    pub act: B::Buf,
}

/// q and k before the per-head norms of Qwen3, and the norms' rstd.
pub(crate) struct QkNormActs<B: Backend> {
    pub q_pre: B::Buf,
    pub rstd_q: B::Stats,
    pub k_pre: B::Buf,
    pub rstd_k: B::Stats,
}

impl<B: Backend> LayerActs<B> {
    /// Zeroed buffers for `t` tokens of `model`'s layer `lw`.
    pub(crate) fn new(
        model: &ModelOn<B>,
        lw: &LayerIdx,
        t: usize,
    ) -> Result<LayerActs<B>, B::Error> {
        let c = &model.config;
        let b = &model.backend;
        let (h, inter, qd, kvd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
        let qk_norm = if lw.q_norm.is_some() && lw.k_norm.is_some() {
            Some(QkNormActs {
                q_pre: b.zeros(t * qd)?,
                rstd_q: b.zeros_stats(t * c.num_attention_heads)?,
                k_pre: b.zeros(t * kvd)?,
                rstd_k: b.zeros_stats(t * c.num_key_value_heads)?,
            })
        } else {
            None
        };
        Ok(LayerActs {
            rstd1: b.zeros_stats(t)?,
            h1: b.zeros(t * h)?,
            qk_norm,
            q: b.zeros(t * qd)?,
            kk: b.zeros(t * kvd)?,
            vv: b.zeros(t * kvd)?,
            attn: b.zeros(t * qd)?,
            lse: b.zeros_stats(t * c.num_attention_heads)?,
            x_mid: None,
            rstd2: b.zeros_stats(t)?,
            h2: b.zeros(t * h)?,
            gate: b.zeros(t * inter)?,
            up: b.zeros(t * inter)?,
            act: b.zeros(t * inter)?,
        })
    }
}

/// What a forward pass returns.
pub(crate) struct Forward<B: Backend> {
    /// The final normed hidden states, `[T, hidden]`.
    pub hidden: B::Buf,
    /// Reciprocal RMS of the final norm, `[T]`.
    pub final_rstd: B::Stats,
    /// The residual stream before the final norm (recorded passes only).
    pub final_input: Option<B::Buf>,
    /// Each layer's input (recorded passes only).
    pub layer_inputs: Vec<B::Buf>,
    /// Each layer's activations (`Record::Activations` only).
    pub layer_acts: Vec<LayerActs<B>>,
}

impl<B: Backend> ModelOn<B> {
    pub(crate) fn attn_params(&self, layer: usize) -> AttnParams {
        let c = &self.config;
        AttnParams {
            q_heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: c.layer_windows[layer],
        }
    }

    /// The forward pass: embedding, every layer, the final norm. `keys` has one entry per
    /// segment. Token ids must be in range (callers check them).
    pub(crate) fn forward(
        &self,
        segs: &Segments,
        keys: &mut [Keys<B>],
        record: Record,
    ) -> Result<Forward<B>, B::Error> {
        let c = &self.config;
        let b = &self.backend;
        let h = c.hidden_size;
        let t = segs.len();
        let bigger = self.bigger_rope(segs.max_pos)?;
        let rope = bigger.as_ref().unwrap_or(self.rope());
        let positions = b.upload_ids(&segs.positions)?;
        let mut x = b.zeros(t * h)?;
        let ids = b.upload_ids(&segs.ids)?;
        b.embedding_forward(&ids, self.w(self.layout.embed), h, &mut x)?;
        let mut layer_inputs = Vec::new();
        let mut layer_acts = Vec::new();
        // Inference and checkpointed passes reuse one set of buffers for every layer.
        let mut scratch = None;
        for (li, lw) in self.layout.layers.iter().enumerate() {
            if record != Record::Nothing {
                layer_inputs.push(b.duplicate(&x)?);
            }
            if record == Record::Activations {
                let mut acts = LayerActs::new(self, lw, t)?;
                self.layer_forward(li, segs, &positions, keys, rope, &mut x, &mut acts, true)?;
                layer_acts.push(acts);
            } else {
                let acts = match &mut scratch {
                    Some(a) => a,
                    None => scratch.insert(LayerActs::new(self, lw, t)?),
                };
                self.layer_forward(li, segs, &positions, keys, rope, &mut x, acts, false)?;
            }
        }
        for (keys, &n) in keys.iter_mut().zip(&segs.lens) {
            if let Keys::Cache(cache) = keys {
                cache.advance(n);
            }
        }
        let mut hidden = b.zeros(t * h)?;
        let mut final_rstd = b.zeros_stats(t)?;
        b.rmsnorm_forward(
            &x,
            self.w(self.layout.norm),
            c.rms_norm_eps as f32,
            t,
            h,
            &mut hidden,
            &mut final_rstd,
        )?;
        Ok(Forward {
            hidden,
            final_rstd,
            final_input: (record != Record::Nothing).then_some(x),
            layer_inputs,
            layer_acts,
        })
    }

    /// One decoder layer: `x` goes from the layer's input to its output, the activations land
    /// in `a` (whose buffers are sized for the batch), `x_mid` only when `keep_mid`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_forward(
        &self,
        li: usize,
        segs: &Segments,
        positions: &B::Ids,
        keys: &mut [Keys<B>],
        rope: &B::Rope,
        x: &mut B::Buf,
        a: &mut LayerActs<B>,
        keep_mid: bool,
    ) -> Result<(), B::Error> {
        let c = &self.config;
        let b = &self.backend;
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
        b.rmsnorm_forward(x, self.w(lw.input_norm), eps, t, h, &mut a.h1, &mut a.rstd1)?;
        let w_b = |w: usize, bias: Option<usize>| (self.w(w), bias.map(|i| self.w(i)));
        b.linear_forward_shared(
            &a.h1,
            t,
            h,
            &mut [
                out(w_b(lw.q_w, lw.q_b), qd, &mut a.q),
                out(w_b(lw.k_w, lw.k_b), kvd, &mut a.kk),
                out(w_b(lw.v_w, lw.v_b), kvd, &mut a.vv),
            ],
        )?;
        if let (Some(qn), Some(kn), Some(n)) = (lw.q_norm, lw.k_norm, a.qk_norm.as_mut()) {
            std::mem::swap(&mut a.q, &mut n.q_pre);
            b.rmsnorm_forward(
                &n.q_pre,
                self.w(qn),
                eps,
                t * qh,
                hd,
                &mut a.q,
                &mut n.rstd_q,
            )?;
            std::mem::swap(&mut a.kk, &mut n.k_pre);
            b.rmsnorm_forward(
                &n.k_pre,
                self.w(kn),
                eps,
                t * kvh,
                hd,
                &mut a.kk,
                &mut n.rstd_k,
            )?;
        }
        b.rope_forward(&mut a.q, positions, qh, rope)?;
        b.rope_forward(&mut a.kk, positions, kvh, rope)?;
        let params = self.attn_params(li);
        b.attention_forward(
            &params,
            li,
            &segs.lens,
            &a.q,
            &a.kk,
            &a.vv,
            keys,
            &mut a.attn,
            &mut a.lse,
        )?;
        let mut tmp = b.zeros(t * h)?;
        let (ow, ob) = w_b(lw.o_w, lw.o_b);
        b.linear_forward(&a.attn, ow, ob, t, qd, h, &mut tmp)?;
        b.add_in_place(x, &tmp)?;
        if keep_mid {
            a.x_mid = Some(b.duplicate(x)?);
        }
        b.rmsnorm_forward(x, self.w(lw.post_norm), eps, t, h, &mut a.h2, &mut a.rstd2)?;
        b.linear_forward_shared(
            &a.h2,
            t,
            h,
            &mut [
                out((self.w(lw.gate), None), inter, &mut a.gate),
                out((self.w(lw.up), None), inter, &mut a.up),
            ],
        )?;
        b.swiglu_forward(&a.gate, &a.up, &mut a.act)?;
        b.linear_forward(&a.act, self.w(lw.down), None, t, inter, h, &mut tmp)?;
        b.add_in_place(x, &tmp)
    }
}

/// One product of a shared-input call: `(weight, bias)`, output width, output.
fn out<'a, B: Backend>(
    (w, bias): (&'a B::Weight, Option<&'a B::Weight>),
    out_f: usize,
    y: &'a mut B::Buf,
) -> LinearOut<'a, B> {
    LinearOut { w, bias, out_f, y }
}
