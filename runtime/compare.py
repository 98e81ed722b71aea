"""Comparisons of two images/arrays as truthy result objects carrying their statistics (numpy only)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metasr.metrics import quantize

__all__ = ["Comparison", "compare", "uint8_stats"]


@dataclass(frozen=True)
class Comparison:
    """``bool(c)`` is True when both limits hold: ``max_abs <= atol`` and ``uint8_equal >= min_uint8_equal``."""

    name: str
    max_abs: float
    mean_abs: float
    psnr: float  # of the uint8 outputs, dB (inf when identical)
    uint8_equal: float  # fraction of identical values after clamp + round half-to-even
    atol: float
    min_uint8_equal: float

    def __bool__(self) -> bool:
        return self.max_abs <= self.atol and self.uint8_equal >= self.min_uint8_equal

    def __str__(self) -> str:
        verdict = "ok" if self else "MISMATCH"
        return (
            f"{self.name}: max|d| {self.max_abs:.2e} (tol {self.atol:g}), mean|d| {self.mean_abs:.2e}, "
            f"uint8 equal {100 * self.uint8_equal:.3f}% (min {100 * self.min_uint8_equal:g}%), "
            f"PSNR {self.psnr:.1f} dB: {verdict}"
        )


def compare(name: str, got: np.ndarray, ref: np.ndarray, atol: float, min_uint8_equal: float) -> Comparison:
    """Compare float outputs on the 0..255 scale (same shape)."""
    if got.shape != ref.shape:
        raise ValueError(f"{name}: shapes differ, got {got.shape}, reference {ref.shape}")
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    equal, psnr = uint8_stats(quantize(got), quantize(ref))
    return Comparison(name, float(d.max()), float(d.mean()), psnr, equal, atol, min_uint8_equal)


def uint8_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Share of identical values and PSNR (dB, peak 255; inf when identical) of two uint8 arrays."""
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float(np.mean(a == b)), math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
