//! An [`OpContext`] for the unit tests of the merge, eval and report ops.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use crate::op::{Device, NoProgress, Op, OpContext, OpResult, Outputs, Value};

/// Runs `op` with `params` (defaults of its spec filled in) writing into
/// `out_dir`; returns the outputs and the log lines.
pub fn run_op(
    op: &dyn Op,
    params: &[(&str, Value)],
    out_dir: &Path,
) -> (OpResult<Outputs>, Vec<String>) {
    let spec = op.spec();
    let mut map: BTreeMap<String, Value> = BTreeMap::new();
    for p in &spec.params {
        if let Some(d) = &p.default {
            map.insert(p.name.to_owned(), d.clone());
        }
    }
    for (k, v) in params {
        assert!(
            spec.params.iter().any(|p| p.name == *k),
            "op {} has no param {k}",
            spec.name
        );
        map.insert((*k).to_owned(), v.clone());
    }
    for p in &spec.params {
        assert!(
            map.contains_key(p.name),
            "test did not give required param {}",
            p.name
        );
    }
    std::fs::create_dir_all(out_dir).expect("create out dir");
    let lines = Mutex::new(Vec::new());
    let log = |l: &str| lines.lock().expect("log lock").push(l.to_owned());
    let cancel = AtomicBool::new(false);
    let ctx = OpContext {
        params: map,
        out_dir: out_dir.to_owned(),
        threads: 2,
        device: Device::Cpu,
        progress: &NoProgress,
        log: &log,
        cancel: &cancel,
    };
    let res = op.run(&ctx);
    drop(ctx);
    (res, lines.into_inner().expect("log lock"))
}
