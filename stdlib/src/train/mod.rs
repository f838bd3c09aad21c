//! The `train` ops, one a file.

use std::sync::Arc;

use crate::op::Op;

pub mod cpt;

pub fn ops() -> Vec<Arc<dyn Op>> {
    [cpt::ops()].concat()
}
