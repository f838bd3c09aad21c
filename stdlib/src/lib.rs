//! The ops a `.flow` pipeline calls, one op a file, grouped by stage.
//!
//! Every op implements [`op::Op`]; [`registry`] lists them all. The engine
//! checks a pipeline's calls against the specs and runs the ops; nothing in
//! here knows about keys, the cache or scheduling.

pub mod op;

pub mod data;
pub mod eval;
pub mod exec;
pub mod http;
pub mod llm;
pub mod merge;
pub mod model;
pub mod report;
pub mod serve;
pub mod train;

use std::collections::BTreeMap;
use std::sync::Arc;

use op::Op;

/// All ops by name.
pub struct Registry {
    ops: BTreeMap<&'static str, Arc<dyn Op>>,
}

impl Registry {
    /// A registry of the given ops (tests use it with ops of their own).
    pub fn from_ops(list: Vec<Arc<dyn Op>>) -> Registry {
        let mut ops: BTreeMap<&'static str, Arc<dyn Op>> = BTreeMap::new();
        for op in list {
            let name = op.spec().name;
            assert!(ops.insert(name, op).is_none(), "two ops are named `{name}`");
        }
        Registry { ops }
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Op>> {
        self.ops.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.ops.keys().copied()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Arc<dyn Op>)> {
        self.ops.iter().map(|(k, v)| (*k, v))
    }
}

/// The standard library: every op `flow` ships.
pub fn registry() -> Registry {
    let groups = [
        exec::ops(),
        data::ops(),
        model::ops(),
        train::ops(),
        merge::ops(),
        eval::ops(),
        report::ops(),
    ];
    Registry::from_ops(groups.into_iter().flatten().collect())
}
