//! CPU implementations: the reference every CUDA kernel is checked against.
