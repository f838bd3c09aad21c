//! The `flow` engine: the `.flow` language, the content-hashed graph, the
//! artifact cache, the executor and the CLI. See docs/ARCHITECTURE.md.

pub mod ir;
pub mod lang;
