#!/usr/bin/env python3
"""Corpus check for `normshift analyze`: every model's summary must match the table in the corpus README
(placement, norm kind, unit count, parallel, embedding norm, final norm, number of norms).

    python3 tests/corpus_analysis.py CORPUS_DIR [NORMSHIFT_BINARY]

Only the standard library is needed. The table is read from CORPUS_DIR/README.md, so the specification stays
where it was written.
"""
import json
import os
import subprocess
import sys


def expected(readme):
    """family -> (placement, norm, units, parallel, embedding_norm, final_norm, norms), from the README table."""
    table = {}
    for line in open(readme, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or not cells[3].isdigit():
            continue
        families, placement, norm, units, parallel, embedding, final, norms = cells
        row = (placement, norm.split()[0], int(units), parallel.startswith("yes"), embedding == "yes", final == "yes", int(norms))
        for family in families.split(","):
            table[family.strip()] = row
    return table


def main():
    corpus = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/debug/normshift"
    table = expected(os.path.join(corpus, "README.md"))
    ok, bad = 0, 0
    for name in sorted(os.listdir(corpus)):
        path = os.path.join(corpus, name, "model.onnx")
        family = name.split(".")[0]
        if not os.path.exists(path) or family not in table:
            continue
        run = subprocess.run([binary, "analyze", path, "--json"], capture_output=True, text=True)
        if run.returncode != 0:
            bad += 1
            print("ANALYZE FAILED", name, run.stderr.strip())
            continue
        a = json.loads(run.stdout)
        got = (a["placement"], a["norm"], a["unit_count"], a["parallel"], a["embedding_norm"], a["final_norm"], a["norm_count"])
        if got == table[family]:
            ok += 1
        else:
            bad += 1
            print("MISMATCH", name, "got", got, "want", table[family])
    print(f"analysis: {ok} match the corpus table, {bad} do not")
    return 1 if bad or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
