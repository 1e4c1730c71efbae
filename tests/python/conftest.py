"""Fixtures for the Python package's tests: the repository's model fixtures and the installed command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def command() -> str:
    """The `normshift` command the wheel installed beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "normshift"
    if beside.exists():
        return str(beside)
    found = shutil.which("normshift")
    if found is None:
        pytest.fail("the normshift command is not installed (pip install the wheel into this venv)")
    return found


def run_command(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [command(), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture
def bert() -> Path:
    """A Post-LN BERT-like stack with decomposed LayerNorms (opset 14), as the legacy torch exporter writes."""
    return MODELS / "bert_post.opset14" / "model.onnx"


@pytest.fixture
def gpt2() -> Path:
    """A Pre-LN GPT-2-like stack with a final norm, decomposed LayerNorms (opset 14)."""
    return MODELS / "gpt2_pre.opset14" / "model.onnx"


@pytest.fixture
def neox() -> Path:
    """A parallel (GPT-NeoX-like) stack."""
    return MODELS / "neox_parallel.opset17" / "model.onnx"
