#!/usr/bin/env python3
"""Corpus check of unit-by-unit verification, `diff` and `extract` (CI runs it when ../shared/corpus exists).

For every model of CORPUS_DIR, fused with `fuse-layernorm,fuse-rmsnorm`:
  * verified whole (--verify-by model) and unit by unit (--verify-by unit): the same verdict, the same runtime,
    each output's max abs and relative L2 error within 1e-5 of the other's;
  * `normshift diff` of the model against its fused form equals the snapshot in SNAPSHOT_DIR/NAME.diff (written
    when missing, or when UPDATE=1), lists only decomposed-norm ops as removed and only fused norm ops as added,
    and rewires nothing; the model with every value and node renamed and the nodes reversed diffs empty;
  * `normshift extract` between each pair of consecutive cut values (those the per-unit report names) passes the
    official checker and, run by onnxruntime, reproduces the whole model's value at its output (max abs <= 1e-6).

    usage: corpus_units.py NORMSHIFT_BINARY CORPUS_DIR SNAPSHOT_DIR     (needs onnx, onnxruntime, numpy)
"""
import json, os, subprocess, sys, tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

DECOMPOSED = {"ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Mul", "Reciprocal", "Cast", "Constant"}
FUSED = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")


def normshift(binary, *args):
    p = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def op_of(line):
    """`a, b = Op[attrs](x)` -> Op (domain dropped)."""
    rhs = line.split(" = ", 1)[1]
    return rhs.split("(", 1)[0].split("[", 1)[0].split(".")[-1]


def session(model):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def inputs_of(model_dir):
    feeds = {}
    model = onnx.load(str(model_dir / "model.onnx"))
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    for k, name in enumerate(names):
        t = onnx.TensorProto()
        t.ParseFromString((model_dir / "test_data_set_0" / f"input_{k}.pb").read_bytes())
        feeds[name] = onnx.numpy_helper.to_array(t)
    return feeds


def renamed_and_reversed(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = {}
    def rename(n):
        return names.setdefault(n, f"v{len(names)}") if n else n
    for i, node in enumerate(g.node):
        node.name = f"node{i}"
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = rename(vi.name)
    for t in g.initializer:
        t.name = rename(t.name)
    nodes = list(g.node)[::-1]
    del g.node[:]
    g.node.extend(nodes)
    return m


def check_model(binary, model_dir, snapshots, work, failures):
    name = model_dir.name
    model_path = model_dir / "model.onnx"
    fused = work / f"{name}.fused.onnx"
    reports = {}
    for by in ("model", "unit"):
        code, out, err = normshift(binary, "convert", model_path, "-o", fused, "--passes",
                                   "fuse-layernorm,fuse-rmsnorm", "--verify-by", by, "--json")
        reports[by] = (code, json.loads(out) if out.strip() else None, err.strip())
    (cm, rm, em), (cu, ru, eu) = reports["model"], reports["unit"]
    if cm != cu:
        failures.append(f"{name}: whole exits {cm} ({em[:200]}), unit by unit {cu} ({eu[:200]})")
        return "verdicts differ"
    if rm is None:
        return f"not verified either way (exit {cm}: {em[:120]})"
    vm, vu = rm.get("verification"), ru.get("verification")
    if vm is None or vu is None:
        return "no verification"
    if vm["ok"] != vu["ok"] or vm["runtime"] != vu["runtime"] or vu["verified_by"] != "unit":
        failures.append(f"{name}: whole ok={vm['ok']} by {vm['runtime']}, unit ok={vu['ok']} by {vu['runtime']}")
    for run_m, run_u in zip(vm["runs"], vu["runs"]):
        for a, b in zip(run_m["outputs"], run_u["outputs"]):
            if abs(a["max_abs"] - b["max_abs"]) > 1e-5 or abs(a["rel_l2"] - b["rel_l2"]) > 1e-5:
                failures.append(f"{name}: {a['name']} whole {a['max_abs']:.3e}/{a['rel_l2']:.3e}, "
                                f"unit {b['max_abs']:.3e}/{b['rel_l2']:.3e}")
    if [r["segment"] for r in vm.get("units", [])] != [r["segment"] for r in vu.get("units", [])]:
        failures.append(f"{name}: the per-unit rows differ between whole and unit-by-unit runs")
    if not rm["written"]:
        return "verified, not written"

    # diff: the fusion, exactly.
    code, out, err = normshift(binary, "diff", model_path, fused, "--json")
    d = json.loads(out)
    fused_count = sum(p["changes"] for p in rm["passes"])
    added_ops = [op_of(l) for l in d["added"]]
    removed_ops = {op_of(l) for l in d["removed"]}
    if d["rewired"] or not removed_ops <= DECOMPOSED or any(op not in FUSED for op in added_ops) \
            or (fused_count > 0 and len(added_ops) != fused_count):
        failures.append(f"{name}: diff is not the fusion ({fused_count} fused): {d['rewired'][:2]}, "
                        f"removed {sorted(removed_ops)}, added {added_ops[:4]}")
    code, text, err = normshift(binary, "diff", model_path, fused)
    body = "".join(text.splitlines(True)[2:])  # without the ---/+++ lines, which name temporary paths
    snap = snapshots / f"{name}.diff"
    if not snap.exists() or os.environ.get("UPDATE") == "1":
        snap.write_text(body)
    elif snap.read_text() != body:
        failures.append(f"{name}: diff differs from its snapshot {snap}")
    renamed = work / f"{name}.renamed.onnx"
    onnx.save(renamed_and_reversed(onnx.load(str(model_path))), str(renamed))
    code, out, err = normshift(binary, "diff", model_path, renamed, "--json")
    if code != 0 or not json.loads(out)["same"]:
        failures.append(f"{name}: renamed and reordered, the diff is not empty: {out[:300]} {err[:200]}")

    # extract at every unit boundary.
    cuts = [r["value"] for r in vm.get("units", [])]
    if len(cuts) < 2:
        return f"{len(cuts)} cut(s): no extract to check"
    original = onnx.load(str(model_path))
    probed = onnx.ModelProto()
    probed.CopyFrom(original)
    for c in cuts:
        probed.graph.output.append(onnx.ValueInfoProto(name=c))
    feeds = inputs_of(model_dir)
    values = dict(zip([o.name for o in probed.graph.output], session(probed).run(None, feeds)))
    values.update(feeds)
    for a, b in zip(cuts, cuts[1:]):
        part = work / f"{name}.part.onnx"
        code, out, err = normshift(binary, "extract", model_path, "-o", part, "--from", a, "--to", b, "--json")
        if code != 0:
            failures.append(f"{name}: extract {a} -> {b}: {err.strip()}")
            continue
        try:
            onnx.checker.check_model(str(part), full_check=True)
        except Exception as e:  # the checker's own exception types vary by version
            failures.append(f"{name}: extract {a} -> {b} fails the checker: {str(e)[:300]}")
            continue
        s = session(str(part))
        got = s.run(None, {i.name: values[i.name] for i in s.get_inputs()})[0]
        err = float(np.max(np.abs(got.astype(np.float64) - values[b].astype(np.float64))))
        if err > 1e-6:
            failures.append(f"{name}: extract {a} -> {b} computes {b} {err:.3e} away from the whole model")
    return f"agree; diff ok; {len(cuts) - 1} extracts ok"


def main():
    binary, corpus, snapshots = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    snapshots.mkdir(parents=True, exist_ok=True)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_dir in sorted(p for p in corpus.iterdir() if (p / "model.onnx").exists()):
            before = len(failures)
            what = check_model(binary, model_dir, snapshots, Path(tmp), failures)
            print(f"{model_dir.name}: {what}" + (" -- FAILED" if len(failures) > before else ""))
    for f in failures:
        print("FAIL", f)
    print(f"corpus_units: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
