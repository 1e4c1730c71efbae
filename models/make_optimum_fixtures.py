#!/usr/bin/env python3
"""Write the optimum-onnx `wild` fixtures: merged decoders (one If on use_cache_branch, two decoder copies).

optimum-onnx 0.1.0 needs transformers < 4.58, so it has a venv of its own that borrows torch, onnx and
onnxruntime from /work/toolenv through a .pth file (its own transformers 4.57.6 comes first on sys.path):

    python3 -m venv /work/optenv
    echo /work/toolenv/lib/python3.11/site-packages > /work/optenv/lib/python3.11/site-packages/zz_toolenv.pth
    /work/optenv/bin/pip install -r models/optimum-requirements.txt
    /work/optenv/bin/python models/make_optimum_fixtures.py models/wild [NAME-FILTER ...]

(The .pth must be written before the pip install, so that pip sees torch 2.15.0 as installed.)

Layout and conventions as in make_wild_fixtures.py (whose helpers are imported: they need no transformers 5):
the merged file is saved as model.onnx; test_data_set_0 takes the no-cache branch (use_cache_branch=False, past
length 0), test_data_set_1 the cache branch (use_cache_branch=True, past length 3, random past_key_values.*,
one new token). Outputs by onnxruntime with graph optimizations disabled; each set is also checked against the
PyTorch model's logits.

  * t5_decoder.optimum_merged: main_export(task="text2text-generation-with-past") writes encoder_model.onnx,
    decoder_model.onnx, decoder_with_past_model.onnx and, by its own post-processing, decoder_model_merged.onnx.
  * gpt2_lm.optimum_merged: optimum-onnx 0.1.0 exports decoder-only models as one model.onnx with past inputs
    and no longer writes the merged decoder itself (its post-processing merges only when two decoder
    submodels were exported, which the 0.1.0 task code never does for a supported architecture). So the two
    decoders of the legacy layout are exported with main_export — the first with a custom GPT2OnnxConfig
    (use_past=True, use_past_in_inputs=False: present.* outputs, no past inputs), the second with the default
    config — and merged with optimum.onnx.merge_decoders, the function that post-processing calls.
"""
import json, os, shutil, sys, tempfile

if __name__ == "__main__" and os.environ.get("PYTHONHASHSEED") != "0":
    # optimum.onnx.merge_decoders renames the clashing auto-named initializers (onnx::MatMul_N) of the two
    # decoders in set order: fix the hash seed so that the merged file regenerates byte-identically.
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_wild_fixtures as W  # noqa: E402  (sets HF offline, imports torch/onnx/onnxruntime/transformers)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402
from onnx import numpy_helper  # noqa: E402

PAST = 3        # past length of test_data_set_1
ENC_SEQ = 6     # T5 encoder sequence length


def quiet_export(*args, **kw):
    from optimum.exporters.onnx import main_export
    print(f"  main_export({', '.join(map(repr, args))}, "
          f"{', '.join(f'{k}={v!r}' for k, v in kw.items() if k != 'custom_onnx_configs')}"
          f"{', custom_onnx_configs=...' if 'custom_onnx_configs' in kw else ''})", flush=True)
    main_export(*args, local_files_only=True, **kw)


def copy_model(src, folder):
    """The merged file as model.onnx (the weights are inside: optimum wrote no external data here)."""
    m = onnx.load(src, load_external_data=False)
    assert not any(t.external_data for t in m.graph.initializer), "unexpected external data"
    shutil.copy(src, os.path.join(folder, "model.onnx"))


# ---------------------------------------------------------------------------------------------- GPT-2
GPT2_CFG = dict(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_inner=256, n_positions=128,
                bos_token_id=0, eos_token_id=0)


def build_gpt2_lm_merged(folder, tmp):
    from optimum.exporters.onnx.model_configs import GPT2OnnxConfig
    from optimum.onnx import merge_decoders
    W.seed_all(31)
    cfg = T.GPT2Config(**GPT2_CFG)
    m = W.reinit(T.GPT2LMHeadModel(cfg).eval(), 31)
    assert m.lm_head.weight is m.transformer.wte.weight  # tied head
    src = os.path.join(tmp, "gpt2_hf")
    m.save_pretrained(src)
    task = "text-generation-with-past"
    nopast, past = os.path.join(tmp, "gpt2_decoder"), os.path.join(tmp, "gpt2_decoder_with_past")
    quiet_export(src, nopast, task=task, custom_onnx_configs={
        "model": GPT2OnnxConfig(cfg, task="text-generation", use_past=True, use_past_in_inputs=False)})
    quiet_export(src, past, task=task)
    merged = os.path.join(tmp, "decoder_model_merged.onnx")
    print("  merge_decoders(decoder_model.onnx, decoder_with_past_model.onnx)", flush=True)
    merge_decoders(os.path.join(nopast, "model.onnx"), os.path.join(past, "model.onnx"), save_path=merged)
    copy_model(merged, folder)

    g = torch.Generator().manual_seed(131)
    L, H, D = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
    sets, refs = [], []
    # set 0: no-cache branch, 5 tokens, past inputs empty
    ids = torch.randint(0, 256, (1, W.SEQ), generator=g)
    f = {"input_ids": ids.numpy(), "attention_mask": np.ones((1, W.SEQ), np.int64),
         "position_ids": np.arange(W.SEQ, dtype=np.int64)[None], "use_cache_branch": np.array([False])}
    for i in range(L):
        for kv in ("key", "value"):
            f[f"past_key_values.{i}.{kv}"] = np.zeros((1, H, 0, D), np.float32)
    with torch.no_grad():
        refs.append(m(input_ids=ids, use_cache=False).logits.numpy())
    sets.append(f)
    # set 1: cache branch, past length 3, one new token
    ids = torch.randint(0, 256, (1, 1), generator=g)
    pkv = [(torch.randn(1, H, PAST, D, generator=g), torch.randn(1, H, PAST, D, generator=g)) for _ in range(L)]
    f = {"input_ids": ids.numpy(), "attention_mask": np.ones((1, PAST + 1), np.int64),
         "position_ids": np.array([[PAST]], np.int64), "use_cache_branch": np.array([True])}
    for i, (k, v) in enumerate(pkv):
        f[f"past_key_values.{i}.key"], f[f"past_key_values.{i}.value"] = k.numpy(), v.numpy()
    with torch.no_grad():
        refs.append(m(input_ids=ids, attention_mask=torch.ones(1, PAST + 1, dtype=torch.int64),
                      position_ids=torch.tensor([[PAST]]),
                      past_key_values=T.DynamicCache.from_legacy_cache(tuple(pkv)), use_cache=True).logits.numpy())
    sets.append(f)
    return sets, refs


# ---------------------------------------------------------------------------------------------- T5
T5_CFG = dict(vocab_size=256, d_model=64, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16, d_ff=128,
              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def build_t5_decoder_merged(folder, tmp):
    W.seed_all(32)
    cfg = T.T5Config(**T5_CFG)
    m = W.reinit(T.T5ForConditionalGeneration(cfg).eval(), 32)
    assert m.lm_head.weight is m.shared.weight  # tied head (logits scaled by d_model**-0.5)
    src = os.path.join(tmp, "t5_hf")
    m.save_pretrained(src)
    out = os.path.join(tmp, "t5_onnx")
    quiet_export(src, out, task="text2text-generation-with-past")
    print("  optimum wrote:", sorted(os.listdir(out)))
    copy_model(os.path.join(out, "decoder_model_merged.onnx"), folder)

    g = torch.Generator().manual_seed(132)
    L, H, D = cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv
    enc = torch.randn(1, ENC_SEQ, cfg.d_model, generator=g)
    enc_mask = np.ones((1, ENC_SEQ), np.int64)
    sets, refs = [], []
    # set 0: no-cache branch, 5 decoder tokens; past inputs: decoder length 0, encoder length ENC_SEQ (unused)
    ids = torch.randint(0, 256, (1, W.SEQ), generator=g)
    f = {"input_ids": ids.numpy(), "encoder_hidden_states": enc.numpy(), "encoder_attention_mask": enc_mask,
         "use_cache_branch": np.array([False])}
    for i in range(L):
        for kv in ("key", "value"):
            f[f"past_key_values.{i}.decoder.{kv}"] = np.zeros((1, H, 0, D), np.float32)
            f[f"past_key_values.{i}.encoder.{kv}"] = np.zeros((1, H, ENC_SEQ, D), np.float32)
    with torch.no_grad():
        refs.append(m(encoder_outputs=(enc,), attention_mask=torch.from_numpy(enc_mask), decoder_input_ids=ids,
                      use_cache=False).logits.numpy())
    sets.append(f)
    # set 1: cache branch, decoder past length 3, random self- and cross-attention K/V, one new token
    ids = torch.randint(0, 256, (1, 1), generator=g)
    pkv = [tuple(torch.randn(1, H, n, D, generator=g) for n in (PAST, PAST, ENC_SEQ, ENC_SEQ)) for _ in range(L)]
    f = {"input_ids": ids.numpy(), "encoder_hidden_states": enc.numpy(), "encoder_attention_mask": enc_mask,
         "use_cache_branch": np.array([True])}
    for i, (k, v, ck, cv) in enumerate(pkv):
        f[f"past_key_values.{i}.decoder.key"], f[f"past_key_values.{i}.decoder.value"] = k.numpy(), v.numpy()
        f[f"past_key_values.{i}.encoder.key"], f[f"past_key_values.{i}.encoder.value"] = ck.numpy(), cv.numpy()
    with torch.no_grad():
        cache = T.EncoderDecoderCache.from_legacy_cache(tuple(pkv))
        refs.append(m(encoder_outputs=(enc,), attention_mask=torch.from_numpy(enc_mask), decoder_input_ids=ids,
                      past_key_values=cache, use_cache=True,
                      cache_position=torch.tensor([PAST])).logits.numpy())
    sets.append(f)
    return sets, refs


# ---------------------------------------------------------------------------------------------- facts
def merged_facts(placement, norm, layers, per_layer, emb, final, desc, note):
    branches = list(per_layer) * layers
    norms = len(per_layer) * layers + int(emb) + int(final)
    return {"placement": placement, "norm": norm, "units": len(branches), "parallel": False,
            "embedding_norm": emb, "final_norm": final, "norms": norms, "internal": 0,
            "in_subgraphs": True, "norms_total": 2 * norms, "branches": branches,
            "description": desc, "note": note}


SPECS = {
    "gpt2_lm.optimum_merged": (build_gpt2_lm_merged, merged_facts(
        "pre", "layernorm", 2, ["attention", "mlp"], False, True,
        "GPT2LMHeadModel (hidden 64, 4 heads, MLP 256, vocab 256, 128 positions, tied LM head) save_pretrained, "
        "then optimum-onnx 0.1.0 main_export(task='text-generation-with-past') twice (decoder without past inputs via a custom "
        "GPT2OnnxConfig(use_past=True, use_past_in_inputs=False), decoder with past by default; torchscript "
        "exporter opset 18), merged by optimum.onnx.merge_decoders into decoder_model_merged.onnx",
        "the main graph is one If on the bool input use_cache_branch (then = with past, else = without); each "
        "branch holds the whole Pre-LN decoder (5 LayerNormalization) and reads the weights from initializers of "
        "the main graph (names *_merged_0; none in the branches); the LM head reads the word embedding through a "
        "Transpose (tied); the attention_mask input is declared [batch_size, sequence_length] (from the no-past "
        "decoder) though the then branch needs past+sequence; units/norms/branches count one branch, norms_total "
        "both; test_data_set_0 runs the else branch (past length 0), test_data_set_1 the then branch (past "
        "length 3, one token)")),
    "t5_decoder.optimum_merged": (build_t5_decoder_merged, merged_facts(
        "pre", "rmsnorm", 2, ["attention", "attention", "mlp"], False, True,
        "T5ForConditionalGeneration (d_model 64, 2+2 layers, 4 heads, d_kv 16, d_ff 128, vocab 256) save_pretrained, "
        "then optimum-onnx 0.1.0 main_export(task='text2text-generation-with-past'): its decoder_model_merged.onnx "
        "(torchscript exporter opset 18)",
        "the main graph is one If on use_cache_branch; each branch holds the whole decoder: per layer "
        "self-attention, cross-attention (K/V from encoder_hidden_states in the else branch, from the "
        "past_key_values.*.encoder.* inputs in the then branch), ReLU MLP; decomposed T5 RMSNorm "
        "(Pow/ReduceMean/Add/Sqrt/Div/Mul, no mean subtraction); final norm then the d_model^-0.5 scale and the "
        "tied LM head (Transpose of shared.weight); weights are main-graph initializers (none in the branches); the "
        "then branch returns constant empty [0,4,1,16] tensors for present.*.encoder.* (merge_decoders strict=False); "
        "units/norms/branches count one branch, norms_total both; test_data_set_0 runs the else branch, test_data_set_1 the then branch (past length 3, one token)")),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "models/wild"
    filters = sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    exp_path = os.path.join(out, "expected.json")
    expected = json.load(open(exp_path)) if os.path.exists(exp_path) else {}
    tmp = tempfile.mkdtemp(prefix="wild_optimum_")
    failures = {}
    for name, (fn, fact) in SPECS.items():
        if filters and not any(f in name for f in filters):
            continue
        print(f"== {name}", flush=True)
        folder = os.path.join(out, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        try:
            sets, refs = fn(folder, tmp)
            for k, (feeds, ref) in enumerate(zip(sets, refs)):
                ins, outs = W.write_testdata(folder, feeds, index=k)
                got = numpy_helper.to_array(onnx.load_tensor(os.path.join(folder, f"test_data_set_{k}", "output_0.pb")))
                d = float(np.abs(got - ref).max())
                print(f"  set {k}: inputs {ins}; outputs {outs}")
                print(f"  set {k} vs PyTorch: max |diff| {d:.3e} (max |ref| {float(np.abs(ref).max()):.3e})")
                assert d < 1e-4, f"set {k} differs from PyTorch by {d}"
            onnx.checker.check_model(os.path.join(folder, "model.onnx"), full_check=True)
            e = dict(fact)
            e["ops"] = W.notable_ops(os.path.join(folder, "model.onnx"))
            expected[name] = e
            size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(folder) for f in fs)
            print(f"  ok {size} bytes; ops {e['ops']}; main graph {W.op_counts(os.path.join(folder, 'model.onnx'))}")
        except Exception as ex:
            import traceback
            traceback.print_exc()
            failures[name] = f"{type(ex).__name__}: {str(ex)[:300]}"
            shutil.rmtree(folder, ignore_errors=True)
    with open(exp_path, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAILED:", json.dumps(failures, indent=1))
        sys.exit(1)


if __name__ == "__main__":
    main()
