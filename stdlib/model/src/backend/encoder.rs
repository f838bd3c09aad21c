//! What the encoder (BERT / RoBERTa / XLM-RoBERTa, `crate::encoder`) needs
//! of a backend beyond the decoder's calls: LayerNorm with a bias, exact
//! GELU, tanh (the pooler), dropout masks, bidirectional attention over a
//! ragged batch (each sequence attends to all of its own tokens, which is
//! what a padding mask computes) with dropout on its probabilities, and the
//! clipping norm summed element by element.
//!
//! A sub-trait of [`Backend`], so the decoder's trait and every backend of it
//! are unchanged; the encoder's forward, backward and optimizer step are
//! written once over `B: EncoderBackend`. The embeddings' gathers and their
//! backward, the linear layers, the residual adds, the row copies of the head
//! and AdamW are the decoder's calls.

use super::{Backend, CpuBackend};
use crate::encoder::attention::{self, AttnCache};
use crate::encoder::dropout::Dropout;

use flow_kernels::cpu as k;
use rayon::prelude::*;
use std::convert::Infallible;

/// The encoder's calls on a backend. Every compute call has the contract of
/// the CPU function of the same name (`flow_kernels::cpu` or
/// `crate::encoder::attention`), which the CPU backend is.
pub trait EncoderBackend: Backend {
    /// Attention probabilities (and their dropout masks) of every (sequence,
    /// head), kept for the backward.
    type AttnProbs: Send + Sync;

    /// An f32 buffer holding `x` (dropout masks: 0 or 1 / (1 − p), kept exact).
    fn upload_stats(&self, x: &[f32]) -> Result<Self::Stats, Self::Error>;

    /// `y = (x − mean)·rstd·w + b` per row; mean and rstd kept.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        b: &Self::Weight,
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut Self::Buf,
        mean: &mut Self::Stats,
        rstd: &mut Self::Stats,
    ) -> Result<(), Self::Error>;
    /// dx (set), dw and db (added to).
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Weight,
        mean: &Self::Stats,
        rstd: &Self::Stats,
        rows: usize,
        dim: usize,
        dx: &mut Self::Buf,
        dw: &mut Self::Grad,
        db: &mut Self::Grad,
    ) -> Result<(), Self::Error>;
    /// `y = gelu(x)`, the exact erf form.
    fn gelu_forward(&self, x: &Self::Buf, y: &mut Self::Buf) -> Result<(), Self::Error>;
    /// `dx = dy · gelu'(x)` (set).
    fn gelu_backward(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<(), Self::Error>;
    /// `x = tanh(x)`.
    fn tanh_in_place(&self, x: &mut Self::Buf) -> Result<(), Self::Error>;
    /// `dy *= 1 − y²`, the backward of `y = tanh(x)`.
    fn tanh_backward_in_place(&self, dy: &mut Self::Buf, y: &Self::Buf) -> Result<(), Self::Error>;
    /// `x *= mask`, elementwise (a dropout mask, forward and backward).
    fn scale_by_mask(&self, x: &mut Self::Buf, mask: &Self::Stats) -> Result<(), Self::Error>;
    /// ctx (set, `[T, heads·head_dim]`) of bidirectional multi-head attention of
    /// every sequence (`offsets`: B + 1 bounds) over its own tokens, from q, k, v
    /// of the same shape. With `dropout` (and the layer's index) the
    /// probabilities are dropped with the masks of [`Dropout::mask`] at
    /// `Site::Attention { layer, block: sequence·heads + head }`. The
    /// probabilities are kept when `keep`.
    #[allow(clippy::too_many_arguments)]
    fn bidirectional_attention_forward(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
        ctx: &mut Self::Buf,
        keep: bool,
        dropout: Option<(&Dropout, usize)>,
    ) -> Result<Self::AttnProbs, Self::Error>;
    /// dq, dk, dv (set) from dctx.
    #[allow(clippy::too_many_arguments)]
    fn bidirectional_attention_backward(
        &self,
        dctx: &Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        probs: &Self::AttnProbs,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
    ) -> Result<(), Self::Error>;
    /// The global L2 norm of every gradient, its squares summed in f64 one
    /// element after the other in tensor order (torch's `clip_grad_norm_`
    /// up to the order; the encoder's fine-tuning has always clipped by this
    /// sum). A device may sum in its own order.
    fn grad_norm_in_element_order(&self, grads: &Self::Grads) -> Result<f64, Self::Error>;
}

type R<T> = Result<T, Infallible>;

impl EncoderBackend for CpuBackend {
    type AttnProbs = AttnCache;

    fn upload_stats(&self, x: &[f32]) -> R<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn layernorm_forward(
        &self,
        x: &Vec<f32>,
        w: &[f32],
        b: &[f32],
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
    ) -> R<()> {
        k::layernorm_forward(x, w, b, eps, rows, dim, y, mean, rstd);
        Ok(())
    }
    fn layernorm_backward(
        &self,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        w: &[f32],
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        rows: usize,
        dim: usize,
        dx: &mut Vec<f32>,
        dw: &mut [f32],
        db: &mut [f32],
    ) -> R<()> {
        k::layernorm_backward(dy, x, w, mean, rstd, rows, dim, dx, dw, db);
        Ok(())
    }
    fn gelu_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> R<()> {
        k::gelu_forward(x, y);
        Ok(())
    }
    fn gelu_backward(&self, dy: &Vec<f32>, x: &Vec<f32>, dx: &mut Vec<f32>) -> R<()> {
        k::gelu_backward(dy, x, dx);
        Ok(())
    }
    fn tanh_in_place(&self, x: &mut Vec<f32>) -> R<()> {
        for z in x.iter_mut() {
            *z = z.tanh();
        }
        Ok(())
    }
    fn tanh_backward_in_place(&self, dy: &mut Vec<f32>, y: &Vec<f32>) -> R<()> {
        for (d, &y) in dy.iter_mut().zip(y) {
            *d *= 1.0 - y * y;
        }
        Ok(())
    }
    fn scale_by_mask(&self, x: &mut Vec<f32>, mask: &Vec<f32>) -> R<()> {
        x.par_chunks_mut(4096)
            .zip(mask.par_chunks(4096))
            .for_each(|(a, m)| {
                for (v, &s) in a.iter_mut().zip(m) {
                    *v *= s;
                }
            });
        Ok(())
    }
    fn bidirectional_attention_forward(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
        ctx: &mut Vec<f32>,
        keep: bool,
        dropout: Option<(&Dropout, usize)>,
    ) -> R<AttnCache> {
        Ok(attention::attention_forward(
            q, k, v, offsets, heads, head_dim, ctx, keep, dropout,
        ))
    }
    fn bidirectional_attention_backward(
        &self,
        dctx: &Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        probs: &AttnCache,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
        dq: &mut Vec<f32>,
        dk: &mut Vec<f32>,
        dv: &mut Vec<f32>,
    ) -> R<()> {
        attention::attention_backward(dctx, q, k, v, probs, offsets, heads, head_dim, dq, dk, dv);
        Ok(())
    }
    fn grad_norm_in_element_order(&self, grads: &crate::weights::Params) -> R<f64> {
        Ok(grads
            .data
            .iter()
            .flatten()
            .map(|&g| (g as f64) * (g as f64))
            .sum::<f64>()
            .sqrt())
    }
}
