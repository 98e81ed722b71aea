"""Evaluation: super-resolve a test set at given scales and score it with the official conventions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from metasr.data import PairCache
from metasr.imresize import imresize
from metasr.metrics import psnr_y, quantize, ssim_y
from metasr.model import MetaSR

__all__ = ["Score", "bicubic_upscale", "evaluate_model", "super_resolve"]

LRConvention = Literal["metasr", "benchmark", "auto"]


@dataclass(frozen=True)
class Score:
    """One image at one scale."""

    image: str
    scale: float
    method: str
    psnr: float
    ssim: float | None


def super_resolve(model: MetaSR, lr: np.ndarray, scale: float) -> np.ndarray:
    """uint8 RGB (h, w, 3) -> uint8 RGB (int(r*h), int(r*w), 3) through ``model`` (clamped, rounded)."""
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float()[None].to(device)  # (1, 3, h, w)
    with torch.no_grad():
        sr = model(x, scale)[0].permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    return quantize(sr)


def bicubic_upscale(lr: np.ndarray, scale: float) -> np.ndarray:
    """The bicubic baseline: MATLAB ``imresize(lr, r, 'bicubic')`` (kernel at exactly r, the geometry the LR
    was made with), cut to the model's output size ``int(r*h) x int(r*w)``."""
    h, w = lr.shape[:2]
    return imresize(lr, scale, out_shape=(int(scale * h), int(scale * w)))


def _convention(scale: float, convention: LRConvention) -> Literal["metasr", "benchmark"]:
    if convention == "auto":
        return "benchmark" if float(scale).is_integer() else "metasr"
    return convention


def evaluate_model(
    model: MetaSR | None,
    hr_paths: Sequence[Path],
    scales: Sequence[float],
    cache_dir: Path,
    convention: LRConvention = "metasr",
    with_ssim: bool = True,
    with_bicubic: bool = False,
    dataset: str = "",
) -> list[Score]:
    """Scores of ``model`` (and/or the bicubic baseline) on every HR image at every scale.

    LR images come from :class:`PairCache` (``"metasr"``: the official Meta-SR data rule at every scale;
    ``"benchmark"``: mod-crop + MATLAB bicubic, integer scales; ``"auto"``: benchmark for integer scales).
    ``Score.image`` is ``"{dataset}/{file stem}"``.
    """
    rows: list[Score] = []
    for scale in scales:
        cache = PairCache(cache_dir, _convention(scale, convention))
        for path in hr_paths:
            lr, hr = cache.pair(Path(path), scale)
            methods = ([("model", model)] if model is not None else []) + ([("bicubic", None)] if with_bicubic else [])
            for name, net in methods:
                sr = super_resolve(net, lr, scale) if net is not None else bicubic_upscale(lr, scale)
                rows.append(
                    Score(
                        f"{dataset}/{Path(path).stem}",
                        scale,
                        name,
                        psnr_y(sr, hr, scale),
                        ssim_y(sr, hr, scale) if with_ssim else None,
                    )
                )
    return rows
