#!/usr/bin/env bash
# Corpus check of the placement rewrites: every post model goes post-to-pre (analysed as pre afterwards) and back
# with pre-to-post; every pre model goes pre-to-post (analysed as post) and back with post-to-pre; the round trip
# must give the same text form. Models the rewrite cannot map (peri, parallel units with two pre-norms) must be
# refused (exit 2) with nothing written.
#   usage: tests/corpus_placement.sh CORPUS_DIR [NORMSHIFT_BINARY]
set -uo pipefail
corpus=${1:?usage: corpus_placement.sh CORPUS_DIR [BINARY]}
bin=${2:-target/debug/normshift}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
round=0; refused=0; bad=0
for dir in "$corpus"/*/; do
  name=$(basename "$dir")
  model="$dir/model.onnx"
  [ -f "$model" ] || continue
  placement=$("$bin" analyze "$model" | tail -1 | awk '{print $2}')
  case "$placement" in
    post) there=post-to-pre; back=pre-to-post; expect=pre ;;
    *) there=pre-to-post; back=post-to-pre; expect=post ;;
  esac
  rm -f "$work/moved.onnx" "$work/back.onnx"
  "$bin" convert "$model" -o "$work/moved.onnx" --passes "$there" --no-verify >"$work/log" 2>&1
  status=$?
  if [ $status -eq 2 ] && [ ! -f "$work/moved.onnx" ] && grep -q "unit [0-9]" "$work/log"; then
    refused=$((refused+1)); continue
  fi
  if [ $status -ne 0 ]; then bad=$((bad+1)); echo "FAILED $name ($there): $(tail -1 "$work/log")"; continue; fi
  got=$("$bin" analyze "$work/moved.onnx" | tail -1 | awk '{print $2}')
  if [ "$got" != "$expect" ]; then bad=$((bad+1)); echo "NOT $expect AFTER $there: $name ($got)"; continue; fi
  "$bin" convert "$work/moved.onnx" -o "$work/back.onnx" --passes "$back" --no-verify >"$work/log" 2>&1 \
    || { bad=$((bad+1)); echo "FAILED $name ($back): $(tail -1 "$work/log")"; continue; }
  if ! diff <("$bin" dump "$model") <("$bin" dump "$work/back.onnx") >"$work/diff"; then
    bad=$((bad+1)); echo "ROUND TRIP DIFFERS $name:"; head -6 "$work/diff"; continue
  fi
  round=$((round+1))
done
echo "placement: $round round trips give the original text back, $refused refused with the unit named, $bad wrong"
[ $bad -eq 0 ]
