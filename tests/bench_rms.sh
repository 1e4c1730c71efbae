#!/usr/bin/env bash
# Benchmark (not a test): tract latency of a GPT-2-small-size export before and after
# fold-norm-affine,layernorm-to-rmsnorm, interleaved in one `normshift bench` run. A fourth model bounds what
# any norm rewrite can buy: the same graph with every LayerNormalization replaced by Identity (wrong outputs,
# right cost of everything else). If that ceiling is below a goal, no norm rewrite can reach the goal.
#   usage: tests/bench_rms.sh [RUNS] [BATCH] [SEQ]
# The model is made on demand by models/make_fixtures.py --gpt2-small into models/big/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
batch=${2:-1}
seq=${3:-128}
python=${PYTHON:-python3}
cargo build --release --quiet
big=models/big
[ -f "$big/gpt2_small.onnx" ] || "$python" models/make_fixtures.py "$big" --gpt2-small >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

ns=target/release/normshift
# At this size the rewrites differ from the original by up to 1.5e-5 on near-zero elements (see docs/benchmarks.md).
$ns convert "$big/gpt2_small.onnx" -o "$out/fold.onnx" --passes fold-norm-affine --atol 5e-5 >/dev/null
$ns convert "$big/gpt2_small.onnx" -o "$out/rms.onnx" --passes fold-norm-affine,layernorm-to-rmsnorm \
  --atol 5e-5 >/dev/null
"$python" - "$big/gpt2_small.onnx" "$out/no_norms.onnx" <<'EOF'
import sys, onnx
m = onnx.load(sys.argv[1])
count = 0
for n in m.graph.node:
    if n.op_type == "LayerNormalization":
        n.op_type, n.domain = "Identity", ""
        del n.input[1:], n.output[1:], n.attribute[:]
        count += 1
onnx.save(m, sys.argv[2])
print(f"ceiling model: {count} LayerNormalization -> Identity", file=sys.stderr)
EOF
$ns bench "$big/gpt2_small.onnx" "$out/fold.onnx" "$out/rms.onnx" "$out/no_norms.onnx" \
  --batch "$batch" --seq "$seq" --runs "$runs" --atol 5e-5
