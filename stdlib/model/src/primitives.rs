//! The compute primitives the decoder's forward and backward passes and its
//! scoring are written in.
//!
//! The forward pass (`forward.rs`), the backward pass (`train/backward.rs`)
//! and the scoring of `model.rs` call nothing else for their arithmetic, so
//! a second backend (a GPU, issue 14) implements this list and reuses the
//! passes' orchestration (shapes, ordering, caching, recording, gradient
//! flow). Today every primitive is the CPU kernel of `flow-kernels`.

use rayon::prelude::*;

pub(crate) use flow_kernels::cpu::{
    attention_backward, attention_forward, cross_entropy, embedding_backward, embedding_forward,
    linear_backward, linear_forward, log_softmax_rows, rmsnorm_backward, rmsnorm_forward,
    rope_backward, rope_forward, swiglu_backward, swiglu_forward, token_logprobs, AttnParams,
    RopeTable,
};

/// `x += y`, elementwise (the residual connections and summed gradients).
pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(a, b)| {
            for (p, q) in a.iter_mut().zip(b) {
                *p += *q;
            }
        });
}
