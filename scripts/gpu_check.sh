#!/usr/bin/env bash
# Correctness of the CUDA kernels against their CPU references, on a GPU.
# Here (no GPU needed):   cargo build --release -p flow-kernels --example gpu_check
#                         mkdir -p .carry && cp target/release/examples/gpu_check .carry/
# On the device machine:  bash scripts/gpu_check.sh .carry/gpu_check
set -euo pipefail
bin="${1:-target/release/examples/gpu_check}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$bin"
