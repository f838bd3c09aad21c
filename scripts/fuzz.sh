#!/usr/bin/env bash
# Mutation fuzzing of the front end and the model-file readers
# (tests/fuzz_inputs.rs) for a time budget, from a fresh seed:
#
#   scripts/fuzz.sh [SECONDS]     # default 3600: SECONDS/5 per target
#
# Targets run one after another on one core, each under `timeout` so a hang
# is reported as one. A failing input is saved under target/fuzz-failures/.
set -euo pipefail
cd "$(dirname "$0")/.."
total="${1:-3600}"
per=$(( total / 5 ))
seed="${FLOW_FUZZ_SEED:-$(date +%s)}"
bin=$(cargo test -q --test fuzz_inputs --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "fuzz_inputs":
        print(m["executable"])')
echo "fuzz: seed $seed, ${per}s per target, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
status=0
for target in front_end_never_panics_on_mutated_pipelines config_json_never_panics_or_aborts \
  safetensors_header_never_panics_or_aborts gguf_never_panics_or_aborts tokenizer_json_never_panics_or_aborts; do
  log=$(mktemp)
  rc=0
  FLOW_FUZZ_SECONDS="$per" FLOW_FUZZ_SEED="$seed" timeout $(( per + 120 )) \
    "$bin" --exact "$target" --nocapture --test-threads 1 >"$log" 2>&1 || rc=$?
  grep -oE 'fuzz [a-z_]+: .*|fuzz target .*' "$log" || true
  rm -f "$log"
  case "$rc" in
    0) ;;
    124) echo "fuzz: $target hung (no answer within $(( per + 120 ))s)"; status=1 ;;
    *) echo "fuzz: $target failed (exit $rc)"; status=1 ;;
  esac
done
exit "$status"
