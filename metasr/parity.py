"""``metasr parity``: every available backend x precision of an artifact against PyTorch and ground truth.

For each image and scale the PyTorch model (the checkpoint the manifest records) gives the reference; each
candidate (a backend running the artifact's graphs at one precision) runs the same LR input through the
torch-free :class:`~metasr.runtime.pipeline.Pipeline`. Per case: max and mean absolute error of the float
outputs (Polygraphy's ``SimpleCompareFunc``), the share of identical uint8 pixels and the PSNR between the
uint8 outputs, and Y-PSNR / SSIM of both against the HR image when it is known. Each precision has default
limits (:data:`DEFAULT_THRESHOLDS`), overridable. The report is rendered by :mod:`metasr.parity_report`.

Backends are :data:`~metasr.runtime.backends.ALL_BACKENDS`; ones that cannot run here (no GPU, no TensorRT
yet) and precisions the Pipeline cannot open are skipped with the reason, so the ``trt`` backend and the
FP16/INT8 graphs join as soon as they exist (:func:`open_candidate` is the one place a candidate opens).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from metasr.bundled import bundled_model_path
from metasr.checkpoint import load_model
from metasr.data import list_images, make_pair
from metasr.limits import float_problem
from metasr.metrics import psnr_y, quantize, ssim_y
from metasr.model import MetaSR
from metasr.runtime.backends import ALL_BACKENDS, BACKEND_FORMATS, BACKEND_TARGETS, BackendError, backend_available
from metasr.runtime.compare import uint8_stats
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.image_io import read_image
from metasr.runtime.manifest import PRECISIONS, Manifest, ManifestError, sha256_file
from metasr.runtime.pipeline import Pipeline

__all__ = [
    "DEFAULT_INT8_LOSS_DB",
    "DEFAULT_THRESHOLDS",
    "Case",
    "ParityError",
    "ParityRun",
    "Thresholds",
    "candidate_pairs",
    "open_candidate",
    "parse_threshold",
    "reference_model",
    "run_parity",
]

# INT8's limit on the Y-PSNR loss against ground truth (dB; `--threshold int8.max_gt_loss_db=...` changes it).
# Not the calibration budget: that is measured on held-apart training crops, for an image reconstructed at
# `metasr calibrate --reference-psnr-db` (docs/calibration-gate.md); this limit is on the test images themselves.
DEFAULT_INT8_LOSS_DB = 0.5


class ParityError(ValueError):
    """Bad parity usage or input (exit 2): no images, a reference that does not match the artifacts, ..."""


# the largest value each limit takes: outputs live on 0..255; PSNR between uint8 outputs differing in one level
# of one pixel of a 1 Mpx image is 108 dB; a Y-PSNR loss of 100 dB is any loss at all
_THRESHOLD_MAX = {"atol": 255.0, "min_uint8_equal": 1.0, "min_psnr_db": 200.0, "max_gt_loss_db": 100.0}


@dataclass(frozen=True)
class Thresholds:
    """Limits one candidate must meet against the reference (``None``: not checked).

    ``atol``: max |candidate - reference| of the float outputs on the 0..255 scale; ``min_uint8_equal``:
    fraction of identical uint8 values; ``min_psnr_db``: PSNR between the uint8 outputs; ``max_gt_loss_db``:
    how much lower the candidate's Y-PSNR against ground truth may be than the reference's.
    """

    atol: float | None = None
    min_uint8_equal: float | None = None
    min_psnr_db: float | None = None
    max_gt_loss_db: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            problem = None if v is None else float_problem(v, 0.0, _THRESHOLD_MAX[f.name])
            if problem:  # inf would make a check that cannot fail: `none` turns a limit off, visibly
                raise ParityError(f"threshold {f.name} {problem} (none: off)")

    def failures(self, case: Case) -> list[str]:
        """The limits ``case`` misses, as short texts."""
        out = []
        if self.atol is not None and not case.max_abs <= self.atol:
            out.append(f"max|d| {case.max_abs:.3g} > {self.atol:g}")
        if self.min_uint8_equal is not None and not case.uint8_equal >= self.min_uint8_equal:
            out.append(f"uint8 equal {100 * case.uint8_equal:.3f}% < {100 * self.min_uint8_equal:g}%")
        if self.min_psnr_db is not None and not case.psnr_db >= self.min_psnr_db:
            out.append(f"PSNR {case.psnr_db:.2f} dB < {self.min_psnr_db:g} dB")
        if self.max_gt_loss_db is not None and case.gt_loss_db is not None and case.gt_loss_db > self.max_gt_loss_db:
            out.append(f"Y-PSNR loss vs GT {case.gt_loss_db:.3f} dB > {self.max_gt_loss_db:g} dB")
        return out


# FP32: the export check's limits (measured ORT vs PyTorch on the bundled model: max |d| <= 2e-4, >= 99.99%
# identical uint8; see the README's parity report). FP16: the 50 dB between outputs. INT8: the
# calibration budget's loss against ground truth (the manifest's, else DEFAULT_INT8_LOSS_DB).
DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(atol=1e-2, min_uint8_equal=0.999),
    "fp16": Thresholds(min_psnr_db=50.0),
    "int8": Thresholds(max_gt_loss_db=DEFAULT_INT8_LOSS_DB),
}


def parse_threshold(text: str, table: dict[str, Thresholds]) -> dict[str, Thresholds]:
    """Apply one ``PRECISION.FIELD=VALUE`` override (``fp32.atol=2e-2``; ``none`` clears a limit)."""
    try:
        key, value = text.split("=", 1)
        precision, name = key.split(".", 1)
    except ValueError:
        raise ParityError(f"--threshold must look like fp32.atol=0.02, got {text!r}") from None
    if precision not in PRECISIONS:
        raise ParityError(f"--threshold: unknown precision {precision!r}; known: {list(PRECISIONS)}")
    names = [f.name for f in fields(Thresholds)]
    if name not in names:
        raise ParityError(f"--threshold: unknown limit {name!r}; known: {names}")
    try:
        parsed = None if value.strip().lower() == "none" else float(value)
    except ValueError:
        raise ParityError(f"--threshold {text!r}: {value!r} is not a number") from None
    return {**table, precision: replace(table.get(precision, Thresholds()), **{name: parsed})}


@dataclass(frozen=True)
class Case:
    """One image at one scale on one candidate. Errors are against the PyTorch reference; ``psnr_y`` /
    ``ssim_y`` against ground truth (None when the HR image is unknown)."""

    image: str
    scale: float
    backend: str
    precision: str
    out_size: tuple[int, int]  # (H, W)
    max_abs: float
    mean_abs: float
    uint8_equal: float
    psnr_db: float  # between the uint8 outputs; inf when identical
    ref_psnr_y: float | None
    psnr_y: float | None
    ref_ssim_y: float | None
    ssim_y: float | None
    failures: tuple[str, ...] = ()

    @property
    def gt_loss_db(self) -> float | None:
        if self.ref_psnr_y is None or self.psnr_y is None:
            return None
        return self.ref_psnr_y - self.psnr_y

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ParityRun:
    """Everything a parity run found; ``passed`` when every case met its limits."""

    artifacts: Path
    reference: Path
    scales: tuple[float, ...]
    thresholds: dict[str, Thresholds]
    cases: list[Case] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (backend, precision or "*", reason)
    polygraphy: dict[str, list] = field(default_factory=dict)  # graph -> [(feeds, outputs), ...]

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)


def reference_model(manifest: Manifest, model: str | Path | None) -> tuple[MetaSR, Path]:
    """The PyTorch reference: ``model``, or the checkpoint the manifest records (the bundled model when its
    sha256 matches). A given checkpoint must match the manifest's sha256 when it records one."""
    recorded = manifest.checkpoint_sha256
    if model is None:
        bundled = bundled_model_path()
        if not recorded or sha256_file(bundled) != recorded:
            what = f"sha256 {recorded[:16]}..." if recorded else "no checkpoint (exported from a preset?)"
            raise ParityError(f"the artifacts record {what}, not the bundled model: give --model CHECKPOINT")
        return load_model(bundled), bundled
    path = Path(model)
    if not path.is_file():
        raise ParityError(f"no checkpoint at {path}")
    if recorded and sha256_file(path) != recorded:
        raise ParityError(f"{path} is not the checkpoint these artifacts were exported from (sha256 differs)")
    return load_model(path), path


def candidate_pairs(
    manifest: Manifest, backends: Sequence[str] | None = None, precisions: Sequence[str] | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(backend, precision) pairs to run, and (backend, precision, reason) ones skipped.

    Precisions come from the manifest: those whose feature and upscale graphs both resolve for the backend's
    file format and target (:meth:`Manifest.graph`). ``backends`` / ``precisions`` restrict the lists (default: all)."""
    unknown = [p for p in precisions or () if p not in PRECISIONS]
    if unknown:
        raise ParityError(f"unknown precisions {unknown}; known: {list(PRECISIONS)}")
    run, skipped = [], []
    for backend in backends or ALL_BACKENDS:
        if backend not in ALL_BACKENDS:
            raise ParityError(f"unknown backend {backend!r}; known: {list(ALL_BACKENDS)}")
        fmt = BACKEND_FORMATS[backend]
        have = [p for p in PRECISIONS if _has_both_stages(manifest, fmt, p, BACKEND_TARGETS.get(backend, "any"))]
        wanted = [p for p in have if precisions is None or p in precisions]
        reason = backend_available(backend)
        if not wanted:
            skipped.append((backend, "*", f"the artifacts hold no {fmt} graphs of {list(precisions or PRECISIONS)}"))
        elif reason:
            skipped.append((backend, "*", reason))
        else:
            run += [(backend, p) for p in wanted]
    return run, skipped


def _has_both_stages(manifest: Manifest, fmt: str, precision: str, target: str) -> bool:
    """Whether a pipeline can run ``precision`` in ``fmt``: both stages resolve (INT8 pairs its feature graph
    with the float upscale graph it names)."""
    try:
        manifest.graph("feature", fmt, precision, target)
        manifest.graph("upscale", fmt, precision, target)
    except ManifestError:
        return False
    return True


def open_candidate(artifacts: Path, backend: str, precision: str, graph: str = "two") -> Pipeline:
    """The one place parity opens a candidate: the backend's own form of ``precision`` (INT8 on ``ort``: the
    CPU Q/DQ form; see :meth:`Pipeline._select`), as two graphs or the portable ones (``graph``)."""
    return Pipeline(artifacts, backend, precision=precision, graph=graph)


def _images(folders: Sequence[str | Path]) -> list[tuple[str, Path]]:
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ParityError(f"no image folder at {folder}")
        paths = list_images(folder)
        if not paths:
            raise ParityError(f"no images in {folder}")
        out += [(f"{folder.name}/{p.stem}", p) for p in paths]
    return out


def _abs_errors(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Max and mean |got - ref| through Polygraphy's comparison function (its logging silenced)."""
    from polygraphy.comparator import IterationResult
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    func = SimpleCompareFunc(check_error_stat="max", atol=math.inf, rtol=math.inf)
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        result = func(IterationResult({"sr": got}, runner_name="candidate"), IterationResult({"sr": ref}))["sr"]
    return float(result.max_absdiff), float(result.mean_absdiff)


def _inputs(images: list[tuple[str, Path]], scales: Sequence[float], given_lr: bool) -> Iterator[tuple]:
    """(name, scale, LR uint8 (h, w, 3), HR uint8 cropped to the pair or None) for every image x scale."""
    for name, path in images:
        img = quantize(read_image(path).rgb)  # (H, W, 3) uint8
        for scale in scales:
            if given_lr:
                yield name, scale, img, None
            else:
                lr, hr = make_pair(img, scale, "metasr")
                yield name, scale, lr, hr


def run_parity(
    artifacts: str | Path,
    image_dirs: Sequence[str | Path],
    scales: Sequence[float],
    *,
    model: str | Path | None = None,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    given_lr: bool = False,
    keep_polygraphy: bool = False,
    graph: str = "two",
) -> ParityRun:
    """Run the reference and every candidate on every image x scale (see the module docstring).

    ``image_dirs`` hold HR images (LR made with the project's MATLAB bicubic, the official Meta-SR rule) or,
    with ``given_lr``, LR inputs (no ground truth). ``overrides``: ``PRECISION.FIELD=VALUE`` texts.
    ``keep_polygraphy`` keeps every graph's reference feeds and outputs for Polygraphy files. ``graph``:
    "portable" runs the portable graphs (docs/portable.md; cases labelled ``BACKEND+portable``).
    """
    thresholds = dict(DEFAULT_THRESHOLDS)
    for text in overrides:  # first: a bad limit is refused before anything is read
        thresholds = parse_threshold(text, thresholds)
    artifacts = Path(artifacts)
    manifest = Manifest.read(artifacts)
    reference, ref_path = reference_model(manifest, model)
    for s in scales:
        reference.plan(8, 8, s)  # validates the scale against the model's range
        if s > manifest.scale_max:
            raise ParityError(f"scale {s:g} is above the artifacts' scale_max {manifest.scale_max:g}")
    images = _images(image_dirs)
    pairs, skipped = candidate_pairs(manifest, backends, precisions)
    result = ParityRun(artifacts, ref_path, tuple(scales), thresholds, skipped=skipped)
    candidates = {}
    try:
        for backend, precision in pairs:
            try:
                candidates[backend, precision] = open_candidate(artifacts, backend, precision, graph)
            except BackendError as e:
                result.skipped.append((backend, precision, str(e)))
        label = {b: f"{b}+portable" if graph == "portable" else b for b, _ in pairs}
        for name, scale, lr, hr in _inputs(images, scales, given_lr):
            ref = _reference(reference, lr, scale, result if keep_polygraphy else None)
            for (backend, precision), pipe in candidates.items():
                sr = pipe.upscale(pipe.encode(lr), scale)
                result.cases.append(_case(name, scale, label[backend], precision, sr, ref, hr, thresholds[precision]))
    finally:
        for pipe in candidates.values():
            pipe.close()
    return result


def _reference(model: MetaSR, lr: np.ndarray, scale: float, keep: ParityRun | None) -> np.ndarray:
    x = np.ascontiguousarray(lr.transpose(2, 0, 1))[None].astype(np.float32)  # (1, 3, h, w)
    plan = model.plan(x.shape[2], x.shape[3], scale)
    with torch.no_grad():
        feats = model.encode(torch.from_numpy(x))
        sr = model.upscale(feats, plan).numpy()  # (1, 3, H, W)
    if keep is not None:
        keep.polygraphy.setdefault("feature", []).append(({"lr": x}, {"features": feats.numpy()}))
        keep.polygraphy.setdefault("upscale", []).append(({"features": feats.numpy(), **plan_feeds(plan)}, {"sr": sr}))
    return sr


def _case(
    name: str,
    scale: float,
    backend: str,
    precision: str,
    sr: np.ndarray,
    ref: np.ndarray,
    hr: np.ndarray | None,
    limits: Thresholds,
) -> Case:
    if sr.shape != ref.shape:
        raise BackendError(f"{backend}/{precision} gave shape {sr.shape} for {name} x{scale:g}, expected {ref.shape}")
    max_abs, mean_abs = _abs_errors(sr, ref)
    a, b = quantize(sr[0].transpose(1, 2, 0)), quantize(ref[0].transpose(1, 2, 0))  # (H, W, 3) uint8
    equal, psnr = uint8_stats(a, b)  # PSNR peak 255 (Polygraphy's PSNR takes the reference maximum)
    gt = (None, None, None, None)
    if hr is not None:
        gt = (psnr_y(b, hr, scale), psnr_y(a, hr, scale), ssim_y(b, hr, scale), ssim_y(a, hr, scale))
    case = Case(name, scale, backend, precision, sr.shape[2:], max_abs, mean_abs, equal, psnr, *gt)
    return replace(case, failures=tuple(limits.failures(case)))
