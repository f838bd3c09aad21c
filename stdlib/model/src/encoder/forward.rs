//! The encoder's forward pass over a ragged batch (sequences concatenated,
//! no padding), post-LayerNorm blocks as in BERT / RoBERTa, and the
//! classification head on each sequence's first token.

use flow_kernels::cpu as k;

use super::attention::{attention_forward, AttnCache};
use super::config::{EncoderConfig, Family};
use super::dropout::{apply, masked, Dropout, Site};
use super::params::{l, EncoderParams};
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
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    pub x: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: AttnCache,
    pub ctx: Vec<f32>,
    pub r1: Vec<f32>,
    pub m1: Vec<f32>,
    pub s1: Vec<f32>,
    pub h1: Vec<f32>,
    pub u: Vec<f32>,
    pub gu: Vec<f32>,
    pub r2: Vec<f32>,
    pub m2: Vec<f32>,
    pub s2: Vec<f32>,
    /// Dropout masks of the attention output and of the output projection.
    pub attn_out_mask: Option<Vec<f32>>,
    pub out_mask: Option<Vec<f32>>,
}

/// Everything the backward needs.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    pub emb: Vec<f32>,
    pub m0: Vec<f32>,
    pub s0: Vec<f32>,
    /// Dropout mask of the embeddings' output.
    pub emb_mask: Option<Vec<f32>>,
    pub layers: Vec<LayerCache>,
    /// First-token rows of the last layer (B×H), after the head's input
    /// dropout (RoBERTa): the input of the dense layer.
    pub cls: Vec<f32>,
    /// Dropout mask of the head's input (RoBERTa only).
    pub cls_mask: Option<Vec<f32>>,
    /// tanh(dense(cls)) (B×H), before dropout.
    pub pooled: Vec<f32>,
    /// Dropout mask of the pooled vector.
    pub pooled_mask: Option<Vec<f32>>,
}

/// Logits (B×2) of `batch`; with `keep` also the activations for the
/// backward. `dropout` is training mode's (None: the eval forward).
pub fn forward(
    c: &EncoderConfig,
    p: &EncoderParams,
    batch: &Batch,
    keep: bool,
    dropout: Option<&Dropout>,
) -> (Vec<f32>, Option<Cache>) {
    let mask = |site: Site, n: usize, prob: fn(&Dropout) -> f32| {
        dropout.and_then(|d| d.mask(site, n, prob(d)))
    };
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let t = batch.tokens.len();
    let eps = c.layer_norm_eps;
    let mut cache = Cache::default();
    // embeddings: word + position + token type 0, then LayerNorm
    let mut e = vec![0.0f32; t * h];
    let (word, pos, typ) = (&p.data[0], &p.data[1], &p.data[2]);
    for (i, row) in e.chunks_exact_mut(h).enumerate() {
        let w = &word[batch.tokens[i] as usize * h..][..h];
        let ps = &pos[batch.positions[i] as usize * h..][..h];
        for j in 0..h {
            row[j] = w[j] + typ[j] + ps[j];
        }
    }
    let mut x = vec![0.0f32; t * h];
    let (mut m0, mut s0) = (vec![0.0; t], vec![0.0; t]);
    k::layernorm_forward(
        &e, &p.data[3], &p.data[4], eps, t, h, &mut x, &mut m0, &mut s0,
    );
    let emb_mask = mask(Site::Embeddings, t * h, |d| d.hidden);
    apply(&mut x, emb_mask.as_deref());
    if keep {
        cache.emb = e;
        cache.m0 = m0;
        cache.s0 = s0;
        cache.emb_mask = emb_mask;
    }
    for layer in 0..c.num_hidden_layers {
        let w = |kk: usize| &p.data[EncoderParams::li(layer, kk)][..];
        let mut q = vec![0.0f32; t * h];
        let mut kk = vec![0.0f32; t * h];
        let mut v = vec![0.0f32; t * h];
        k::linear_forward(&x, w(l::Q_W), Some(w(l::Q_B)), t, h, h, &mut q);
        k::linear_forward(&x, w(l::K_W), Some(w(l::K_B)), t, h, h, &mut kk);
        k::linear_forward(&x, w(l::V_W), Some(w(l::V_B)), t, h, h, &mut v);
        let mut ctx = vec![0.0f32; t * h];
        let attn = attention_forward(
            &q,
            &kk,
            &v,
            &batch.offsets,
            c.num_attention_heads,
            c.head_dim(),
            &mut ctx,
            keep,
            dropout.map(|d| (d, layer)),
        );
        let mut r1 = vec![0.0f32; t * h];
        k::linear_forward(&ctx, w(l::AO_W), Some(w(l::AO_B)), t, h, h, &mut r1);
        let attn_out_mask = mask(Site::AttentionOutput { layer }, t * h, |d| d.hidden);
        apply(&mut r1, attn_out_mask.as_deref());
        for (a, b) in r1.iter_mut().zip(&x) {
            *a += b;
        }
        let mut h1 = vec![0.0f32; t * h];
        let (mut m1, mut s1) = (vec![0.0; t], vec![0.0; t]);
        k::layernorm_forward(
            &r1,
            w(l::LN1_W),
            w(l::LN1_B),
            eps,
            t,
            h,
            &mut h1,
            &mut m1,
            &mut s1,
        );
        let mut u = vec![0.0f32; t * inter];
        k::linear_forward(&h1, w(l::I_W), Some(w(l::I_B)), t, h, inter, &mut u);
        let mut gu = vec![0.0f32; t * inter];
        k::gelu_forward(&u, &mut gu);
        let mut r2 = vec![0.0f32; t * h];
        k::linear_forward(&gu, w(l::O_W), Some(w(l::O_B)), t, inter, h, &mut r2);
        let out_mask = mask(Site::Output { layer }, t * h, |d| d.hidden);
        apply(&mut r2, out_mask.as_deref());
        for (a, b) in r2.iter_mut().zip(&h1) {
            *a += b;
        }
        let mut out = vec![0.0f32; t * h];
        let (mut m2, mut s2) = (vec![0.0; t], vec![0.0; t]);
        k::layernorm_forward(
            &r2,
            w(l::LN2_W),
            w(l::LN2_B),
            eps,
            t,
            h,
            &mut out,
            &mut m2,
            &mut s2,
        );
        let prev = std::mem::replace(&mut x, out);
        if keep {
            cache.layers.push(LayerCache {
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
    let b = batch.sequences();
    let mut cls = vec![0.0f32; b * h];
    for s in 0..b {
        let o = batch.offsets[s];
        cls[s * h..(s + 1) * h].copy_from_slice(&x[o * h..(o + 1) * h]);
    }
    // RoBERTa's head drops its input; BERT's pooler does not
    let cls_mask = match c.family {
        Family::Roberta => mask(Site::HeadInput, b * h, |d| d.classifier),
        Family::Bert => None,
    };
    apply(&mut cls, cls_mask.as_deref());
    let mut pooled = vec![0.0f32; b * h];
    k::linear_forward(
        &cls,
        &p.data[p.hi(0)],
        Some(&p.data[p.hi(1)]),
        b,
        h,
        h,
        &mut pooled,
    );
    for z in pooled.iter_mut() {
        *z = z.tanh();
    }
    let pooled_mask = mask(Site::HeadPooled, b * h, |d| d.classifier);
    let pooled_dropped = masked(&pooled, pooled_mask.as_deref());
    let mut logits = vec![0.0f32; b * 2];
    k::linear_forward(
        &pooled_dropped,
        &p.data[p.hi(2)],
        Some(&p.data[p.hi(3)]),
        b,
        h,
        2,
        &mut logits,
    );
    if keep {
        cache.cls = cls;
        cache.cls_mask = cls_mask;
        cache.pooled = pooled;
        cache.pooled_mask = pooled_mask;
        (logits, Some(cache))
    } else {
        (logits, None)
    }
}
