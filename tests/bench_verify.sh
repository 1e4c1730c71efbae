#!/usr/bin/env bash
# Benchmark (not a test): a verified `convert --passes fuse-layernorm` on the BERT-base-size export with each
# runtime, next to the unverified conversion. Wall time and peak RSS, best of RUNS.
#   usage: tests/bench_verify.sh [RUNS]      (PYTHON or ORT_DYLIB_PATH for onnxruntime)
# The model is made on demand by models/make_fixtures.py --bert-base into models/big/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
python=${PYTHON:-python3}
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
model=models/big/bert_base.onnx
[ -f "$model" ] || "$python" models/make_fixtures.py models/big --bert-base >/dev/null

. tests/bench_measure.sh

echo "best of $runs runs, $(du -m "$model" | cut -f1) MB model"
echo "| command | wall | peak RSS |"
echo "|---|---|---|"
measure "convert --passes fuse-layernorm --no-verify" \
  target/release/normshift convert "$model" -o "$out/out.onnx" --passes fuse-layernorm --no-verify
for runtime in tract ort; do
  measure "convert --passes fuse-layernorm --runtime $runtime" \
    target/release/normshift convert "$model" -o "$out/out.onnx" --passes fuse-layernorm --runtime "$runtime"
done
