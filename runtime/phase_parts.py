"""Where to cut a long axis so the NCHWc variant's phase path keeps running (numpy only).

The ``ort`` backend's variant of the ``MetaUpscale`` body (:mod:`metasr.runtime.ort_cpu`) has a phase path for
r = p/q (:mod:`metasr.export.metaupscale_phase`): it runs a call as q^2 strided convolutions when every source
phase (input pixel mod q) hosts the same output slots with the same offsets all along each axis, and the grouped
path otherwise. The float32 projection drifts on long axes: from about 1024 input pixels the offsets of one phase
round to values more than ``merge_tol`` apart, so the plan gives that phase two offsets, and a call spanning the
pixel where it changes runs the grouped path (x3.3: at 1063, then every ~122 pixels; x1.7 from 1029; x1.1 at 1307).

:func:`phase_cuts` lists the output positions where an axis must be cut so that every part is periodic again; the
tiler (:func:`metasr.runtime.tiling.plan_upscale_tiles`) starts its column parts and row bands there. Measured on
this project's 2-core machine (2 threads, one call each, wall time per output pixel, phase / grouped path):
x3.3 22-25 / 33-36 ns on parts 122-180 input pixels wide, x1.7 39-48 / 89-92 ns on parts 93-174 wide, x3.9
25 / 28 ns on parts 50 wide. Parts equal the uncut call to float32 rounding, as any tile does.

Axes with a part narrower than :data:`MIN_PART` periods are not cut (the scales whose float32 "exception" rows
break the period every few pixels, x2.3, x2.7, x3.7: parts of 10-40 pixels would cost more calls than they gain).
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np

__all__ = ["MIN_PART", "phase_cuts", "phase_period"]

MIN_PART = 2  # periods (q input pixels) per part at least


def phase_period(scale: float, periods: tuple[int, ...]) -> int | None:
    """q where ``scale`` is exactly p/q (as a float) for a q in ``periods``, else None.

    >>> phase_period(3.3, (3, 4, 5, 10)), phase_period(2.5, (3, 4, 5, 10)), phase_period(4 / 3, (3, 4, 5, 10))
    (10, None, 3)
    """
    ratio = Fraction(scale).limit_denominator(max(periods, default=1))
    return ratio.denominator if ratio.denominator in periods and float(ratio) == scale else None


def phase_cuts(src: np.ndarray, idx: np.ndarray, q: int) -> list[int]:
    """Output positions (ascending, none at 0) where an axis with sources ``src`` (non-decreasing, every pixel
    between the first and the last hosting an output, as for r > 1) and offset indices ``idx`` must be cut so that
    in every part each input pixel hosts the outputs (their offset indices, in order) of the pixel q before it.
    The last pixel may host a prefix of those (the output size's truncation; the phase path takes it). Changes
    closer than q share one cut (the part after it starts at the first). A last part narrower than ``MIN_PART``
    periods joins the one before; where another part would be that narrow, no cuts (empty, as where the axis
    needs none)."""
    src, idx = np.asarray(src, dtype=np.int64), np.asarray(idx, dtype=np.int64)
    if src.size == 0 or q < 1:
        return []
    pixel = src - src[0]
    n = int(pixel[-1]) + 1
    counts = np.bincount(pixel, minlength=n)
    if n <= q or counts.min() < 1:
        return []
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slots = np.full((n, int(counts.max())), -1, dtype=np.int64)  # each pixel's offset indices, -1 padded
    slots[pixel, np.arange(src.size) - first[pixel]] = idx
    change = np.any(slots[q:] != slots[:-q], axis=1)
    last, before = slots[-1], slots[-1 - q]
    if change[-1] and counts[-1] < counts[-1 - q] and np.array_equal(last[: counts[-1]], before[: counts[-1]]):
        change[-1] = False  # the truncated end
    cuts: list[int] = []
    for pix in (np.flatnonzero(change) + q).tolist():
        if not cuts or pix >= cuts[-1] + q:
            cuts.append(pix)
    if cuts and n - cuts[-1] < MIN_PART * q:
        cuts.pop()  # a narrow last part joins the one before it (which then runs the grouped path)
    bounds = [0, *cuts]
    if cuts and min(b - a for a, b in itertools.pairwise(bounds)) < MIN_PART * q:
        return []
    return [int(first[c]) for c in cuts]
