#!/usr/bin/env bash
# Benchmark (not a test): verified `convert --passes fuse-layernorm`, both models run whole (--verify-by model)
# and unit by unit (--verify-by unit), on BERT-base-width Post-LN stacks of 12, 24 and 48 layers and, with
# --xl, on the GPT-2-XL-size export (6.2 GB of external data), next to the unverified conversion (whose RSS is
# the input's memory map, paged in by the write: what verification adds is the difference). Wall time and peak
# RSS, best of RUNS.
#   usage: tests/bench_units.sh [RUNS] [--xl]     (NORMSHIFT=path/to/binary to skip the release build)
# The models are made on demand by models/make_fixtures.py into models/big/ (BIG=dir to use another folder).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
xl=${2:-}
python=${PYTHON:-python3}
big=${BIG:-models/big}
bin=${NORMSHIFT:-}
if [ -z "$bin" ]; then cargo build --release --quiet; bin=target/release/normshift; fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

. tests/bench_measure.sh

models=()
for layers in 12 24 48; do
  name=bert_base.onnx; [ "$layers" = 12 ] || name=bert_base_${layers}l.onnx
  [ -f "$big/$name" ] || "$python" models/make_fixtures.py "$big" --bert-base --layers "$layers" >/dev/null
  models+=("$big/$name")
done
if [ "$xl" = --xl ]; then
  [ -f "$big/gpt2_xl.onnx" ] || "$python" models/make_fixtures.py "$big" --gpt2-xl >/dev/null
  models+=("$big/gpt2_xl.onnx")
fi

echo "best of $runs run(s)"
echo "| model, verification | wall | peak RSS |"
echo "|---|---|---|"
for model in "${models[@]}"; do
  size=$(du -mL "$model" | cut -f1)
  [ -f "$model.data" ] && size=$((size + $(du -mL "$model.data" | cut -f1)))
  measure "$(basename "$model") (${size} MB), --no-verify" \
    "$bin" convert "$model" -o "$out/out.onnx" --passes fuse-layernorm --no-verify
  for by in model unit; do
    measure "$(basename "$model") (${size} MB), --verify-by $by" \
      "$bin" convert "$model" -o "$out/out.onnx" --passes fuse-layernorm --runtime tract --verify-by "$by"
  done
done
