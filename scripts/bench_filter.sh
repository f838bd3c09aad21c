#!/usr/bin/env bash
# Throughput of the `filter` op with an n-gram classifier on FineWeb-2-sized
# documents (~3,000 characters of synthetic German-like text).
#
# Prints documents per second for (1) scoring alone on one thread and (2) the
# whole op (zstd JSONL shards in and out, JSON parsing, statistics) on all
# threads, and per core. Release build: the op is CPU-bound Rust code.
#
# The machine's load is printed before and after: wall-clock rates suffer
# from other processes, docs per CPU-second much less. Each measurement runs
# FLOW_BENCH_RUNS times (default 3); the best of each figure is printed last.
#
# Usage: scripts/bench_filter.sh [DOCUMENTS]   (default 40000)
set -euo pipefail
cd "$(dirname "$0")/.."
export FLOW_BENCH_DOCS="${1:-40000}"
runs="${FLOW_BENCH_RUNS:-3}"
echo "cores: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
results=""
for run in $(seq "$runs"); do
  out=$(cargo test --release -p flow-stdlib --lib data::filter::tests::bench_filter_throughput \
    -- --ignored --nocapture --exact 2>&1 | grep -E '^BENCH|panicked|^error' || true)
  echo "run $run:"
  echo "$out"
  results+="$out"$'\n'
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
# The best of the runs, figure by figure.
echo "$results" | awk '
  $1 == "BENCH" && $2 !~ /=/ {
    for (i = 3; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == "threads") { threads[$2] = kv[2]; continue }
      key = $2 " " kv[1]
      if (!(key in best) || kv[2] + 0 > best[key] + 0) best[key] = kv[2]
      if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    }
  }
  END {
    for (i = 1; i <= n; i++) {
      split(order[i], p, " ")
      printf "BEST %s%s %s=%s\n", p[1], (p[1] in threads ? " threads=" threads[p[1]] : ""), p[2], best[order[i]]
    }
  }'
