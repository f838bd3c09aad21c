#!/usr/bin/env bash
# Every CUDA kernel against its CPU reference, on a GPU (issue 14, item 4a).
# Build here (no GPU needed), stripped so it travels light:
#   cargo build --release -p flow-kernels --example gpu_check
#   mkdir -p .carry && cp target/release/examples/gpu_check .carry/ && strip .carry/gpu_check
# On the device machine (NVRTC and the CUDA headers from its CUDA install or
# the nvidia-cuda-nvrtc / nvidia-cuda-runtime wheels):
#   bash scripts/gpu_check.sh .carry/gpu_check
# Exit status: 0 all checks passed, 1 a mismatch or a launch error, 2 no GPU.
set -euo pipefail
bin="${1:-target/release/examples/gpu_check}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
# A fresh PTX cache, so this run compiles every family for this GPU.
export FLOW_KERNEL_CACHE="$(mktemp -d)"
trap 'rm -rf "$FLOW_KERNEL_CACHE"' EXIT
"$bin"
