#!/usr/bin/env bash
# Documents per second of `filter` with an encoder classifier, beside the
# n-gram classifier and beside HF transformers on the same documents.
#
#   scripts/bench_encoder.sh CLASSIFIER_DIR [DOCS] [PYTHON]
#
# CLASSIFIER_DIR: a train_classifier(method: "encoder") artifact, e.g. the
# clf/ that scripts/check_encoder_classifier.py --out DIR leaves. PYTHON: an
# interpreter with torch and transformers (the transformers line is skipped
# without one). Release build; synthetic German-like documents of ~2,930
# characters (the n-gram benchmark's), truncated to the classifier's max_len.
set -euo pipefail
cd "$(dirname "$0")/.."
clf="$(realpath "$1")"; docs="${2:-256}"; py="${3:-python3}"
out="$(mktemp -d)"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
FLOW_BENCH_ENCODER="$clf" FLOW_BENCH_DOCS="$docs" FLOW_BENCH_OUT="$out" \
  cargo test --release -q -p flow-stdlib --lib bench_encoder_filter_throughput -- --ignored --nocapture | grep BENCH
FLOW_BENCH_DOCS=$((docs * 40)) cargo test --release -q -p flow-stdlib --lib bench_filter_throughput -- --ignored --nocapture | grep BENCH
if "$py" -c "import torch, transformers" 2>/dev/null; then
  "$py" scripts/bench_encoder_hf.py "$clf" "$out/docs.jsonl" 32
else
  echo "transformers: skipped ($py has no torch/transformers)"
fi
rm -rf "$out"
