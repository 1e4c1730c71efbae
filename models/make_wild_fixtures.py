#!/usr/bin/env python3
"""Write the `wild` fixtures: tiny Hugging Face models exported with the tools users really run.

    python3 -m venv /work/toolenv && /work/toolenv/bin/pip install -r models/wild-requirements.txt
    /work/toolenv/bin/python models/make_wild_fixtures.py models/wild [NAME-FILTER ...]

Each fixture is a folder in the ONNX model-zoo layout: model.onnx (+ model.onnx.data where the tool writes
external data), test_data_set_0/input_K.pb and output_K.pb (TensorProtos named after the graph inputs and
outputs; outputs computed by onnxruntime with graph optimizations disabled). Models are built from config
objects (no hub), seeded, and re-initialised so that norms have non-trivial scales and shifts.

Tools used:
  * torch.onnx.export (legacy TorchScript exporter, dynamo=False; and the dynamo exporter, opset 23)
  * python -m onnxruntime.transformers.optimizer (default opt level) for bert/gpt2
  * python -m onnxruntime_genai.models.builder (-p fp32 / -p int4, -e cpu) for llama
  * onnxruntime.quantization.quantize_static (QDQ, int8 activations and weights, per channel) and
    quantize_dynamic (int8 weights) on a legacy opset-17 BERT
  * model.half() before the dynamo (opset 23, gpt2) and legacy (opset 17, llama) exporters
The optimum-onnx fixtures (merged decoders) are written by make_optimum_fixtures.py in a venv of their own.
expected.json is written from the architectural facts in SPECS below; only its "ops" lists are read off the
files (documentation of what the tool wrote).
"""
import json, os, shutil, subprocess, sys, tempfile, warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers as T
from onnx import numpy_helper

SEQ = 5
REF = {}  # fixture name -> PyTorch's own output_0, to check that the tool kept the model's function


def torch_ref(key, module, args):
    with torch.no_grad():
        REF[key] = module(*args).detach().numpy()


# ---------------------------------------------------------------------------------------------- helpers
def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    import random
    random.seed(seed)


def reinit(model, seed):
    """Trained-like parameters: norm weights 1+0.2N, norm biases 0.1N, other biases 0.02N,
    LayerScale lambdas 0.5+0.3N."""
    g = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for mod in model.modules():
            tn = type(mod).__name__.lower()
            if "norm" in tn:
                for pn, p in mod.named_parameters(recurse=False):
                    done.add(id(p))
                    if pn == "weight":
                        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                    else:
                        p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "layerscale" in tn:
                for pn, p in mod.named_parameters(recurse=False):
                    done.add(id(p))
                    p.copy_(0.5 + 0.3 * torch.randn(p.shape, generator=g))
        for pn, p in model.named_parameters():
            if id(p) not in done and pn.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model


def eager(cfg):
    cfg._attn_implementation = "eager"
    return cfg


class LastHidden(torch.nn.Module):
    """Returns last_hidden_state only (drops poolers / caches)."""
    def __init__(self, m, names):
        super().__init__()
        self.m = m
        self.names = names

    def forward(self, *args):
        kw = dict(zip(self.names, args))
        return self.m(**kw, return_dict=True).last_hidden_state


class Logits(torch.nn.Module):
    def __init__(self, m, names):
        super().__init__()
        self.m = m
        self.names = names

    def forward(self, *args):
        kw = dict(zip(self.names, args))
        return self.m(**kw, use_cache=False, return_dict=True).logits


def text_args(names, vocab, seed, seq=SEQ, type_vocab=2):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in names:
        if n == "input_ids":
            out.append(torch.randint(0, vocab, (1, seq), generator=g))
        elif n == "attention_mask":
            out.append(torch.ones(1, seq, dtype=torch.int64))
        elif n == "token_type_ids":
            out.append(torch.randint(0, type_vocab, (1, seq), generator=g))
        else:
            raise KeyError(n)
    return tuple(out)


def legacy_export(module, args, names, path, opset, out_name="last_hidden_state"):
    torch_ref("current", module, args)
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    if names == ["pixel_values"]:
        dyn = {"pixel_values": {0: "batch"}}
    dyn[out_name] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(module, args, path, input_names=list(names), output_names=[out_name],
                          dynamic_axes=dyn, opset_version=opset, dynamo=False, do_constant_folding=True)


def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def np_dtype(t):
    return {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
            "tensor(float16)": np.float16, "tensor(bool)": np.bool_}[t]


def write_testdata(folder, feeds_by_name, index=0):
    """feeds_by_name: {input name: numpy array}; cast to the dtype the final model declares.
    Writes test_data_set_<index>."""
    path = os.path.join(folder, "model.onnx")
    sess = session(path)
    feeds = {}
    for i in sess.get_inputs():
        feeds[i.name] = np.asarray(feeds_by_name[i.name]).astype(np_dtype(i.type))
    outs = sess.run(None, feeds)
    td = os.path.join(folder, f"test_data_set_{index}")
    os.makedirs(td, exist_ok=True)
    for k, i in enumerate(sess.get_inputs()):
        with open(os.path.join(td, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(feeds[i.name], i.name).SerializeToString())
    for k, (o, a) in enumerate(zip(sess.get_outputs(), outs)):
        with open(os.path.join(td, f"output_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(np.asarray(a), o.name).SerializeToString())
    return {i.name: list(feeds[i.name].shape) for i in sess.get_inputs()}, \
        {o.name: list(np.asarray(a).shape) for o, a in zip(sess.get_outputs(), outs)}


NOTABLE_DEFAULT = {"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "Attention",
                   "RotaryEmbedding", "Gelu", "Resize", "Einsum"}


def notable_ops(path):
    m = onnx.load(path, load_external_data=False)
    ops = set()

    def walk(nodes):
        for n in nodes:
            if n.domain not in ("", "ai.onnx"):
                ops.add(f"{n.domain}.{n.op_type}")
            elif n.op_type in NOTABLE_DEFAULT:
                ops.add(n.op_type)
            for a in n.attribute:
                if a.g is not None and len(a.g.node):
                    walk(a.g.node)
                for sg in a.graphs:
                    walk(sg.node)
    walk(m.graph.node)
    for fn in m.functions:
        walk(fn.node)
    return sorted(ops)


def op_counts(path):
    m = onnx.load(path, load_external_data=False)
    c = {}
    for n in m.graph.node:
        k = (n.domain + "." if n.domain else "") + n.op_type
        c[k] = c.get(k, 0) + 1
    return c


def run(cmd, cwd=None):
    print("  $", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-5000:])
        raise RuntimeError(f"command failed: {' '.join(cmd)}")
    return r


# ---------------------------------------------------------------------------------------------- builders
BERT_CFG = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=256, max_position_embeddings=64, type_vocab_size=2)
GPT2_CFG = dict(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_inner=256, n_positions=64, use_cache=False)
LLAMA_CFG = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                 rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _ort_optimized(folder, tmp, model, names, seed, model_type):
    """A legacy opset-14 export of `model`, then onnxruntime's transformers optimizer for `model_type`."""
    args = text_args(names, 256, seed)
    raw = os.path.join(tmp, f"{model_type}_raw.onnx")
    legacy_export(LastHidden(model, names), args, names, raw, 14)
    run([sys.executable, "-m", "onnxruntime.transformers.optimizer", "--input", raw,
         "--output", os.path.join(folder, "model.onnx"), "--model_type", model_type,
         "--num_heads", "4", "--hidden_size", "64"])
    return {n: a.numpy() for n, a in zip(names, args)}


def build_bert_ortopt(folder, tmp):
    seed_all(11)
    m = reinit(T.BertModel(eager(T.BertConfig(**BERT_CFG)), add_pooling_layer=False).eval(), 11)
    return _ort_optimized(folder, tmp, m, ["input_ids", "attention_mask", "token_type_ids"], 111, "bert")


def build_gpt2_ortopt(folder, tmp):
    seed_all(12)
    m = reinit(T.GPT2Model(eager(T.GPT2Config(**GPT2_CFG))).eval(), 12)
    return _ort_optimized(folder, tmp, m, ["input_ids", "attention_mask"], 112, "gpt2")


def save_tiny_tokenizer(folder, vocab):
    """The genai builder loads a tokenizer from the model folder: write a word-level one (no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = {"<unk>": 0, "<s>": 1, "</s>": 2}
    words.update({f"w{i}": i for i in range(3, vocab)})
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                     eos_token="</s>", pad_token="<unk>")
    fast.save_pretrained(folder)


def _llama_genai(folder, tmp, precision):
    seed_all(13)
    cfg = T.LlamaConfig(**LLAMA_CFG)
    m = reinit(T.LlamaForCausalLM(cfg).eval(), 13)
    src = os.path.join(tmp, "llama_hf")
    if not os.path.isdir(src):
        m.save_pretrained(src)
        save_tiny_tokenizer(src, cfg.vocab_size)
    out = os.path.join(tmp, f"genai_{precision}")
    shutil.rmtree(out, ignore_errors=True)
    run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", src, "-o", out,
         "-p", precision, "-e", "cpu", "-c", os.path.join(tmp, "genai_cache")], cwd=tmp)
    print("  genai wrote:", sorted(os.listdir(out)))
    mo = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    locs = set()
    for t in mo.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                locs.add(e.value)
    shutil.copy(os.path.join(out, "model.onnx"), os.path.join(folder, "model.onnx"))
    for l in locs:
        shutil.copy(os.path.join(out, l), os.path.join(folder, l))
    g = torch.Generator().manual_seed(113)
    ids = torch.randint(0, 256, (1, SEQ), generator=g)
    torch_ref("current", Logits(m, ["input_ids", "attention_mask"]), (ids, torch.ones(1, SEQ, dtype=torch.int64)))
    ids = ids.numpy()
    kv, hd = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    feeds = {"input_ids": ids, "attention_mask": np.ones((1, SEQ), np.int64)}
    for i in range(cfg.num_hidden_layers):
        for kvn in ("key", "value"):
            feeds[f"past_key_values.{i}.{kvn}"] = np.zeros((1, kv, 0, hd), np.float32)
    return feeds


def build_llama_genai_fp32(folder, tmp):
    return _llama_genai(folder, tmp, "fp32")


def build_llama_genai_int4(folder, tmp):
    return _llama_genai(folder, tmp, "int4")


def build_bert_dynamo23(folder, tmp):
    seed_all(14)
    m = reinit(T.BertModel(T.BertConfig(**BERT_CFG), add_pooling_layer=False).eval(), 14)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = text_args(names, 256, 114)
    class W(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          return_dict=True).last_hidden_state
    path = os.path.join(folder, "model.onnx")
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", min=2, max=64)
    torch_ref("current", W(m), args)
    with torch.no_grad():
        torch.onnx.export(W(m), args, path, input_names=names,
                          output_names=["last_hidden_state"], opset_version=23, dynamo=True,
                          external_data=False,
                          dynamic_shapes=tuple({0: batch, 1: seq} for _ in names))
    return {n: a.numpy() for n, a in zip(names, args)}


def build_llama_dynamo23(folder, tmp):
    seed_all(15)
    cfg = T.LlamaConfig(**LLAMA_CFG)
    m = reinit(T.LlamaModel(cfg).eval(), 15)
    names = ["input_ids", "attention_mask"]
    args = text_args(names, 256, 115)

    class W(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          return_dict=True).last_hidden_state
    path = os.path.join(folder, "model.onnx")
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", min=2, max=64)
    torch_ref("current", W(m), args)
    with torch.no_grad():
        torch.onnx.export(W(m), args, path, input_names=names, output_names=["last_hidden_state"],
                          opset_version=23, dynamo=True, external_data=False,
                          dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    return {n: a.numpy() for n, a in zip(names, args)}


def build_albert_legacy17(folder, tmp):
    seed_all(16)
    cfg = eager(T.AlbertConfig(vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                               hidden_act="gelu_new"))
    m = reinit(T.AlbertModel(cfg, add_pooling_layer=False).eval(), 16)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = text_args(names, 128, 116)
    legacy_export(LastHidden(m, names), args, names, os.path.join(folder, "model.onnx"), 17)
    return {n: a.numpy() for n, a in zip(names, args)}


def build_electra_legacy17(folder, tmp):
    seed_all(17)
    cfg = eager(T.ElectraConfig(vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=128, max_position_embeddings=64))
    m = reinit(T.ElectraModel(cfg).eval(), 17)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = text_args(names, 128, 117)
    legacy_export(LastHidden(m, names), args, names, os.path.join(folder, "model.onnx"), 17)
    return {n: a.numpy() for n, a in zip(names, args)}


def build_opt_post_legacy17(folder, tmp):
    seed_all(18)
    cfg = eager(T.OPTConfig(vocab_size=128, hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=2,
                            num_attention_heads=2, ffn_dim=128, max_position_embeddings=64,
                            do_layer_norm_before=False, use_cache=False, pad_token_id=1))
    m = reinit(T.OPTModel(cfg).eval(), 18)
    assert m.decoder.final_layer_norm is None and m.decoder.project_in is None
    names = ["input_ids", "attention_mask"]
    args = text_args(names, 128, 118)
    legacy_export(LastHidden(m, names), args, names, os.path.join(folder, "model.onnx"), 17)
    return {n: a.numpy() for n, a in zip(names, args)}


def build_dinov2_legacy17(folder, tmp):
    seed_all(19)
    cfg = eager(T.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                               image_size=28, patch_size=14, num_channels=3))
    m = reinit(T.Dinov2Model(cfg).eval(), 19)
    g = torch.Generator().manual_seed(119)
    px = torch.randn(1, 3, 28, 28, generator=g)
    legacy_export(LastHidden(m, ["pixel_values"]), (px,), ["pixel_values"],
                  os.path.join(folder, "model.onnx"), 17)
    return {"pixel_values": px.numpy()}


def build_bert_fresh_legacy14(folder, tmp):
    """A BertModel as from_config makes it, not re-initialised: every LayerNorm weight is ones and every bias
    zeros, so the exporter keeps one of each and feeds the others through Identity nodes."""
    seed_all(20)
    cfg = eager(T.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64))
    m = T.BertModel(cfg, add_pooling_layer=False).eval()
    names = ["input_ids", "attention_mask"]
    args = text_args(names, 128, 120)
    legacy_export(LastHidden(m, names).eval(), args, names, os.path.join(folder, "model.onnx"), 14)
    return {n: a.numpy() for n, a in zip(names, args)}


def _bert_legacy17_for_quant(tmp):
    """One BertModel legacy opset-17 export shared by the two quantized fixtures (written once per run)."""
    raw = os.path.join(tmp, "bert_q_raw.onnx")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    seed_all(21)
    m = reinit(T.BertModel(eager(T.BertConfig(**BERT_CFG)), add_pooling_layer=False).eval(), 21)
    args = text_args(names, 256, 121)
    legacy_export(LastHidden(m, names), args, names, raw, 17)  # sets REF["current"] (the float model)
    return raw, {n: a.numpy() for n, a in zip(names, args)}


class RandomTextReader:
    """onnxruntime.quantization.CalibrationDataReader over a few seeded random batches (ids, all-ones mask,
    random token types), batch 1, sequence 5..8."""
    def __init__(self, n=8, seed=221):
        g = np.random.default_rng(seed)
        self.batches = []
        for k in range(n):
            seq = 5 + k % 4
            self.batches.append({"input_ids": g.integers(0, 256, (1, seq), dtype=np.int64),
                                 "attention_mask": np.ones((1, seq), np.int64),
                                 "token_type_ids": g.integers(0, 2, (1, seq), dtype=np.int64)})
        self.it = iter(self.batches)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.batches)


def build_bert_qdq_s8(folder, tmp):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    raw, feeds = _bert_legacy17_for_quant(tmp)
    quantize_static(raw, os.path.join(folder, "model.onnx"), RandomTextReader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return feeds


def build_bert_dynamic_int8(folder, tmp):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    raw, feeds = _bert_legacy17_for_quant(tmp)
    quantize_dynamic(raw, os.path.join(folder, "model.onnx"), weight_type=QuantType.QInt8)
    return feeds


def build_gpt2_dynamic_int8(folder, tmp):
    """A Pre-LN GPT-2 (legacy opset 17) through quantize_dynamic: its output projections, which write the
    residual stream, become MatMulInteger (what layernorm-to-rmsnorm must refuse to centre)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    seed_all(24)
    m = reinit(T.GPT2Model(eager(T.GPT2Config(**GPT2_CFG))).eval(), 24)
    names = ["input_ids", "attention_mask"]
    args = text_args(names, 256, 124)
    raw = os.path.join(tmp, "gpt2_q_raw.onnx")
    legacy_export(LastHidden(m, names), args, names, raw, 17)
    quantize_dynamic(raw, os.path.join(folder, "model.onnx"), weight_type=QuantType.QInt8)
    return {n: a.numpy() for n, a in zip(names, args)}


def build_gpt2_fp16_dynamo23(folder, tmp):
    seed_all(22)
    m = reinit(T.GPT2Model(T.GPT2Config(**GPT2_CFG)).eval(), 22).half()
    names = ["input_ids", "attention_mask"]
    args = text_args(names, 256, 122)

    class W(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          return_dict=True).last_hidden_state
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", min=2, max=64)
    torch_ref("current", W(m), args)
    with torch.no_grad():
        torch.onnx.export(W(m), args, os.path.join(folder, "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"], opset_version=23, dynamo=True, external_data=False,
                          dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    return {n: a.numpy() for n, a in zip(names, args)}


def build_llama_fp16_legacy17(folder, tmp):
    seed_all(23)
    m = reinit(T.LlamaModel(eager(T.LlamaConfig(**LLAMA_CFG))).eval(), 23).half()
    names = ["input_ids", "attention_mask"]
    args = text_args(names, 256, 123)

    class W(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          return_dict=True).last_hidden_state
    legacy_export(W(m), args, names, os.path.join(folder, "model.onnx"), 17)
    return {n: a.numpy() for n, a in zip(names, args)}


# ---------------------------------------------------------------------------------------------- facts
def facts(placement, norm, layers, emb, final, desc, note=None, parallel=False):
    d = {"placement": placement, "norm": norm, "units": 2 * layers, "parallel": parallel,
         "embedding_norm": emb, "final_norm": final, "norms": 2 * layers + int(emb) + int(final),
         "internal": 0, "branches": ["attention", "mlp"] * layers, "description": desc}
    if note:
        d["note"] = note
    return d


SPECS = {
    "bert.ortopt": (build_bert_ortopt, facts(
        "post", "layernorm", 2, True, False,
        "BertModel (hidden 64, 4 heads, MLP 256, vocab 256), legacy torch.onnx.export opset 14 with input_ids, "
        "attention_mask, token_type_ids, then python -m onnxruntime.transformers.optimizer --model_type bert "
        "--num_heads 4 --hidden_size 64 (default opt level)",
        "embedding norm inside com.microsoft.EmbedLayerNormalization (word+position+segment add and LayerNorm; its "
        "output 1, mask_index, is read by both com.microsoft.Attention nodes as input 3); the four post-norms are "
        "com.microsoft.SkipLayerNormalization(input=branch output, skip=stream, gamma, beta, bias) with the residual "
        "add fused in and only output 0 used; the input ids are Cast to int32 in front")),
    "gpt2.ortopt": (build_gpt2_ortopt, facts(
        "pre", "layernorm", 2, False, True,
        "GPT2Model (hidden 64, 4 heads, MLP 256, vocab 256, use_cache=False), legacy export opset 14 with "
        "input_ids, attention_mask, then python -m onnxruntime.transformers.optimizer --model_type gpt2 "
        "--num_heads 4 --hidden_size 64 (default opt level)",
        "Pre-LN: ln_1 of layer 0 is a default-domain LayerNormalization (in an opset-14 model, so onnx.checker "
        "rejects it; onnxruntime runs it); every residual add is fused into a com.microsoft.SkipLayerNormalization"
        "(input=branch output, skip=stream) that is the next norm (ln_2, next ln_1, ln_f): its output 0 feeds the "
        "next branch and its output 3 (input+skip sum) is the stream, read as skip by the next one; the last one "
        "(h.1 MLP residual + ln_f) uses only output 0. Attention is NOT fused (left as MatMul/Softmax, c_proj a "
        "Gemm on a 2-D reshape); MLP activation is com.microsoft.FastGelu")),
    "llama.genai_fp32": (build_llama_genai_fp32, facts(
        "pre", "rmsnorm", 2, False, True,
        "LlamaForCausalLM (hidden 64, 4 heads, 2 KV heads, MLP 128, vocab 256) save_pretrained, then "
        "python -m onnxruntime_genai.models.builder -p fp32 -e cpu; external data model.onnx.data",
        "first norm SimplifiedLayerNormalization in the default domain (opset 22: onnx.checker rejects it, "
        "onnxruntime runs it), the other four com.microsoft.SkipSimplifiedLayerNormalization(input=stream, "
        "skip=branch output): output 0 feeds the branch, output 3 (sum) is the stream; the last one "
        "(layers.2/final_norm_layernorm) is the final norm and uses only output 0; attention is "
        "com.microsoft.GroupQueryAttention on a packed QKV MatMul with do_rotary=1; test data has past length 0")),
    "llama.genai_int4": (build_llama_genai_int4, facts(
        "pre", "rmsnorm", 2, False, True,
        "the same Llama through onnxruntime_genai.models.builder -p int4 -e cpu: MatMulNBits (4-bit blocks) "
        "for the projections",
        "as llama.genai_fp32, with com.microsoft.MatMulNBits (bits 4, block 32, accuracy_level 4) in place of every "
        "MatMul, lm_head included; its outputs differ from PyTorch's by quantization error")),
    "bert.dynamo23": (build_bert_dynamo23, facts(
        "post", "layernorm", 2, True, False,
        "BertModel (default sdpa attention) torch.onnx.export dynamo=True opset 23, dynamic batch/sequence",
        "LayerNormalization (stash_type 1), Attention (opset 23, 4-D Q/K/V, boolean mask input), Gelu; linear "
        "biases are separate Adds after each MatMul; nodes carry pkg.torch.onnx.* metadata_props")),
    "llama.dynamo23": (build_llama_dynamo23, facts(
        "pre", "rmsnorm", 2, False, True,
        "LlamaModel (hidden 64, 4 heads, 2 KV heads, default sdpa attention) torch.onnx.export dynamo=True "
        "opset 23, dynamic batch/sequence",
        "RMSNormalization x5, RotaryEmbedding on Q (num_heads 4) and K (num_heads 2) with Cos/Sin computed in "
        "the graph, K/V expanded to 4 heads before Attention; onnxruntime 1.32 runs RotaryEmbedding only at "
        "batch 1, so the test data is batch 1")),
    "albert.legacy17": (build_albert_legacy17, facts(
        "post", "layernorm", 2, True, False,
        "AlbertModel (embedding_size 16, hidden 32, 2 heads, MLP 64, vocab 128, shared layer weights) legacy "
        "export opset 17",
        "embedding LayerNorm over width 16, then embedding_hidden_mapping_in Linear 16->32 onto the stream; "
        "both layers reuse the same weights (one layer group), so norm initializers are shared by two nodes")),
    "electra.legacy17": (build_electra_legacy17, facts(
        "post", "layernorm", 2, True, False,
        "ElectraModel (embedding_size 16, hidden 32, 2 heads, MLP 128, vocab 128) legacy export opset 17",
        "embedding LayerNorm over width 16, then embeddings_project Linear 16->32 onto the stream")),
    "opt_post.legacy17": (build_opt_post_legacy17, facts(
        "post", "layernorm", 2, False, False,
        "OPTModel do_layer_norm_before=False (Post-LN, hidden 32 = word_embed_proj_dim, 2 heads, ffn 128, "
        "vocab 128) legacy export opset 17",
        "no embedding norm and no final norm (final_layer_norm is None when do_layer_norm_before=False); "
        "around the MLP the stream is reshaped to 2-D [batch*seq, hidden], the residual add happens in 2-D, "
        "then a Reshape back to 3-D precedes the post-norm")),
    "dinov2.legacy17": (build_dinov2_legacy17, facts(
        "pre", "layernorm", 2, False, True,
        "Dinov2Model (hidden 32, 2 heads, MLP 128, image 28x28, patch 14: 4 patches + CLS) legacy export "
        "opset 17, input pixel_values [1,3,28,28]",
        "LayerScale units x + lambda * F(N(x)) (a Mul by a per-channel constant before the residual add); final "
        "layernorm; position embeddings bicubically interpolated (Resize) under tracing")),
    "bert_fresh.legacy14": (build_bert_fresh_legacy14, facts(
        "post", "layernorm", 2, True, False,
        "BertModel as initialised from its config (hidden 32, 2 heads, MLP 64, vocab 128; LayerNorm weights ones, "
        "biases zeros), legacy export opset 14 with input_ids, attention_mask",
        "decomposed LayerNorms; the exporter deduplicates equal parameters: the embedding norm's weight and bias "
        "are the only norm initializers, every other norm reads them through its own Identity node")),
    "bert.qdq_s8": (build_bert_qdq_s8, facts(
        "post", "layernorm", 2, True, False,
        "BertModel (hidden 64, 4 heads, MLP 256, vocab 256) legacy export opset 17, then "
        "onnxruntime.quantization.quantize_static(quant_format=QDQ, activation_type=QInt8, weight_type=QInt8, "
        "per_channel=True), MinMax calibration on 8 seeded random batches (CalibrationDataReader), default op types",
        "LayerNormalization x5 (opset 17, not decomposed) kept in float between Q/DQ: its input is the "
        "DequantizeLinear of a QuantizeLinear on the residual Add's output, its scale an int8 per-tensor DQ (per_channel "
        "falls back: onnxruntime warns 'Axis 1 is out-of-range' for the rank-1 norm weights), its bias an int32 DQ "
        "(scale = input scale x weight scale), its output goes through QuantizeLinear -> DequantizeLinear before "
        "the Q/K/V MatMuls and the residual Add; both residual Add inputs are DQ outputs (stream and branch); "
        "MatMul weights int8 per-channel (axis 1), linear biases are separate Adds on int8 per-tensor DQ'd "
        "initializers; embedding tables int8 DQ before Gather; activations int8 asymmetric (non-zero zero "
        "points); outputs differ from PyTorch by quantization error")),
    "gpt2.dynamic_int8": (build_gpt2_dynamic_int8, facts(
        "pre", "layernorm", 2, False, True,
        "GPT2Model legacy opset-17 export through onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)",
        "MatMulInteger for the projections (c_attn, c_proj, c_fc as MatMul after the Conv1D reshape), fed by "
        "DynamicQuantizeLinear, rescaled by Cast + Mul; LayerNormalization x5 stays float")),
    "bert.dynamic_int8": (build_bert_dynamic_int8, facts(
        "post", "layernorm", 2, True, False,
        "the same BertModel legacy opset-17 export through onnxruntime.quantization.quantize_dynamic("
        "weight_type=QInt8), default op types",
        "MatMulInteger x12 (Q/K/V/O/fc1/fc2 weights int8 per-tensor, activations from DynamicQuantizeLinear "
        "(uint8), result Cast to float and Mul'd by the two scales, then the float bias Add); the attention "
        "score/context MatMuls stay float; LayerNormalization x5 stays float (input = float residual Add, output "
        "to a DynamicQuantizeLinear and to the next residual Add); the three embedding Gathers read uint8 "
        "tables followed by DequantizeLinear")),
    "gpt2.fp16_dynamo23": (build_gpt2_fp16_dynamo23, facts(
        "pre", "layernorm", 2, False, True,
        "GPT2Model (hidden 64, 4 heads, MLP 256, vocab 256, default sdpa attention) .half(), torch.onnx.export "
        "dynamo=True opset 23, dynamic batch/sequence",
        "everything float16 (weights and activations, output tensor(float16)); LayerNormalization x5 with "
        "float16 X/scale/bias and stash_type 1, no Casts around the norms (the only Cast makes the boolean mask); "
        "Attention (opset 23, boolean mask, scale 0.25); Conv1D projections as Gemm; gelu_new as Pow/Tanh; test "
        "data has finite outputs")),
    "llama.fp16_legacy17": (build_llama_fp16_legacy17, facts(
        "pre", "rmsnorm", 2, False, True,
        "LlamaModel (hidden 64, 4 heads, 2 KV heads, MLP 128, vocab 256, eager attention) .half(), legacy "
        "torch.onnx.export opset 17",
        "weights float16, decomposed RMSNorm with float32 inside: Cast(to float) of the float16 stream -> "
        "Pow 2 -> ReduceMean -> Add eps -> Sqrt -> Div(1, .) -> Mul with the float32 x -> Cast(to float16) -> "
        "Mul by the float16 weight; the residual Adds are float16; rotary Cos/Sin computed in float32 and Cast; "
        "eager attention (MatMul/Softmax, K/V repeated to 4 heads); output tensor(float16), finite")),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "models/wild"
    filters = sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    exp_path = os.path.join(out, "expected.json")
    expected = json.load(open(exp_path)) if os.path.exists(exp_path) else {}
    expected["_doc"] = ("What analysis must find in each model (by construction from the architecture, not from "
                        "any tool's output); 'ops' lists the notable fused / non-primitive op types present in "
                        "the file (domain.op_type; default-domain ops without a prefix), for documentation.")
    tmp = tempfile.mkdtemp(prefix="wild_")
    failures = {}
    for name, (fn, fact) in SPECS.items():
        if filters and not any(f in name for f in filters):
            continue
        print(f"== {name}", flush=True)
        folder = os.path.join(out, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        try:
            REF.pop("current", None)
            feeds = fn(folder, tmp)
            ins, outs = write_testdata(folder, feeds)
            ref = REF.pop("current", None)
            if ref is not None:
                got = numpy_helper.to_array(onnx.load_tensor(os.path.join(folder, "test_data_set_0", "output_0.pb")))
                print(f"  vs PyTorch: max |diff| {float(np.abs(got - ref).max()):.3e} "
                      f"(max |ref| {float(np.abs(ref).max()):.3e})")
            try:
                onnx.checker.check_model(os.path.join(folder, "model.onnx"), full_check=True)
            except onnx.checker.ValidationError as ce:
                # Kept as the tool wrote it (e.g. ORT's optimizer writes default-domain LayerNormalization
                # into an opset-14 model, which onnxruntime runs but the ONNX checker rejects).
                print(f"  WARNING onnx.checker: {str(ce).splitlines()[0]}")
            e = dict(fact)
            e["ops"] = notable_ops(os.path.join(folder, "model.onnx"))
            expected[name] = e
            size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(folder) for f in fs)
            print(f"  ok {size} bytes; inputs {ins}; outputs {outs}")
            print(f"  ops {e['ops']}")
            print(f"  counts {op_counts(os.path.join(folder, 'model.onnx'))}")
        except Exception as ex:
            import traceback
            traceback.print_exc()
            failures[name] = f"{type(ex).__name__}: {str(ex)[:300]}"
            shutil.rmtree(folder, ignore_errors=True)
    with open(exp_path, "w") as f:
        # Entries of SPECS first, in table order; entries written by other scripts (make_optimum_fixtures.py)
        # are kept after them.
        order = ["_doc"] + [n for n in SPECS if n in expected] + \
            [n for n in expected if n != "_doc" and n not in SPECS]
        json.dump({k: expected[k] for k in order}, f, indent=1)
        f.write("\n")
    shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAILED:", json.dumps(failures, indent=1))
        sys.exit(1)


if __name__ == "__main__":
    main()
