//! The `report` ops, one a file.

use std::sync::Arc;

use crate::op::Op;

pub mod report;

pub fn ops() -> Vec<Arc<dyn Op>> {
    [report::ops()].concat()
}
