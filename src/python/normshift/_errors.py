"""The exceptions normshift raises: one class per kind of failure, all under :class:`NormshiftError`.

Each carries the same one-line message the ``normshift`` command prints, and ``report``: the conversion or
verification report (the command's ``--json``, as a dict) when the failure has one, else ``None``.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional


class NormshiftError(Exception):
    """Something normshift could not do. ``message`` is the one-line reason; ``report`` the report, if any."""

    def __init__(self, message: str, report: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.message = message
        self.report = report


class UsageError(NormshiftError, ValueError):
    """The request is wrong as given: an unknown pass, contradicting options, output= is the input."""


class FileError(NormshiftError, OSError):
    """A file could not be read or written."""


class ModelError(NormshiftError, ValueError):
    """The model is not a valid ONNX model, or its graph is invalid (external data missing included)."""


class InputError(NormshiftError, ValueError):
    """The inputs to run the models on could not be read or made (inputs=, seeds=, dims=)."""


class PassRefused(NormshiftError):
    """A pass cannot run on this model (the message names the pass and why), or produced an invalid graph."""


class VerificationFailed(NormshiftError):
    """The converted model's outputs differ from the original's beyond tolerance (or beyond max_divergence=),
    so no model was returned or written; ``report`` holds the figures and the pass at fault."""


class RuntimeUnavailable(NormshiftError):
    """No runtime could load or run a model (tract cannot run an op, onnxruntime is not installed, ...)."""


class NormshiftWarning(UserWarning):
    """Something in a model that normshift read past (the command prints these as ``warning:`` lines)."""


_BY_KIND = {
    "usage": UsageError,
    "file": FileError,
    "model": ModelError,
    "inputs": InputError,
    "pass": PassRefused,
    "verification": VerificationFailed,
    "runtime": RuntimeUnavailable,
}


def from_native(error: BaseException) -> NormshiftError:
    """The exception for a failure the native module raised as ``NativeError(kind, message, report)``."""
    kind, message, report = error.args
    cls = _BY_KIND.get(kind, NormshiftError)
    return cls(message, json.loads(report) if report is not None else None)
