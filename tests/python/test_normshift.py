"""The Python package as a user calls it: the module on ModelProto, bytes and paths, and the installed command.

Run from a venv the wheel is installed in: `pytest tests/python` (`.ci/run` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

import normshift
from conftest import MODELS, run_command


def ort_outputs(model, feeds, base_dir=None):
    """onnxruntime's outputs for a ModelProto or a path, graph optimizations off."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, onnx.ModelProto):
        if base_dir is not None:
            # A ModelProto that still refers to external data is run from a file in that data's folder.
            path = Path(base_dir) / "from_memory.onnx"
            onnx.save(model, path)
            model = path
        else:
            model = model.SerializeToString()
    session = onnxruntime.InferenceSession(
        model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def bert_feeds():
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(0, 64, size=(1, 5), dtype=np.int64),
        "attention_mask": np.ones((1, 5), dtype=np.int64),
    }


def comparable(report):
    """A report without what differs from run to run or with where the models came from: paths and times."""
    report = json.loads(json.dumps(report))
    for key in ("input", "output"):
        report.pop(key, None)
    if report.get("file"):
        report["file"].pop("data_file", None)
    for run in report.get("passes", []):
        run.pop("elapsed_ms", None)
    verification = report.get("verification")
    if verification:
        verification.pop("model", None)
        verification.pop("against", None)
    return report


# --- analyze, dump, inspect, passes: the same answers from a ModelProto, bytes and a path -----------------


@pytest.mark.parametrize(
    "folder, placement, units, parallel",
    [
        ("bert_post.opset14", "post", 4, False),
        ("gpt2_pre.opset14", "pre", 4, False),
        ("neox_parallel.opset17", "pre", 2, True),
    ],
)
def test_analyze_reads_a_model_from_a_modelproto_bytes_and_a_path_alike(folder, placement, units, parallel):
    path = MODELS / folder / "model.onnx"
    proto = onnx.load(path)
    from_path = normshift.analyze(path)
    assert from_path["placement"] == placement
    assert (from_path["unit_count"], from_path["parallel"]) == (units, parallel)
    assert normshift.analyze(str(path)) == from_path
    assert normshift.analyze(proto) == from_path
    assert normshift.analyze(path.read_bytes()) == from_path


def test_analyze_equals_the_command_json_and_table(bert):
    assert normshift.analyze(bert) == json.loads(run_command("analyze", bert, "--json").stdout)
    assert normshift.analyze(bert, table=True) == run_command("analyze", bert).stdout


def test_dump_is_the_command_text_form_and_ignores_names(bert):
    proto = onnx.load(bert)
    text = normshift.dump(proto)
    assert text == run_command("dump", bert).stdout
    for i, node in enumerate(proto.graph.node):
        node.name = f"renamed_{i}"
    assert normshift.dump(proto) == text
    assert "renamed_0" in normshift.dump(proto, node_names=True)


def test_inspect_and_passes_equal_the_command_json(bert):
    inspected = normshift.inspect(bert)
    assert inspected == json.loads(run_command("inspect", bert, "--json").stdout)
    assert inspected["ops"]["ReduceMean"] > 0
    listed = normshift.passes()
    assert listed == json.loads(run_command("passes", "--json").stdout)
    assert {"fuse-layernorm", "post-to-pre", "unfuse-norms"} <= {p["name"] for p in listed}


# --- convert ----------------------------------------------------------------------------------------------


def test_convert_from_a_modelproto_returns_a_fused_checker_valid_modelproto_ort_agrees_with(bert):
    proto = onnx.load(bert)
    fused, report = normshift.convert(proto, ["fuse-layernorm"])
    assert isinstance(fused, onnx.ModelProto)
    onnx.checker.check_model(fused, full_check=True)
    assert report["written"] and report["exact"] and report["verification"]["ok"]
    assert report["passes"][0]["changes"] == 5  # the embedding norm and one post norm per unit, 4 units
    ops = {n.op_type for n in fused.graph.node}
    assert "LayerNormalization" in ops and "ReduceMean" not in ops
    assert normshift.analyze(fused)["norm_count"] == normshift.analyze(proto)["norm_count"]
    feeds = bert_feeds()
    for got, want in zip(ort_outputs(fused, feeds), ort_outputs(proto, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_convert_from_bytes_and_from_a_path_give_the_same_model(bert):
    from_proto, _ = normshift.convert(onnx.load(bert), "fuse-layernorm", verify=False)
    from_bytes, _ = normshift.convert(bert.read_bytes(), "fuse-layernorm", verify=False)
    from_path, report = normshift.convert(bert, "fuse-layernorm", verify=False)
    assert from_proto == from_bytes == from_path
    raw, _ = normshift.convert(bert, "fuse-layernorm", verify=False, as_bytes=True)
    assert isinstance(raw, bytes) and onnx.load_model_from_string(raw) == from_path
    assert ort_outputs(raw, bert_feeds())
    assert report["verification_skipped"] == "verification was turned off"


def test_without_the_onnx_package_results_are_bytes(bert):
    # A process of its own in which `import onnx` fails, as where onnx is not installed.
    script = (
        "import sys; sys.modules['onnx'] = None\n"
        "import normshift\n"
        f"model, report = normshift.convert({str(bert)!r}, ['fuse-layernorm'])\n"
        "print(type(model).__name__, report['written'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["bytes", "True"], done.stderr


def test_convert_report_equals_the_command_json_for_the_same_conversion(bert, tmp_path):
    args = ["--passes", "fuse-layernorm", "--target", "ort", "--seeds", "2"]
    cli = run_command("convert", bert, "-o", tmp_path / "cli.onnx", *args, "--json")
    assert cli.returncode == 0, cli.stderr
    written, report = normshift.convert(
        bert, ["fuse-layernorm"], target="ort", seeds=2, output=tmp_path / "py.onnx"
    )
    assert written == tmp_path / "py.onnx"
    assert comparable(report) == comparable(json.loads(cli.stdout))
    assert (tmp_path / "py.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()
    # In memory: the same report but for where the model went.
    _, in_memory = normshift.convert(bert, ["fuse-layernorm"], target="ort", seeds=2)
    assert in_memory["file"]["model_bytes"] == (tmp_path / "py.onnx").stat().st_size
    assert comparable(in_memory) == comparable(report)


def test_a_function_changing_conversion_reports_its_drift(bert):
    pre, report = normshift.convert(onnx.load(bert), ["post-to-pre"])
    assert not report["exact"]
    assert normshift.analyze(pre)["placement"] == "pre"
    assert [row["unit"] for row in report["drift"]] == list(range(len(report["drift"])))
    assert report["verification"]["runs"][0]["outputs"][0]["cosine"] < 1.0


def test_calibration_refits_post_to_pre_and_reports_held_out_figures(bert, tmp_path):
    sets = tmp_path / "calibration"
    for k in range(8):
        made = run_command("run", bert, "-o", sets / f"test_data_set_{k}", "--seed", k)
        assert made.returncode == 0, made.stderr
    pre, report = normshift.convert(onnx.load(bert), ["post-to-pre"], calibration=sets)
    assert normshift.analyze(pre)["placement"] == "pre"
    c = report["calibration"]
    assert (c["fitted"]["sets"], c["held_out_sets"]) == (6, 2)
    calibrated, plain = c["calibrated"]["outputs"][0], c["plain"]["outputs"][0]
    assert calibrated["token_cosine"] > plain["token_cosine"]
    # The held-out sets verified the result.
    assert len(report["verification"]["runs"]) == 2


def test_the_ort_runtime_is_the_onnxruntime_of_this_interpreter(bert):
    _, report = normshift.convert(onnx.load(bert), ["fuse-layernorm"], runtime="ort")
    assert report["verification"]["runtime"] == "onnxruntime"
    both = normshift.verify(bert, runtime=("tract", "ort"))
    assert both["ok"] and both["reference_runtime"] == "tract"


def test_verify_compares_two_models_and_reports_a_difference_without_raising(bert, gpt2):
    fused, _ = normshift.convert(onnx.load(bert), ["fuse-layernorm"], verify=False)
    same = normshift.verify(onnx.load(bert), fused, seeds=2)
    assert same["ok"] and len(same["runs"]) == 2
    stored = normshift.verify(bert, reference=bert.parent / "test_data_set_0")
    assert stored["ok"]
    pre, _ = normshift.convert(bert, ["post-to-pre"], verify=False)
    differs = normshift.verify(bert, pre)
    assert not differs["ok"]
    # Unit by unit, with a row per unit; bisected to the first unit and value that differ.
    by_unit = normshift.verify(bert, pre, verify_by="unit", bisect=True)
    assert by_unit["verified_by"] == "unit" and not by_unit["ok"]
    assert [r["segment"] for r in by_unit["units"]][:2] == ["prologue", "unit 0"]
    assert by_unit["bisection"]["segment"] == "unit 0"


# --- external data ----------------------------------------------------------------------------------------


@pytest.fixture
def external(bert, tmp_path):
    """The BERT fixture with every tensor of 1 KiB or more (the shape constants stay inline, as onnxruntime needs them) in `weights.bin` beside it."""
    folder = tmp_path / "external"
    folder.mkdir()
    proto = onnx.load(bert)
    onnx.save(
        proto, folder / "model.onnx", save_as_external_data=True, location="weights.bin", size_threshold=1024
    )
    return folder / "model.onnx"


def test_a_model_with_external_data_converts_from_its_path_and_unloaded_from_its_folder(external, tmp_path):
    unloaded = onnx.load(external, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in unloaded.graph.initializer)
    fused, report = normshift.convert(unloaded, ["fuse-layernorm"], base_dir=external.parent)
    assert report["verification"]["ok"]
    # The weights were not copied in: the result still refers to weights.bin, as the input did.
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in fused.graph.initializer)
    assert fused.ByteSize() < unloaded.ByteSize() + 4096
    feeds = bert_feeds()
    want = ort_outputs(external, feeds)
    for got, expected in zip(ort_outputs(fused, feeds, base_dir=external.parent), want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Without its folder the data is not found, and the error says which file.
    with pytest.raises(normshift.ModelError, match="weights.bin"):
        normshift.analyze(unloaded, base_dir=tmp_path)
    # Written with its own data file.
    out = tmp_path / "written" / "fused.onnx"
    out.parent.mkdir()
    path, report = normshift.convert(external, ["fuse-layernorm"], output=out, external_data=True)
    assert report["file"]["data_file"] == str(out.parent / "fused.onnx.data")
    onnx.checker.check_model(str(path), full_check=True)
    for got, expected in zip(ort_outputs(path, feeds), want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# --- errors -----------------------------------------------------------------------------------------------


def test_every_failure_is_a_normshift_error_of_its_kind_with_the_command_message(bert, gpt2, neox, tmp_path):
    cases = [
        (normshift.UsageError, lambda: normshift.convert(bert, ["fuse-everything"])),
        (normshift.UsageError, lambda: normshift.convert(bert, ["fuse-layernorm"], target="tpu")),
        (normshift.FileError, lambda: normshift.analyze(tmp_path / "missing.onnx")),
        (normshift.ModelError, lambda: normshift.analyze(b"this is not a model")),
        (normshift.InputError, lambda: normshift.convert(bert, ["fuse-layernorm"], inputs=tmp_path)),
        (normshift.PassRefused, lambda: normshift.convert(neox, ["pre-to-post"])),
    ]
    for cls, call in cases:
        with pytest.raises(cls) as caught:
            call()
        assert isinstance(caught.value, normshift.NormshiftError)
        assert caught.value.message and "\n" not in caught.value.message
    assert issubclass(normshift.UsageError, ValueError) and issubclass(normshift.FileError, OSError)
    # The message is the command's, without its "normshift: " prefix.
    cli = run_command("convert", bert, "-o", tmp_path / "x.onnx", "--passes", "fuse-everything")
    assert cli.returncode == 2
    with pytest.raises(normshift.UsageError) as caught:
        normshift.convert(bert, ["fuse-everything"])
    assert cli.stderr.strip() == f"normshift: {caught.value.message}"


def test_a_refused_result_raises_verification_failed_with_the_report(bert, tmp_path):
    out = tmp_path / "pre.onnx"
    with pytest.raises(normshift.VerificationFailed) as caught:
        normshift.convert(bert, ["post-to-pre"], max_divergence=1e-9, output=out)
    report = caught.value.report
    assert report["refusal"]["kind"] == "divergence" and not report["written"]
    assert "above the maximum divergence asked for" in caught.value.message and not out.exists()


def test_no_runtime_raises_runtime_unavailable(bert):
    # The onnxruntime library is loaded once per process: a process of its own, with a library that is not.
    script = (
        "import normshift, sys\n"
        f"try: normshift.convert({str(bert)!r}, ['fuse-layernorm'], runtime='ort')\n"
        "except normshift.RuntimeUnavailable as e: print('RuntimeUnavailable:', e.message); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    env = dict(os.environ, ORT_DYLIB_PATH="/nonexistent/libonnxruntime.so")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ORT_DYLIB_PATH" in done.stdout


def test_a_model_that_is_not_a_model_type_is_a_type_error():
    with pytest.raises(TypeError, match="ModelProto, bytes or a path"):
        normshift.analyze(42)


# --- sizes no machine can hold ----------------------------------------------------------------------------

HUGE = 2**40


def relu_model(dim):
    """`y = Relu(x)` over `[1, dim]` (a number or a symbol)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, dim])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, dim])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def plain_layernorm_model(hidden):
    """A decomposed LayerNorm without scale or shift over a hidden axis of `hidden`."""
    make = onnx.helper.make_node
    nodes = [
        make("ReduceMean", ["x"], ["m"], axes=[-1]),
        make("Sub", ["x", "m"], ["d"]),
        make("Mul", ["d", "d"], ["d2"]),
        make("ReduceMean", ["d2"], ["v"], axes=[-1]),
        make("Add", ["v", "eps"], ["ve"]),
        make("Sqrt", ["ve"], ["s"]),
        make("Div", ["d", "s"], ["y"]),
    ]
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, hidden])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, hidden])
    eps = onnx.helper.make_tensor("eps", onnx.TensorProto.FLOAT, [], [1e-5])
    graph = onnx.helper.make_graph(nodes, "g", [x], [y], [eps])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 14)])


def refused(kind, call, *expected):
    """`call()` raises `kind` with a one-line message holding every `expected`; the process stays small."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(kind) as caught:
        call()
    message = caught.value.message
    assert "\n" not in message, message
    for e in expected:
        assert e in message, message
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024, f"peak RSS grew by {grown_kib} KiB"


def test_sizes_no_machine_can_hold_raise_one_line_and_write_nothing(tmp_path):
    fixed = relu_model(HUGE)
    declared = "input `x` of shape [1, 1099511627776] (axis 1: 1099511627776, declared by the file)"
    out = tmp_path / "out.onnx"
    refused(normshift.InputError, lambda: normshift.verify(fixed, fixed), declared, "memory budget")
    refused(normshift.InputError, lambda: normshift.verify(fixed, runtime=("tract", "ort")), declared)
    refused(normshift.InputError, lambda: normshift.convert(fixed, "cleanup", output=out), declared)
    symbolic = relu_model("hidden")
    refused(
        normshift.InputError,
        lambda: normshift.verify(symbolic, symbolic, dims={"hidden": HUGE}),
        "`hidden` = 1099511627776, as given",
    )
    for size in (2**70, -1):
        refused(normshift.InputError, lambda: normshift.verify(symbolic, dims={"hidden": size}), "dims={'hidden'")
    norm = plain_layernorm_model(HUGE)
    for verify in (True, False):
        refused(
            normshift.PassRefused,
            lambda: normshift.convert(norm, "fuse-layernorm", verify=verify, output=out),
            "its scale of ones of shape [1099511627776]",
            "memory budget",
        )
    # Test data that claims 2^40 elements and holds two.
    from onnx import numpy_helper

    data = tmp_path / "data" / "test_data_set_0"
    data.mkdir(parents=True)
    claim = numpy_helper.from_array(np.array([[0.5, 1.0]], dtype=np.float32), "x")
    claim.dims[:] = [1, HUGE]  # what a hostile file may claim; onnx.helper itself refuses to write it
    (data / "input_0.pb").write_bytes(claim.SerializeToString())
    (data / "output_0.pb").write_bytes(
        onnx.helper.make_tensor("y", onnx.TensorProto.FLOAT, [1, 2], [0.5, 1.0]).SerializeToString()
    )
    holds = "claims shape [1, 1099511627776] (1099511627776 elements) but holds 2"
    refused(normshift.InputError, lambda: normshift.verify(symbolic, reference=tmp_path / "data"), holds)
    refused(
        normshift.InputError,
        lambda: normshift.convert(symbolic, "cleanup", inputs=tmp_path / "data", output=out),
        holds,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "nothing written, nothing left"
    # Reading such a model reserves nothing for the size.
    assert normshift.inspect(fixed)["inputs"]
    assert normshift.analyze(norm)["norm_count"] == 1
    assert "1099511627776" in normshift.dump(norm)


# --- the command ------------------------------------------------------------------------------------------


def test_the_installed_command_is_the_program(bert, tmp_path):
    version = run_command("--version")
    assert version.returncode == 0 and version.stdout.split() == ["normshift", normshift.__version__]
    out = tmp_path / "fused.onnx"
    done = run_command("convert", bert, "-o", out, "--passes", "fuse-layernorm")
    assert done.returncode == 0, done.stderr
    assert "fuse-layernorm: 5 change(s)" in done.stderr
    onnx.checker.check_model(str(out), full_check=True)
    assert run_command("verify", bert, out).returncode == 0
    pre = tmp_path / "pre.onnx"
    assert run_command("convert", bert, "-o", pre, "--passes", "post-to-pre", "--no-verify").returncode == 0
    assert run_command("verify", bert, pre).returncode == 1
    assert run_command("analyze", tmp_path / "missing.onnx").returncode == 2
