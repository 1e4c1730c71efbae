"""The Python example of docs/python.md, as a script: export a small Hugging Face BERT with torch, convert it with
normshift in the same script, run the result with onnxruntime. Needs torch and transformers (not in the test
venv; see models/wild-requirements.txt for the versions it was run with):

    python tests/python/readme_example.py
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from transformers import BertConfig, BertModel

import normshift

torch.manual_seed(0)
config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=256)
bert = BertModel(config)


class Encoder(torch.nn.Module):  # the exporter passes inputs by position: name them
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


model = Encoder(bert).eval()
ids = torch.randint(0, 256, (1, 8))
mask = torch.ones_like(ids)
path = Path(tempfile.mkdtemp()) / "bert.onnx"
torch.onnx.export(
    model, (ids, mask), path, dynamo=False, opset_version=14,
    input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
    dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
)

analysis = normshift.analyze(path)
print(analysis["placement"], analysis["unit_count"], "units,", analysis["norm_count"], "norms")

fused, report = normshift.convert(onnx.load(path), ["fuse-layernorm"])
for run in report["passes"]:
    print(run["pass"], run["changes"], "changes")
worst = max(o["max_abs"] for r in report["verification"]["runs"] for o in r["outputs"])
print("verified by", report["verification"]["runtime"], "max abs", f"{worst:.1e}")

session = onnxruntime.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
(hidden,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
with torch.no_grad():
    expected = model(ids, mask).numpy()
print(sorted({n.op_type for n in fused.graph.node} & {"LayerNormalization", "ReduceMean", "Sqrt"}))
print("onnxruntime vs torch, max abs", f"{np.abs(hidden - expected).max():.1e}")
