//! The `flow` engine: the `.flow` language, the content-hashed graph, the
//! artifact cache, the executor and the CLI. See docs/ARCHITECTURE.md.
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
pub mod model_cli;
pub mod plan;
pub mod progress;
pub mod resolve;
pub mod store;
