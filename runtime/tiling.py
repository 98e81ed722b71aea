"""Tiling for bounded memory (numpy only): feature tiles with an overlap, upscale tiles with a feature window.

Feature stage: :func:`axis_tiles` splits each axis into tiles whose kept *cores* are as equal as possible
and cover the axis; a tile's region is its core plus the backbone's receptive radius on every side that is
not an image edge, so every kept feature sees its whole receptive field (equal to the untiled features) and
nothing is computed twice beyond that overlap.

Upscale stage: an output tile (a band of rows, and of columns when one band would not fit the budget) reads
only the *feature window* its output needs: the source rows and columns of its pixels plus one context
row/column on each side where the image has one (the 3x3 neighbourhood). :func:`window_feeds` feeds the graph
that window with the source indices shifted into it; at image edges the graph's own zero padding stands in
for the missing context exactly as in the untiled run, so a tile equals the same region of the untiled
output to float32 rounding (the same products; ONNX Runtime picks its kernels, and so the summation order, by
the matrix sizes: measured <= 7.6e-6, one float32 step, on outputs ~100). :func:`tile_bytes`
(:mod:`metasr.runtime.tile_memory`, re-exported) counts every buffer of the ``MetaUpscale`` body for a tile, and
:func:`plan_upscale_tiles` picks tiles under a budget (where phase cuts add calls, by the cost model of
:mod:`metasr.runtime.tile_cost`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from metasr.runtime.engine_profile import ProfileError, UpscaleProfile
from metasr.runtime.feeds import part_feeds
from metasr.runtime.phase_parts import phase_cuts
from metasr.runtime.tile_cost import call_seconds
from metasr.runtime.tile_memory import FULL_TABLE_BYTES, full_table_fits, tile_bytes

__all__ = [
    "FULL_TABLE_BYTES",
    "MAX_TILE_PIXELS",
    "MIN_TILE_COLS",
    "MIN_TILE_ROWS",
    "PHASE_BAND_PIXELS",
    "UpscaleTile",
    "axis_tiles",
    "full_table_fits",
    "plan_profile_tiles",
    "plan_upscale_tiles",
    "source_window",
    "tile_bytes",
    "window_feeds",
]


def axis_tiles(n: int, size: int, margin: int, fixed: bool = False) -> list[tuple[int, int, int, int]]:
    """Split an axis of ``n`` pixels into feature tiles ``(region_start, region_end, core_start, core_end)``.

    Dynamic graphs (``fixed=False``): the fewest tiles whose regions (core plus ``margin`` on each inner
    side) fit in ``size``, with cores of equal length (+-1) that tile the axis. Static graphs (``fixed=True``,
    needs ``n >= size``): every region is exactly ``size``, spread evenly, neighbours overlapping by at least
    ``2 * margin`` and the cores split in the middle of each overlap. Needs ``size > 2 * margin``.

    >>> axis_tiles(1000, 512, 18)
    [(0, 351, 0, 333), (315, 684, 333, 666), (648, 1000, 666, 1000)]
    """
    if size <= 2 * margin:
        raise ValueError(f"tile size {size} must exceed twice the overlap {margin}")
    if fixed:
        return _fixed_tiles(n, size, margin)
    if n <= size:
        return [(0, n, 0, n)]
    k = 2
    while math.ceil(n / k) + (margin if k == 2 else 2 * margin) > size:
        k += 1
    bounds = [j * n // k for j in range(k + 1)]
    return [(max(0, a - margin), min(n, b + margin), a, b) for a, b in itertools.pairwise(bounds)]


def _fixed_tiles(n: int, size: int, margin: int) -> list[tuple[int, int, int, int]]:
    if n < size:
        raise ValueError(f"a static graph takes tiles of {size}; the axis has only {n} pixels")
    if n == size:
        return [(0, n, 0, n)]
    k = math.ceil((n - size) / (size - 2 * margin)) + 1
    starts = [round(j * (n - size) / (k - 1)) for j in range(k)]
    bounds = [0] + [(a + b + size) // 2 for a, b in itertools.pairwise(starts)] + [n]
    return [(s, s + size, bounds[j], bounds[j + 1]) for j, s in enumerate(starts)]


@dataclass(frozen=True)
class UpscaleTile:
    """An output tile (``rows`` x ``cols`` of the output) and the feature window (``in_rows`` x ``in_cols``)
    it reads. All four are ``slice(start, stop)`` with non-negative bounds."""

    rows: slice
    cols: slice
    in_rows: slice
    in_cols: slice


def source_window(src: np.ndarray, n: int, block: int = 1) -> slice:
    """The input range an output range with sources ``src`` (int64, non-empty) needs: its sources plus one
    context position on each side where the input (of ``n`` positions) has one. With 2-position blocks (see
    ``metasr.runtime.feeds``) the range starts an even number of positions before the first source (two where it
    can), so the member blocks lie on the block grid of the window."""
    first = int(src.min())
    start = first - 1 if block == 1 or first < 2 else first - 2
    return slice(max(start, 0), min(int(src.max()) + 2, n))


def window_feeds(
    feeds: dict[str, np.ndarray],
    tile: UpscaleTile,
    compact_offsets: bool = True,
    cache: dict[tuple, dict[str, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """The plan feeds (no ``features``) for ``tile``: its rows' and columns' arrays sliced, their sources
    shifted into the feature window, and the grouping hints recomputed for them.

    ``compact_offsets`` (default): keep only the row and column offsets the tile uses (indices renumbered), so
    the weight predictor runs on the tile's pairs alone and their count is bounded by the tile's size (what a
    TensorRT engine's fixed profile needs, and what keeps scales whose offsets hardly repeat, e.g. x3.19 or an
    exact output size, from recomputing the whole image's filter table in every tile: 100x100 at x3.19 took
    159 s and 1.8 GB with the table in every tile). The filters are the same per pair; the sums may differ in
    the last bit from an uncompacted call (a different number of rows through the predictor's matrix
    products). A whole-width tile keeps the plan's column feeds, which use every column offset.

    ``cache``: one dict per plan ``feeds`` (the caller's), holding each axis part's feeds, which depend on that
    axis alone: the tiles of a band share their row feeds, the bands their column parts. Without it every
    tile recomputed both (x2.77 under ``--memory-mb 128``: 13,438 calls, 16 s to refuse the image)."""
    out = dict(feeds)
    full_cols = tile.cols == slice(0, feeds["col_src"].size) and tile.in_cols.start == 0
    for axis, part, window in (("row", tile.rows, tile.in_rows), ("col", tile.cols, tile.in_cols)):
        if axis == "col" and full_cols:
            continue  # the whole width: the plan's own column feeds
        key = (axis, part.start, part.stop, window.start, compact_offsets)
        if cache is not None and key in cache:
            out.update(cache[key])
            continue
        idx, part_out = None, {}
        if compact_offsets:
            used, idx = np.unique(feeds[f"{axis}_idx"][part], return_inverse=True)
            part_out[f"{axis}_offsets"] = feeds[f"{axis}_offsets"][used]
            idx = idx.reshape(-1).astype(np.int64)
        part_out.update(part_feeds(feeds, axis, part, window.start, idx))
        if cache is not None:
            cache[key] = part_out
        out.update(part_out)
    return out


def _tile(feeds: dict[str, np.ndarray], rows: slice, cols: slice, in_h: int, in_w: int) -> UpscaleTile:
    s_r, s_c = feeds["row_groups"].shape[2], feeds["col_groups"].shape[2]
    return UpscaleTile(
        rows, cols, source_window(feeds["row_src"][rows], in_h, s_r), source_window(feeds["col_src"][cols], in_w, s_c)
    )


def plan_upscale_tiles(
    feeds: dict[str, np.ndarray],
    in_h: int,
    in_w: int,
    channels: int,
    budget_bytes: float,
    *,
    grouped: bool = False,
    phase_q: int | None = None,
    compact_offsets: bool = True,
    phase_direct: bool = True,
) -> list[UpscaleTile]:
    """Output tiles in row-major order, each within ``budget_bytes`` by :func:`tile_bytes` where possible
    (``grouped``: as there).

    Full-width row bands of equal height (the tallest that fits, checked on every real band, and at most
    :data:`MAX_TILE_PIXELS` output pixels); columns are split into equal parts only when a band of
    :data:`MIN_TILE_ROWS` rows would not fit. Tiles never get
    smaller than ``MIN_TILE_ROWS`` x ``MIN_TILE_COLS`` output pixels: a budget too small even for that (or
    for the filters alone) is exceeded rather than refused.

    ``phase_q``: the backend runs the phase path for this plan's r = p/q (:mod:`metasr.runtime.phase_parts`).
    Column parts and row bands then also start where the float32 drift of a long axis would take a call off it
    (:func:`~metasr.runtime.phase_parts.phase_cuts`), where that adds no calls or the cost model
    (:mod:`metasr.runtime.tile_cost`) puts the cut plan below the plain one; with column cuts, the parts are
    near-equal pieces of the cut segments, and bands hold at most :data:`PHASE_BAND_PIXELS` output pixels.

    ``compact_offsets``: as the calls will be fed (:func:`window_feeds`); their cost is counted so.
    ``phase_direct``: the backend runs phase calls on its direct path (:mod:`metasr.runtime.ort_direct`), whose
    fixed cost per call is lower than the body's: the cost model prices them so.
    """
    out_h, out_w = feeds["row_src"].size, feeds["col_src"].size

    def fit(parts: Callable[[int], list[slice]], cut: bool) -> tuple[list[slice], int, int]:
        n_cols = 1
        while True:
            col_slices = parts(n_cols)
            # every column part, not only the widest: an inner part reads one more context column than an edge one
            rows = min(
                _rows_that_fit(feeds, c, (in_h, in_w), channels, budget_bytes, grouped, compact_offsets)
                for c in col_slices
            )
            widest = max(c.stop - c.start for c in col_slices) if cut else out_w // n_cols
            narrower = math.ceil(widest / 2 if cut else out_w / (2 * n_cols))
            if rows >= min(out_h, MIN_TILE_ROWS) or narrower < MIN_TILE_COLS:
                return col_slices, rows, widest
            n_cols *= 2

    def tiles(col_slices: list[slice], rows: int, widest: int, row_cuts: list[int], cut: bool) -> list[UpscaleTile]:
        rows = min(rows, MAX_TILE_PIXELS // max(widest, 1))
        if cut:
            rows = min(rows, max(PHASE_BAND_PIXELS // out_w, 1))
        rows = max(rows, min(out_h, MIN_TILE_ROWS))
        row_slices = _split_at(_axis_slices(feeds, "row", math.ceil(out_h / rows)), row_cuts)
        return [_tile(feeds, r, c, in_h, in_w) for r in row_slices for c in col_slices]

    plain_fit = fit(lambda n: _axis_slices(feeds, "col", n), False)
    plain = tiles(*plain_fit, [], False)
    if phase_q is None:
        return plain
    col_cuts = phase_cuts(feeds["col_src"], feeds["col_idx"], phase_q)
    row_cuts = phase_cuts(feeds["row_src"], feeds["row_idx"], phase_q)
    if not (col_cuts or row_cuts):
        return plain
    if col_cuts:
        cut = tiles(*fit(lambda n: _cut_slices(out_h, out_w, col_cuts, n), True), row_cuts, True)
    else:  # row cuts alone: the plain columns and band height, the bands split at the cuts
        cut = tiles(*plain_fit, row_cuts, False)
    # more calls only where the cost model says they pay: the phase path's fixed cost per call (~1.2 ms on the
    # direct path at q = 10, ~3.4 in the body) against what the plain tiles pay on the grouped path (tile_cost.py)
    if len(cut) <= len(plain):
        return cut
    cut_s, plain_s = (
        _plan_seconds(feeds, tiles, phase_q, channels, compact_offsets, phase_direct) for tiles in (cut, plain)
    )
    return cut if cut_s < plain_s else plain


def _plan_seconds(
    feeds: dict[str, np.ndarray],
    tiles: list[UpscaleTile],
    q: int,
    channels: int,
    compact_offsets: bool,
    direct: bool = True,
) -> float:
    """The estimated CPU seconds of a plan's calls (:func:`~metasr.runtime.tile_cost.call_seconds`)."""
    cache: dict = {}
    memo: dict = {}
    total = 0.0
    for t in tiles:
        tf = window_feeds(feeds, t, compact_offsets=compact_offsets, cache=cache)
        pixels = (t.in_rows.stop - t.in_rows.start) * (t.in_cols.stop - t.in_cols.start)
        total += call_seconds(tf, pixels, q, channels, memo, direct)
    return total


def _cut_slices(out_h: int, out_w: int, cuts: list[int], split: int) -> list[slice]:
    """Column parts for an axis cut at ``cuts``: each segment in near-equal pieces no wider than the widest
    segment after the first, nor than a :data:`MAX_TILE_PIXELS` tile of a :data:`PHASE_BAND_PIXELS` band needs
    (so the first segment, before the drift, does not set the band height alone); ``split`` times as many where
    the budget asks for narrower tiles."""
    bounds = [0, *cuts, out_w]
    segments = list(itertools.pairwise(bounds))
    band_rows = max(min(out_h, PHASE_BAND_PIXELS // out_w), 1)
    widest = max(max(b - a for a, b in segments[1:]), MAX_TILE_PIXELS // band_rows)
    return [s for a, b in segments for s in _even_slices_at(a, b, math.ceil((b - a) / widest) * split)]


def _even_slices_at(start: int, stop: int, parts: int) -> list[slice]:
    return [slice(start + s.start, start + s.stop) for s in _even_slices(stop - start, parts) if s.stop > s.start]


def _split_at(slices: list[slice], cuts: list[int]) -> list[slice]:
    """``slices`` with every one that spans a cut split there."""
    out = []
    for s in slices:
        inner = [c for c in cuts if s.start < c < s.stop]
        out += [slice(a, b) for a, b in itertools.pairwise([s.start, *inner, s.stop])]
    return out


MIN_TILE_ROWS = 8
MIN_TILE_COLS = 64
# output pixels per call at most: the convolution path's bands would otherwise fill the budget with few, tall
# bands whose buffers ONNX Runtime's arena keeps; 1 Mpx bands cost no measurable speed (a call costs ~1 ms more)
MAX_TILE_PIXELS = 1 << 20
# output pixels per band when column parts are cut for the phase path (the band's float32 buffer: 48 MiB): its
# parts are narrow, and a part of fewer rows runs its convolutions on fewer outputs each. Measured (Pipeline tiles,
# 1000 x 1500 features, 512 MiB, 8 / 4 / 2 Mpx): x3.3 0.65 / 0.63 / 0.71 s, x3.4 0.52 / 0.51 / 0.53, x3.9 1.21 /
# 1.12 / 1.25, x1.1 0.27 / 0.24 / 0.25, x1.7 0.31 / 0.31 / 0.30
PHASE_BAND_PIXELS = 4 << 20


def _axis_slices(feeds: dict[str, np.ndarray], axis: str, parts: int) -> list[slice]:
    """``parts`` near-equal slices of one axis' outputs. With 2-position blocks (r = p/2) every slice starts at
    the first output of a position on the plan's block grid, so each tile's blocks are whole blocks of the plan
    (the same group, and for the convolution path the same sums as the untiled call)."""
    slices = _even_slices(feeds[f"{axis}_src"].size, parts)
    if feeds[f"{axis}_groups"].shape[2] == 1 or len(slices) == 1:
        return slices
    src = feeds[f"{axis}_src"]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]] & ((src - src[0]) % 2 == 0))  # block starts
    bounds = sorted({0, src.size, *(int(starts[min(np.searchsorted(starts, s.start), starts.size - 1)])
                                    for s in slices[1:])})  # fmt: skip
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _even_slices(n: int, parts: int) -> list[slice]:
    bounds = [j * n // parts for j in range(parts + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _band_bytes(feeds: dict[str, np.ndarray], tile: UpscaleTile, channels: int, grouped: bool, compact: bool) -> int:
    size = (tile.in_rows.stop - tile.in_rows.start, tile.in_cols.stop - tile.in_cols.start)
    return tile_bytes(window_feeds(feeds, tile, compact_offsets=compact), channels, *size, grouped=grouped)


def _rows_that_fit(
    feeds: dict[str, np.ndarray],
    cols: slice,
    in_size: tuple[int, int],
    channels: int,
    budget: float,
    grouped: bool,
    compact: bool,
) -> int:
    """The most output rows per band (at these columns) whose every band fits ``budget`` (0 if none).

    The cost of a band is close to affine in its rows: a first guess from two probe bands, then the height
    shrinks until every band of that height fits."""
    out_h, (in_h, in_w) = feeds["row_src"].size, in_size
    r1, r2 = min(out_h, 16), min(out_h, 64)
    c1 = _band_bytes(feeds, _tile(feeds, slice(0, r1), cols, in_h, in_w), channels, grouped, compact)
    if c1 > budget:
        return 0
    c2 = _band_bytes(feeds, _tile(feeds, slice(0, r2), cols, in_h, in_w), channels, grouped, compact)
    per_row = max((c2 - c1) / max(r2 - r1, 1), 1.0)
    rows = min(out_h, max(r1, int(r1 + (budget - c1) / per_row)))
    while rows >= 1:
        bands = [_tile(feeds, r, cols, in_h, in_w) for r in _axis_slices(feeds, "row", math.ceil(out_h / rows))]
        if all(_band_bytes(feeds, t, channels, grouped, compact) <= budget for t in bands):
            return rows
        rows = rows - max(1, rows // 20)
    return 0


def plan_profile_tiles(
    feeds: dict[str, np.ndarray], in_h: int, in_w: int, profile: UpscaleProfile
) -> list[UpscaleTile]:
    """Output tiles (row-major) whose feature windows and windowed plan feeds all lie inside ``profile`` (a
    TensorRT upscale engine's optimization profile). Equal tiles, as few as possible: rows or columns per
    tile shrink until every tile fits (a 1 x 1 output tile reads a window of at most 3 x 3)."""
    out_h, out_w = feeds["row_src"].size, feeds["col_src"].size
    max_rows, max_cols = profile.max_lr
    rows, cols = out_h, out_w
    while True:
        row_parts = _even_slices(out_h, math.ceil(out_h / rows))
        col_parts = _even_slices(out_w, math.ceil(out_w / cols))
        tiles = [_tile(feeds, r, c, in_h, in_w) for r in row_parts for c in col_parts]
        bad = _first_outside(feeds, tiles, profile)
        if bad is None:
            return tiles
        if rows == 1 and cols == 1:
            raise ProfileError("even a 1 x 1 output tile does not fit the upscale engine's profile")
        win_h, win_w = bad.in_rows.stop - bad.in_rows.start, bad.in_cols.stop - bad.in_cols.start
        if win_h > max_rows or (win_w <= max_cols and rows >= cols and rows > 1):
            rows = max(1, min(rows - 1, rows * max_rows // win_h))
        else:
            cols = max(1, min(cols - 1, cols * max_cols // win_w))


def _first_outside(
    feeds: dict[str, np.ndarray], tiles: list[UpscaleTile], profile: UpscaleProfile
) -> UpscaleTile | None:
    for t in tiles:
        window = (1, profile.channels, t.in_rows.stop - t.in_rows.start, t.in_cols.stop - t.in_cols.start)
        try:
            profile.check({"features": np.empty(window, np.float32), **window_feeds(feeds, t, compact_offsets=True)})
        except ProfileError:
            return t
    return None
