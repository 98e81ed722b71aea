"""PSNR and SSIM with the official Meta-SR / EDSR conventions (numpy, float64).

* the SR output is clamped to [0, 255] and rounded half-to-even first (:func:`quantize`);
* the HR reference is cropped to ``int(h_lr * r) x int(w_lr * r)`` (the SR size; the common region if smaller);
* PSNR on the Y channel of the difference, ``Y = (65.738 R + 129.057 G + 25.064 B) / 256`` on [0, 1]
  values, ``shave = ceil(r)`` pixels on each side;
* SSIM as BasicSR: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on the 0..255 scale, Gaussian window
  11 / sigma 1.5, C1 = (0.01*255)^2, C2 = (0.03*255)^2, valid region, same shave.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psnr_y", "quantize", "ssim_y"]

_PSNR_Y = np.array([65.738, 129.057, 25.064]) / 256.0
_SSIM_Y = np.array([65.481, 128.553, 24.966]) / 255.0


def quantize(sr: np.ndarray) -> np.ndarray:
    """Clamp to [0, 255] and round half-to-even: float (H, W, 3) -> uint8."""
    return np.round(np.clip(sr, 0, 255)).astype(np.uint8)


def _crop(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    # HR cropped to the SR size; where ceil-sized LR makes the SR a pixel or two larger than a cropped
    # HR (the Meta-SR data at non-integer scales), both are scored on their common region.
    h, w = min(sr.shape[0], hr.shape[0]), min(sr.shape[1], hr.shape[1])
    sr, hr = sr[:h, :w], hr[:h, :w]
    if shave:
        sr, hr = sr[shave:-shave, shave:-shave], hr[shave:-shave, shave:-shave]
    return sr.astype(np.float64), hr.astype(np.float64)


def psnr_y(sr: np.ndarray, hr: np.ndarray, scale: float) -> float:
    """Y-channel PSNR (dB) of uint8 RGB ``sr`` (h, w, 3) against ``hr`` (H >= h, W >= w, 3)."""
    sr, hr = _crop(sr, hr, math.ceil(scale))
    diff = ((sr - hr) / 255.0) @ _PSNR_Y
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _gaussian_valid(img: np.ndarray, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    rows = sum(g[k] * img[k : img.shape[0] - size + 1 + k] for k in range(size))
    return sum(g[k] * rows[:, k : img.shape[1] - size + 1 + k] for k in range(size))


def ssim_y(sr: np.ndarray, hr: np.ndarray, scale: float) -> float:
    """Y-channel SSIM (BasicSR formulation) of uint8 RGB ``sr`` against ``hr``, shave ``ceil(r)``."""
    sr, hr = _crop(sr, hr, math.ceil(scale))
    a, b = sr @ _SSIM_Y + 16.0, hr @ _SSIM_Y + 16.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _gaussian_valid(a), _gaussian_valid(b)
    var_a = _gaussian_valid(a * a) - mu_a**2
    var_b = _gaussian_valid(b * b) - mu_b**2
    cov = _gaussian_valid(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
