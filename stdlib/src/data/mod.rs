//! The `data` ops, one a file.

use std::sync::Arc;

use crate::op::Op;

pub mod agreement;
pub mod annotate;
pub mod corpus;
pub mod dedup;
pub mod filter;
pub mod pack;
pub mod sample;
pub mod train_classifier;

pub fn ops() -> Vec<Arc<dyn Op>> {
    [
        corpus::ops(),
        sample::ops(),
        annotate::ops(),
        agreement::ops(),
        train_classifier::ops(),
        filter::ops(),
        dedup::ops(),
        pack::ops(),
    ]
    .concat()
}
