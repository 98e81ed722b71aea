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

``graph="portable"`` runs the portable graphs (docs/portable.md) instead: the upscale stage is
``upscale.portable.onnx`` (the plan computed in the graph, one call for the whole output: no tiling, its memory
counted as one tile) and ``__call__`` on a uint8 image is one call of ``metasr.portable.onnx``. ``portable_form``:
"scale" (those graphs: a float64 scale in) or "inv" (``*.portable.inv.onnx``: the output size and float32(1 / scale)
in, no float64); default: the backend's (:data:`~metasr.runtime.backends.BACKEND_PORTABLE_FORMS`: "inv" on
OpenVINO, which computes float64 in float32; "scale" elsewhere).

Bounded memory for any input: :meth:`Pipeline.stream` never holds the whole feature map. It walks the
upscale tiles top to bottom and computes the features stripe by stripe as the tiles need them
(:class:`~metasr.runtime.stripes.FeatureRows`), with the tile sizes a
:class:`~metasr.runtime.memory.MemoryPlan` chose; its bands equal :meth:`upscale_bands` on :meth:`encode`'s
features with the same tile sizes, bit for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from metasr.runtime.backends import (
    BACKEND_FORMATS,
    BACKEND_PORTABLE_FORMS,
    BACKEND_TARGETS,
    GROUPED_ONLY_BACKENDS,
    Backend,
    BackendError,
    backend_available,
    open_backend,
)
from metasr.runtime.blocked_features import freeze
from metasr.runtime.engines import EngineInfo
from metasr.runtime.feeds import portable_targets
from metasr.runtime.manifest import PRECISIONS, GraphSpec, Manifest, ManifestError, read_consistent
from metasr.runtime.memory import UpscaleCost
from metasr.runtime.projection import ProjectionPlan
from metasr.runtime.stripes import FeatureRows
from metasr.runtime.tiling import UpscaleTile, axis_tiles, window_feeds
from metasr.runtime.upscale_plan import StagePlan, StageRunner, make_plan, plan_cost

from metasr.metrics import quantize

__all__ = ["DEFAULT_FEATURE_TILE", "DEFAULT_UPSCALE_BUDGET_MB", "GRAPHS", "Pipeline", "check_image"]

GRAPHS = ("two", "portable")  # the two-graph runtime (plan computed here, tiled) or the portable graphs

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
        graph: str = "two",
        portable_form: str | None = None,
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: ONNX Runtime's default), got {threads!r}")
        budget = float(upscale_budget_mb)
        if not math.isfinite(budget) or budget <= 0:
            raise ValueError(f"upscale_budget_mb must be a positive number, got {upscale_budget_mb}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if graph not in GRAPHS:
            raise ValueError(f"graph must be one of {list(GRAPHS)}, got {graph!r}")
        if graph == "portable" and BACKEND_FORMATS.get(backend, "onnx") != "onnx":
            raise BackendError(f"the portable graphs are ONNX graphs; the {backend} backend runs engines")
        form = BACKEND_PORTABLE_FORMS.get(backend, "scale") if portable_form is None else portable_form
        if form not in ("scale", "inv"):
            raise ValueError(f"portable_form must be 'scale' or 'inv', got {portable_form!r}")
        self.graph, self.portable_form = graph, form
        reason = backend_available(backend)
        if reason:
            raise BackendError(reason)
        self.directory = Path(artifacts)
        self.backend = backend
        self._grouped_only = backend in GROUPED_ONLY_BACKENDS  # tiles sized for the path the backend runs
        self.precision = precision
        self.manifest, blobs = read_consistent(self.directory, self._select)
        *feature_specs, self.upscale_spec = self._select(self.manifest)
        *feature_bytes, upscale_bytes = blobs
        portable: tuple[GraphSpec, bytes] | None = None
        if graph == "portable":  # the image-in / image-out graph comes last
            (*feature_specs, self.upscale_spec), portable = feature_specs, (self.upscale_spec, upscale_bytes)
            *feature_bytes, upscale_bytes = feature_bytes
        self.feature_spec = feature_specs[0]
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
        # one feature graph (ONNX), or one static engine per LR size (TensorRT: an image takes the largest that fits)
        self._features: list[tuple[GraphSpec, Backend]] = []
        try:
            for spec, blob in zip(feature_specs, feature_bytes, strict=True):
                self._features.append((spec, open_backend(backend, spec, blob, threads)))
            self._feature: Backend = self._features[0][1]
            self._upscale: Backend = open_backend(backend, self.upscale_spec, upscale_bytes, threads)
            self._portable: Backend | None = None
            if portable is not None:
                self._portable = open_backend(backend, portable[0], portable[1], threads)
        except BaseException:
            for _, b in self._features:
                b.close()
            if hasattr(self, "_upscale"):
                self._upscale.close()
            raise
        # a TensorRT upscale engine takes LR regions inside its optimization profile: tiles are cut to fit it
        self.profile = EngineInfo.from_extra("upscale", self.upscale_spec.extra).profile if backend == "trt" else None
        self._plan = functools.lru_cache(maxsize=64)(self._make_plan)

    def _select(self, manifest: Manifest) -> list[GraphSpec]:
        """The graphs this pipeline runs, feature graph(s) first, then the upscale graph: the backend's file
        format, the precision asked for, the form made for the backend (int8: the feature graph's Q/DQ form
        for the backend, the upscale stage in the float graph it names). TensorRT: every static feature
        engine of that precision, largest first."""
        fmt = BACKEND_FORMATS.get(self.backend, "onnx")
        target = BACKEND_TARGETS.get(self.backend, "any")
        if self.graph == "portable":
            sfx = "-inv" if self.portable_form == "inv" else ""
            kinds = ("feature", f"upscale-portable{sfx}", f"portable{sfx}")
            return [manifest.graph(kind, fmt, self.precision, target) for kind in kinds]
        upscale = manifest.graph("upscale", fmt, self.precision, target)
        if fmt != "tensorrt":
            return [manifest.graph("feature", fmt, self.precision, target), upscale]
        engines = [g for g in manifest.graphs if (g.kind, g.format, g.precision) == ("feature", fmt, self.precision)]
        if not engines:
            raise ManifestError(f"the artifacts have no {self.precision} feature engine (run metasr build-engine)")
        return [*sorted(engines, key=lambda g: -int(g.extra["lr_size"][0]) * int(g.extra["lr_size"][1])), upscale]

    @property
    def upscale_body(self) -> str:
        """How the backend runs the ``MetaUpscale`` body, one line (the ort backend on the CPU provider: on ONNX
        Runtime's NCHWc kernels or not, and why; ``metasr.runtime.ort_cpu``)."""
        backend = self._portable if self.graph == "portable" else self._upscale
        return getattr(backend, "body", "as exported")

    # -- planning -----------------------------------------------------------------------------------------
    @property
    def max_scale(self) -> float:
        return self.manifest.scale_max

    @property
    def min_scale(self) -> float:
        """Scales must exceed this (the manifest's ``scale_min_exclusive``)."""
        return self.manifest.scale_min_exclusive

    @property
    def work_bytes_per_pixel(self) -> float:
        """The feature graph's working memory per input pixel (recorded at export; engines: input + output)."""
        return float(self.feature_spec.extra.get("work_bytes_per_pixel", 12 + 4 * self.channels))

    def _budget(self, budget_bytes: float | None) -> float:
        return self.upscale_budget_mb * 2**20 if budget_bytes is None else float(budget_bytes)

    def _make_plan(self, h: int, w: int, scale: float, budget: float) -> StagePlan:
        """The plan, its feeds, its tiles and whether their offsets are compacted (``runtime/upscale_plan.py``)."""
        m = self.manifest
        runner = StageRunner(
            portable=self.graph == "portable",
            profile=self.profile,
            grouped_only=self._grouped_only,
            phase_periods=getattr(self._upscale, "phase_periods", ()),
            caches_table=getattr(self._upscale, "filters", None) is not None,
            phase_direct=getattr(getattr(self._upscale, "direct", None), "phase", False),  # runtime/ort_direct.py
        )
        limits = (m.scale_max, m.merge_tol, self.min_scale)
        return make_plan(h, w, scale, budget, self.channels, limits=limits, runner=runner)

    def plan(self, h: int, w: int, scale: float) -> ProjectionPlan:
        """The (cached) projection plan for an h x w input at ``scale``."""
        return self._plan(int(h), int(w), float(scale), self._budget(None))[0]

    def tiles(self, h: int, w: int, scale: float, budget_bytes: float | None = None) -> list[UpscaleTile]:
        """The upscale stage's output tiles (row-major) for an h x w input at ``scale`` under ``budget_bytes``
        (default: ``upscale_budget_mb``)."""
        return self._plan(int(h), int(w), float(scale), self._budget(budget_bytes))[2]

    def upscale_cost(self, h: int, w: int, scale: float, budget_bytes: float | None = None) -> UpscaleCost:
        """The upscale tiles under ``budget_bytes``: the largest one's :func:`tile_bytes`, the tallest band and
        feature window (what :func:`~metasr.runtime.memory.plan_memory` needs)."""
        budget = self._budget(budget_bytes)
        return plan_cost(self._plan(int(h), int(w), float(scale), budget), self.channels, budget, self._grouped_only)

    # -- stages -------------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> np.ndarray:
        """RGB (h, w, 3) uint8 or float on the 0..255 scale -> features float32 (1, C, h, w), read-only: a zoom's
        calls on them may share one copy in the upscale stage's own layout
        (:mod:`~metasr.runtime.blocked_features`)."""
        return freeze(self._encode(image))  # (the rows' buffer: no one else holds it)

    def _encode(self, image: np.ndarray) -> np.ndarray:
        """:meth:`encode`'s features, writable (one upscale call on them gains nothing from freezing them)."""
        check_image(image)
        h, w = image.shape[:2]

        def region(rows: slice, cols: slice) -> np.ndarray:
            return np.asarray(image[rows, cols], dtype=np.float32)

        rows = self._feature_rows(region, h, w, None, capacity=h)
        return rows.window(slice(0, h), slice(0, w))

    def _feature_rows(
        self, region: Callable[[slice, slice], np.ndarray], h: int, w: int, tile: int | None, capacity: int
    ) -> FeatureRows:
        """Features of an h x w image whose float RGB pixels ``region(rows, cols)`` returns (n, m, 3), in
        feature tiles of side ``tile`` (default ``feature_tile``; a static graph's own size)."""
        feature, row_tiles, col_tiles = self._feature_tiles(h, w, tile)

        def infer(rows: slice, cols: slice) -> np.ndarray:
            x = np.ascontiguousarray(region(rows, cols).transpose(2, 0, 1))[None]  # (1, 3, n, m)
            return feature.infer({"lr": x})["features"]

        return FeatureRows(infer, h, w, self.channels, row_tiles, col_tiles, capacity)

    def _feature_tiles(self, h: int, w: int, tile: int | None) -> tuple[Backend, list, list]:
        """The feature graph for an h x w image and its row and column tiles (:func:`axis_tiles`)."""
        feature, static = self._feature_for(h, w)
        side = self.feature_tile if tile is None else tile
        if static is None and side <= 2 * self.receptive_radius:
            raise ValueError(f"feature tile {side} must exceed twice the receptive radius ({self.receptive_radius})")
        size_h, size_w = static or (side, side)
        fixed = static is not None
        r = self.receptive_radius
        return feature, axis_tiles(h, size_h, r, fixed), axis_tiles(w, size_w, r, fixed)

    def _feature_for(self, h: int, w: int) -> tuple[Backend, tuple[int, int] | None]:
        """The feature graph for an h x w image and its static size (None: dynamic). Static graphs take tiles
        of exactly their size: the largest one the image covers."""
        if self.static_size is None:
            return self._feature, None
        for spec, backend in self._features:
            size = (int(spec.extra["lr_size"][0]), int(spec.extra["lr_size"][1]))
            if h >= size[0] and w >= size[1]:
                return backend, size
        sizes = ", ".join("x".join(map(str, s.extra["lr_size"])) for s, _ in self._features)
        raise ValueError(f"the static feature graph takes tiles of {sizes}; the image is {h}x{w} (smaller)")

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

        def window(rows: slice, cols: slice) -> np.ndarray:
            return np.ascontiguousarray(features[:, :, rows, cols])

        yield from self._bands(window, h, w, float(scale), self._budget(None))

    def stream(
        self,
        region: Callable[[slice, slice], np.ndarray],
        size: tuple[int, int],
        scale: float,
        *,
        feature_tile: int | None = None,
        upscale_budget_bytes: float | None = None,
        feature_seconds: list[float] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The bands of :meth:`upscale_bands` for an image of ``size`` (h, w) whose float RGB pixels (0..255)
        ``region(rows, cols)`` returns as (n, m, 3), without ever holding its whole feature map: the features
        are computed stripe by stripe as the bands need them (see the module docstring). The time spent on
        features is appended to ``feature_seconds`` once the bands are done."""
        h, w = size
        budget = self._budget(upscale_budget_bytes)
        tiles = self._plan(h, w, float(scale), budget)[2]
        window_rows = max(t.in_rows.stop - t.in_rows.start for t in tiles)
        core = max(c1 - c0 for _, _, c0, c1 in self._feature_tiles(h, w, feature_tile)[1])
        rows = self._feature_rows(region, h, w, feature_tile, capacity=core + window_rows + 2)
        yield from self._bands(rows.window, h, w, float(scale), budget)
        if feature_seconds is not None:
            feature_seconds.append(rows.seconds)

    def _bands(
        self, window: Callable[[slice, slice], np.ndarray], h: int, w: int, scale: float, budget: float
    ) -> Iterator[tuple[int, np.ndarray]]:
        _, feeds, tiles, compact = self._plan(h, w, scale, budget)
        if self.graph == "portable":
            target = portable_targets(self.portable_form, h, w, scale)
            yield 0, self._upscale.infer({"features": window(slice(0, h), slice(0, w)), **target})["sr"]
            return
        out_w = feeds["col_src"].size
        band: np.ndarray | None = None
        cache: dict = {}  # the column parts repeat in every band: their feeds computed once
        for tile in tiles:
            features = window(tile.in_rows, tile.in_cols)
            plan_inputs = window_feeds(feeds, tile, compact_offsets=compact, cache=cache)
            sr = self._upscale.infer({"features": features, **plan_inputs})["sr"]
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
        plan = self.plan(h, w, scale)
        out: np.ndarray | None = None
        for row, band in self.upscale_bands(features, scale):
            if out is None and band.shape[2] == plan.out_size[0]:
                return band  # one band: the graph's output is the result (no copy)
            if out is None:
                out = np.empty((features.shape[0], 3, *plan.out_size), dtype=np.float32)
            out[:, :, row : row + band.shape[2]] = band
        assert out is not None
        return out

    def __call__(self, image: np.ndarray, scale: float) -> np.ndarray:
        """RGB (h, w, 3) -> uint8 RGB (int(r*h), int(r*w), 3): clamped and rounded half-to-even."""
        if self._portable is not None and check_image(image).dtype == np.uint8:
            self.plan(*image.shape[:2], scale)  # the scale checked (the graph itself does not)
            target = portable_targets(self.portable_form, *image.shape[:2], scale)
            return self._portable.infer({"image": np.ascontiguousarray(image), **target})["sr_image"]
        features = self._encode(image)
        plan = self.plan(*features.shape[2:], scale)
        out = np.empty((*plan.out_size, 3), dtype=np.uint8)
        for row, band in self.upscale_bands(features, scale):
            out[row : row + band.shape[2]] = quantize(band[0].transpose(1, 2, 0))  # (rows, W, 3)
        return out

    def close(self) -> None:
        for _, backend in self._features:
            backend.close()
        self._upscale.close()
        if self._portable is not None:
            self._portable.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
