#!/usr/bin/env bash
# Corpus check of the exact fusion passes (issue 4's "done when"), on every model of CORPUS_DIR:
#   1. `convert --passes fuse-layernorm,fuse-rmsnorm` succeeds, which includes tract verification against the
#      original (exit 1 if outputs differ, 3 if tract cannot run the model at all);
#   2. `analyze --json` of the result counts no decomposed norm;
#   3. ort_check.py check (official checker with full_check + onnxruntime) accepts the result, when PYTHON has
#      onnx and onnxruntime and the tool exists;
#   4. `unfuse-norms` then the fusions again give the same text form as the fused model.
#   usage: tests/corpus_fuse.sh CORPUS_DIR [NORMSHIFT_BINARY] [EXTRA CONVERT ARGS...]
set -uo pipefail
corpus=${1:?usage: corpus_fuse.sh CORPUS_DIR [BINARY] [ARGS...]}
bin=${2:-target/debug/normshift}
shift; shift || true
extra=("$@")
python=${PYTHON:-python3}
ort_check="$corpus/../tools/ort_check.py"
use_ort=0
if [ -f "$ort_check" ] && "$python" -c 'import onnx, onnxruntime' 2>/dev/null; then use_ort=1; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fused=0; failed=0; leftover=0; rejected=0; unstable=0; tract=0
for dir in "$corpus"/*/; do
  name=$(basename "$dir")
  model="$dir/model.onnx"
  [ -f "$model" ] || continue
  out="$work/$name.fused.onnx"
  "$bin" convert "$model" -o "$out" --passes fuse-layernorm,fuse-rmsnorm "${extra[@]}" >"$work/log" 2>&1
  status=$?
  if [ $status -eq 3 ]; then
    tract=$((tract+1)); echo "TRACT CANNOT RUN $name: $(grep -m1 normshift "$work/log" | cut -c1-200)"
    "$bin" convert "$model" -o "$out" --passes fuse-layernorm,fuse-rmsnorm --no-verify "${extra[@]}" >/dev/null 2>&1 || { failed=$((failed+1)); continue; }
  elif [ $status -ne 0 ]; then
    failed=$((failed+1)); echo "FUSE FAILED $name (exit $status):"; tail -5 "$work/log"; continue
  fi
  fused=$((fused+1))
  left=$("$bin" analyze "$out" --json | "$python" -c 'import json,sys; print(sum(n["form"]=="decomposed" for n in json.load(sys.stdin)["norms"]))')
  if [ "$left" != 0 ]; then leftover=$((leftover+1)); echo "DECOMPOSED LEFT $name: $left"; fi
  if [ $use_ort -eq 1 ] && ! "$python" "$ort_check" check "$out" >"$work/ort" 2>&1; then
    rejected=$((rejected+1)); echo "ORT_CHECK REJECTS $name: $(tail -2 "$work/ort" | cut -c1-300)"
  fi
  "$bin" convert "$out" -o "$work/$name.unfused.onnx" --passes unfuse-norms --no-verify >/dev/null 2>"$work/err" \
    && "$bin" convert "$work/$name.unfused.onnx" -o "$work/$name.refused.onnx" --passes fuse-layernorm,fuse-rmsnorm --no-verify "${extra[@]}" >/dev/null 2>>"$work/err" \
    || { unstable=$((unstable+1)); echo "UNFUSE/REFUSE FAILED $name: $(cat "$work/err")"; continue; }
  if ! diff <("$bin" dump "$out") <("$bin" dump "$work/$name.refused.onnx") >"$work/diff"; then
    unstable=$((unstable+1)); echo "UNFUSE+FUSE DIFFERS $name:"; head -6 "$work/diff"
  fi
done
ort_note=$([ $use_ort -eq 1 ] && echo "" || echo " (ort_check skipped: no onnx/onnxruntime for $python)")
echo "fusion: $fused fused and verified ($tract of them unverifiable: tract cannot run the original), $failed failed, $leftover with decomposed norms left, $rejected rejected by ort_check$ort_note, $unstable not stable under unfuse+fuse"
[ $failed -eq 0 ] && [ $leftover -eq 0 ] && [ $rejected -eq 0 ] && [ $unstable -eq 0 ]
