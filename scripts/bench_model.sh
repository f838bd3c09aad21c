#!/usr/bin/env bash
# Tokens/s of flow-model's CPU forward and training step vs PyTorch, side by side, on the
# SmolLM2-135M shape (random weights, f32, seq 512 by default).
#
#   scripts/bench_model.sh [--seq 512] [--fwd-batch 2] [--train-batch 1] [--reps 3] [--layers 30]
#
# The PyTorch side runs in a venv made only for this benchmark: $BENCH_VENV (default
# .venv-bench), created on first use with `pip install torch transformers`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-.venv-bench}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch transformers
fi
cargo build --release -p flow-model --example bench_model
echo "== flow-model"
target/release/examples/bench_model "$@"
echo "== pytorch"
"$VENV/bin/python" scripts/bench_model_torch.py "$@"
