#!/usr/bin/env bash
# Benchmark (not a test): a GPT-2-XL-size export (1.56 B parameters, 6.2 GB of external data, opset 14 with
# decomposed LayerNorms) through `analyze` and `convert --passes fuse-layernorm`, against copying its two files.
# Wall time and peak RSS of each (GNU time). The output is then run once with tract (`normshift run`, which
# holds the weights in memory: its RSS is the model's size, not normshift's).
#   usage: tests/bench_huge.sh [DIR]     (default models/big/xl; the model is made there on demand, ~18 GB RAM)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-models/big/xl}
python=${PYTHON:-python3}
model=$dir/gpt2_xl.onnx
[ -f "$model" ] || "$python" models/make_fixtures.py "$dir" --gpt2-xl
cargo build --release --quiet
ns=target/release/normshift
out=$(mktemp -d -p "$dir")
trap 'rm -rf "$out"' EXIT

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$out/time" "$@" >"$out/log" 2>&1 || { echo "| $label | failed: $(tail -1 "$out/log") |"; return 1; }
  read -r wall rss < "$out/time"
  printf '| %-48s | %8.1f s | %7d MB |\n' "$label" "$wall" "$((rss / 1024))"
}

echo "| step | wall | peak RSS |"
echo "|---|---|---|"
# The files are read once first, so that every step below starts from the same (warm) page cache.
cat "$model" "$model.data" > /dev/null
measure "copy model + data (cp, then sync)" sh -c "cp '$model' '$model.data' '$out/' && sync '$out/gpt2_xl.onnx' '$out/gpt2_xl.onnx.data'"
rm -f "$out"/gpt2_xl.onnx*
measure "analyze" $ns analyze "$model"
measure "convert --passes fuse-layernorm --no-verify" $ns convert "$model" -o "$out/fused.onnx" \
  --passes fuse-layernorm --no-verify
$ns inspect "$out/fused.onnx" | grep -E "opsets|LayerNormalization|ReduceMean|norms|layernorm"
measure "run the output with tract (seq 8)" $ns run "$out/fused.onnx" --dim batch=1 --dim sequence=8
tail -3 "$out/log"
