#!/usr/bin/env python3
"""What works on models as tools export them: one row per model folder, one column per capability.

    python3 tests/wild_matrix.py BINARY DIR [DIR ...]      (PYTHON or ORT_DYLIB_PATH for onnxruntime)

For each folder holding a model.onnx (and an expected.json beside the folders, as in models/wild):
  * analysis: `analyze --json` matches expected.json (placement, norm, units, embedding/final norm, norms;
    for merged decoders the per-branch figures);
  * each exact pass (unfuse-norms, fuse-layernorm + fuse-rmsnorm, fold-norm-affine, layernorm-to-rmsnorm):
    `convert` with verification on the folder's own test data — `ok N` (N changes, verified, written),
    `none` (nothing to do), `left, said why` (candidates left alone, each with a note), `refused` (the pass
    or verification refused, in one line), `FAIL` (a mismatch or a crash);
  * placement round trip: the rewrite the model's placement allows (pre-to-post for pre, post-to-pre for
    post), then back, verified against the original (`exact`: the round trip reproduces it);
  * calibrated post-to-pre (Post-LN models): `convert --calibration` on 12 sets made by `run --seed K`, 3 held
    out — `T vs P` (held-out token cosine of the first output, calibrated vs plain; FAIL if calibrated is worse
    on an output or after a unit; `(unfused first)` when the model's fused Skip ops made it refuse and
    `unfuse-norms,post-to-pre` ran instead, as the refusal says), `refused` (a one-line refusal by design; any
    other error is `FAIL`), `no sets` (`run` cannot make inputs).
Every file written is then checked with the official checker (`onnx.checker.check_model(full_check=True)`, run
by $PYTHON, default python3, when it has `onnx`; the table says how many were checked).
Prints a Markdown table (docs/results.md, "Models as exported in practice") and exits 1 on any FAIL or any file
the checker rejects. Only the standard library is needed here.
"""
import json
import os
import subprocess
import sys
import tempfile

PASSES = [
    ("unfuse", "unfuse-norms"),
    ("fuse", "fuse-layernorm,fuse-rmsnorm"),
    ("fold", "fold-norm-affine"),
    ("ln→rms", "layernorm-to-rmsnorm"),
]


def run(args):
    return subprocess.run(args, capture_output=True, text=True)


def analysis_matches(binary, model, want):
    r = run([binary, "analyze", model, "--json"])
    if r.returncode != 0:
        return False, "analyze failed"
    a = json.loads(r.stdout)
    got = {
        "placement": a["placement"], "norm": a["norm"], "units": a["unit_count"],
        "embedding_norm": a["embedding_norm"], "final_norm": a["final_norm"], "norms": a["norm_count"],
    }
    # A list in expected.json means any of its values is right.
    accepts = lambda w, v: v in w if isinstance(w, list) else w == v
    wrong = [k for k, v in got.items() if not accepts(want.get(k), v)]
    if bool(want.get("in_subgraphs")) != bool(a.get("summarised_by_subgraphs")):
        wrong.append("in_subgraphs")
    return not wrong, a["placement"] if not wrong else "wrong " + ",".join(wrong)


def convert(binary, model, out, passes, inputs):
    args = [binary, "convert", model, "-o", out, "--passes", passes, "--json"]
    if inputs:
        args += ["--inputs", inputs]
    r = run(args)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        report = None
    if r.returncode == 0 and report:
        changes = sum(p["changes"] for p in report["passes"])
        notes = sum(len(p.get("notes", [])) + sum(len(b.get("notes", [])) for b in p.get("subgraphs", []))
                    for p in report["passes"])
        if changes == 0:
            return ("left, said why" if notes else "none"), report
        return f"ok {changes}", report
    if r.returncode in (2, 3) or (report and report.get("refusal")):
        return "refused", report
    return "FAIL", report


def has_test_data(folder):
    return any(n.startswith("test_data_set_") for n in os.listdir(folder))


def main():
    binary, dirs = sys.argv[1], sys.argv[2:]
    rows, failed, written = [], 0, {}
    work = tempfile.mkdtemp()
    for di, d in enumerate(dirs):
        expected_path = os.path.join(d, "expected.json")
        expected = json.load(open(expected_path)) if os.path.exists(expected_path) else {}
        for name in sorted(os.listdir(d)):
            folder = os.path.join(d, name)
            model = os.path.join(folder, "model.onnx")
            if not os.path.isfile(model):
                continue
            inputs = folder if has_test_data(folder) else None
            ok, placement = analysis_matches(binary, model, expected.get(name, {}))
            cells = ["yes" if ok else placement]
            for i, (_, passes) in enumerate(PASSES):
                out = os.path.join(work, f"{di}.{name}.{i}.onnx")
                written[out] = model
                verdict, _ = convert(binary, model, out, passes, inputs)
                failed += verdict == "FAIL"
                cells.append(verdict)
            cells.append(round_trip(binary, model, placement, inputs, work, f"{di}.{name}"))
            written[os.path.join(work, f"{di}.{name}.roundtrip.onnx")] = model
            failed += cells[-1] == "FAIL"
            cells.append(calibrated(binary, model, placement, work, f"{di}.{name}"))
            written[os.path.join(work, f"{di}.{name}.calibrated.onnx")] = model
            failed += cells[-1].startswith("FAIL")
            rows.append((name, cells))
    rejected = check_files(work, written)
    failed += len(rejected)
    header = ["model", "analysis"] + [c for c, _ in PASSES] + ["placement round trip", "calibrated post→pre"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, cells in rows:
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    for line in rejected:
        print("CHECKER REJECTS", line)
    return 1 if failed else 0


CHECK = '''
import json, os, sys
import onnx
def verdict(path):
    try:
        onnx.checker.check_model(path, full_check=True)
        return None
    except Exception as e:
        return str(e).splitlines()[0][:160]
pairs = json.load(open(sys.argv[1]))
originals = {o: verdict(o) for o in set(pairs.values())}
for out, original in sorted(pairs.items()):
    if os.path.exists(out):
        print(json.dumps([os.path.basename(out), verdict(out), originals[original]]))
'''


def check_files(work, written):
    """The official checker on every written file, next to its input: the files it rejects although it accepts
    their input (failures), and how many it rejects as it rejects their input (onnxruntime's optimizer and
    onnxruntime-genai write ops under opsets that do not define them)."""
    python = os.environ.get("PYTHON", "python3")
    manifest = os.path.join(work, "written.json")
    json.dump(written, open(manifest, "w"))
    r = run([python, "-c", CHECK, manifest])
    if r.returncode != 0:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "no onnx"
        print(f"(official checker not run: {last})")
        return []
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    failures = [f"{name}: {out}" for name, out, original in rows if out and not original]
    inherited = sum(1 for _, out, original in rows if out and original)
    print(f"(official checker: {len(rows)} written files, {len(failures)} rejected where the input passes, "
          f"{inherited} rejected as their input is)")
    return failures


def round_trip(binary, model, placement, inputs, work, stem):
    there, back = {"pre": ("pre-to-post", "post-to-pre"), "post": ("post-to-pre", "pre-to-post")}.get(
        placement, (None, None))
    if there is None:
        return "-"
    mid, end = os.path.join(work, "mid.tmp"), os.path.join(work, f"{stem}.roundtrip.onnx")
    extra = ["--inputs", inputs] if inputs else []
    first = run([binary, "convert", model, "-o", mid, "--passes", there, "--json"] + extra)
    if not os.path.exists(mid):
        return "refused" if first.returncode in (2, 3) else "FAIL"
    run([binary, "convert", mid, "-o", end, "--passes", back, "--json"] + extra)
    if not os.path.exists(end):
        return "refused back"
    check = run([binary, "verify", model, end, "--json"] + extra)
    os.remove(mid)
    if check.returncode == 0:
        return "exact"
    return "refused" if check.returncode in (2, 3) else "FAIL"


def calibrated(binary, model, placement, work, stem):
    if placement != "post":
        return "-"
    sets = os.path.join(work, f"{stem}.calibration")
    for k in range(12):
        made = run([binary, "run", model, "-o", os.path.join(sets, f"test_data_set_{k:02}"), "--seed", str(k)])
        if made.returncode != 0:
            return "no sets"
    out = os.path.join(work, f"{stem}.calibrated.onnx")
    convert = lambda passes: run([binary, "convert", model, "-o", out, "--passes", passes, "--calibration", sets,
                                  "--json"])
    r, note = convert("post-to-pre"), ""
    if r.returncode in (2, 3) and "run `unfuse-norms` first" in r.stderr:
        # Fused Skip ops hide the residual sum: the refusal says what to do, and the matrix does it.
        r, note = convert("unfuse-norms,post-to-pre"), " (unfused first)"
    if r.returncode in (2, 3):
        # A refusal by design is one line saying so; any other error (a runtime failing, a fit that did not
        # converge) is a failure of the calibration.
        lines = r.stderr.strip().splitlines()
        refusal = len(lines) == 1 and ("cannot calibrate:" in lines[0] or "cannot run on this model:" in lines[0])
        return "refused" if refusal else "FAIL " + (lines[-1][:80] if lines else f"exit {r.returncode}")
    try:
        c = json.loads(r.stdout)["calibration"]
    except (ValueError, KeyError, TypeError):
        return "FAIL"
    worse = any(a["token_cosine"] < b["token_cosine"] or a["pooled_cosine"] < b["pooled_cosine"]
                or a["rel_l2"] > b["rel_l2"] for a, b in zip(c["calibrated"]["outputs"], c["plain"]["outputs"]))
    worse |= any(a["cosine"] < b["cosine"] for a, b in zip(c["calibrated"]["units"], c["plain"]["units"]))
    first = (c["calibrated"]["outputs"][0]["token_cosine"], c["plain"]["outputs"][0]["token_cosine"])
    return ("FAIL " if worse else "") + f"{first[0]:.4f} vs {first[1]:.4f}{note}"


if __name__ == "__main__":
    sys.exit(main())
