#!/usr/bin/env bash
# `make demo` (after `make build`): an asynchronous save of a model-sized state dict while a
# simulated training loop runs, then `quicksave verify` and `quicksave inspect` of the result.
#   bash scripts/demo.sh [BUILD_DIR]       (default: build)
#   QUICKSAVE_DEMO_SIZE=4GB make demo      (default: 2GB)
#   QUICKSAVE_DEMO_DIR=/mnt/nvme make demo (where to write; default: the temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
QS="$BUILD/bin/quicksave"
if [ ! -x "$QS" ]; then
  echo "demo: $QS not found; run 'make build' first" >&2
  exit 1
fi
SIZE=${QUICKSAVE_DEMO_SIZE:-2GB}
WORK=$(mktemp -d "${QUICKSAVE_DEMO_DIR:-${TMPDIR:-/tmp}}/quicksave-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "== 1. save_async during a simulated training loop, then verify and reload (quicksave demo)"
"$QS" demo --size "$SIZE" --dir "$WORK/checkpoint"
echo
echo "== 2. the same checkpoint checked by the command-line tool (quicksave verify)"
"$QS" verify "$WORK/checkpoint"
echo
echo "== 3. what it holds (quicksave inspect, last lines)"
"$QS" inspect "$WORK/checkpoint" | tail -n 8
