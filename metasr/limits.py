"""Sane ranges shared by the command line and the library: both refuse the same absurd values.

A red team's ``--threads 100000`` started ~32,000 threads and exhausted the machine's thread limit; a
``--budget-db inf`` made an accuracy gate that cannot fail. Every numeric setting is checked against a range
here, when the command line is parsed (:mod:`metasr.cli.common`'s option types call these functions) and
again where the library takes it (``Pipeline(threads=...)``, ``CalibrationConfig``, ``TrainConfig``, ...), so a
caller of either gets the same one-line ``ValueError``.

Standard library only: the torch-free runtime imports it.
"""

from __future__ import annotations

import math
import os

__all__ = [
    "MAX_BUDGET_DB",
    "MAX_CROPS",
    "MAX_HELD_APART",
    "MAX_IMAGE_PIXELS",
    "MAX_KEPT",
    "MAX_OPSET",
    "MAX_SCALE",
    "MAX_SEED",
    "MAX_SIDE",
    "MAX_STATIC_LR",
    "MAX_THREADS",
    "MIN_OPSET",
    "REFERENCE_PSNR_RANGE",
    "check_float",
    "check_int",
    "check_threads",
    "float_problem",
    "int_problem",
]

# ONNX Runtime / PyTorch thread pools: more threads than a small multiple of the cores only adds contention
MAX_THREADS = 4 * (os.cpu_count() or 1)
# an image side: 65,535 (a JPEG header's 16-bit field), far beyond any model's practical input or output; the
# encoders are stricter and checked when writing (JPEG 65,500, WebP 16,383: runtime/image_write.py MAX_SIDES)
MAX_SIDE = 65_535
# a static feature graph's LR side: exporting traces and verifies the model at that size
MAX_STATIC_LR = 4096
# pixels of one image an option may ask for (an output size, a memory run): 4 GiB of uint8 RGB
MAX_IMAGE_PIXELS = 2**32 // 3
# ONNX opsets the exporter writes: 15 (the MetaUpscale body uses CastLike; per-channel QuantizeLinear needs 13) .. 20
# (the maximum of PyTorch's TorchScript exporter, which writes the feature graph)
MIN_OPSET, MAX_OPSET = 15, 20
# metasr calibrate: the accuracy budget (dB), crops, seeds, tensors kept in float
MAX_BUDGET_DB = 10.0
MAX_CROPS = 100_000  # calibration crops (each one feature-graph run per range pass)
MAX_HELD_APART = 10_000  # held-apart crops (each one run per sensitivity measurement)
MAX_KEPT = 1_000
MAX_SEED = 2**32 - 1  # numpy's seed range for one 32-bit word
REFERENCE_PSNR_RANGE = (20.0, 60.0)  # dB: the FP32 reconstruction quality the budget is computed at
# the largest scale any model config may declare (ModelConfig.max_scale); a model's own maximum is smaller
MAX_SCALE = 16.0


def int_problem(value: object, low: int, high: int) -> str | None:
    """What is wrong with ``value`` as an integer in [low, high] (``"must be ..., got ..."``), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer in {low}..{high}, got {value!r}"
    return None if low <= value <= high else f"must be in {low}..{high}, got {value}"


def float_problem(value: object, low: float, high: float, *, low_open: bool = False) -> str | None:
    """What is wrong with ``value`` as a finite number in [low, high] (``(low, high]`` with ``low_open``)."""
    interval = f"{'(' if low_open else '['}{low:.10g}, {high:.10g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a finite number in {interval}, got {value!r}"
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        return f"must be a finite number in {interval}, got {value:.10g}"
    return None


def check_int(value: object, name: str, low: int, high: int) -> int:
    """``value`` if it is an integer (not a bool) in [low, high]; else ``ValueError`` naming ``name``."""
    problem = int_problem(value, low, high)
    if problem:
        raise ValueError(f"{name} {problem}")
    return value  # type: ignore[return-value]


def check_float(value: object, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in [low, high] (``(low, high]`` with ``low_open``)."""
    problem = float_problem(value, low, high, low_open=low_open)
    if problem:
        raise ValueError(f"{name} {problem}")
    return float(value)  # type: ignore[arg-type]


def check_threads(value: object, name: str = "threads") -> int:
    """A thread count: 0 (the library's default) .. :data:`MAX_THREADS` (4 per CPU core)."""
    return check_int(value, f"{name} (0: the default; at most 4 per CPU core)", 0, MAX_THREADS)
