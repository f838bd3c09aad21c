#!/usr/bin/env bash
# Records each op's version and the hash of the files that implement it
# (stdlib/op-sources.json) in stdlib/op-versions.lock, which the test
# stdlib/tests/op_versions.rs checks.
#
#   scripts/refresh_op_versions.sh                     # after bumping versions
#   scripts/refresh_op_versions.sh --same-output a,b   # a, b changed but their
#                                                      # output cannot (a refactor)
set -euo pipefail
cd "$(dirname "$0")/.."
same=""
while [ $# -gt 0 ]; do
  case "$1" in
    --same-output) same="${same:+$same,}$2"; shift 2 ;;
    *) echo "usage: $0 [--same-output OP[,OP...]]..." >&2; exit 2 ;;
  esac
done
FLOW_SAME_OUTPUT="$same" cargo test -q -p flow-stdlib --test op_versions -- --ignored --exact refresh_lock
git diff --stat -- stdlib/op-versions.lock || true
