#!/usr/bin/env bash
# Benchmark (not a test): the fusion pipeline on BERT-base-size exports (opset 14, decomposed LayerNorms) at
# 12, 24 and 48 layers, against a plain round trip (convert with no passes), and onnxruntime's and onnxscript's
# fusion tools on the 12-layer model when PYTHON has them. Wall time and peak RSS, best of RUNS.
#   usage: tests/bench_fuse.sh [RUNS]
# The models are made on demand by models/make_fixtures.py --bert-base --layers N into models/big/.
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
for layers in 12 24 48; do
  model=models/big/bert_base.onnx
  [ "$layers" = 12 ] || model=models/big/bert_base_${layers}l.onnx
  [ -f "$model" ] || "$python" models/make_fixtures.py models/big --bert-base --layers "$layers" >/dev/null
  measure "$layers layers: round trip (no passes)" target/release/normshift convert "$model" -o "$out/out.onnx"
  measure "$layers layers: fuse-layernorm,fuse-rmsnorm" target/release/normshift convert "$model" -o "$out/out.onnx" \
    --passes fuse-layernorm,fuse-rmsnorm --no-verify
  # The passes' own time, measured inside the process (best of RUNS).
  best_ms=""
  for _ in $(seq "$runs"); do
    ms=$(target/release/normshift convert "$model" -o "$out/out.onnx" --passes fuse-layernorm,fuse-rmsnorm --no-verify --json \
      | "$python" -c 'import json,sys; print(sum(p["elapsed_ms"] for p in json.load(sys.stdin)["passes"]))')
    if [ -z "$best_ms" ] || awk "BEGIN{exit !($ms < $best_ms)}"; then best_ms=$ms; fi
  done
  printf '| %-44s | %8.2f ms | |\n' "$layers layers: the two passes alone (in process)" "$best_ms"
  measure "$layers layers: the same, verified with tract" target/release/normshift convert "$model" -o "$out/out.onnx" \
    --passes fuse-layernorm,fuse-rmsnorm
done
model=models/big/bert_base.onnx
measure "12 layers: normshift --target ort" target/release/normshift convert "$model" -o "$out/out.onnx" \
  --passes fuse-layernorm,fuse-rmsnorm --target ort --no-verify
if "$python" -c "import onnxruntime.transformers.optimizer" 2>/dev/null; then
  # --opt_level 0: its own Python fusions only (the onnxruntime graph optimizations it can add need torch).
  measure "12 layers: onnxruntime transformers optimizer" "$python" -m onnxruntime.transformers.optimizer \
    --input "$model" --output "$out/out.onnx" --model_type bert --num_heads 12 --hidden_size 768 --opt_level 0
fi
if "$python" -c "import onnxscript.rewriter.ort_fusions" 2>/dev/null; then
  measure "12 layers: onnxscript ort_fusions" "$python" -c "
import onnx, sys, onnxscript.rewriter.ort_fusions as f, onnx_ir as ir
m = ir.from_proto(onnx.load(sys.argv[1]))
m, stats = f.optimize_for_ort(m)
onnx.save(ir.to_proto(m), sys.argv[2])
print(stats)" "$model" "$out/out.onnx"
fi
