//! `slerp` (not yet written).

use std::sync::Arc;

use crate::op::Op;

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![]
}
