#!/usr/bin/env bash
# Tokens/s of flow-model's CPU forward and training step vs PyTorch, side by side, on the
# SmolLM2-135M shape (random weights, f32, seq 512 by default), and greedy decoding of one
# prompt (flow's `generate` vs HF `generate`). Prints the machine (CPU model, vector flags,
# load) first so every figure names its machine.
#
#   scripts/bench_model.sh [--seq 512] [--fwd-batch 2] [--train-batch 1] [--reps 3] [--layers 30]
#                          [--decode-prompt 32] [--decode-tokens 64]
#
# The PyTorch side runs in a venv made only for this benchmark: $BENCH_VENV (default
# .venv-bench), created on first use with `pip install torch transformers`. The flow binary is
# $CARGO_TARGET_DIR/release/examples/bench_model (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-.venv-bench}"
TARGET="${CARGO_TARGET_DIR:-target}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch transformers
fi
cargo build --release -p flow-model --example bench_model
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { case " $flags " in *" $1 "*) echo yes ;; *) echo no ;; esac; }
echo "== machine"
echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cpus, avx2 $(has avx2), avx512f $(has avx512f)"
echo "load before flow: $(uptime | sed 's/.*load average/load average/')"
echo "== flow-model"
"$TARGET/release/examples/bench_model" "$@"
echo "load before pytorch: $(uptime | sed 's/.*load average/load average/')"
echo "== pytorch"
"$VENV/bin/python" scripts/bench_model_torch.py "$@"
echo "load after: $(uptime | sed 's/.*load average/load average/')"
