//! The `flow` engine: the `.flow` language, the content-hashed graph, the
//! artifact cache, the executor, the pipeline commands of the CLI, and the
//! contract every op implements ([`op`]). It depends on no op, no model
//! runtime and no kernel crate; the `flow` binary wires those in. See
//! docs/ARCHITECTURE.md.
//!
//! Data flow: text → [`lang`] → [`ir::Pipeline`] → [`graph::Graph`] →
//! [`keys`] (via [`resolve`]) → [`executor`] → ops → [`store`].

pub mod cli;
pub mod device;
pub mod executor;
pub mod graph;
pub mod ir;
pub mod keys;
pub mod lang;
pub mod memo;
pub mod op;
pub mod plan;
pub mod progress;
pub mod resolve;
pub mod store;
