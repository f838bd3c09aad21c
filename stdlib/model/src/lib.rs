//! The transformer runtime.

pub mod gguf;
