"""What every ``metasr`` command shares: the user-error type, range-checked option types, model lookup.

Option types (:func:`int_range`, :func:`float_range`, :func:`pair`, :data:`SCALE`, :data:`THREADS`) check values
with :mod:`metasr.limits` when the command line is parsed, so an absurd value (``--threads 100000``, ``--scale
nan``, ``--size 0x0``) is refused in one line before anything starts; the library refuses the same values.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from metasr.limits import MAX_IMAGE_PIXELS, MAX_SCALE, MAX_SIDE, MAX_THREADS, float_problem, int_problem

__all__ = [
    "EXTRAS",
    "MAX_THREADS",
    "SCALE",
    "THREADS",
    "CLIError",
    "float_range",
    "int_range",
    "missing_dependency",
    "pair",
    "parse_pair",
    "resolve_model",
]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


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
    "ray": "serve",
    "starlette": "serve",
}


def missing_dependency(e: ModuleNotFoundError, command: str) -> str | None:
    """The one-line message for an optional module that is not installed, or None for any other import."""
    root = (e.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    return f"metasr {command} needs {root}, which is not installed (pip install 'metasr[{EXTRAS[root]}]')"


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (:func:`metasr.limits.int_problem`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        problem = int_problem(value, low, high)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "integer"
    return parse


def float_range(low: float, high: float, *, low_open: bool = False, name: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (``(low, high]`` with ``low_open``); ``name`` starts
    its messages (``scale must be ...``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}".lstrip()) from None
        problem = float_problem(value, low, high, low_open=low_open)
        if problem:
            raise argparse.ArgumentTypeError(f"{name} {problem}".lstrip())
        return value

    parse.__name__ = "number"
    return parse


# a scale option: (1, 16], then checked against the model's (or the artifacts') own maximum
SCALE = float_range(1.0, MAX_SCALE, low_open=True, name="scale")
# --threads: 0 (the library's default) .. MAX_THREADS (4 per CPU core)
THREADS = int_range(0, MAX_THREADS)


def parse_pair(
    text: str, flag: str, example: str, low: int = 1, high: int = MAX_SIDE, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[int, int]:
    """Two integers written ``AxB`` (``--size WxH``, ``--lr-size HxW``) in the order written, each in
    [low, high] and with at most ``max_pixels`` pixels together; else :class:`CLIError`."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CLIError(f"{flag} must look like {example}, got {text!r}") from None
    if not (low <= a <= high and low <= b <= high):
        raise CLIError(f"{flag} must be two integers in {low}..{high} like {example}, got {text!r}")
    if a * b > max_pixels:
        raise CLIError(f"{flag} {text} has {a * b:,} pixels; at most {max_pixels:,}")
    return a, b


def pair(
    flag: str, example: str, low: int = 1, high: int = MAX_SIDE, max_pixels: int = MAX_IMAGE_PIXELS
) -> Callable[[str], tuple[int, int]]:
    """An argparse type: :func:`parse_pair` when the command line is parsed."""

    def parse(text: str) -> tuple[int, int]:
        try:
            return parse_pair(text, flag, example, low, high, max_pixels)
        except CLIError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag} ")) from None

    parse.__name__ = "size"
    return parse


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
