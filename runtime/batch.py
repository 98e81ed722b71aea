"""Upscaling image files with a :class:`Pipeline`: output naming, target sizes, limits (no PyTorch).

Every input is checked before any work: :func:`check_jobs` reads each header (size, mode, pixel limits, the
output format against the input's kind, the scale) and then decodes each input once, so a bad file
anywhere in a batch stops it before the first output is written. :func:`run_job` then upscales one image
band by band into its output file (see :mod:`metasr.runtime.image_io`), timing each stage.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from metasr.runtime.image_io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageError,
    ImageInfo,
    LoadedImage,
    check_output,
    open_writer,
    probe_image,
    read_image,
)
from metasr.runtime.pipeline import Pipeline
from metasr.runtime.png import DEFAULT_COMPRESS_LEVEL
from metasr.runtime.projection import UnsupportedScaleError, check_scale, output_size
from PIL import Image

from metasr.imresize import imresize
from metasr.metrics import quantize

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "CheckedJob",
    "Job",
    "Timings",
    "check_jobs",
    "job_scale",
    "plan_jobs",
    "run_job",
    "scale_for_size",
]


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class CheckedJob:
    """A job whose input passed every check, with its header facts and its scale."""

    job: Job
    info: ImageInfo
    scale: float


@dataclass
class Timings:
    """Seconds spent per stage of one image (``decode``, ``features``, ``upscale``, ``encode``)."""

    stages: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "features", "upscale", "encode"), 0.0)
    )

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] += seconds

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.2f} s" for k, v in self.stages.items())


def plan_jobs(inputs: list[str], out: str, force: bool = False) -> list[Job]:
    """Map inputs (files, or folders of images) to outputs.

    ``out`` is a file path when there is exactly one input file and ``out`` has an image suffix; otherwise a
    folder receiving files of the inputs' names. A suffix Pillow knows as an image format that we do not write
    (``result.gif``) is an error, not a folder name. An input is never a target unless ``force``.
    """
    sources: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise ImageError(f"no images in folder {p}")
            sources += found
        elif p.is_file():
            sources.append(p)
        else:
            raise ImageError(f"no such file or folder: {p}")
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if out_path.is_dir():
        jobs = [Job(s, out_path / s.name) for s in sources]
    elif len(sources) == 1 and not Path(inputs[0]).is_dir() and suffix in IMAGE_SUFFIXES:
        jobs = [Job(sources[0], out_path)]
    elif suffix in IMAGE_SUFFIXES:
        raise ImageError(f"{out_path} names a file; {len(sources)} inputs need an output folder")
    elif suffix in Image.registered_extensions():
        raise ImageError(f"cannot write {suffix} images; use one of {sorted(IMAGE_SUFFIXES)}")
    elif out_path.exists():
        raise ImageError(f"{out_path} exists and is not a folder (an output file needs one of {list(IMAGE_SUFFIXES)})")
    else:
        jobs = [Job(s, out_path / s.name) for s in sources]
    names = [j.target.resolve() for j in jobs]
    if len(set(names)) != len(names):
        raise ImageError("two inputs would write the same output file (same name in different folders)")
    inputs_resolved = {s.resolve() for s in sources}
    clash = [j.target for j in jobs if j.target.resolve() in inputs_resolved]
    if clash and not force:
        raise ImageError(f"refusing to overwrite input {clash[0]} (use --force)")
    return jobs


def scale_for_size(h: int, w: int, target_w: int, target_h: int, max_scale: float) -> float:
    """The smallest scale whose output ``int(r*h) x int(r*w)`` covers ``target_h x target_w``."""
    if target_w < 1 or target_h < 1:
        raise ValueError(f"--size must be positive, got {target_w}x{target_h}")
    r = max(target_w / w, target_h / h)
    while int(r * h) < target_h or int(r * w) < target_w:
        r = math.nextafter(r, math.inf)
    try:
        return check_scale(r, max_scale)
    except UnsupportedScaleError:
        raise UnsupportedScaleError(
            f"--size {target_w}x{target_h} from a {w}x{h} image needs scale {r:.4g}, outside (1, {max_scale:g}]"
        ) from None


def job_scale(
    size_wh: tuple[int, int],
    max_scale: float,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str = "",
) -> float:
    """The scale for one image of ``size_wh`` (w, h): ``scale``, or the one covering ``size`` = (W, H),
    checked against the model's range and the output pixel limit."""
    w, h = size_wh
    r = check_scale(scale, max_scale) if size is None else scale_for_size(h, w, *size, max_scale)
    out_h, out_w = output_size(h, w, r)
    if out_h * out_w > max_pixels:
        raise ImageError(
            f"{name}: output {out_w}x{out_h} exceeds the pixel limit of {max_pixels:,} (raise --max-pixels)"
        )
    return r


def check_jobs(
    jobs: list[Job],
    max_scale: float,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode: bool = True,
) -> list[CheckedJob]:
    """Check every job before any work: headers first (size and mode, pixel limits, the output format
    against the input's kind, the scale), then, with ``decode``, a full decode of each input (a truncated
    file fails here, not after earlier outputs were written). Raises the first problem found."""
    checked = []
    for job in jobs:
        info = probe_image(job.source, max_pixels)
        check_output(info, job.target)
        r = job_scale(info.size, max_scale, scale, size, max_pixels, str(job.source))
        checked.append(CheckedJob(job, info, r))
    if decode:
        for c in checked:
            img = read_image(c.job.source, max_pixels)
            if img.info.size != c.info.size:  # an EXIF orientation the header probe could not see
                job_scale(img.info.size, max_scale, scale, size, max_pixels, str(c.job.source))
    return checked


def _crop(out_h: int, out_w: int, size: tuple[int, int] | None) -> tuple[slice, slice]:
    if size is None:
        return slice(0, out_h), slice(0, out_w)
    tw, th = size
    y0, x0 = (out_h - th) // 2, (out_w - tw) // 2
    return slice(y0, y0 + th), slice(x0, x0 + tw)


def run_job(
    pipeline: Pipeline,
    job: Job,
    img: LoadedImage,
    scale: float,
    size: tuple[int, int] | None = None,
    png_compress: int = DEFAULT_COMPRESS_LEVEL,
    timings: Timings | None = None,
) -> tuple[int, int]:
    """Upscale one image by ``scale`` (from :func:`job_scale`); with ``size`` (W, H) centre-crop to it.

    The output is produced and written band by band (never a full-size float copy), atomically, in the
    input's kind; returns the written (W, H). Stage times are added to ``timings``; encoding runs in a thread
    beside the upscale stage, so the stages overlap and their sum exceeds the wall time.
    """
    timings = timings or Timings()
    h, w = img.rgb.shape[:2]
    out_h, out_w = output_size(h, w, scale)
    rows, cols = _crop(out_h, out_w, size)
    t0 = time.perf_counter()
    features = pipeline.encode(img.rgb)
    timings.add("features", time.perf_counter() - t0)
    alpha = None
    if img.alpha is not None:
        alpha = quantize(imresize(img.alpha.astype(np.float64), out_shape=(out_h, out_w)))[rows, cols]
    target_size = (cols.stop - cols.start, rows.stop - rows.start)
    with open_writer(job.target, img.info.kind, target_size, png_compress) as writer:

        def write(rgb: np.ndarray, alpha_rows: np.ndarray | None) -> None:
            t = time.perf_counter()
            writer.write(rgb, alpha_rows)
            timings.add("encode", time.perf_counter() - t)

        # the writer (quantize, filter, zlib: all release the GIL) runs in a thread beside the next band's
        # upscale; at most two bands wait for it, so memory stays bounded
        with ThreadPoolExecutor(1, thread_name_prefix="metasr-writer") as pool:
            pending: list[Future[None]] = []
            bands = pipeline.upscale_bands(features, scale)
            while True:
                t2 = time.perf_counter()
                try:
                    row, band = next(bands)
                except StopIteration:
                    break
                timings.add("upscale", time.perf_counter() - t2)
                a, b = max(row, rows.start), min(row + band.shape[2], rows.stop)
                if a < b:
                    rgb = band[0, :, a - row : b - row, cols].transpose(1, 2, 0)  # (n, W, 3)
                    alpha_rows = None if alpha is None else alpha[a - rows.start : b - rows.start]
                    pending.append(pool.submit(write, rgb, alpha_rows))
                if len(pending) > 2:
                    pending.pop(0).result()
            for f in pending:
                f.result()
        t3 = time.perf_counter()
    timings.add("encode", time.perf_counter() - t3)  # finishing the file (Pillow's encoder for non-PNG)
    return target_size
