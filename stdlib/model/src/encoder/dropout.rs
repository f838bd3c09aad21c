//! Dropout of training mode, placed where transformers' BERT / RoBERTa
//! modules place it under `model.train()`: after the embeddings'
//! LayerNorm, on the attention probabilities, on each block's two output
//! projections before their residual sum, and in the classification head
//! (RoBERTa: on the first token and on the pooled vector; BERT: on the
//! pooled vector). Each element is kept with probability 1 − p and scaled by
//! 1 / (1 − p), as `torch.nn.functional.dropout`.
//!
//! The masks are a pure function of `seed` and the place they are drawn
//! for, not of the order in which threads draw them, so a step is
//! reproducible and a forward can be recomputed with the same masks (which
//! is what the finite-difference test of the backward relies on).

use std::borrow::Cow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::EncoderConfig;

/// Dropout probabilities of one training step and the seed of its masks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// `hidden_dropout_prob`: embeddings and the blocks' output projections.
    pub hidden: f32,
    /// `attention_probs_dropout_prob`: the attention probabilities.
    pub attention: f32,
    /// `classifier_dropout`, or `hidden_dropout_prob` when it is null.
    pub classifier: f32,
    pub seed: u64,
}

/// Where in the network a mask is drawn; with the seed it fixes the mask.
#[derive(Clone, Copy, Debug)]
pub enum Site {
    Embeddings,
    /// The attention probabilities of (layer, sequence·heads + head).
    Attention {
        layer: usize,
        block: usize,
    },
    AttentionOutput {
        layer: usize,
    },
    Output {
        layer: usize,
    },
    HeadInput,
    HeadPooled,
}

impl Site {
    fn stream(self) -> u64 {
        let (kind, layer, block) = match self {
            Site::Embeddings => (0, 0, 0),
            Site::Attention { layer, block } => (1, layer, block),
            Site::AttentionOutput { layer } => (2, layer, 0),
            Site::Output { layer } => (3, layer, 0),
            Site::HeadInput => (4, 0, 0),
            Site::HeadPooled => (5, 0, 0),
        };
        (kind as u64) << 56 | (layer as u64 & 0xff_ffff) << 32 | (block as u64 & 0xffff_ffff)
    }
}

impl Dropout {
    /// The probabilities of `config.json` (transformers' defaults: 0.1).
    pub fn from_config(c: &EncoderConfig, seed: u64) -> Dropout {
        Dropout {
            hidden: c.hidden_dropout,
            attention: c.attention_dropout,
            classifier: c.classifier_dropout.unwrap_or(c.hidden_dropout),
            seed,
        }
    }

    /// The mask of `n` elements at `site` with drop probability `p`: 0 or
    /// 1 / (1 − p) each; `None` (the identity) when `p` is 0.
    pub fn mask(&self, site: Site, n: usize, p: f32) -> Option<Vec<f32>> {
        if p <= 0.0 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(site.stream());
        let scale = 1.0 / (1.0 - p);
        Some(
            (0..n)
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { scale })
                .collect(),
        )
    }
}

/// x ∘ mask as a new vector, or `x` itself (no copy) without a mask: for a
/// value that is needed both dropped and not.
pub fn masked<'a>(x: &'a [f32], mask: Option<&[f32]>) -> Cow<'a, [f32]> {
    match mask {
        Some(m) => Cow::Owned(x.iter().zip(m).map(|(v, s)| v * s).collect()),
        None => Cow::Borrowed(x),
    }
}

/// x ∘ mask (or x unchanged without a mask); the backward is the same
/// product applied to the gradient.
pub fn apply(x: &mut [f32], mask: Option<&[f32]>) {
    if let Some(m) = mask {
        for (v, &s) in x.iter_mut().zip(m) {
            *v *= s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dropout(seed: u64) -> Dropout {
        Dropout {
            hidden: 0.25,
            attention: 0.25,
            classifier: 0.25,
            seed,
        }
    }

    /// torch.nn.functional.dropout(x, p): each element is zeroed with
    /// probability p and the others are scaled by 1 / (1 − p).
    #[test]
    fn a_mask_drops_a_fraction_p_and_scales_the_rest() {
        let n = 200_000;
        let m = dropout(1).mask(Site::Embeddings, n, 0.25).unwrap();
        let dropped = m.iter().filter(|&&x| x == 0.0).count() as f64 / n as f64;
        // the binomial's standard deviation is 0.00097: 5 of them
        assert!((dropped - 0.25).abs() < 0.005, "dropped {dropped}");
        assert!(m.iter().all(|&x| x == 0.0 || x == 1.0 / 0.75));
        assert!(dropout(1).mask(Site::Embeddings, n, 0.0).is_none());
    }

    #[test]
    fn a_mask_depends_on_the_seed_and_the_site_only() {
        let a = dropout(1).mask(Site::Output { layer: 2 }, 4096, 0.5);
        assert_eq!(a, dropout(1).mask(Site::Output { layer: 2 }, 4096, 0.5));
        assert_ne!(a, dropout(2).mask(Site::Output { layer: 2 }, 4096, 0.5));
        assert_ne!(a, dropout(1).mask(Site::Output { layer: 3 }, 4096, 0.5));
        assert_ne!(
            dropout(1).mask(Site::Attention { layer: 0, block: 1 }, 4096, 0.5),
            dropout(1).mask(Site::Attention { layer: 0, block: 2 }, 4096, 0.5)
        );
    }
}
