//! The `.cu` sources, embedded in the binary: one file per kernel family.

/// One kernel family's source file.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub name: &'static str,
    pub source: &'static str,
}

/// The header every kernel file includes.
pub const COMMON: &str = include_str!("../../cuda/common.cuh");

macro_rules! kernel {
    ($name:literal) => {
        KernelSource {
            name: $name,
            source: include_str!(concat!("../../cuda/", $name, ".cu")),
        }
    };
}

/// Every kernel family flow ships.
pub const SOURCES: &[KernelSource] = &[
    kernel!("adamw"),
    kernel!("attention"),
    kernel!("cross_entropy"),
    kernel!("embedding"),
    kernel!("gelu"),
    kernel!("layernorm"),
    kernel!("reduce"),
    kernel!("rmsnorm"),
    kernel!("rope"),
    kernel!("slerp"),
    kernel!("swiglu"),
    kernel!("tensor"),
];
