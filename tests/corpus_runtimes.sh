#!/usr/bin/env bash
# Verification that runs what users bring, on every model of each DIR (../shared/corpus, ../shared/wild):
#   1. `convert --passes fuse-layernorm,fuse-rmsnorm` with default verification (--runtime auto) must write a
#      verified model, or refuse in one line with exit 3 when no runtime can run the original; never a panic
#      (exit 101), never a mismatch (exit 1). Prints which runtime judged each model, and why.
#   2. `verify M --runtime tract,ort`: does tract compute what onnxruntime computes? (needs onnxruntime)
#   usage: tests/corpus_runtimes.sh BINARY DIR [DIR ...]      (PYTHON or ORT_DYLIB_PATH for onnxruntime)
set -uo pipefail
bin=${1:?usage: corpus_runtimes.sh BINARY DIR [DIR ...]}
shift
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
written=0; unrunnable=0; failed=0; agree=0; differ=0; cross_failed=0
for corpus in "$@"; do
  for dir in "$corpus"/*/; do
    name=$(basename "$dir")
    model="$dir/model.onnx"
    [ -f "$model" ] || continue
    out="$work/$name.onnx"
    "$bin" convert "$model" -o "$out" --passes fuse-layernorm,fuse-rmsnorm --json >"$work/report.json" 2>"$work/err"
    status=$?
    case $status in
      0) written=$((written+1))
         judged=$("$python" -c 'import json,sys; v=json.load(open(sys.argv[1]))["verification"] or {}; print(v.get("runtime","-"), "|", v.get("runtime_note") or "")' "$work/report.json")
         echo "convert  $name: written, judged by $judged" | cut -c1-240 ;;
      3) unrunnable=$((unrunnable+1)); echo "convert  $name: no runtime can run it: $(head -1 "$work/err" | cut -c1-200)" ;;
      *) failed=$((failed+1)); echo "convert  $name: FAILED (exit $status): $(tail -3 "$work/err" | cut -c1-300)" ;;
    esac
    rm -f "$out" "$out.data"
    "$bin" verify "$model" --runtime tract,ort --json >"$work/cross.json" 2>"$work/err"
    status=$?
    worst=$("$python" -c 'import json,sys
try:
    v=json.load(open(sys.argv[1]))
    print("%.3g" % max(o["max_abs"] for r in v["runs"] for o in r["outputs"]))
except Exception: print("-")' "$work/cross.json")
    case $status in
      0) agree=$((agree+1)); echo "tract/ort $name: agree (max abs $worst)" ;;
      # On a quantized model the report names the runtime that departs from the ONNX specification, and how.
      1) differ=$((differ+1))
         note=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("runtime_note") or "")' "$work/cross.json" 2>/dev/null)
         echo "tract/ort $name: DIFFER (max abs $worst)${note:+: $note}" | cut -c1-400 ;;
      *) cross_failed=$((cross_failed+1)); echo "tract/ort $name: cannot compare: $(head -1 "$work/err" | cut -c1-200)" ;;
    esac
  done
done
echo "verified conversion: $written written, $unrunnable refused as unrunnable by any runtime, $failed failed"
echo "tract vs onnxruntime (max abs <= 1e-4 within, rtol 1e-4): $agree agree, $differ differ, $cross_failed cannot be compared"
[ $failed -eq 0 ]
