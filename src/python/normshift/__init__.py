"""normshift: a compiler for ONNX transformer models that understands where their norms sit.

The same program as the ``normshift`` command, called on models you hold in Python::

    import onnx, normshift

    model = onnx.load("bert.onnx")
    print(normshift.analyze(model)["placement"])           # "post"
    fused, report = normshift.convert(model, ["fuse-layernorm"])
    onnx.save(fused, "bert.fused.onnx")

A *model* is an ``onnx.ModelProto``, the serialized ``bytes``, or a path (``str`` or ``os.PathLike``). A
ModelProto is serialized once and its bytes are read in place, not copied again. A model whose weights live in
external data files can stay that way: load it with ``onnx.load(path, load_external_data=False)`` and pass
``base_dir=`` (the folder the data files are in), or pass its path. Results come back as ``onnx.ModelProto``
when the ``onnx`` package is importable, else as bytes; ``output=`` writes a result straight to a file instead
(with external data when asked, or when the model is too large for one file).

Every report is a dict with the same fields as the command's ``--json``. Failures raise the exceptions in
:mod:`normshift` (all subclasses of :class:`NormshiftError`) with the command's one-line message.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from ._errors import (
    FileError,
    InputError,
    ModelError,
    NormshiftError,
    NormshiftWarning,
    PassRefused,
    RuntimeUnavailable,
    UsageError,
    VerificationFailed,
    from_native,
)

__all__ = [
    "analyze",
    "convert",
    "verify",
    "passes",
    "dump",
    "inspect",
    "NormshiftError",
    "UsageError",
    "FileError",
    "ModelError",
    "InputError",
    "PassRefused",
    "VerificationFailed",
    "RuntimeUnavailable",
    "NormshiftWarning",
]

__version__: str = _native.__version__

# onnxruntime, when a conversion is judged by it, is the one installed for this interpreter (unless
# ORT_DYLIB_PATH or PYTHON name another).
_native.set_python(sys.executable)

Model = Union["onnx.ModelProto", bytes, bytearray, memoryview, str, "os.PathLike[str]"]  # noqa: F821
_Source = Tuple[Optional[str], Optional[bytes], Optional[str]]


def _source(model: Any, base_dir: Optional[Union[str, "os.PathLike[str]"]]) -> _Source:
    """(path, bytes, base_dir) as the native module takes a model."""
    folder = os.fspath(base_dir) if base_dir is not None else None
    if isinstance(model, (str, os.PathLike)):
        if folder is not None:
            raise UsageError("base_dir= is for a model given as a ModelProto or bytes; a path has its own folder")
        return os.fspath(model), None, None
    if isinstance(model, bytes):
        return None, model, folder
    if isinstance(model, (bytearray, memoryview)):
        return None, bytes(model), folder
    serialize = getattr(model, "SerializeToString", None)
    if callable(serialize):
        return None, serialize(), folder
    raise TypeError(
        f"a model is an onnx.ModelProto, bytes or a path, not {type(model).__name__}"
    )


def _call(function, *args):
    """Calls into the native module, raising its failures as normshift's exceptions."""
    try:
        return function(*args)
    except _native.NativeError as e:
        raise from_native(e) from None


def _warn(messages: Iterable[str]) -> None:
    for message in messages:
        warnings.warn(message, NormshiftWarning, stacklevel=3)


def _as_model(data: bytes) -> Any:
    """A ModelProto when onnx is importable, else the bytes."""
    try:
        import onnx
    except ImportError:
        return data
    return onnx.load_model_from_string(data)


def _names(passes: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(passes, str):
        passes = passes.split(",")
    return [p.strip() for p in passes if p.strip()]


def _dims(dims: Optional[Mapping[str, int]]) -> Dict[str, int]:
    """``dims=`` as the native module takes it: each size one a usize holds, else one line naming it."""
    sizes = {str(k): int(v) for k, v in (dims or {}).items()}
    for name, size in sizes.items():
        if not 0 <= size < 2**64:
            raise InputError(f"dims={{{name!r}: {size}}}: a size is a whole number from 0 to 2**64 - 1")
    return sizes


def _path(p: Optional[Union[str, "os.PathLike[str]"]]) -> Optional[str]:
    return os.fspath(p) if p is not None else None


def analyze(model: Model, *, base_dir=None, table: bool = False) -> Union[Dict[str, Any], str]:
    """The norms and residual units of ``model`` and where each norm sits (post, pre, peri, branch-output):
    the dict ``normshift analyze --json`` prints, or with ``table=True`` the command's table as text."""
    analysis, text, found = _call(_native.analyze_model, _source(model, base_dir))
    _warn(found)
    return text if table else json.loads(analysis)


def inspect(model: Model, *, base_dir=None) -> Dict[str, Any]:
    """IR version, producer, opsets, op histogram, inputs, outputs, parameters: ``normshift inspect --json``."""
    return json.loads(_call(_native.inspect_model, _source(model, base_dir)))


def dump(model: Model, *, base_dir=None, node_names: bool = False) -> str:
    """The model's IR in its stable text form (``normshift dump``), for snapshot tests: one line per node,
    constants summarized by hash, independent of node names unless ``node_names=True``."""
    text, found = _call(_native.dump_model, _source(model, base_dir), node_names)
    _warn(found)
    return text


def passes() -> List[Dict[str, str]]:
    """The passes ``convert`` accepts: ``[{"name", "class" ("exact" or "function-changing"), "description"}]``."""
    return json.loads(_call(_native.list_passes))


def convert(
    model: Model,
    passes: Union[str, Sequence[str]] = (),
    *,
    target: str = "onnx",
    verify: bool = True,
    runtime: str = "auto",
    verify_by: str = "auto",
    inputs=None,
    seeds: Optional[int] = None,
    dims: Optional[Mapping[str, int]] = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    allow_partial: bool = False,
    max_divergence: Optional[float] = None,
    calibration=None,
    hold_out_every: int = 4,
    stop_after: Optional[str] = None,
    dump_ir=None,
    output=None,
    external_data: Union[bool, str, None] = None,
    inline_data: bool = False,
    force: bool = False,
    base_dir=None,
    as_bytes: bool = False,
) -> Tuple[Any, Dict[str, Any]]:
    """Runs ``passes`` on ``model``, verifies the result against it, and returns ``(converted, report)``.

    As ``normshift convert``: ``target`` is ``"onnx"`` (standard ops) or ``"ort"`` (onnxruntime's
    com.microsoft ops as well); unless ``verify=False`` both models are run on the same inputs (two seeded sets,
    ``seeds=N`` sets, sizes for symbolic dimensions in ``dims={"sequence": 16}``, or stored ones in
    ``inputs=DIR``) by ``runtime`` (``"auto"``, ``"tract"``, ``"ort"``), whole or unit by unit as
    ``verify_by`` says (``"auto"``: unit by unit above 1 GiB of weights; ``"unit"``; ``"model"``). If an exact pass changed the outputs
    beyond ``rtol``/``atol`` (or a function-changing one beyond ``max_divergence``), :class:`VerificationFailed`
    is raised with the report attached and nothing is returned or written. With ``passes="post-to-pre"``,
    ``calibration=DIR`` (``test_data_set_*`` input sets) refits the Pre-LN model on those inputs, holding out
    every ``hold_out_every``-th set to judge it; ``report["calibration"]`` has both mappings' held-out figures.

    ``converted`` is an ``onnx.ModelProto`` (bytes without the onnx package, or with ``as_bytes=True``: what
    ``onnxruntime.InferenceSession`` takes without a parse). Tensors that were in external
    data files still refer to them, relative to the same folder as the input's did. With ``output=PATH`` the
    result is written there instead (atomically; ``external_data=True`` or a file name puts the weights in one
    data file beside it, ``inline_data=True`` all in the model file) and ``converted`` is that path.

    ``report`` is the dict ``normshift convert --json`` prints: per pass its changes and notes, the
    verification's figures per output, the drift profile of function-changing passes.
    """
    if external_data is True:
        external_data = ""
    elif external_data is False:
        external_data = None
    request = {
        "passes": _names(passes),
        "target": target,
        "verify": bool(verify),
        "runtime": runtime,
        "verify_by": verify_by,
        "inputs": _path(inputs),
        "seeds": seeds,
        "dims": _dims(dims),
        "rtol": float(rtol),
        "atol": float(atol),
        "allow_partial": bool(allow_partial),
        "max_divergence": max_divergence,
        "calibration": _path(calibration),
        "hold_out_every": int(hold_out_every),
        "stop_after": stop_after,
        "dump_ir": _path(dump_ir),
        "output": _path(output),
        "external_data": external_data,
        "inline_data": bool(inline_data),
        "force": bool(force),
    }
    data, report, found = _call(_native.convert_model, _source(model, base_dir), request)
    _warn(found)
    if data is None:
        converted = output
    else:
        converted = data if as_bytes else _as_model(data)
    return converted, json.loads(report)


def verify(
    model: Model,
    other: Optional[Model] = None,
    *,
    reference=None,
    runtime: Union[str, Sequence[str]] = "auto",
    verify_by: str = "auto",
    bisect: bool = False,
    inputs=None,
    seeds: Optional[int] = None,
    dims: Optional[Mapping[str, int]] = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    base_dir=None,
    other_base_dir=None,
) -> Dict[str, Any]:
    """Runs models and compares their outputs, as ``normshift verify``: ``model`` against ``other`` on the same
    inputs, ``model`` against the stored outputs in ``reference=DIR``, or one model in two runtimes
    (``runtime=("tract", "ort")``); two models whole or unit by unit as ``verify_by`` says (``"auto"``,
    ``"unit"``, ``"model"``: see :func:`convert`); with ``bisect=True``, differing outputs are traced to the
    first value that differs (``report["bisection"]``, as ``normshift verify --bisect``). Returns the report (``normshift verify --json``); ``report["ok"]`` says
    whether every output matched. A difference is a report, not an exception."""
    other_path, other_data, other_dir = (
        _source(other, other_base_dir) if other is not None else (None, None, None)
    )
    runtimes = [runtime] if isinstance(runtime, str) else list(runtime)
    request = {
        "other_path": other_path,
        "other_data": other_data,
        "other_base_dir": other_dir,
        "reference": _path(reference),
        "runtime": runtimes,
        "verify_by": verify_by,
        "bisect": bool(bisect),
        "inputs": _path(inputs),
        "seeds": seeds,
        "dims": _dims(dims),
        "rtol": float(rtol),
        "atol": float(atol),
    }
    report, found = _call(_native.verify_models, _source(model, base_dir), request)
    _warn(found)
    return json.loads(report)
