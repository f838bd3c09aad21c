#!/usr/bin/env bash
# The test suite: every crate's tests on the CPU. Installs what the tests
# need that cargo does not: NVRTC and the CUDA headers from PyPI wheels, so
# that every CUDA kernel is compiled for sm_80 and sm_90 even without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=".ci/.tools"
if [ ! -f "$tools/nvidia/cu13/include/cuda_bf16.h" ] || [ ! -f "$tools/nvidia/cu13/lib/libnvrtc.so.13" ]; then
  echo "installing NVRTC and CUDA headers (PyPI wheels) into $tools" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tools" \
    "nvidia-cuda-nvrtc==13.*" "nvidia-cuda-runtime==13.*"
fi
export FLOW_NVRTC_LIB="$PWD/$tools/nvidia/cu13/lib/libnvrtc.so.13"
export FLOW_CUDA_INCLUDE="$PWD/$tools/nvidia/cu13/include"
# The Slurm tests (tests/cli_slurm.rs) run against a real single-machine
# cluster, started here and stopped afterwards (FLOW_SLURM_TESTS=0 skips it,
# and the tests then say loudly that they were skipped).
if [ "${FLOW_SLURM_TESTS:-1}" != 0 ]; then
  if [ -z "${FLOW_SLURM_DIR:-}" ]; then
    FLOW_SLURM_DIR="$(mktemp -d /tmp/flow-slurm.XXXXXX)"
    trap 'bash scripts/slurm_cluster.sh stop; rm -rf "$FLOW_SLURM_DIR"' EXIT
  else
    trap 'bash scripts/slurm_cluster.sh stop' EXIT
  fi
  export FLOW_SLURM_DIR
  bash scripts/slurm_cluster.sh start
  eval "$(bash scripts/slurm_cluster.sh env)"
  export FLOW_SLURM_TESTS=1
fi
cargo test --workspace --no-fail-fast "$@"
