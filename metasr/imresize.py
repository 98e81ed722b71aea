"""MATLAB-compatible bicubic ``imresize`` (numpy, CPU) and the cropping rules of the benchmark data.

MATLAB's algorithm: Keys cubic kernel (a = -0.5); output coordinate x (1-based) samples the input at
``u = x / scale + 0.5 * (1 - 1 / scale)``; when shrinking the kernel is widened to ``4 / scale`` and scaled
by ``scale`` (antialiasing); weights are normalised per output pixel; rows first, then columns; a uint8
image is rounded half up back to uint8 after each 1-D pass. Two border modes:

* ``"symmetric"`` (MATLAB's own): reproduces the EDSR/RCAN benchmark LR files (``Set5_LR``) bit-exactly;
* ``"replicate"`` (edge clamp): how the official Meta-SR LR files (``MetaSR_golden``) were made.

PIL and OpenCV bicubic differ from MATLAB; numbers made with them are not comparable to the paper.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = [
    "imresize",
    "imresize_rows",
    "matlab_mod",
    "metasr_crop",
    "metasr_lr_size",
    "modcrop",
    "official_scale_value",
]

BorderMode = Literal["symmetric", "replicate"]


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = np.power(ax, 2), np.power(ax, 3)  # MATLAB evaluates absx.^2, absx.^3 with pow
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def _contributions(in_len: int, out_len: int, scale: float, border: BorderMode) -> tuple[np.ndarray, np.ndarray]:
    """Per output position, the input indices (0-based, border-mapped) and normalised weights, (out, P)."""
    width = 4.0
    if scale < 1:
        width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero tap columns
    weights, idx = weights[:, keep], idx[:, keep]
    idx0 = idx.astype(np.int64) - 1
    if border == "replicate":
        idx0 = np.clip(idx0, 0, in_len - 1)
    else:
        mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
        idx0 = mirror[np.mod(idx0, 2 * in_len)]
    return idx0, weights


def _resize_axis(
    img: np.ndarray, axis: int, out_len: int, scale: float, border: BorderMode, select: slice = slice(None)
) -> np.ndarray:
    """One 1-D pass in float64; ``select``: compute only those output positions (reading only their inputs)."""
    idx, weights = _contributions(img.shape[axis], out_len, scale, border)
    idx, weights = idx[select], weights[select]
    moved = np.moveaxis(img, axis, 0)  # (in, ...)
    acc = np.zeros((idx.shape[0], *moved.shape[1:]), dtype=np.float64)
    extra = (1,) * (moved.ndim - 1)
    for p in range(idx.shape[1]):  # sum in tap order, as MATLAB does
        acc += weights[:, p].reshape(-1, *extra) * moved[idx[:, p]].astype(np.float64)
    return np.moveaxis(acc, 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    out_shape: tuple[int, int] | None = None,
    border: BorderMode = "symmetric",
) -> np.ndarray:
    """Bicubic resize of an (H, W) or (H, W, C) image, as MATLAB's ``imresize(img, scale, 'bicubic')``.

    Give ``scale`` (output size ``ceil(scale * size)``, kernel at exactly ``scale``) and/or ``out_shape``
    (H_out, W_out; with no scale the kernel scale is out/in per axis). uint8 in -> uint8 out (rounded half
    up after each pass); float in -> float64 out, unrounded.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    h, w = img.shape[:2]
    if out_shape is None:
        if scale is None:
            raise ValueError("give scale or out_shape")
        out_shape = (math.ceil(scale * h), math.ceil(scale * w))
    scales = (scale, scale) if scale is not None else (out_shape[0] / h, out_shape[1] / w)
    is_uint8 = img.dtype == np.uint8
    out = img
    for axis in (0, 1):  # rows first, then columns
        out = _resize_axis(out, axis, out_shape[axis], scales[axis], border)
        if is_uint8:
            out = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out


def imresize_rows(
    img: np.ndarray, out_shape: tuple[int, int], rows: slice, border: BorderMode = "symmetric"
) -> np.ndarray:
    """Output rows ``rows`` of ``imresize(img.astype(np.float64), out_shape=out_shape)``, bit for bit (float64,
    unrounded, whatever ``img``'s dtype), computed from the input rows they need only: a large image's alpha
    channel is resized band by band without a full-size float copy."""
    h, w = img.shape[:2]
    band = _resize_axis(img, 0, out_shape[0], out_shape[0] / h, border, select=rows)
    return _resize_axis(band, 1, out_shape[1], out_shape[1] / w, border)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of an integer ``scale`` (the EDSR/RCAN benchmark convention)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def matlab_mod(x: float, y: float) -> float:
    """MATLAB's ``mod``: 0 when x / y is an integer up to round-off (``matlab_mod(512, 1.6) == 0``).

    >>> matlab_mod(512, 1.6), 512 % 1.6 > 0
    (0.0, True)
    """
    q = x / y
    if abs(q - round(q)) <= 4 * np.finfo(np.float64).eps * max(1.0, abs(q)):
        return 0.0
    return x - math.floor(q) * y


def metasr_crop(img: np.ndarray, scale: float) -> np.ndarray:
    """The official Meta-SR HR crop: drop the last 4 pixels of an axis whose size is not a multiple of
    ``scale`` (MATLAB ``mod``)."""
    h, w = img.shape[:2]
    h -= 4 if matlab_mod(h, scale) != 0 else 0
    w -= 4 if matlab_mod(w, scale) != 0 else 0
    return img[:h, :w]


def metasr_lr_size(hr_h: int, hr_w: int, scale: float) -> tuple[int, int]:
    """LR size of an already-cropped HR image: ``ceil(dim / scale)``."""
    return math.ceil(hr_h / scale), math.ceil(hr_w / scale)


def official_scale_value(scale: float) -> float:
    """The double the official data script resized with for a nominal scale on the 1.1, 1.2, ..., 4.0 grid.

    The official LR files were made with the scale as a running sum ``1.1 + k * 0.1`` (so x1.2 is
    1.2000000000000002), not the literal; using that value reproduces 18 of the 30 ``MetaSR_golden`` scales
    bit-exactly (16 with the literals). Scales off the grid are returned unchanged.

    >>> official_scale_value(1.2), official_scale_value(2.35)
    (1.2000000000000002, 2.35)
    """
    k = round((scale - 1.1) / 0.1)
    if 0 <= k <= 29 and abs(1.1 + 0.1 * k - scale) < 1e-9:
        return 1.1 + k * 0.1
    return scale
