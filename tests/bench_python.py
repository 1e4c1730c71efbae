"""Benchmark (not a test): what the Python API costs beside the command on the same conversion.

    python tests/bench_python.py [MODEL] [RUNS]

Run it with the python of a venv the (release) wheel is installed in, with onnx: `pip install .` builds one.
MODEL defaults to models/big/bert_base.onnx (made on demand by `models/make_fixtures.py --bert-base`). It times,
best of RUNS, `fuse-layernorm` without verification (verification costs the same either way: both run the
models in the same runtime):

* the command: `normshift convert MODEL -o OUT --passes fuse-layernorm --no-verify` (its own process: loads the
  file through a memory map, writes OUT);
* `model.SerializeToString()` of the loaded ModelProto: what handing any ModelProto to native code costs;
* `normshift.convert(bytes, ...)`: the conversion from bytes already serialized, the result returned as bytes;
* `normshift.convert(model_proto, ...)`: from the ModelProto, the result returned as a ModelProto (the
  serialization, the conversion and onnx's parse of the result);
* `onnx.load_model_from_string(result)`: the parse on its own.

and prints a Markdown table for docs/python.md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

import normshift

ROOT = Path(__file__).resolve().parents[1]


def best(runs, call):
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    model_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/big/bert_base.onnx"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if not model_path.exists():
        subprocess.run(
            [sys.executable, str(ROOT / "models/make_fixtures.py"), str(model_path.parent), "--bert-base"],
            check=True,
        )
    command = Path(sys.executable).parent / "normshift"
    proto = onnx.load(model_path)
    data = proto.SerializeToString()
    passes = ["fuse-layernorm"]
    rows = []
    with tempfile.TemporaryDirectory() as out:
        cli, _ = best(
            runs,
            lambda: subprocess.run(
                [str(command), "convert", str(model_path), "-o", f"{out}/cli.onnx", "--passes", *passes, "--no-verify"],
                check=True,
                capture_output=True,
            ),
        )
        rows.append(("`normshift convert` (the command, file to file)", cli))
    serialize, _ = best(runs, proto.SerializeToString)
    rows.append(("`model.SerializeToString()`", serialize))

    convert_bytes, result = best(runs, lambda: normshift.convert(data, passes, verify=False, as_bytes=True)[0])
    rows.append(("`normshift.convert(bytes)` → bytes", convert_bytes))
    convert_proto, converted = best(runs, lambda: normshift.convert(proto, passes, verify=False)[0])
    rows.append(("`normshift.convert(ModelProto)` → ModelProto", convert_proto))
    parse, _ = best(runs, lambda: onnx.load_model_from_string(result))
    rows.append(("`onnx.load_model_from_string(result)`", parse))
    assert isinstance(converted, onnx.ModelProto)

    print(f"model: {model_path.name}, {model_path.stat().st_size / 1e6:.0f} MB; best of {runs} runs")
    print("| step | wall |")
    print("|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} s |")
    overhead = convert_proto - cli
    print(
        f"\nModelProto in, ModelProto out costs {overhead:+.3f} s beside the command "
        f"({overhead / serialize:.2f}× one SerializeToString)."
    )


if __name__ == "__main__":
    main()
