"""Meta-SR location projection: output size, source pixels and fractional offsets (numpy only).

The same functions serve the PyTorch model, the ONNX exporter and the torch-free runtime, so all three
agree on the projection to the last bit. The arithmetic follows the authors' code exactly:

* output size ``int(r * h) x int(r * w)`` in Python double arithmetic (``int(1.4 * 45) == 62``);
* output row ``i`` projects to ``t = float32(float32(i) * float32(1 / r))``, source row ``floor(t)``,
  offset ``t - floor(t)`` in [0, 1); columns alike. No half-pixel shift.

Because of float32 rounding, some rows whose exact projection is an integer land on the row before with
an offset of ~0.99999 (x2.3, x2.7, x3.7, ...). They are reproduced, not "fixed".

Offsets of the same phase differ by up to ~1e-5 after rounding; :func:`project` merges offsets closer
than ``merge_tol`` (default 1e-4) so the weight predictor runs on the true handful of distinct offsets
(see ``shared/docs/upscale-notes.md``), while every row keeps its exact source index.

>>> output_size(45, 45, 1.4)
(62, 62)
>>> output_size(50, 50, 2.3)
(115, 115)
>>> int(2.3 * 50)
114
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_MAX_SCALE",
    "MERGE_TOL",
    "AxisPlan",
    "ProjectionPlan",
    "UnsupportedScaleError",
    "axis_projection",
    "check_scale",
    "inverse_scale",
    "output_size",
    "project",
]

DEFAULT_MAX_SCALE = 4.0
MERGE_TOL = 1e-4


class UnsupportedScaleError(ValueError):
    """A scale factor that is not finite or lies outside the model's supported range."""


def check_scale(scale: float, max_scale: float = DEFAULT_MAX_SCALE, min_scale: float = 1.0) -> float:
    """Return ``scale`` as a Python float if it lies in (min_scale, max_scale] (``min_scale`` >= 1: an
    artifact's ``scale_min_exclusive``); raise otherwise.

    >>> check_scale(2.5)
    2.5
    >>> check_scale(0)
    Traceback (most recent call last):
    ...
    metasr.runtime.projection.UnsupportedScaleError: scale must be a finite number in (1, 4], got 0
    """
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise UnsupportedScaleError(f"scale must be a number, got {scale!r}") from None
    low = max(1.0, min_scale)
    if not math.isfinite(value) or not low < value <= max_scale:
        raise UnsupportedScaleError(f"scale must be a finite number in ({low:g}, {max_scale:g}], got {scale!r}")
    return value


def output_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """Output (height, width) for an ``h x w`` input at ``scale``: ``int(scale * h), int(scale * w)``."""
    return int(scale * h), int(scale * w)


def inverse_scale(scale: float) -> np.float32:
    """The float32 reciprocal the official code multiplies by (``float32(1 / r)``)."""
    return np.float32(1.0 / scale)


def axis_projection(n_in: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Project the ``int(scale * n_in)`` output positions of one axis onto the input.

    Returns ``(src, offset)``: ``src`` int64 (n_out,) in [0, n_in), ``offset`` float32 (n_out,) in [0, 1).
    """
    n_out = int(scale * n_in)
    t = np.arange(n_out, dtype=np.float32) * inverse_scale(scale)  # float32 product, as the official code
    src = np.floor(t)
    offset = (t - src).astype(np.float32)
    src = src.astype(np.int64)
    if n_out and src[-1] >= n_in:  # only reachable for absurd sizes where float32 loses whole pixels
        raise UnsupportedScaleError(f"axis of {n_in} pixels is too long for float32 projection at x{scale}")
    return src, offset


def _merge_offsets(offset: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Cluster sorted offsets whose distance to the cluster's first value is <= tol.

    Each cluster is represented by the offset of its lowest output index (the least rounded one).
    Returns ``(distinct float32 (P,), index int64 (n,))`` with ``distinct[index] ~= offset``.
    """
    if offset.size == 0:
        return offset.astype(np.float32), np.zeros(0, dtype=np.int64)
    order = np.argsort(offset, kind="stable")
    values = offset[order].astype(np.float64)
    cluster_sorted = np.empty(values.size, dtype=np.int64)
    start, cid = values[0], 0
    for k, v in enumerate(values):  # sequential: a cluster never spans more than tol
        if v - start > tol:
            cid, start = cid + 1, v
        cluster_sorted[k] = cid
    index = np.empty_like(cluster_sorted)
    index[order] = cluster_sorted
    n_clusters = cid + 1
    first = np.full(n_clusters, offset.size, dtype=np.int64)
    np.minimum.at(first, index, np.arange(offset.size))
    return offset[first].astype(np.float32), index


@dataclass(frozen=True)
class AxisPlan:
    """Projection of one axis.

    ``src`` int64 (n_out,): source pixel per output position. ``offset_index`` int64 (n_out,): index into
    ``offsets`` float32 (P,), the distinct (merged) fractional offsets in [0, 1).
    """

    src: np.ndarray
    offset_index: np.ndarray
    offsets: np.ndarray

    @property
    def n_out(self) -> int:
        return int(self.src.shape[0])


@dataclass(frozen=True)
class ProjectionPlan:
    """Everything the upscale stage needs for an ``in_h x in_w`` feature map at ``scale``."""

    in_h: int
    in_w: int
    scale: float
    inv_scale: np.float32
    rows: AxisPlan
    cols: AxisPlan

    @property
    def out_size(self) -> tuple[int, int]:
        return self.rows.n_out, self.cols.n_out

    def pair_inputs(self) -> np.ndarray:
        """Weight-predictor inputs for every (row offset, column offset) pair.

        float32 (P_r * P_c, 3), rows ordered row-offset-major, each ``[1/r, row offset, column offset]``.
        """
        pr, pc = self.rows.offsets, self.cols.offsets
        grid = np.empty((pr.size, pc.size, 3), dtype=np.float32)
        grid[..., 0] = self.inv_scale
        grid[..., 1] = pr[:, None]
        grid[..., 2] = pc[None, :]
        return grid.reshape(-1, 3)  # (P_r * P_c, 3)


def _axis_plan(n_in: int, scale: float, merge_tol: float) -> AxisPlan:
    src, offset = axis_projection(n_in, scale)
    if merge_tol > 0:
        distinct, index = _merge_offsets(offset, merge_tol)
    else:
        distinct, index = np.unique(offset, return_inverse=True)
        index = index.astype(np.int64)
    return AxisPlan(src=src, offset_index=index, offsets=distinct.astype(np.float32))


def project(
    h: int,
    w: int,
    scale: float,
    *,
    max_scale: float = DEFAULT_MAX_SCALE,
    merge_tol: float = MERGE_TOL,
    min_scale: float = 1.0,
) -> ProjectionPlan:
    """Projection plan for an ``h x w`` input at ``scale`` (validated against ``(min_scale, max_scale]``).

    ``merge_tol=0`` keeps every exactly-distinct float32 offset (the official arithmetic, unmerged).
    """
    scale = check_scale(scale, max_scale, min_scale)
    if h < 1 or w < 1:
        raise ValueError(f"input size must be at least 1x1, got {h}x{w}")
    return ProjectionPlan(
        in_h=int(h),
        in_w=int(w),
        scale=scale,
        inv_scale=inverse_scale(scale),
        rows=_axis_plan(h, scale, merge_tol),
        cols=_axis_plan(w, scale, merge_tol),
    )
