"""One memory bound for a whole `metasr upscale` run: what each buffer costs, and a plan that fits (numpy only).

The bound covers the process's peak resident memory. :func:`plan_memory` starts from what the process holds
already (``base``: the interpreter, the libraries, the ONNX Runtime sessions; measured, not assumed) and
counts every buffer an image adds, as if none were freed early:

* decoding: Pillow's image and the conversion (:data:`~metasr.runtime.image_io.DECODE_BYTES_PER_PIXEL`), then
  the decoded image kept for the run (uint8 RGB or uint16 grey, uint8 alpha: 3 to 4 bytes per input pixel);
* the writer: nothing for PNG (streamed), the whole integer image plus Pillow's copy for other formats
  (:func:`~metasr.runtime.image_write.held_bytes`);
* the features: computed stripe by stripe (:class:`~metasr.runtime.pipeline.Pipeline`'s stream), a buffer
  of ``C * 4`` bytes per input column for each row it keeps (a stripe's core rows and the window of the band
  being upscaled);
* one feature tile at a time: its area times the graph's recorded ``work_bytes_per_pixel`` (inputs, outputs
  and activations alive at once) plus its float input;
* the upscale stage: its largest tile (:func:`~metasr.runtime.tiling.tile_bytes`, planned under
  ``upscale_budget``), counted as held for the whole run (the upscale session keeps its memory arena, see
  :mod:`metasr.runtime.backends`), and the output bands in flight to the writer: up to three float bands,
  the alpha band's resize, the writer's integer rows;
* :data:`RUNTIME_OVERHEAD`: what ONNX Runtime allocates on its first runs beyond the tensors (thread pools,
  packed weights), measured.

When the whole plan does not fit, the feature tile shrinks (20% at a time) until the upscale tiles get at
least :data:`UPSCALE_FLOOR` (smaller upscale tiles mean many more graph calls: 11 MiB tiles made 35,200 of
them for 6000x4000 at x1.1, 400 at 512 MiB, against 16% more feature work for 409-pixel feature tiles than
512); only if no feature tile allows that do the upscale tiles shrink further (down to a few MiB). An image
whose smallest plan still exceeds the bound is refused before any work, with the number
(:class:`MemoryBudgetError`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from metasr.runtime.tiling import axis_tiles

__all__ = [
    "RUNTIME_OVERHEAD",
    "UPSCALE_FLOOR",
    "MemoryBudgetError",
    "MemoryPlan",
    "UpscaleCost",
    "plan_memory",
    "resident_bytes",
]

MIB = 1 << 20
# measured: after the first runs (32x32 input at x2, x3.3, x4) the process held 18-20 MiB more than with the
# sessions just opened: thread pools, packed weights, small buffers (the tensors are counted separately)
RUNTIME_OVERHEAD = 32 * MIB
MIN_UPSCALE_BUDGET = 4 * MIB
UPSCALE_FLOOR = 128 * MIB
_PENDING_BANDS = 3  # bands referenced while the writer thread catches up (two waiting, one being written)
_BAND_BYTES_PER_PIXEL = _PENDING_BANDS * 12 + 24 + 8  # float32 RGB bands, alpha resize (float64 x3), int rows


class MemoryBudgetError(ValueError):
    """An input whose smallest plan does not fit the memory bound."""


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``VmRSS``; 0 where /proc is not available)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class UpscaleCost:
    """The upscale stage under one tile budget: the largest tile's bytes, the tallest band and feature window."""

    tile_bytes: int
    band_rows: int
    window_rows: int


@dataclass(frozen=True)
class MemoryPlan:
    """How one image's run stays under ``budget`` bytes (every field in bytes except the tile sizes)."""

    budget: int
    base: int
    decode: int
    image: int
    writer: int
    feature_tile: int
    stripe: int
    feature_work: int
    upscale_budget: int
    upscale_tile: int
    bands: int

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"MemoryPlan.{name} must be a non-negative integer, got {value!r}")

    @property
    def peak(self) -> int:
        """The planned peak resident bytes of the process."""
        stage = self.feature_work + self.upscale_tile + self.bands  # the upscale arena stays while features run
        run = self.image + self.writer + self.stripe + stage + RUNTIME_OVERHEAD
        return self.base + max(self.decode, run)

    def describe(self) -> str:
        parts = [
            f"process {self.base / MIB:.0f}",
            f"decode {self.decode / MIB:.0f}",
            f"image {self.image / MIB:.0f}",
            f"writer {self.writer / MIB:.0f}",
            f"features {self.stripe / MIB:.0f}",
            f"feature tile {self.feature_tile} ({self.feature_work / MIB:.0f})",
            f"upscale tile {self.upscale_tile / MIB:.0f} + bands {self.bands / MIB:.0f}",
            f"runtime {RUNTIME_OVERHEAD / MIB:.0f}",
        ]
        return f"{self.peak / MIB:.0f} MiB planned of {self.budget / MIB:.0f} MiB: " + ", ".join(parts) + " (MiB)"


def _feature_tiles(max_tile: int, radius: int, fixed: bool) -> list[int]:
    """Feature tile sides to try, largest first: ``max_tile`` and shrinking by 20% while cores stay >= 8."""
    if fixed:
        return [max_tile]
    sides, t = [], max_tile
    while t - 2 * radius >= 8 or not sides:
        sides.append(t)
        t = int(t * 0.8)
    return sides


def plan_memory(
    budget: int,
    *,
    base: int,
    size: tuple[int, int],
    out_width: int,
    image_bytes: int,
    decode_bytes: int,
    writer_bytes: int,
    channels: int,
    radius: int,
    work_bytes_per_pixel: float,
    max_feature_tile: tuple[int, int],
    fixed_tile: bool,
    upscale_cost: Callable[[int], UpscaleCost],
    max_upscale_budget: int,
    name: str = "",
) -> MemoryPlan:
    """The plan for one image of ``size`` (h, w) whose output is ``out_width`` wide (see the module docstring).

    ``upscale_cost(budget)`` plans the upscale tiles under a budget and reports them (it can take seconds on
    large images: it is called for few budgets, and never when the rest alone exceeds the bound);
    ``max_feature_tile`` (h, w) is the largest feature tile (a static graph's exact size with ``fixed_tile``).
    Raises :class:`MemoryBudgetError` when even the smallest plan exceeds ``budget``.
    """
    h, w = size
    fixed = dict(budget=budget, base=base, decode=decode_bytes, image=image_bytes, writer=writer_bytes)
    costs: dict[int, UpscaleCost] = {}
    best: MemoryPlan | None = None
    sides = _feature_tiles(min(max_feature_tile), radius, fixed_tile)
    for floor_budget in (min(UPSCALE_FLOOR, max_upscale_budget), MIN_UPSCALE_BUDGET):  # see the module docstring
        for side in sides:
            tile_h, tile_w = max_feature_tile if fixed_tile else (side, side)
            rows, cols = axis_tiles(h, tile_h, radius, fixed_tile), axis_tiles(w, tile_w, radius, fixed_tile)
            core = max(c1 - c0 for _, _, c0, c1 in rows)
            region = max(b - a for a, b, _, _ in rows) * max(b - a for a, b, _, _ in cols)
            work = int(region * (work_bytes_per_pixel + 24))  # + the tile's float input and its NCHW copy
            floor = MemoryPlan(**fixed, feature_tile=side, stripe=4 * channels * w * (core + 2), feature_work=work,
                               upscale_budget=0, upscale_tile=0, bands=0)  # fmt: skip
            if best is None or floor.peak < best.peak:
                best = floor
            left = budget - floor.peak
            upscale = min(max_upscale_budget, left // 2)  # the rest: bands in flight, window rows
            while upscale >= floor_budget:
                if upscale not in costs:
                    costs[upscale] = upscale_cost(upscale)
                cost = costs[upscale]
                plan = MemoryPlan(
                    **fixed, feature_tile=side, stripe=4 * channels * w * (core + cost.window_rows + 2),
                    feature_work=work, upscale_budget=upscale, upscale_tile=cost.tile_bytes,
                    bands=_BAND_BYTES_PER_PIXEL * out_width * cost.band_rows,
                )  # fmt: skip
                if plan.peak <= budget:
                    return plan
                if plan.peak < best.peak or best.upscale_budget == 0:
                    best = plan
                upscale //= 2
    assert best is not None
    raise MemoryBudgetError(
        f"{name}: needs at least {math.ceil(best.peak / MIB)} MiB to upscale ({best.describe()}); "
        f"the bound is {budget // MIB} MiB: raise --memory-mb or use a smaller input"
        + (" or write PNG (streamed)" if writer_bytes else "")
    )
