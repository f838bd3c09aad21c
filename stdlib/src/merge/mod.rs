//! The `merge` ops, one a file.

use std::sync::Arc;

use crate::op::Op;

pub mod linear;
pub mod slerp;

pub fn ops() -> Vec<Arc<dyn Op>> {
    [slerp::ops(), linear::ops()].concat()
}
