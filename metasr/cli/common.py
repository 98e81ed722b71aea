"""What every ``metasr`` command shares: the user-error type, range-checked option types, model lookup.

Option types (:func:`int_range`, :func:`float_range`) check values when the command line is parsed, so an
absurd value (``--threads 100000``, ``--scale nan``) is refused in one line before anything starts.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "EXTRAS",
    "MAX_THREADS",
    "CLIError",
    "float_range",
    "int_range",
    "missing_dependency",
    "parse_pair",
    "resolve_model",
]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


# ONNX Runtime / PyTorch thread pools: more threads than a small multiple of the cores only adds contention
# (a red team's --threads 100000 started ~32,000 threads and exhausted the machine's thread limit)
MAX_THREADS = 4 * (os.cpu_count() or 1)


# the extra that brings each optional top-level module (pyproject.toml's optional-dependencies)
EXTRAS = {
    "torch": "model",
    "safetensors": "model",
    "onnx": "model",
    "polygraphy": "model",
    "onnxconverter_common": "model",
    "onnxruntime": "ort",
    "tensorrt": "tensorrt",
    "cuda": "tensorrt",
    "triton": "triton",
    "matplotlib": "plot",
    "openvino": "openvino",
}


def missing_dependency(e: ModuleNotFoundError, command: str) -> str | None:
    """The one-line message for an optional module that is not installed, or None for any other import."""
    root = (e.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    return f"metasr {command} needs {root}, which is not installed (pip install 'metasr[{EXTRAS[root]}]')"


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or value > high:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def parse_pair(text: str, flag: str, example: str) -> tuple[int, int]:
    """Two positive integers written ``AxB`` (``--size WxH``, ``--lr-size HxW``), in the order written."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CLIError(f"{flag} must look like {example}, got {text!r}") from None
    if a < 1 or b < 1:
        raise CLIError(f"{flag} must be two positive integers like {example}, got {text!r}")
    return a, b


def resolve_model(spec: str | None, allow_preset: bool = False):
    """``None``/"bundled": the bundled model; an existing file: a checkpoint; else a preset (random weights)."""
    from metasr.bundled import bundled_model_path
    from metasr.checkpoint import load_model
    from metasr.config import PRESETS, preset
    from metasr.model import MetaSR

    if spec in (None, "bundled"):
        return load_model(bundled_model_path())
    if Path(spec).exists():
        return load_model(spec)
    if allow_preset and spec in PRESETS:
        return MetaSR(preset(spec)).eval()
    raise CLIError(
        f"no checkpoint at {spec!r}" + (f" and no preset of that name ({sorted(PRESETS)})" if allow_preset else "")
    )
