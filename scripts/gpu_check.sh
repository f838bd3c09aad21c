#!/usr/bin/env bash
# The device check of issue 14, one command on a GPU machine with CUDA,
# PyTorch, NVRTC and cuBLAS in its Python environment (no Rust needed):
#   (a) every CUDA kernel and the cuBLASLt products against their CPU
#       references, outputs poisoned first (kernels/examples/gpu_check.rs);
#   (b) a tiny random model trained 20 steps on the CPU and the CUDA
#       backends of the model runtime, losses and final weights compared,
#       then a tiny random XLM-RoBERTa classifier fine-tuned 20 steps (with
#       dropout) on both, the same comparisons
#       (stdlib/model/examples/gpu_train_check.rs);
#   (c) kernel benchmarks beside PyTorch on the same GPU in the same call
#       (kernels/examples/gpu_bench.rs, scripts/gpu_bench_torch.py);
#   (d) when the flow binary and the tiny project were carried too: the
#       tiny DeFineMed pipeline whole with --device cuda and --device cpu,
#       every model op on the device, losses compared
#       (scripts/gpu_tiny_definemed.py).
# Not yet here: the whole-step and decoding benchmarks against HF
# transformers.
#
# Build here (no GPU needed), stripped so they travel light:
#   cargo build --release -p flow-kernels --example gpu_check --example gpu_bench
#   cargo build --release -p flow-model --example gpu_train_check
#   mkdir -p .carry && cp target/release/examples/gpu_{check,bench,train_check} .carry/ && strip .carry/gpu_*
# and for (d), about 27 MB more:
#   cargo build --release --bin flow && cp target/release/flow .carry/ && strip .carry/flow
#   FLOW_TINY_PROJECT=$PWD/.carry/tiny-project cargo test --test e2e_definemed -- --ignored tiny_project
# On the device machine:
#   bash scripts/gpu_check.sh .carry
# Writes the benchmark table to $OUT/gpu-performance.md when OUT is set.
# Exit status: 0 all checks passed, 1 a mismatch or failure, 2 no GPU.
set -euo pipefail
bin="${1:-target/release/examples}"
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
# A fresh PTX cache, so this run compiles every family for this GPU.
export FLOW_KERNEL_CACHE="$(mktemp -d)"
trap 'rm -rf "$FLOW_KERNEL_CACHE"' EXIT
status=0
"$bin/gpu_check" || status=$?
[ "$status" = 2 ] && exit 2
"$bin/gpu_train_check" || status=1
flow_json="$(mktemp)"; torch_json="$(mktemp)"
"$bin/gpu_bench" > "$flow_json" || status=1
python3 scripts/gpu_bench_torch.py > "$torch_json" || status=1
python3 - "$flow_json" "$torch_json" "${OUT:-}" <<'PY'
import json, subprocess, sys
flow = {r["bench"]: r for r in map(json.loads, open(sys.argv[1]))}
torch = {r["bench"]: r for r in map(json.loads, open(sys.argv[2]))}
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
lines = [f"GPU: {gpu}. Median ms of timed repetitions after warm-up, one call, same GPU.", "",
         "| benchmark | shape | flow ms | PyTorch ms | flow speed / PyTorch |", "|---|---|---|---|---|"]
for name in list(flow) + [n for n in torch if n not in flow]:
    f, t = flow.get(name), torch.get(name)
    ratio = f"{t['ms'] / f['ms']:.2f}x" if f and t else "-"
    lines.append(f"| {name} | {(f or t)['detail']} | {f['ms'] if f else '-'} | {t['ms'] if t else '-'} | {ratio} |")
table = "\n".join(lines)
print(table)
if sys.argv[3]:
    open(sys.argv[3] + "/gpu-performance.md", "w").write(table + "\n")
PY
if [ -x "$bin/flow" ] && [ -d "$bin/tiny-project" ]; then
  python3 scripts/gpu_tiny_definemed.py "$bin/flow" "$bin/tiny-project" || status=1
fi
exit "$status"
