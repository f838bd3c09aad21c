//! The encoder's forward pass over a ragged batch (sequences concatenated,
//! no padding), post-LayerNorm blocks as in BERT / RoBERTa, and the
//! classification head on each sequence's first token, written once over
//! [`EncoderBackend`] ([`forward`] is the CPU's).

use super::config::{EncoderConfig, Family};
use super::dropout::{Dropout, Site};
use super::params::{head_index, l, layer_index, EncoderParams};
use crate::backend::{infallible, CpuBackend, EncoderBackend};
use crate::error::ModelError;

/// Sequences of token ids (each starting with `<s>` / `[CLS]`), concatenated.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    /// Position id of every token (RoBERTa: counted from `pad_token_id + 1`).
    pub positions: Vec<u32>,
    /// Sequence bounds: sequence s is tokens[offsets[s]..offsets[s + 1]].
    pub offsets: Vec<usize>,
}

impl Batch {
    /// A batch of unpadded sequences.
    pub fn new(c: &EncoderConfig, seqs: &[Vec<u32>]) -> Result<Batch, ModelError> {
        let mut b = Batch {
            offsets: vec![0],
            ..Default::default()
        };
        for s in seqs {
            let base = match c.family {
                Family::Bert => 0,
                Family::Roberta => c.pad_token_id + 1,
            };
            b.tokens.extend_from_slice(s);
            b.positions.extend((0..s.len() as u32).map(|i| base + i));
            b.offsets.push(b.tokens.len());
        }
        b.check(c)?;
        Ok(b)
    }

    /// A batch from padded rows and their attention masks (1 = token), with
    /// the position ids transformers computes: BERT 0..width over the padded
    /// row; RoBERTa the running count of non-pad ids plus `pad_token_id`.
    /// Masked tokens are dropped (no unmasked token attends to them, and the
    /// head reads the first token, which must be unmasked).
    pub fn from_padded(
        c: &EncoderConfig,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
    ) -> Result<Batch, ModelError> {
        if ids.len() != mask.len() {
            return Err(ModelError::Input(
                "ids and attention masks differ in number".into(),
            ));
        }
        let mut b = Batch {
            offsets: vec![0],
            ..Default::default()
        };
        for (row, m) in ids.iter().zip(mask) {
            if row.len() != m.len() {
                return Err(ModelError::Input(
                    "an attention mask differs in length from its ids".into(),
                ));
            }
            if m.first() != Some(&1) {
                return Err(ModelError::Input(
                    "the first token of every row must be unmasked (flow pads on the right; the head reads token 0)".into(),
                ));
            }
            let mut count = 0u32;
            for (i, (&t, &mv)) in row.iter().zip(m).enumerate() {
                let pos = match c.family {
                    Family::Bert => i as u32,
                    Family::Roberta => {
                        if t != c.pad_token_id {
                            count += 1;
                            count + c.pad_token_id
                        } else {
                            c.pad_token_id
                        }
                    }
                };
                if mv != 0 {
                    b.tokens.push(t);
                    b.positions.push(pos);
                }
            }
            b.offsets.push(b.tokens.len());
        }
        b.check(c)?;
        Ok(b)
    }

    fn check(&self, c: &EncoderConfig) -> Result<(), ModelError> {
        if self.offsets.windows(2).any(|w| w[0] == w[1]) {
            return Err(ModelError::Input(
                "an empty sequence cannot be classified".into(),
            ));
        }
        if let Some(t) = self.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::Input(format!(
                "token id {t} is outside the vocabulary (size {})",
                c.vocab_size
            )));
        }
        if let Some(p) = self
            .positions
            .iter()
            .find(|&&p| p as usize >= c.max_position_embeddings)
        {
            return Err(ModelError::Input(format!(
                "position {p} is beyond max_position_embeddings {}: truncate inputs to {} tokens",
                c.max_position_embeddings,
                c.max_tokens()
            )));
        }
        Ok(())
    }

    pub fn sequences(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// Activations of one layer kept for the backward.
pub struct LayerCacheOn<B: EncoderBackend> {
    pub x: B::Buf,
    pub q: B::Buf,
    pub k: B::Buf,
    pub v: B::Buf,
    pub attn: B::AttnProbs,
    pub ctx: B::Buf,
    pub r1: B::Buf,
    pub m1: B::Stats,
    pub s1: B::Stats,
    pub h1: B::Buf,
    pub u: B::Buf,
    pub gu: B::Buf,
    pub r2: B::Buf,
    pub m2: B::Stats,
    pub s2: B::Stats,
    /// Dropout masks of the attention output and of the output projection.
    pub attn_out_mask: Option<B::Stats>,
    pub out_mask: Option<B::Stats>,
}

/// Everything the backward needs.
pub struct CacheOn<B: EncoderBackend> {
    pub emb: B::Buf,
    pub m0: B::Stats,
    pub s0: B::Stats,
    /// Dropout mask of the embeddings' output.
    pub emb_mask: Option<B::Stats>,
    pub layers: Vec<LayerCacheOn<B>>,
    /// First-token rows of the last layer (B×H), after the head's input
    /// dropout (RoBERTa): the input of the dense layer.
    pub cls: B::Buf,
    /// Dropout mask of the head's input (RoBERTa only).
    pub cls_mask: Option<B::Stats>,
    /// tanh(dense(cls)) (B×H), before dropout.
    pub pooled: B::Buf,
    /// Dropout mask of the pooled vector.
    pub pooled_mask: Option<B::Stats>,
}

/// The activations of a CPU forward.
pub type Cache = CacheOn<CpuBackend>;
/// One layer's activations of a CPU forward.
pub type LayerCache = LayerCacheOn<CpuBackend>;

/// Logits (B×2) of `batch` on the CPU; with `keep` also the activations for
/// the backward. `dropout` is training mode's (None: the eval forward).
pub fn forward(
    c: &EncoderConfig,
    p: &EncoderParams,
    batch: &Batch,
    keep: bool,
    dropout: Option<&Dropout>,
) -> (Vec<f32>, Option<Cache>) {
    infallible(forward_on(&CpuBackend, c, p, batch, keep, dropout))
}

/// `x` dropped by `mask` (`x` itself without one).
pub(crate) fn drop_in_place<B: EncoderBackend>(
    b: &B,
    x: &mut B::Buf,
    mask: Option<&B::Stats>,
) -> Result<(), B::Error> {
    match mask {
        Some(m) => b.scale_by_mask(x, m),
        None => Ok(()),
    }
}

/// A copy of `x` dropped by `mask`: for a value needed both dropped and not.
pub(crate) fn dropped<B: EncoderBackend>(
    b: &B,
    x: &B::Buf,
    mask: Option<&B::Stats>,
) -> Result<B::Buf, B::Error> {
    let mut y = b.duplicate(x)?;
    drop_in_place(b, &mut y, mask)?;
    Ok(y)
}

/// The logits (B×2, on the host) and, when kept, the activations.
pub type Forward<B> = (Vec<f32>, Option<CacheOn<B>>);

/// [`forward`] on backend `b`, whose parameters `p` are.
pub fn forward_on<B: EncoderBackend>(
    b: &B,
    c: &EncoderConfig,
    p: &B::Params,
    batch: &Batch,
    keep: bool,
    dropout: Option<&Dropout>,
) -> Result<Forward<B>, B::Error> {
    // masks are drawn on the host (a function of the seed and the site) and
    // placed on the backend
    let mask =
        |site: Site, n: usize, prob: fn(&Dropout) -> f32| -> Result<Option<B::Stats>, B::Error> {
            dropout
                .and_then(|d| d.mask(site, n, prob(d)))
                .map(|m| b.upload_stats(&m))
                .transpose()
        };
    let w = |i: usize| B::weight(p, i);
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let t = batch.tokens.len();
    let eps = c.layer_norm_eps;
    // embeddings: word + token type 0 + position, then LayerNorm
    let gather = |ids: &[u32], table: usize| -> Result<B::Buf, B::Error> {
        let ids = b.upload_ids(ids)?;
        let mut out = b.zeros(t * h)?;
        b.embedding_forward(&ids, w(table), h, &mut out)?;
        Ok(out)
    };
    let mut e = gather(&batch.tokens, 0)?;
    b.add_in_place(&mut e, &gather(&vec![0; t], 2)?)?;
    b.add_in_place(&mut e, &gather(&batch.positions, 1)?)?;
    let mut x = b.zeros(t * h)?;
    let (mut m0, mut s0) = (b.zeros_stats(t)?, b.zeros_stats(t)?);
    b.layernorm_forward(&e, w(3), w(4), eps, t, h, &mut x, &mut m0, &mut s0)?;
    let emb_mask = mask(Site::Embeddings, t * h, |d| d.hidden)?;
    drop_in_place(b, &mut x, emb_mask.as_ref())?;
    let mut layers = Vec::new();
    for layer in 0..c.num_hidden_layers {
        let lw = |kk: usize| w(layer_index(layer, kk));
        let mut q = b.zeros(t * h)?;
        let mut kk = b.zeros(t * h)?;
        let mut v = b.zeros(t * h)?;
        b.linear_forward(&x, lw(l::Q_W), Some(lw(l::Q_B)), t, h, h, &mut q)?;
        b.linear_forward(&x, lw(l::K_W), Some(lw(l::K_B)), t, h, h, &mut kk)?;
        b.linear_forward(&x, lw(l::V_W), Some(lw(l::V_B)), t, h, h, &mut v)?;
        let mut ctx = b.zeros(t * h)?;
        let attn = b.bidirectional_attention_forward(
            &q,
            &kk,
            &v,
            &batch.offsets,
            c.num_attention_heads,
            c.head_dim(),
            &mut ctx,
            keep,
            dropout.map(|d| (d, layer)),
        )?;
        let mut r1 = b.zeros(t * h)?;
        b.linear_forward(&ctx, lw(l::AO_W), Some(lw(l::AO_B)), t, h, h, &mut r1)?;
        let attn_out_mask = mask(Site::AttentionOutput { layer }, t * h, |d| d.hidden)?;
        drop_in_place(b, &mut r1, attn_out_mask.as_ref())?;
        b.add_in_place(&mut r1, &x)?;
        let mut h1 = b.zeros(t * h)?;
        let (mut m1, mut s1) = (b.zeros_stats(t)?, b.zeros_stats(t)?);
        b.layernorm_forward(
            &r1,
            lw(l::LN1_W),
            lw(l::LN1_B),
            eps,
            t,
            h,
            &mut h1,
            &mut m1,
            &mut s1,
        )?;
        let mut u = b.zeros(t * inter)?;
        b.linear_forward(&h1, lw(l::I_W), Some(lw(l::I_B)), t, h, inter, &mut u)?;
        let mut gu = b.zeros(t * inter)?;
        b.gelu_forward(&u, &mut gu)?;
        let mut r2 = b.zeros(t * h)?;
        b.linear_forward(&gu, lw(l::O_W), Some(lw(l::O_B)), t, inter, h, &mut r2)?;
        let out_mask = mask(Site::Output { layer }, t * h, |d| d.hidden)?;
        drop_in_place(b, &mut r2, out_mask.as_ref())?;
        b.add_in_place(&mut r2, &h1)?;
        let mut out = b.zeros(t * h)?;
        let (mut m2, mut s2) = (b.zeros_stats(t)?, b.zeros_stats(t)?);
        b.layernorm_forward(
            &r2,
            lw(l::LN2_W),
            lw(l::LN2_B),
            eps,
            t,
            h,
            &mut out,
            &mut m2,
            &mut s2,
        )?;
        let prev = std::mem::replace(&mut x, out);
        if keep {
            layers.push(LayerCacheOn {
                x: prev,
                q,
                k: kk,
                v,
                attn,
                ctx,
                r1,
                m1,
                s1,
                h1,
                u,
                gu,
                r2,
                m2,
                s2,
                attn_out_mask,
                out_mask,
            });
        }
    }
    // head on the first token: dense + tanh, then the 2-way projection
    let n = batch.sequences();
    let mut cls = b.gather_rows(&x, &batch.offsets[..n], h)?;
    // RoBERTa's head drops its input; BERT's pooler does not
    let cls_mask = match c.family {
        Family::Roberta => mask(Site::HeadInput, n * h, |d| d.classifier)?,
        Family::Bert => None,
    };
    drop_in_place(b, &mut cls, cls_mask.as_ref())?;
    let mut pooled = b.zeros(n * h)?;
    b.linear_forward(
        &cls,
        w(head_index(c, 0)),
        Some(w(head_index(c, 1))),
        n,
        h,
        h,
        &mut pooled,
    )?;
    b.tanh_in_place(&mut pooled)?;
    let pooled_mask = mask(Site::HeadPooled, n * h, |d| d.classifier)?;
    let pooled_dropped = dropped(b, &pooled, pooled_mask.as_ref())?;
    let mut logits = b.zeros(n * 2)?;
    b.linear_forward(
        &pooled_dropped,
        w(head_index(c, 2)),
        Some(w(head_index(c, 3))),
        n,
        h,
        2,
        &mut logits,
    )?;
    let logits = b.download(logits)?;
    let cache = keep.then(|| CacheOn {
        emb: e,
        m0,
        s0,
        emb_mask,
        layers,
        cls,
        cls_mask,
        pooled,
        pooled_mask,
    });
    Ok((logits, cache))
}
