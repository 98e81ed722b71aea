"""Upscaling images with a :class:`Pipeline`: output paths, target sizes, limits, one memory bound (no PyTorch).

Every input and every output is checked before any work. :func:`~metasr.runtime.jobs.plan_jobs` maps inputs
to outputs and refuses outputs that cannot be written or must not be overwritten. :func:`check_jobs` reads
each header (size after EXIF orientation, mode, frame count, pixel limits, the output format against the
input's kind, the scale, the memory plan) and then decodes each input once (a batch), so a bad file anywhere
stops the batch before the first output is written.

:func:`run_job` upscales one image into its file, :func:`upscale_bytes` from bytes to bytes (a service: no
temporary files); both run :func:`_upscale_into`. The scale always comes from the *decoded, oriented* size;
the run streams: features stripe by stripe, the upscale stage band by band into the writer, the alpha channel
resized band by band, under a :class:`~metasr.runtime.memory.MemoryPlan` for ``memory_mb``.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from metasr.runtime.image_io import (
    DECODE_BYTES_PER_PIXEL,
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageInfo,
    LoadedImage,
    probe_image,
    probe_image_bytes,
    read_image,
    read_image_bytes,
)
from metasr.runtime.image_write import (
    ImageWriter,
    carried_icc,
    check_output,
    held_bytes,
    open_encoder,
    open_writer,
    output_format,
)
from metasr.runtime.jobs import Job, plan_jobs
from metasr.runtime.memory import MIB, MemoryPlan, plan_memory, resident_bytes
from metasr.runtime.pipeline import DEFAULT_FEATURE_TILE, DEFAULT_UPSCALE_BUDGET_MB, Pipeline
from metasr.runtime.png import DEFAULT_COMPRESS_LEVEL
from metasr.runtime.projection import UnsupportedScaleError, check_scale, output_size

from metasr.imresize import imresize_rows
from metasr.metrics import quantize

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MEMORY_MB",
    "CheckedJob",
    "Job",
    "Timings",
    "UpscaleCancelled",
    "UpscaleOptions",
    "check_jobs",
    "job_scale",
    "plan_jobs",
    "run_job",
    "scale_for_size",
    "upscale_bytes",
]

DEFAULT_MEMORY_MB = 2048


class UpscaleCancelled(Exception):
    """The caller withdrew an upscale (``upscale_bytes``' ``cancelled`` said so): it stopped between bands."""


@dataclass(frozen=True)
class UpscaleOptions:
    """What one `metasr upscale` run asks for: ``scale`` or ``size`` (W, H), the pixel limit, the memory bound
    (MiB, the whole process), the largest upscale tile budget (MiB; None: up to the pipeline's) and feature
    tile side, the PNG compression level."""

    scale: float | None = None
    size: tuple[int, int] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    memory_mb: float = DEFAULT_MEMORY_MB
    upscale_budget_mb: float | None = None
    feature_tile: int | None = None
    png_compress: int = DEFAULT_COMPRESS_LEVEL

    def __post_init__(self) -> None:
        if (self.scale is None) == (self.size is None):
            raise ValueError("give exactly one of scale and size")
        if not (isinstance(self.max_pixels, int) and self.max_pixels >= 1):
            raise ValueError(f"max_pixels must be a positive integer, got {self.max_pixels!r}")
        if not (math.isfinite(self.memory_mb) and self.memory_mb > 0):
            raise ValueError(f"memory_mb must be a positive number, got {self.memory_mb!r}")
        if self.upscale_budget_mb is not None and not (
            math.isfinite(self.upscale_budget_mb) and self.upscale_budget_mb > 0
        ):
            raise ValueError(f"upscale_budget_mb must be a positive number, got {self.upscale_budget_mb!r}")
        if not 0 <= self.png_compress <= 9:
            raise ValueError(f"png_compress must be in 0..9, got {self.png_compress}")


@dataclass(frozen=True)
class CheckedJob:
    """A job whose input passed every check: its header facts, scale, memory plan and notes to print."""

    job: Job
    info: ImageInfo
    scale: float
    memory: MemoryPlan
    notes: tuple[str, ...] = ()


@dataclass
class Timings:
    """Seconds spent per stage of one image (``decode``, ``features``, ``upscale``, ``encode``), and the memory
    plan it ran under."""

    stages: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "features", "upscale", "encode"), 0.0)
    )
    memory: MemoryPlan | None = None

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] += seconds

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.2f} s" for k, v in self.stages.items())


# -- scales and memory ----------------------------------------------------------------------------------------
def scale_for_size(h: int, w: int, target_w: int, target_h: int, max_scale: float, min_scale: float = 1.0) -> float:
    """The smallest scale whose output ``int(r*h) x int(r*w)`` covers ``target_h x target_w``."""
    if target_w < 1 or target_h < 1:
        raise ValueError(f"the size must be positive, got {target_w}x{target_h}")
    r = max(target_w / w, target_h / h)
    while int(r * h) < target_h or int(r * w) < target_w:
        r = math.nextafter(r, math.inf)
    try:
        return check_scale(r, max_scale, min_scale)
    except UnsupportedScaleError:
        raise UnsupportedScaleError(
            f"size {target_w}x{target_h} from a {w}x{h} image needs scale {r:.4g}, "
            f"outside ({max(1.0, min_scale):g}, {max_scale:g}]"
        ) from None


def job_scale(size_wh: tuple[int, int], pipeline: Pipeline, opts: UpscaleOptions, name: str = "") -> float:
    """The scale for one image of ``size_wh`` (w, h) as decoded and oriented: ``opts.scale``, or the one
    covering ``opts.size``; checked against the artifact's range and the output pixel limit."""
    w, h = size_wh
    lo, hi = pipeline.min_scale, pipeline.max_scale
    r = check_scale(opts.scale, hi, lo) if opts.size is None else scale_for_size(h, w, *opts.size, hi, lo)
    out_h, out_w = output_size(h, w, r)
    if out_h * out_w > opts.max_pixels:
        raise ImageError(
            f"{name}: output {out_w}x{out_h} exceeds the pixel limit of {opts.max_pixels:,} (raise --max-pixels)"
        )
    return r


def _target_size(out_h: int, out_w: int, size: tuple[int, int] | None) -> tuple[int, int]:
    return (out_w, out_h) if size is None else size


def memory_plan(
    pipeline: Pipeline,
    info: ImageInfo,
    scale: float,
    opts: UpscaleOptions,
    fmt: str,
    base: int | None = None,
    in_memory: bool = False,
) -> MemoryPlan:
    """The :class:`MemoryPlan` of one image under ``opts.memory_mb`` (``base``: resident bytes now;
    ``in_memory``: the encoded result is held too, counted at its raw size)."""
    w, h = info.size
    out_h, out_w = output_size(h, w, scale)
    tw, th = _target_size(out_h, out_w, opts.size)
    writer = held_bytes(fmt, info.kind, (tw, th)) + (tw * th * 4 if in_memory else 0)
    cap = opts.upscale_budget_mb if opts.upscale_budget_mb is not None else pipeline.upscale_budget_mb
    static = pipeline.static_size
    tile = opts.feature_tile or pipeline.feature_tile or DEFAULT_FEATURE_TILE
    return plan_memory(
        int(opts.memory_mb * MIB),
        base=resident_bytes() if base is None else base,
        size=(h, w),
        out_width=out_w,
        image_bytes=info.held_bytes,
        decode_bytes=info.held_bytes + DECODE_BYTES_PER_PIXEL * w * h,
        writer_bytes=writer,
        channels=pipeline.channels,
        radius=pipeline.receptive_radius,
        work_bytes_per_pixel=pipeline.work_bytes_per_pixel,
        max_feature_tile=static or (tile, tile),
        fixed_tile=static is not None,
        upscale_cost=lambda budget: pipeline.upscale_cost(h, w, scale, budget),
        max_upscale_budget=int((cap or DEFAULT_UPSCALE_BUDGET_MB) * MIB),
        name=str(info.path),
    )


def _check_one(pipeline: Pipeline, info: ImageInfo, target: str, opts: UpscaleOptions) -> tuple[float, MemoryPlan]:
    fmt = output_format(target)
    r = job_scale(info.size, pipeline, opts, str(info.path))
    return r, memory_plan(pipeline, info, r, opts, fmt)


def check_jobs(jobs: list[Job], pipeline: Pipeline, opts: UpscaleOptions, decode: bool = True) -> list[CheckedJob]:
    """Check every job before any work: headers first (size and mode, frames, pixel limits, the output format
    against the input's kind, the scale, the memory plan), then, with ``decode``, a full decode of each input
    (a truncated file fails here, not after earlier outputs were written; the decoded size is the one
    planned). Raises the first problem found."""
    checked = []
    for job in jobs:
        info = probe_image(job.source, opts.max_pixels)
        notes = info.notes + check_output(info, job.target)
        r, plan = _check_one(pipeline, info, str(job.target), opts)
        checked.append(CheckedJob(job, info, r, plan, notes))
    if decode:
        for i, c in enumerate(checked):
            img = read_image(c.job.source, opts.max_pixels)
            if img.info.size != c.info.size:  # an orientation the header did not show
                r, plan = _check_one(pipeline, img.info, str(c.job.target), opts)
                checked[i] = CheckedJob(c.job, img.info, r, plan, c.notes)
            del img
    return checked


# -- the run ---------------------------------------------------------------------------------------------------
def _crop(out_h: int, out_w: int, size: tuple[int, int] | None) -> tuple[slice, slice]:
    if size is None:
        return slice(0, out_h), slice(0, out_w)
    tw, th = size
    y0, x0 = (out_h - th) // 2, (out_w - tw) // 2
    return slice(y0, y0 + th), slice(x0, x0 + tw)


def _upscale_into(
    writer: ImageWriter,
    pipeline: Pipeline,
    img: LoadedImage,
    scale: float,
    size: tuple[int, int] | None,
    plan: MemoryPlan,
    timings: Timings,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Stream ``img`` at ``scale`` (centre-cropped to ``size``) into ``writer`` under ``plan``; ``cancelled``
    is asked before each band (:class:`UpscaleCancelled` when it says so)."""
    h, w = img.shape
    out_h, out_w = output_size(h, w, scale)
    rows, cols = _crop(out_h, out_w, size)

    def write(rgb: np.ndarray, alpha_rows: np.ndarray | None) -> None:
        t = time.perf_counter()
        writer.write(rgb, alpha_rows)
        timings.add("encode", time.perf_counter() - t)

    # the writer (quantize, filter, zlib: all release the GIL) runs in a thread beside the next band's
    # upscale; at most two bands wait for it, so memory stays bounded
    with ThreadPoolExecutor(1, thread_name_prefix="metasr-writer") as pool:
        pending: list[Future[None]] = []
        feature_seconds: list[float] = []
        bands = pipeline.stream(
            img.rgb_region, (h, w), scale, feature_tile=plan.feature_tile, upscale_budget_bytes=plan.upscale_budget,
            feature_seconds=feature_seconds,
        )  # fmt: skip
        while True:
            if cancelled is not None and cancelled():
                raise UpscaleCancelled("the upscale was cancelled")
            t2 = time.perf_counter()
            try:
                row, band = next(bands)
            except StopIteration:
                break
            timings.add("upscale", time.perf_counter() - t2)
            a, b = max(row, rows.start), min(row + band.shape[2], rows.stop)
            if a < b:
                rgb = band[0, :, a - row : b - row, cols].transpose(1, 2, 0)  # (n, W, 3)
                alpha_rows = None
                if img.alpha8 is not None:
                    alpha_rows = quantize(imresize_rows(img.alpha8, (out_h, out_w), slice(a, b))[:, cols])
                pending.append(pool.submit(write, rgb, alpha_rows))
            if len(pending) > 2:
                pending.pop(0).result()
        for f in pending:
            f.result()
    timings.add("features", sum(feature_seconds))  # computed inside the upscale loop: moved out of it
    timings.add("upscale", -sum(feature_seconds))


def _prepare(
    pipeline: Pipeline, img: LoadedImage, opts: UpscaleOptions, fmt: str, base: int, in_memory: bool = False
) -> tuple[float, MemoryPlan, tuple[int, int], bytes | None]:
    """For a decoded image: its scale, memory plan (from its oriented size and ``base``, the resident bytes
    before decoding), output size (W, H) and the ICC profile the output carries."""
    scale = job_scale(img.info.size, pipeline, opts, str(img.info.path))
    plan = memory_plan(pipeline, img.info, scale, opts, fmt, base, in_memory)
    w, h = img.info.size
    target = _target_size(*output_size(h, w, scale), opts.size)
    return scale, plan, target, carried_icc(img.info.icc, img.info.kind, fmt)[0]


def run_job(
    pipeline: Pipeline, checked: CheckedJob, opts: UpscaleOptions, timings: Timings | None = None
) -> tuple[int, int]:
    """Decode, upscale and write one checked job (atomically, in the input's kind, with its ICC profile where
    the format holds it); returns the written (W, H). The scale and the memory plan are computed again from
    the decoded, oriented size and the memory resident now (a batch: after the images before it)."""
    timings = timings or Timings()
    job = checked.job
    fmt = output_format(job.target)
    base = resident_bytes()
    t0 = time.perf_counter()
    img = read_image(job.source, opts.max_pixels)
    timings.add("decode", time.perf_counter() - t0)
    scale, plan, target, icc = _prepare(pipeline, img, opts, fmt, base)
    timings.memory = plan
    with open_writer(job.target, img.info.kind, target, opts.png_compress, icc) as writer:
        _upscale_into(writer, pipeline, img, scale, opts.size, plan, timings)
        t3 = time.perf_counter()
    timings.add("encode", time.perf_counter() - t3)  # finishing the file (Pillow's encoder for non-PNG)
    return target


def upscale_bytes(
    pipeline: Pipeline,
    data: bytes,
    opts: UpscaleOptions,
    fmt: str = "PNG",
    name: str = "<bytes>",
    cancelled: Callable[[], bool] | None = None,
) -> tuple[bytes, ImageInfo, tuple[str, ...]]:
    """An encoded image in, the encoded result out (``fmt``: "PNG", "JPEG", "WEBP", "TIFF", "BMP"), with every
    check of a file run, refused before decoding if it cannot fit ``opts.memory_mb`` (the encoded result,
    held in memory, counted at its raw size). Returns the bytes, the input's info (decoded size) and notes.
    ``cancelled``: asked before each output band; when it returns True the upscale stops there
    (:class:`UpscaleCancelled`: a service whose request timed out or whose client left)."""
    fmt = output_format(fmt)
    base = resident_bytes()
    info = probe_image_bytes(data, opts.max_pixels, name)
    notes = info.notes + check_output(info, f"{name}.{fmt.lower()}")
    memory_plan(pipeline, info, job_scale(info.size, pipeline, opts, name), opts, fmt, base, in_memory=True)
    img = read_image_bytes(data, opts.max_pixels, name)
    scale, plan, target, icc = _prepare(pipeline, img, opts, fmt, base, in_memory=True)
    buf = io.BytesIO()
    with open_encoder(buf, fmt, img.info.kind, target, opts.png_compress, icc) as writer:
        _upscale_into(writer, pipeline, img, scale, opts.size, plan, Timings(), cancelled)
    return buf.getvalue(), img.info, notes
