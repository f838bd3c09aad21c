//! Held-out domain loss (issue 13, item 6): `holdout` splits a curated
//! corpus into a training part and a small held-out part by a fixed rule,
//! `heldout_loss` measures a model's next-token loss on the held-out part
//! once it is packed. Training never sees the held-out documents, so the
//! loss of the source and of every checkpoint on them shows what the
//! adaptation learned of the domain rather than of its own batches.

use std::sync::Arc;

use crate::op::Op;

pub mod loss;
pub mod split;

pub fn ops() -> Vec<Arc<dyn Op>> {
    [split::ops(), loss::ops()].concat()
}

#[cfg(test)]
mod tests;
