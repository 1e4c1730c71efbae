#!/usr/bin/env python3
"""Builds normshift's small fixture models and their test data.

    python3 -m venv /tmp/fixenv && /tmp/fixenv/bin/pip install -r models/requirements.txt
    /tmp/fixenv/bin/python models/make_fixtures.py models/            # the committed fixtures
    /tmp/fixenv/bin/python models/make_fixtures.py /tmp/big --bert-base  # a BERT-base-size model (~435 MB)

The models are written node by node with `onnx.helper`, in the exact patterns the PyTorch exporters write
(the decomposed LayerNorm of `torch.onnx.export(opset_version=14)`: ReduceMean, Sub, Pow, ReduceMean, Add,
Sqrt, Div, Mul, Add; the `LayerNormalization` op at opset 17; RMSNorm decomposed as Pow, ReduceMean, Add,
Sqrt, Reciprocal or Div(1, .), Mul, Mul), so they build from `onnx` and `numpy` alone, without PyTorch.
Parameters are seeded random, shaped like trained ones: norm scales 1 + 0.2 N(0,1), shifts and biases non-zero.
Reference outputs come from onnxruntime with graph optimizations off.

Families (hidden 32, 2 heads, 2 layers, vocabulary 64, MLP 64):
  bert_post  Post-LN encoder (BERT): embedding LayerNorm, N(x + F(x)) after attention and MLP, GELU (Erf)
  gpt2_pre   Pre-LN decoder (GPT-2): x + F(N(x)), final LayerNorm, GELU
  llama_rms  Pre-RMSNorm decoder (LLaMA): x + F(RMSNorm(x)), final RMSNorm, SiLU-gated MLP
each at opset 14 and opset 17, and at opset 17 only:
  gemma2_peri    peri (sandwich) units x + N2(F(N1(x)))
  olmo2_out      branch-output units x + N(F(x))
  neox_parallel  parallel units x + attn(N1(x)) + mlp(N2(x))
  deepnorm_post  Post-LN with a scaled skip N(1.7 x + F(x))
all with `test_data_set_0`.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN, HEADS, LAYERS, VOCAB, FFN, POSITIONS = 32, 2, 2, 64, 64, 16
EPS = 1e-5


class Builder:
    """Accumulates nodes and initializers with exporter-like names."""

    def __init__(self, opset, seed):
        self.opset = opset
        self.nodes, self.inits = [], []
        self.rng = np.random.default_rng(seed)
        self.count = {}

    def name(self, op):
        n = self.count.get(op, 0)
        self.count[op] = n + 1
        return f"/{op}_{n}" if n else f"/{op}"

    def op(self, op, inputs, n_out=1, **attrs):
        node_name = self.name(op)
        outs = [f"{node_name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=node_name, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name, shape, scale=0.05, center=0.0):
        return self.const(name, (center + scale * self.rng.standard_normal(shape)).astype(np.float32))

    def scalar(self, value, dtype=np.float32):
        return self.op("Constant", [], value=numpy_helper.from_array(np.array(value, dtype=dtype)))

    def reduce_mean(self, x):
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(f"axes_{len(self.inits)}", np.array([-1], np.int64))], keepdims=1)
        return self.op("ReduceMean", [x], axes=[-1], keepdims=1)

    # Norms -------------------------------------------------------------------------------------------------
    def layernorm(self, x, prefix):
        w = self.weight(f"{prefix}.weight", [HIDDEN], 0.2, 1.0)
        b = self.weight(f"{prefix}.bias", [HIDDEN], 0.1)
        if self.opset >= 17:
            return self.op("LayerNormalization", [x, w, b], axis=-1, epsilon=EPS)
        mean = self.reduce_mean(x)
        d = self.op("Sub", [x, mean])
        sq = self.op("Pow", [d, self.scalar(2.0)])
        var = self.reduce_mean(sq)
        std = self.op("Sqrt", [self.op("Add", [var, self.scalar(EPS)])])
        n = self.op("Div", [d, std])
        return self.op("Add", [self.op("Mul", [n, w]), b])

    def rmsnorm(self, x, prefix):
        w = self.weight(f"{prefix}.weight", [HIDDEN], 0.2, 1.0)
        ms = self.reduce_mean(self.op("Pow", [x, self.scalar(2.0)]))
        root = self.op("Sqrt", [self.op("Add", [ms, self.scalar(EPS)])])
        if self.opset >= 17:
            inv = self.op("Reciprocal", [root])
        else:
            inv = self.op("Div", [self.scalar(1.0), root])
        return self.op("Mul", [w, self.op("Mul", [x, inv])])

    # Sublayers ---------------------------------------------------------------------------------------------
    def linear(self, x, prefix, n_in, n_out, bias=True):
        y = self.op("MatMul", [x, self.weight(f"{prefix}.weight", [n_in, n_out])])
        return self.op("Add", [self.weight(f"{prefix}.bias", [n_out], 0.02), y]) if bias else y

    def attention(self, x, prefix, mask=None, bias=True, kv=None):
        """Self-attention over `x`, or cross-attention from `x` to `kv` (an encoder's output)."""
        kv = x if kv is None else kv
        hd = HIDDEN // HEADS
        split = self.const(f"{prefix}.split_shape", np.array([0, 0, HEADS, hd], np.int64))
        merge = self.const(f"{prefix}.merge_shape", np.array([0, 0, HIDDEN], np.int64))

        def heads(t, perm):
            return self.op("Transpose", [self.op("Reshape", [t, split])], perm=perm)

        q = heads(self.linear(x, f"{prefix}.q", HIDDEN, HIDDEN, bias), [0, 2, 1, 3])
        k = heads(self.linear(kv, f"{prefix}.k", HIDDEN, HIDDEN, bias), [0, 2, 3, 1])
        v = heads(self.linear(kv, f"{prefix}.v", HIDDEN, HIDDEN, bias), [0, 2, 1, 3])
        scores = self.op("Div", [self.op("MatMul", [q, k]), self.scalar(float(np.sqrt(hd)))])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        probs = self.op("Softmax", [scores], axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        return self.linear(self.op("Reshape", [ctx, merge]), f"{prefix}.o", HIDDEN, HIDDEN, bias)

    def gelu(self, x):
        e = self.op("Erf", [self.op("Div", [x, self.scalar(float(np.sqrt(2.0)))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, self.scalar(1.0)])]), self.scalar(0.5)])

    def mlp(self, x, prefix):
        h = self.gelu(self.linear(x, f"{prefix}.fc1", HIDDEN, FFN))
        return self.linear(h, f"{prefix}.fc2", FFN, HIDDEN)

    def gated_mlp(self, x, prefix):
        gate = self.linear(x, f"{prefix}.gate", HIDDEN, FFN, bias=False)
        silu = self.op("Mul", [gate, self.op("Sigmoid", [gate])])
        up = self.linear(x, f"{prefix}.up", HIDDEN, FFN, bias=False)
        return self.linear(self.op("Mul", [silu, up]), f"{prefix}.down", FFN, HIDDEN, bias=False)

    def embed(self, ids):
        tok = self.op("Gather", [self.weight("embed.tokens", [VOCAB, HIDDEN], 0.5), ids], axis=0)
        return tok

    def positions(self, ids, x):
        """Adds learned position embeddings for positions 0..S-1 of `ids` (S read from its shape)."""
        shape = self.op("Shape", [ids])
        seq = self.op("Gather", [shape, self.scalar(1, np.int64)], axis=0)
        pos = self.op("Range", [self.scalar(0, np.int64), seq, self.scalar(1, np.int64)])
        table = self.weight("embed.positions", [POSITIONS, HIDDEN], 0.5)
        return self.op("Add", [x, self.op("Gather", [table, pos], axis=0)])


def bert_post(b):
    ids, mask = "input_ids", "attention_mask"
    x = b.layernorm(b.positions(ids, b.embed(ids)), "embed.norm")
    # Additive mask as BERT exports it: (1 - mask) * -10000, broadcast over heads and query positions.
    m = b.op("Cast", [b.op("Unsqueeze", [mask, b.const("mask_axes", np.array([1, 2], np.int64))])], to=TensorProto.FLOAT)
    m = b.op("Mul", [b.op("Sub", [b.scalar(1.0), m]), b.scalar(-10000.0)])
    for i in range(LAYERS):
        x = b.layernorm(b.op("Add", [b.attention(x, f"layer{i}.attn", m), x]), f"layer{i}.attn_norm")
        x = b.layernorm(b.op("Add", [b.mlp(x, f"layer{i}.mlp"), x]), f"layer{i}.mlp_norm")
    return [ids, mask], x


def gpt2_pre(b):
    ids = "input_ids"
    x = b.positions(ids, b.embed(ids))
    for i in range(LAYERS):
        x = b.op("Add", [x, b.attention(b.layernorm(x, f"layer{i}.ln_1"), f"layer{i}.attn")])
        x = b.op("Add", [x, b.mlp(b.layernorm(x, f"layer{i}.ln_2"), f"layer{i}.mlp")])
    return [ids], b.layernorm(x, "final_norm")


def llama_rms(b):
    ids = "input_ids"
    x = b.embed(ids)
    for i in range(LAYERS):
        x = b.op("Add", [x, b.attention(b.rmsnorm(x, f"layer{i}.input_norm"), f"layer{i}.attn", bias=False)])
        x = b.op("Add", [x, b.gated_mlp(b.rmsnorm(x, f"layer{i}.post_attention_norm"), f"layer{i}.mlp")])
    return [ids], b.rmsnorm(x, "final_norm")


def gemma2_peri(b):
    """Peri-norm (sandwich) units: x + N2(F(N1(x))), final norm."""
    ids = "input_ids"
    x = b.embed(ids)
    for i in range(LAYERS):
        x = b.op("Add", [x, b.rmsnorm(b.attention(b.rmsnorm(x, f"layer{i}.n1"), f"layer{i}.attn", bias=False), f"layer{i}.n2")])
        x = b.op("Add", [x, b.rmsnorm(b.gated_mlp(b.rmsnorm(x, f"layer{i}.n3"), f"layer{i}.mlp"), f"layer{i}.n4")])
    return [ids], b.rmsnorm(x, "final_norm")


def olmo2_out(b):
    """Branch-output units: x + N(F(x)), final norm."""
    ids = "input_ids"
    x = b.embed(ids)
    for i in range(LAYERS):
        x = b.op("Add", [x, b.rmsnorm(b.attention(x, f"layer{i}.attn", bias=False), f"layer{i}.attn_norm")])
        x = b.op("Add", [x, b.rmsnorm(b.gated_mlp(x, f"layer{i}.mlp"), f"layer{i}.mlp_norm")])
    return [ids], b.rmsnorm(x, "final_norm")


def neox_parallel(b):
    """Parallel units (GPT-NeoX): x + attn(N1(x)) + mlp(N2(x)), one Add tree per layer, final norm."""
    ids = "input_ids"
    x = b.embed(ids)
    for i in range(LAYERS):
        branches = b.op("Add", [b.mlp(b.layernorm(x, f"layer{i}.ln_mlp"), f"layer{i}.mlp"), b.attention(b.layernorm(x, f"layer{i}.ln_attn"), f"layer{i}.attn")])
        x = b.op("Add", [branches, x])
    return [ids], b.layernorm(x, "final_norm")


def deepnorm_post(b):
    """Post-LN with DeepNorm's scaled skip: N(alpha*x + F(x)), embedding norm."""
    ids = "input_ids"
    alpha = b.const("deepnorm.alpha", np.array(1.7, np.float32))
    x = b.layernorm(b.embed(ids), "embed.norm")
    for i in range(LAYERS):
        x = b.layernorm(b.op("Add", [b.op("Mul", [x, alpha]), b.attention(x, f"layer{i}.attn")]), f"layer{i}.attn_norm")
        x = b.layernorm(b.op("Add", [b.op("Mul", [x, alpha]), b.mlp(x, f"layer{i}.mlp")]), f"layer{i}.mlp_norm")
    return [ids], x


def t5_encdec(b):
    """An encoder-decoder (T5-like, Pre-RMSNorm): an encoder stack with its final norm, then a decoder stack
    whose units are self-attention, cross-attention to the encoder's output, and MLP, with its final norm."""
    ids, dec_ids = "input_ids", "decoder_input_ids"
    table = b.weight("embed.tokens", [VOCAB, HIDDEN], 0.5)
    x = b.op("Gather", [table, ids], axis=0)
    for i in range(LAYERS):
        x = b.op("Add", [x, b.attention(b.rmsnorm(x, f"encoder{i}.attn_norm"), f"encoder{i}.attn", bias=False)])
        x = b.op("Add", [x, b.gated_mlp(b.rmsnorm(x, f"encoder{i}.mlp_norm"), f"encoder{i}.mlp")])
    memory = b.rmsnorm(x, "encoder.final_norm")
    y = b.op("Gather", [table, dec_ids], axis=0)
    for i in range(LAYERS):
        y = b.op("Add", [y, b.attention(b.rmsnorm(y, f"decoder{i}.self_norm"), f"decoder{i}.self", bias=False)])
        y = b.op("Add", [y, b.attention(b.rmsnorm(y, f"decoder{i}.cross_norm"), f"decoder{i}.cross", bias=False, kv=memory)])
        y = b.op("Add", [y, b.gated_mlp(b.rmsnorm(y, f"decoder{i}.mlp_norm"), f"decoder{i}.mlp")])
    return [ids, dec_ids], b.rmsnorm(y, "decoder.final_norm")


FAMILIES = {"bert_post": bert_post, "gpt2_pre": gpt2_pre, "llama_rms": llama_rms}
# Placements beyond the three main families, at opset 17 only.
EXTRA_FAMILIES = {"gemma2_peri": gemma2_peri, "olmo2_out": olmo2_out, "neox_parallel": neox_parallel, "deepnorm_post": deepnorm_post, "t5_encdec": t5_encdec}


def build(family, opset, seed=0, check=True):
    b = Builder(opset, seed)
    inputs, out = {**FAMILIES, **EXTRA_FAMILIES}[family](b)
    b.nodes.append(helper.make_node("Identity", [out], ["last_hidden_state"], name="/output/Identity"))
    graph = helper.make_graph(
        b.nodes,
        "main_graph",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in inputs],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="normshift-fixtures", producer_version="1")
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def write_test_data(model, path, folder, seed=0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "attention_mask":
            feeds[i.name] = np.ones((1, 5), np.int64)
        else:
            feeds[i.name] = rng.integers(0, VOCAB, size=(1, 5), dtype=np.int64)
    outs = sess.run(None, feeds)
    os.makedirs(folder, exist_ok=True)
    for k, i in enumerate(sess.get_inputs()):
        onnx.save_tensor(numpy_helper.from_array(feeds[i.name], i.name), os.path.join(folder, f"input_{k}.pb"))
    for k, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        onnx.save_tensor(numpy_helper.from_array(v, o.name), os.path.join(folder, f"output_{k}.pb"))


def write_large(out_dir, file_name, family, opset, sizes, external=False):
    """Builds `family` at `opset` with `sizes` = (hidden, heads, layers, vocabulary, mlp, positions) and saves it,
    with `external`, its weights in one data file beside it (`<file_name>.data`)."""
    global HIDDEN, HEADS, LAYERS, VOCAB, FFN, POSITIONS
    HIDDEN, HEADS, LAYERS, VOCAB, FFN, POSITIONS = sizes
    # Over 2 GB, the checker can only read the model from its file.
    model = build(family, opset, check=not external)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, file_name)
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=file_name + ".data", size_threshold=1024)
        onnx.checker.check_model(path)
        print(path, os.path.getsize(path), "bytes +", os.path.getsize(path + ".data"), "bytes of external data")
    else:
        onnx.save(model, path)
        print(path, os.path.getsize(path), "bytes")


def bert_base(out_dir, layers=12):
    """A BERT-base-size Post-LN export (hidden 768, 12 heads, MLP 3072, vocabulary 30522): ~435 MB at 12 layers."""
    name = "bert_base.onnx" if layers == 12 else f"bert_base_{layers}l.onnx"
    write_large(out_dir, name, "bert_post", 14, (768, 12, layers, 30522, 3072, 512))


def gpt2_small(out_dir):
    """A GPT-2-small-size Pre-LN export (hidden 768, 12 heads, 12 layers, MLP 3072, vocabulary 50257, 1024
    positions), opset 17 with fused LayerNormalization: ~500 MB. For `normshift bench`."""
    write_large(out_dir, "gpt2_small.onnx", "gpt2_pre", 17, (768, 12, 12, 50257, 3072, 1024))


def gpt2_xl(out_dir):
    """A GPT-2-XL-size Pre-LN export (hidden 1600, 25 heads, 48 layers, MLP 6400, vocabulary 50257, 1024
    positions; 1.56 B parameters), opset 14 with decomposed LayerNorms, weights in external data: ~6.2 GB. Needs
    about 18 GB of memory to write. For the huge-model check (tests/bench_huge.sh)."""
    write_large(out_dir, "gpt2_xl.onnx", "gpt2_pre", 14, (1600, 25, 48, 50257, 6400, 1024), external=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder")
    p.add_argument("--bert-base", action="store_true", help="write only the BERT-base-size benchmark model")
    p.add_argument("--gpt2-small", action="store_true", help="write only the GPT-2-small-size benchmark model")
    p.add_argument("--gpt2-xl", action="store_true", help="write only the GPT-2-XL-size model (6.2 GB, external data)")
    p.add_argument("--only", help="write only this fixture folder (e.g. t5_encdec.opset17)")
    p.add_argument("--layers", type=int, default=12, help="with --bert-base: number of layers (24 and 48 for the depth benchmark)")
    a = p.parse_args()
    if a.bert_base:
        return bert_base(a.out, a.layers)
    if a.gpt2_small:
        return gpt2_small(a.out)
    if a.gpt2_xl:
        return gpt2_xl(a.out)
    plan = [(f, o) for f in FAMILIES for o in (14, 17)] + [(f, 17) for f in EXTRA_FAMILIES]
    if a.only:
        plan = [(f, o) for f, o in plan if f"{f}.opset{o}" == a.only]
    for family, opset in plan:
        folder = os.path.join(a.out, f"{family}.opset{opset}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "model.onnx")
        onnx.save(build(family, opset), path)
        write_test_data(None, path, os.path.join(folder, "test_data_set_0"))
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    sys.exit(main())
