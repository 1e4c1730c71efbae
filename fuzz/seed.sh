#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with the starting inputs: every fixture model, and malformed variants of one
# (cut short at several places, a byte flipped at several places, an empty file), and the regression files
# under tests/fuzz_regressions/. libFuzzer then grows the corpus from these.
set -euo pipefail
cd "$(dirname "$0")"
for target in import_export import_passes; do
  dir=corpus/$target
  mkdir -p "$dir"
  for m in ../models/*/model.onnx; do
    cp "$m" "$dir/$(basename "$(dirname "$m")").onnx"
  done
  base=../models/bert_post.opset17/model.onnx
  size=$(stat -c %s "$base")
  : > "$dir/empty.onnx"
  for cut in 1 7 100 1000 $((size / 2)) $((size - 1)); do
    head -c "$cut" "$base" > "$dir/cut_$cut.onnx"
  done
  for at in 3 50 500 5000 $((size / 3)); do
    python3 - "$base" "$dir/flip_$at.onnx" "$at" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[int(sys.argv[3])] ^= 0xFF
open(sys.argv[2], "wb").write(data)
PY
  done
  if [ -d ../tests/fuzz_regressions ]; then
    cp ../tests/fuzz_regressions/* "$dir/" 2>/dev/null || true
  fi
done
echo "seeded: $(ls corpus/import_export | wc -l) inputs per target"
