#!/usr/bin/env bash
# Benchmark (not a test): `normshift convert` with no passes on a BERT-base-size export, against `cp` and
# Python onnx.load + onnx.save. Reports wall time and peak RSS of each (best of RUNS).
#   usage: tests/bench_convert.sh [MODEL] [RUNS]
# MODEL defaults to models/big/bert_base.onnx, made on demand by models/make_fixtures.py --bert-base
# (needs the packages of models/requirements.txt; set PYTHON to that environment's python).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/big/bert_base.onnx}
runs=${2:-3}
python=${PYTHON:-python3}
if [ ! -f "$model" ]; then
  "$python" models/make_fixtures.py "$(dirname "$model")" --bert-base
fi
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

measure() { # label, command...: best wall seconds and the peak RSS of that run, in MB
  local label=$1; shift
  local best=""
  for _ in $(seq "$runs"); do
    rm -f "$out"/copy*
    /usr/bin/time -f "%e %M" -o "$out/time" "$@" >/dev/null 2>&1
    read -r wall rss < "$out/time"
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < ${best%% *})}"; then best="$wall $rss"; fi
  done
  read -r wall rss <<< "$best"
  printf '| %-36s | %8.2f s | %8.0f MB |\n' "$label" "$wall" "$((rss / 1024))"
}

size=$(stat -c %s "$model")
echo "model: $model, $((size / 1000000)) MB; best of $runs runs"
echo "| command | wall | peak RSS |"
echo "|---|---|---|"
measure "cp" cp "$model" "$out/copy.onnx"
measure "normshift convert (no passes)" target/release/normshift convert "$model" -o "$out/copy.onnx"
cmp "$model" "$out/copy.onnx" && echo "(normshift's copy is byte-identical)"
if "$python" -c "import onnx" 2>/dev/null; then
  measure "python onnx.load + onnx.save" "$python" -c "import onnx,sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])" "$model" "$out/copy.onnx"
fi
