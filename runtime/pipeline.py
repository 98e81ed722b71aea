"""The torch-free inference pipeline: feature graph once, upscale graph per scale, both tiled.

    with Pipeline("artifacts/small") as p:
        feats = p.encode(img)                 # cache this: continuous zoom costs only p.upscale
        for r in (1.5, 2.0, 3.3):
            sr = p.upscale(feats, r)          # float32 (1, 3, int(r*h), int(r*w)), unclamped
        out = p(img, 2.5)                     # uint8 (H, W, 3)

Needs numpy and onnxruntime only. The graphs are read once, checked against the manifest's sha256 and the
sessions created from those very bytes (a concurrent re-export can never mix two exports). The upscale
stage runs in output tiles that each read only the feature window they need, sized so the graph's working
memory stays under ``upscale_budget_mb`` (:mod:`metasr.runtime.tiling`); the result is bit-identical to the
untiled one. The feature stage tiles inputs larger than ``feature_tile`` pixels per side into tiles of equal
cores overlapping by the backbone's receptive radius (equal to the untiled result; measured in the tests).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from metasr.runtime.backends import (
    BACKEND_FORMATS,
    BACKEND_TARGETS,
    Backend,
    BackendError,
    backend_available,
    open_backend,
)
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.manifest import PRECISIONS, GraphSpec, Manifest, read_consistent
from metasr.runtime.projection import ProjectionPlan, project
from metasr.runtime.tiling import UpscaleTile, axis_tiles, plan_upscale_tiles, window_feeds

from metasr.metrics import quantize

__all__ = ["DEFAULT_FEATURE_TILE", "DEFAULT_UPSCALE_BUDGET_MB", "Pipeline", "check_image"]

DEFAULT_UPSCALE_BUDGET_MB = 512
DEFAULT_FEATURE_TILE = 512


def check_image(image: object) -> np.ndarray:
    """Validate an RGB image for the pipeline: ndarray (h, w, 3), h, w >= 1, dtype uint8 or a float dtype
    with finite values on the 0..255 scale. Returns it unchanged; raises ``ValueError`` otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array (h, w, 3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an RGB image of shape (h, w, 3) with h, w >= 1, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind != "f":
        raise ValueError(f"expected dtype uint8 or float on the 0..255 scale, got {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("image has non-finite values (nan or inf)")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"float image values must lie on the 0..255 scale, got [{lo:g}, {hi:g}]")
    return image


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
        precision: str = "fp32",
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: ONNX Runtime's default), got {threads!r}")
        budget = float(upscale_budget_mb)
        if not math.isfinite(budget) or budget <= 0:
            raise ValueError(f"upscale_budget_mb must be a positive number, got {upscale_budget_mb}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        reason = backend_available(backend)
        if reason:
            raise BackendError(reason)
        self.directory = Path(artifacts)
        self.backend = backend
        self.precision = precision
        self.manifest, (feature_bytes, upscale_bytes) = read_consistent(self.directory, self._select)
        self.feature_spec, self.upscale_spec = self._select(self.manifest)
        self.channels = int(self.manifest.model["features"])
        self.receptive_radius = int(self.feature_spec.extra.get("receptive_radius", 0))
        static = self.feature_spec.extra.get("lr_size")
        self.static_size: tuple[int, int] | None = (int(static[0]), int(static[1])) if static else None
        if self.static_size is None and (isinstance(feature_tile, bool) or not isinstance(feature_tile, int)):
            raise ValueError(f"feature_tile must be an integer, got {feature_tile!r}")
        if self.static_size is None and feature_tile <= 2 * self.receptive_radius:
            raise ValueError(
                f"feature_tile must exceed twice the receptive radius ({self.receptive_radius}), got {feature_tile}"
            )
        self.upscale_budget_mb = budget
        self.feature_tile = feature_tile
        self._feature: Backend = open_backend(backend, self.feature_spec, feature_bytes, threads)
        try:
            self._upscale: Backend = open_backend(backend, self.upscale_spec, upscale_bytes, threads)
        except BaseException:
            self._feature.close()
            raise
        self._plan = functools.lru_cache(maxsize=64)(self._make_plan)

    def _select(self, manifest: Manifest) -> tuple[GraphSpec, GraphSpec]:
        """The feature and upscale graphs this pipeline runs: the backend's file format, the pipeline's
        precision, and the form made for the backend's target (int8 on ``ort``: the CPU Q/DQ form; the upscale
        stage then runs the float graph the INT8 feature graph names, see :meth:`Manifest.graph`)."""
        fmt = BACKEND_FORMATS.get(self.backend, "onnx")
        target = BACKEND_TARGETS.get(self.backend, "any")
        return tuple(manifest.graph(kind, fmt, self.precision, target) for kind in ("feature", "upscale"))

    # -- planning -----------------------------------------------------------------------------------------
    @property
    def max_scale(self) -> float:
        return self.manifest.scale_max

    def _make_plan(
        self, h: int, w: int, scale: float
    ) -> tuple[ProjectionPlan, dict[str, np.ndarray], list[UpscaleTile]]:
        plan = project(h, w, scale, max_scale=self.manifest.scale_max, merge_tol=self.manifest.merge_tol)
        feeds = plan_feeds(plan)
        tiles = plan_upscale_tiles(feeds, h, w, self.channels, self.upscale_budget_mb * 2**20)
        return plan, feeds, tiles

    def plan(self, h: int, w: int, scale: float) -> ProjectionPlan:
        """The (cached) projection plan for an h x w input at ``scale``."""
        return self._plan(int(h), int(w), float(scale))[0]

    def tiles(self, h: int, w: int, scale: float) -> list[UpscaleTile]:
        """The upscale stage's output tiles (row-major) for an h x w input at ``scale``."""
        return self._plan(int(h), int(w), float(scale))[2]

    # -- stages -------------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> np.ndarray:
        """RGB (h, w, 3) uint8 or float on the 0..255 scale -> features float32 (1, C, h, w)."""
        check_image(image)
        x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)[None]  # (1, 3, h, w)
        h, w = x.shape[2:]
        size_h, size_w = self.static_size or (self.feature_tile, self.feature_tile)
        fixed = self.static_size is not None
        if fixed and (h < size_h or w < size_w):
            raise ValueError(f"the static feature graph takes {size_h}x{size_w} tiles; image is {h}x{w}")
        if (h, w) == (size_h, size_w) or (not fixed and h <= size_h and w <= size_w):
            return self._feature.infer({"lr": x})["features"]
        out = np.empty((1, self.channels, h, w), dtype=np.float32)
        r = self.receptive_radius
        for ys, ye, ya, yb in axis_tiles(h, size_h, r, fixed):
            for xs, xe, xa, xb in axis_tiles(w, size_w, r, fixed):
                tile = self._feature.infer({"lr": np.ascontiguousarray(x[:, :, ys:ye, xs:xe])})["features"]
                out[:, :, ya:yb, xa:xb] = tile[:, :, ya - ys : yb - ys, xa - xs : xb - xs]
        return out

    def _check_features(self, features: object) -> tuple[int, int]:
        if not isinstance(features, np.ndarray) or features.dtype != np.float32 or features.ndim != 4:
            got = getattr(features, "dtype", type(features).__name__), getattr(features, "shape", None)
            raise ValueError(f"features must be a float32 array (N, C, h, w), got {got[0]} of shape {got[1]}")
        n, c, h, w = features.shape
        if c != self.channels:
            raise ValueError(f"features have {c} channels, the artifact's model has {self.channels}")
        if min(n, h, w) < 1:
            raise ValueError(f"features must have N, h, w >= 1, got shape {features.shape}")
        return h, w

    def upscale_bands(self, features: np.ndarray, scale: float) -> Iterator[tuple[int, np.ndarray]]:
        """Yield the SR output in full-width row bands, top to bottom: ``(first_row, band)`` with ``band``
        float32 (N, 3, rows, int(r*w)), unclamped, on the 0..255 scale. Memory stays within the budget."""
        h, w = self._check_features(features)
        _, feeds, tiles = self._plan(h, w, float(scale))
        out_w = feeds["col_src"].size
        band: np.ndarray | None = None
        for tile in tiles:
            window = np.ascontiguousarray(features[:, :, tile.in_rows, tile.in_cols])
            sr = self._upscale.infer({"features": window, **window_feeds(feeds, tile)})["sr"]
            if tile.cols.start == 0 and tile.cols.stop == out_w:
                yield tile.rows.start, sr
                continue
            if tile.cols.start == 0:
                band = np.empty((*sr.shape[:2], sr.shape[2], out_w), dtype=np.float32)
            assert band is not None
            band[..., tile.cols] = sr
            if tile.cols.stop == out_w:
                yield tile.rows.start, band

    def upscale(self, features: np.ndarray, scale: float) -> np.ndarray:
        """features float32 (N, C, h, w) -> SR float32 (N, 3, int(r*h), int(r*w)), unclamped, 0..255 scale."""
        h, w = self._check_features(features)
        plan = self._plan(h, w, float(scale))[0]
        out = np.empty((features.shape[0], 3, *plan.out_size), dtype=np.float32)
        for row, band in self.upscale_bands(features, scale):
            out[:, :, row : row + band.shape[2]] = band
        return out

    def __call__(self, image: np.ndarray, scale: float) -> np.ndarray:
        """RGB (h, w, 3) -> uint8 RGB (int(r*h), int(r*w), 3): clamped and rounded half-to-even."""
        features = self.encode(image)
        plan = self._plan(*features.shape[2:], float(scale))[0]
        out = np.empty((*plan.out_size, 3), dtype=np.uint8)
        for row, band in self.upscale_bands(features, scale):
            out[row : row + band.shape[2]] = quantize(band[0].transpose(1, 2, 0))  # (rows, W, 3)
        return out

    def close(self) -> None:
        self._feature.close()
        self._upscale.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
