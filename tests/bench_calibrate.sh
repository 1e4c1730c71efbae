#!/usr/bin/env bash
# The cost of calibrating post-to-pre: wall time and peak RSS of `convert --passes post-to-pre` plain and with
# --calibration (fitting, then judging both mappings on the held-out sets), release build.
#
#   bash tests/bench_calibrate.sh NORMSHIFT MODEL [SETS_DIR]
#
# Without SETS_DIR, 48 sets of batch 1 and 32 tokens are made with `normshift run --seed K` (a model with
# inputs `[batch, sequence]`). The big models are made on demand (models/make_fixtures.py --bert-base,
# models/make_minilm.py); docs/calibration.md has the figures.
set -euo pipefail
normshift=$1; model=$2; sets=${3:-}
out=$(mktemp -d); runs=1
trap 'rm -rf "$out"' EXIT
# shellcheck source=tests/bench_measure.sh
source "$(dirname "$0")/bench_measure.sh"
if [ -z "$sets" ]; then
  sets=$out/sets
  for k in $(seq -w 0 47); do
    "$normshift" run "$model" -o "$sets/test_data_set_$k" --seed "$((10#$k))" --dim batch=1 --dim sequence=32 >/dev/null
  done
fi
echo "| $(basename "$model") | wall | peak RSS |"
echo "|---|---|---|"
measure "post-to-pre, verified on all 48 sets" "$normshift" convert "$model" -o "$out/out.onnx" \
  --passes post-to-pre --inputs "$sets"
measure "post-to-pre --calibration (fit 36 sets, judge 12)" "$normshift" convert "$model" -o "$out/out.onnx" \
  --passes post-to-pre --calibration "$sets"
grep -o "calibrated post-to-pre on .* s (" "$out/log" || true
