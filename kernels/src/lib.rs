//! Compute primitives of flow's model runtime. Each family has a CPU
//! reference (`cpu`) and, for NVIDIA GPUs, a CUDA version (`cuda/*.cu`).

pub mod cpu;
pub mod cuda;
