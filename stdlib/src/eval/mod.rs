//! The `eval` ops, one a file.

use std::sync::Arc;

use crate::op::Op;

pub mod davidson;
pub mod failure_modes;
pub mod judge;
pub mod mcqa;
pub mod relative_gain;

pub fn ops() -> Vec<Arc<dyn Op>> {
    [
        mcqa::ops(),
        relative_gain::ops(),
        judge::ops(),
        davidson::ops(),
        failure_modes::ops(),
    ]
    .concat()
}
