# Sourced by the benchmark scripts (tests/bench_*.sh): `measure LABEL COMMAND...` runs COMMAND $runs times
# (outputs matching $out/out* removed before each) and prints a table row with the best wall time and the peak
# RSS of that run; a failing command prints its last line instead. Needs $runs and $out set.
measure() {
  local label=$1; shift
  local best=""
  for _ in $(seq "$runs"); do
    rm -f "$out"/out*
    /usr/bin/time -f "%e %M" -o "$out/time" "$@" >"$out/log" 2>&1 || { echo "| $label | failed: $(tail -1 "$out/log") |"; return; }
    read -r wall rss < "$out/time"
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < ${best%% *})}"; then best="$wall $rss"; fi
  done
  read -r wall rss <<< "$best"
  printf '| %-46s | %8.2f s | %7.0f MB |\n' "$label" "$wall" "$((rss / 1024))"
}
