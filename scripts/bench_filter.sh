#!/usr/bin/env bash
# Throughput of the `filter` op with an n-gram classifier on FineWeb-2-sized
# documents (~3,000 characters of synthetic German-like text).
#
# Prints documents per second for (1) scoring alone on one thread and (2) the
# whole op (zstd JSONL shards in and out, JSON parsing, statistics) on all
# threads, and per core. Release build: the op is CPU-bound Rust code.
#
# Usage: scripts/bench_filter.sh [DOCUMENTS]   (default 40000)
set -euo pipefail
cd "$(dirname "$0")/.."
export FLOW_BENCH_DOCS="${1:-40000}"
echo "cores: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
cargo test --release -p flow-stdlib --lib data::filter::tests::bench_filter_throughput \
  -- --ignored --nocapture --exact 2>&1 | grep -E '^BENCH|panicked|^error' || true
