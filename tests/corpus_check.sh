#!/usr/bin/env bash
# Corpus check: every model must come back byte-identical from `convert` with no passes, and must match its
# stored reference outputs under tract (max abs <= 1e-4) unless tract cannot run it, which must be said plainly
# (exit 3), never passed silently.
#   usage: tests/corpus_check.sh CORPUS_DIR [NORMSHIFT_BINARY]
set -uo pipefail
corpus=${1:?usage: corpus_check.sh CORPUS_DIR [BINARY]}
bin=${2:-target/debug/normshift}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
identical=0; differ=0; matched=0; mismatched=0; tract_failed=0; errors=0
for dir in "$corpus"/*/; do
  name=$(basename "$dir")
  model="$dir/model.onnx"
  [ -f "$model" ] || continue
  if "$bin" convert "$model" -o "$work/$name.onnx" >/dev/null 2>"$work/err"; then
    if cmp -s "$model" "$work/$name.onnx"; then identical=$((identical+1)); else differ=$((differ+1)); echo "NOT IDENTICAL $name"; fi
  else
    errors=$((errors+1)); echo "CONVERT FAILED $name: $(cat "$work/err")"
  fi
  "$bin" verify "$model" --reference "$dir/test_data_set_0" --atol 1e-4 --rtol 0 >"$work/out" 2>"$work/err"
  case $? in
    0) matched=$((matched+1)) ;;
    1) mismatched=$((mismatched+1)); echo "MISMATCH $name"; cat "$work/out" ;;
    3) tract_failed=$((tract_failed+1)); echo "TRACT CANNOT RUN $name: $(cut -c1-300 "$work/err")" ;;
    *) errors=$((errors+1)); echo "VERIFY ERROR $name: $(cat "$work/err")" ;;
  esac
done
echo "corpus: $identical byte-identical, $differ not; reference: $matched match, $mismatched differ, $tract_failed tract cannot run, $errors errors"
[ "$differ" -eq 0 ] && [ "$mismatched" -eq 0 ] && [ "$errors" -eq 0 ]
