#!/usr/bin/env bash
# Benchmark (not a test): how analysis and fusion grow with depth, on Post-LN stacks of decomposed LayerNorms
# (13 nodes per unit) of 5 000, 20 000 and 76 924 units (the last is tests/scale.rs's million-node graph).
# Wall time and peak RSS of `analyze` and of `convert --passes fuse-layernorm --no-verify`, best of RUNS, and the
# pass's own time from `--json`.
#   usage: tests/bench_scale.sh [RUNS]
# The stacks are written by tests/scale.rs's `write_deep_stack` (an ignored test used as a generator).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
python=${PYTHON:-python3}
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

. tests/bench_measure.sh

echo "best of $runs runs"
echo "| command | wall | peak RSS |"
echo "|---|---|---|"
for units in 5000 20000 76924; do
  model=$out/stack_$units.onnx
  NORMSHIFT_UNITS=$units NORMSHIFT_OUT=$model cargo test --release --quiet --test scale -- --ignored write_deep_stack >/dev/null
  measure "$units units: analyze" target/release/normshift analyze "$model" --json
  measure "$units units: convert --passes fuse-layernorm" target/release/normshift convert "$model" -o "$out/out.onnx" \
    --passes fuse-layernorm --no-verify
  ms=$(target/release/normshift convert "$model" -o "$out/out.onnx" --passes fuse-layernorm --no-verify --json \
    | "$python" -c 'import json,sys; print(sum(p["elapsed_ms"] for p in json.load(sys.stdin)["passes"]))')
  printf '| %-46s | %8.0f ms | |\n' "$units units: the pass alone (in process)" "$ms"
  rm -f "$model"
done
