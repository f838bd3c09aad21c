//! The transformer runtime.
