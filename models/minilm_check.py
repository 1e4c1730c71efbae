#!/usr/bin/env python3
"""Compare a candidate ONNX model's last_hidden_state with the original's on calibration input sets.

    python models/minilm_check.py ORIGINAL.onnx CANDIDATE.onnx SETS_DIR [--held-out-every 4] [--all] [--json]

SETS_DIR holds test_data_set_*/input_*.pb (as make_minilm.py writes them). The sets are sorted as strings;
by default only the held-out ones (index % every == every - 1) are used, with --all every set. Both models
run in onnxruntime (CPUExecutionProvider, graph optimizations disabled) on their first output. Reported:
  mean/min token cosine  cosine between the two vectors of each token (last axis), over all unmasked tokens
                         of all sets
  mean-pooled cosine     mean over the sequence weighted by attention_mask, cosine per sequence, averaged
  relative L2            ||candidate - original|| / ||original|| over all outputs together
"""
import argparse, glob, json, os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load_sets(folder, every, use_all):
    dirs = sorted(glob.glob(os.path.join(folder, "test_data_set_*")))
    if not use_all:
        dirs = [d for i, d in enumerate(dirs) if i % every == every - 1]
    sets = []
    for d in dirs:
        tensors = [onnx.load_tensor(p) for p in sorted(glob.glob(os.path.join(d, "input_*.pb")),
                                                        key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        sets.append((os.path.basename(d), {t.name: numpy_helper.to_array(t) for t in tensors}))
    if not sets:
        raise SystemExit(f"no sets to evaluate in {folder}")
    return sets


def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(sess, feeds):
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise SystemExit(f"inputs {missing} are not in the set (it has {sorted(feeds)})")
    return sess.run(None, {n: feeds[n] for n in names})[0].astype(np.float64)


def cosine(a, b):
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def compare(original, candidate, sets):
    so, sc = session(original), session(candidate)
    tok_cos, pooled_cos, diff2, ref2 = [], [], 0.0, 0.0
    for _, feeds in sets:
        b, a = run(so, feeds), run(sc, feeds)
        if a.shape != b.shape:
            raise SystemExit(f"output shapes differ: candidate {a.shape}, original {b.shape}")
        mask = feeds.get("attention_mask", np.ones(b.shape[:2])).astype(np.float64)
        tok_cos.append(cosine(a, b)[mask > 0])
        w = mask[..., None] / mask.sum(1)[:, None, None]
        pooled_cos.extend(cosine((a * w).sum(1), (b * w).sum(1)))
        diff2 += ((a - b) ** 2).sum()
        ref2 += (b ** 2).sum()
    tok_cos = np.concatenate(tok_cos)
    return {"sets": len(sets), "tokens": int(tok_cos.size),
            "mean_token_cosine": float(tok_cos.mean()), "min_token_cosine": float(tok_cos.min()),
            "mean_pooled_cosine": float(np.mean(pooled_cos)), "relative_l2": float(np.sqrt(diff2 / ref2))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("original")
    ap.add_argument("candidate")
    ap.add_argument("sets_dir")
    ap.add_argument("--held-out-every", type=int, default=4)
    ap.add_argument("--all", action="store_true", help="evaluate on every set, not only the held-out ones")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sets = load_sets(a.sets_dir, a.held_out_every, a.all)
    r = compare(a.original, a.candidate, sets)
    r["which"] = "all" if a.all else f"held out (index % {a.held_out_every} == {a.held_out_every - 1})"
    if a.json:
        print(json.dumps(r))
        return
    print(f"{r['sets']} sets ({r['which']}), {r['tokens']} tokens")
    for k in ("mean_token_cosine", "min_token_cosine", "mean_pooled_cosine", "relative_l2"):
        print(f"  {k:<20} {r[k]:.8f}")


if __name__ == "__main__":
    main()
