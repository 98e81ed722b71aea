"""The torch-free inference pipeline: feature graph once, upscale graph per scale, both tiled.

    with Pipeline("artifacts/small") as p:
        feats = p.encode(img)                 # cache this: continuous zoom costs only p.upscale
        for r in (1.5, 2.0, 3.3):
            sr = p.upscale(feats, r)          # float32 (1, 3, int(r*h), int(r*w)), unclamped
        out = p(img, 2.5)                     # uint8 (H, W, 3)

Needs numpy and onnxruntime only. The upscale stage tiles its output rows so the graph's working memory
stays under ``upscale_budget_mb``; the result is bit-identical to the untiled one (the graph computes each
output row independently). The feature stage tiles inputs larger than ``feature_tile`` pixels per side with
an overlap of the backbone's receptive radius on each side, so every kept feature has its whole receptive
field inside its tile (equal to the untiled result up to float rounding; measured in the tests).
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import numpy as np
from metasr.runtime.backends import BACKEND_TARGETS, Backend, open_backend
from metasr.runtime.feeds import plan_feeds, tile_feeds
from metasr.runtime.manifest import Manifest
from metasr.runtime.projection import ProjectionPlan, project

from metasr.metrics import quantize

__all__ = ["DEFAULT_FEATURE_TILE", "DEFAULT_UPSCALE_BUDGET_MB", "Pipeline", "axis_tiles"]

DEFAULT_UPSCALE_BUDGET_MB = 512
DEFAULT_FEATURE_TILE = 512
# working memory of the MetaUpscale body relative to its buffers as counted in rows_per_tile (measured with
# benchmarks/ort_upscale_memory.py: 29 MiB for a 256x256 x4 tile at C = 64, where the count gives 46 MiB)
_BODY_OVERHEAD = 1.0


def axis_tiles(n: int, size: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Split an axis of ``n`` pixels into regions of ``size`` (the last one shifted inward) whose kept cores
    tile the axis and stay ``margin`` pixels away from every region edge that is not an image edge.

    Returns ``(region_start, region_end, core_start, core_end)`` tuples. Needs ``size > 2 * margin``.
    """
    if n <= size:
        return [(0, n, 0, n)]
    step = size - 2 * margin
    if step < 1:
        raise ValueError(f"tile size {size} must exceed twice the overlap {margin}")
    starts = []
    for k in range(math.ceil((n - size) / step) + 1):
        starts.append(min(k * step, n - size))
        if starts[-1] == n - size:
            break
    bounds = [0] + [(a + b + size) // 2 for a, b in itertools.pairwise(starts)] + [n]
    return [(s, s + size, bounds[k], bounds[k + 1]) for k, s in enumerate(starts)]


class Pipeline:
    """Stitches an artifact directory's feature and upscale graphs (see the module docstring)."""

    def __init__(
        self,
        artifacts: str | Path,
        backend: str = "ort",
        *,
        threads: int = 0,
        upscale_budget_mb: float = DEFAULT_UPSCALE_BUDGET_MB,
        feature_tile: int = DEFAULT_FEATURE_TILE,
        verify: bool = True,
        precision: str = "fp32",
    ) -> None:
        self.directory = Path(artifacts)
        self.manifest = Manifest.read(self.directory, verify=verify)
        # precision: "fp32" | "fp16" | "int8", each stage's graph in the form made for the backend (int8: the
        # feature graph's Q/DQ form for the backend, the upscale stage in the float graph it names)
        target = BACKEND_TARGETS.get(backend, "any")
        self.precision = precision
        self.feature_spec = self.manifest.graph("feature", "onnx", precision, target)
        self.upscale_spec = self.manifest.graph("upscale", "onnx", precision, target)
        self.channels = int(self.manifest.model["features"])
        self.receptive_radius = int(self.feature_spec.extra.get("receptive_radius", 0))
        static = self.feature_spec.extra.get("lr_size")
        self.static_size: tuple[int, int] | None = tuple(static) if static else None
        if upscale_budget_mb <= 0:
            raise ValueError(f"upscale_budget_mb must be positive, got {upscale_budget_mb}")
        self.upscale_budget_mb = upscale_budget_mb
        self.feature_tile = feature_tile
        self._feature: Backend = open_backend(backend, self.directory, self.feature_spec, threads)
        self._upscale: Backend = open_backend(backend, self.directory, self.upscale_spec, threads)
        self._plan = functools.lru_cache(maxsize=64)(self._make_plan)

    # -- planning -----------------------------------------------------------------------------------------
    @property
    def max_scale(self) -> float:
        return self.manifest.scale_max

    def _make_plan(self, h: int, w: int, scale: float) -> tuple[ProjectionPlan, dict[str, np.ndarray]]:
        plan = project(h, w, scale, max_scale=self.manifest.scale_max, merge_tol=self.manifest.merge_tol)
        return plan, plan_feeds(plan)

    def plan(self, h: int, w: int, scale: float) -> ProjectionPlan:
        """The (cached) projection plan for an h x w input at ``scale``."""
        return self._plan(int(h), int(w), float(scale))[0]

    def rows_per_tile(self, plan: ProjectionPlan) -> int:
        """Output rows per upscale tile so the body's working memory stays under the budget."""
        feeds = self._plan(plan.in_h, plan.in_w, plan.scale)[1]
        g, x = feeds["col_groups"].shape
        k = feeds["col_group_offsets"].shape[1]
        c, out_w = self.channels, plan.out_size[1]
        # per output row: 3 gathered strips (G*X, 3C), its filters (9C, G*K*3), 3 partial sums (G*X, K*3), output
        per_row = 4 * _BODY_OVERHEAD * (3 * g * x * 3 * c + 9 * c * g * k * 3 + 3 * g * x * k * 3 + out_w * 3)
        return max(1, int(self.upscale_budget_mb * 2**20 // per_row))

    # -- stages -------------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> np.ndarray:
        """RGB (h, w, 3) uint8 or float on the 0..255 scale -> features float32 (1, C, h, w)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (h, w, 3), got shape {image.shape}")
        x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)[None]  # (1, 3, h, w)
        h, w = x.shape[2:]
        size_h, size_w = self.static_size or (self.feature_tile, self.feature_tile)
        if self.static_size and (h < size_h or w < size_w):
            raise ValueError(f"the static feature graph takes {size_h}x{size_w} tiles; image is {h}x{w}")
        if h <= size_h and w <= size_w and (not self.static_size or (h, w) == self.static_size):
            return self._feature.infer({"lr": x})["features"]
        out = np.empty((1, self.channels, h, w), dtype=np.float32)
        r = self.receptive_radius
        for ys, ye, ya, yb in axis_tiles(h, size_h, r):
            for xs, xe, xa, xb in axis_tiles(w, size_w, r):
                tile = self._feature.infer({"lr": np.ascontiguousarray(x[:, :, ys:ye, xs:xe])})["features"]
                out[:, :, ya:yb, xa:xb] = tile[:, :, ya - ys : yb - ys, xa - xs : xb - xs]
        return out

    def upscale(self, features: np.ndarray, scale: float) -> np.ndarray:
        """features (1, C, h, w) -> SR float32 (1, 3, int(r*h), int(r*w)), unclamped, 0..255 scale."""
        _, c, h, w = features.shape
        if c != self.channels:
            raise ValueError(f"features have {c} channels, the artifact's model has {self.channels}")
        plan, feeds = self._plan(int(h), int(w), float(scale))
        feeds = {"features": features, **feeds}
        out_h, out_w = plan.out_size
        step = self.rows_per_tile(plan)
        if step >= out_h:
            return self._upscale.infer(feeds)["sr"]
        out = np.empty((features.shape[0], 3, out_h, out_w), dtype=np.float32)
        for i0 in range(0, out_h, step):
            rows = slice(i0, min(i0 + step, out_h))
            out[:, :, rows] = self._upscale.infer(tile_feeds(feeds, rows, slice(None)))["sr"]
        return out

    def __call__(self, image: np.ndarray, scale: float) -> np.ndarray:
        """RGB (h, w, 3) -> uint8 RGB (int(r*h), int(r*w), 3): clamped and rounded half-to-even."""
        return quantize(self.upscale(self.encode(image), scale)[0].transpose(1, 2, 0))  # (H, W, 3)

    def close(self) -> None:
        self._feature.close()
        self._upscale.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
