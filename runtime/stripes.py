"""Features computed stripe by stripe, as the upscale tiles ask for them (numpy only).

The upscale stage walks its output tiles top to bottom, each reading a window of feature rows
(:class:`~metasr.runtime.tiling.UpscaleTile`). :class:`FeatureRows` keeps only the feature rows still
needed: when a window reaches below what it holds, it drops the rows above the window, shifts the rest up
and computes the next *stripe*, a row of feature tiles from :func:`~metasr.runtime.tiling.axis_tiles`
(region = core plus the receptive radius where the image has rows). The tiles are exactly those of the
whole-image feature stage with the same tile size, so the streamed features equal
:meth:`~metasr.runtime.pipeline.Pipeline.encode`'s bit for bit, and its buffer holds at most
``capacity`` rows: ``C * 4 * w`` bytes each.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["FeatureRows"]

# (rows, cols) of the input -> float32 (1, C, n, m) features of that region
Infer = Callable[[slice, slice], np.ndarray]
Tiles = list[tuple[int, int, int, int]]  # (region_start, region_end, core_start, core_end), as axis_tiles


class FeatureRows:
    """Features of an ``h x w`` image with ``channels`` channels, computed on demand by ``infer`` over the
    row tiles ``row_tiles`` and column tiles ``col_tiles``; requests must move down the image."""

    def __init__(self, infer: Infer, h: int, w: int, channels: int, row_tiles: Tiles, col_tiles: Tiles, capacity: int):
        if capacity < max(c1 - c0 for _, _, c0, c1 in row_tiles):
            raise ValueError(f"capacity {capacity} is less than a stripe's core rows")
        self._infer, self.h, self.w = infer, h, w
        self._rows, self._cols = list(row_tiles), list(col_tiles)
        self._buf = np.empty((1, channels, min(capacity, h), w), dtype=np.float32)
        self.start = self.stop = 0  # the buffer holds feature rows [start, stop)
        self.computed = 0  # input rows whose features were computed (cores)
        self.seconds = 0.0  # spent computing them

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """Contiguous float32 (1, C, rows, cols) features of that window (rows at or below earlier requests)."""
        if rows.start < self.start or rows.stop > self.h:
            raise ValueError(f"rows {rows.start}:{rows.stop} are above the held rows or outside 0:{self.h}")
        while self.stop < rows.stop:
            self._next_stripe(keep_from=rows.start)
        return np.ascontiguousarray(self._buf[:, :, rows.start - self.start : rows.stop - self.start, cols])

    def _next_stripe(self, keep_from: int) -> None:
        a, b, c0, c1 = self._rows.pop(0)
        assert c0 == self.stop, (c0, self.stop)
        keep = max(keep_from, self.start)
        held = self.stop - keep
        if held + (c1 - c0) > self._buf.shape[2]:
            raise ValueError(f"a window of {held} rows and a stripe of {c1 - c0} rows exceed the buffer")
        if keep > self.start:  # drop the rows above the window
            self._buf[:, :, :held] = self._buf[:, :, keep - self.start : self.stop - self.start]
            self.start = keep
        t0 = time.perf_counter()
        for xs, xe, xa, xb in self._cols:
            tile = self._infer(slice(a, b), slice(xs, xe))  # (1, C, b - a, xe - xs)
            self._buf[:, :, held : held + c1 - c0, xa:xb] = tile[:, :, c0 - a : c1 - a, xa - xs : xb - xs]
        self.seconds += time.perf_counter() - t0
        self.stop = c1
        self.computed += c1 - c0
