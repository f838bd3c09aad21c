//! The ops a `.flow` pipeline calls, one op a file, grouped by stage.
//!
//! Every op implements [`op::Op`]; [`registry`] lists them all. The engine
//! checks a pipeline's calls against the specs and runs the ops; nothing in
//! here knows about keys, the cache or scheduling.

pub mod op;

pub mod artifacts;
pub mod data;
pub mod eval;
pub mod exec;
pub mod heldout;
pub mod http;
pub mod llm;
pub mod merge;
pub mod model;
pub mod report;
pub mod serve;
pub mod train;

pub use flow_engine::op::Registry;

/// The standard library: every op `flow` ships.
pub fn registry() -> Registry {
    let groups = [
        exec::ops(),
        data::ops(),
        model::ops(),
        train::ops(),
        merge::ops(),
        eval::ops(),
        heldout::ops(),
        report::ops(),
    ];
    Registry::from_ops(groups.into_iter().flatten().collect())
}
