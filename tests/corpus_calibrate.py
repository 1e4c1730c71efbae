"""Calibrated post-to-pre on every Post-LN corpus model: never worse than the plain mapping on held-out sets.

    python3 tests/corpus_calibrate.py NORMSHIFT CORPUS_DIR

For each model `normshift analyze` calls post, 12 input sets are made with `normshift run --seed K` (the
calibration inputs), `convert --passes post-to-pre --calibration` fits on 9 and holds out 3, and on those 3 the
calibrated mapping must match or beat the plain one on every output (token and pooled cosine, relative L2) and
after every unit. Prints one line per model; exits 1 on the first model that fails the comparison.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True)


def main():
    normshift, corpus = sys.argv[1], Path(sys.argv[2])
    checked = 0
    for model in sorted(corpus.glob("*/model.onnx")):
        analysis = run(normshift, "analyze", model, "--json")
        if analysis.returncode != 0 or json.loads(analysis.stdout)["placement"] != "post":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cal = Path(tmp) / "calibration"
            for k in range(12):
                made = run(normshift, "run", model, "-o", cal / f"test_data_set_{k:02}", "--seed", k)
                assert made.returncode == 0, made.stderr
            out = run(normshift, "convert", model, "-o", Path(tmp) / "out.onnx", "--passes", "post-to-pre",
                      "--calibration", cal, "--json")
            assert out.returncode == 0, f"{model.parent.name}: {out.stderr}"
            c = json.loads(out.stdout)["calibration"]
        name = model.parent.name
        for cal_o, plain_o in zip(c["calibrated"]["outputs"], c["plain"]["outputs"]):
            ok = (cal_o["token_cosine"] >= plain_o["token_cosine"]
                  and cal_o["pooled_cosine"] >= plain_o["pooled_cosine"]
                  and cal_o["rel_l2"] <= plain_o["rel_l2"])
            print(f"{name:28} {cal_o['name']:20} token cosine {cal_o['token_cosine']:.4f} vs plain "
                  f"{plain_o['token_cosine']:.4f}, pooled {cal_o['pooled_cosine']:.4f} vs "
                  f"{plain_o['pooled_cosine']:.4f}, rel L2 {cal_o['rel_l2']:.4f} vs {plain_o['rel_l2']:.4f}")
            if not ok:
                sys.exit(f"{name}: calibrated is worse than plain on held-out sets")
        per_unit = zip(c["calibrated"]["units"], c["plain"]["units"])
        worse = [a["unit"] for a, b in per_unit if a["cosine"] < b["cosine"]]
        if worse:
            sys.exit(f"{name}: calibrated is worse than plain after unit(s) {worse}")
        checked += 1
    if checked == 0:
        sys.exit(f"no Post-LN model in {corpus}")
    print(f"{checked} Post-LN corpus models: calibrated never worse than plain on held-out sets")


if __name__ == "__main__":
    main()
