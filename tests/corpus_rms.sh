#!/usr/bin/env bash
# Corpus check of `fold-norm-affine,layernorm-to-rmsnorm` on every model of CORPUS_DIR: each Pre-LN LayerNorm
# model (as analysis classifies it) must convert with tract verification passing (exit 0), be accepted by
# ort_check.py check when PYTHON has onnx and onnxruntime, and analyze as RMSNorm afterwards (BLOOM keeps its
# embedding LayerNorm, which writes the stream rather than reading it: "mixed"); every other model must be
# refused (exit 2) with a reason, and nothing written.
#   usage: tests/corpus_rms.sh CORPUS_DIR [NORMSHIFT_BINARY]
set -uo pipefail
corpus=${1:?usage: corpus_rms.sh CORPUS_DIR [BINARY]}
bin=${2:-target/debug/normshift}
python=${PYTHON:-python3}
ort_check="$corpus/../tools/ort_check.py"
use_ort=0
if [ -f "$ort_check" ] && "$python" -c 'import onnx, onnxruntime' 2>/dev/null; then use_ort=1; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
converted=0; refused=0; bad=0; tract=0
for dir in "$corpus"/*/; do
  name=$(basename "$dir")
  model="$dir/model.onnx"
  [ -f "$model" ] || continue
  summary=$("$bin" analyze "$model" | tail -1)
  out="$work/$name.onnx"
  "$bin" convert "$model" -o "$out" --passes fold-norm-affine,layernorm-to-rmsnorm >"$work/log" 2>&1
  status=$?
  if [[ "$summary" == "placement pre · norm layernorm"* ]]; then
    if [ $status -eq 3 ]; then tract=$((tract+1)); echo "TRACT CANNOT RUN $name"; continue; fi
    if [ $status -ne 0 ]; then bad=$((bad+1)); echo "FAILED $name: $(tail -2 "$work/log")"; continue; fi
    after=$("$bin" analyze "$out" | tail -1)
    case "$after" in
      "placement pre · norm rmsnorm"*|"placement pre · norm mixed"*) ;;
      *) bad=$((bad+1)); echo "NOT RMSNORM $name: $after"; continue ;;
    esac
    if [ $use_ort -eq 1 ] && ! "$python" "$ort_check" check "$out" >"$work/ort" 2>&1; then
      bad=$((bad+1)); echo "ORT_CHECK REJECTS $name: $(tail -1 "$work/ort")"; continue
    fi
    converted=$((converted+1))
  else
    if [ $status -ne 2 ] || [ -f "$out" ]; then bad=$((bad+1)); echo "NOT REFUSED $name (exit $status)"; continue; fi
    refused=$((refused+1))
  fi
done
echo "pre-rmsnorm: $converted Pre-LN models converted and verified, $refused others refused, $tract unverifiable (tract), $bad wrong"
[ $bad -eq 0 ]
