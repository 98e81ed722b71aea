"""Upscaling image files with a :class:`Pipeline`: output naming, target sizes, limits (no PyTorch)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from metasr.runtime.image_io import IMAGE_SUFFIXES, ImageError, LoadedImage, write_image
from metasr.runtime.pipeline import Pipeline
from metasr.runtime.projection import UnsupportedScaleError, check_scale, output_size

from metasr.imresize import imresize

__all__ = ["DEFAULT_MAX_PIXELS", "Job", "job_scale", "plan_jobs", "run_job", "scale_for_size"]

DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def plan_jobs(inputs: list[str], out: str, force: bool = False) -> list[Job]:
    """Map inputs (files, or folders of images) to outputs.

    ``out`` is a file path when there is exactly one input file and ``out`` has an image suffix; otherwise a
    folder receiving files of the inputs' names. An input is never a target unless ``force``.
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
    if len(sources) == 1 and not Path(inputs[0]).is_dir() and out_path.suffix.lower() in IMAGE_SUFFIXES:
        jobs = [Job(sources[0], out_path)]
    else:
        if out_path.exists() and not out_path.is_dir():
            raise ImageError(f"{out_path} is a file; several inputs need an output folder")
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
    img: LoadedImage,
    max_scale: float,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str = "",
) -> float:
    """The scale for one image (``scale``, or the one covering ``size`` = (W, H)), checked against the model's
    range and the output pixel limit."""
    h, w = img.rgb.shape[:2]
    r = check_scale(scale, max_scale) if size is None else scale_for_size(h, w, *size, max_scale)
    out_h, out_w = output_size(h, w, r)
    if out_h * out_w > max_pixels:
        raise ImageError(
            f"{name}: output {out_w}x{out_h} exceeds the pixel limit of {max_pixels:,} (raise --max-pixels)"
        )
    return r


def run_job(
    pipeline: Pipeline, job: Job, img: LoadedImage, scale: float, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Upscale one image by ``scale`` (from :func:`job_scale`); with ``size`` (W, H) centre-crop to it.

    Writes ``job.target`` atomically and returns the written (W, H).
    """
    h, w = img.rgb.shape[:2]
    out_h, out_w = output_size(h, w, scale)
    sr = pipeline.upscale(pipeline.encode(img.rgb), scale)[0].transpose(1, 2, 0)  # (H, W, 3) float
    alpha = None if img.alpha is None else imresize(img.alpha.astype(np.float64), out_shape=(out_h, out_w))
    if size is not None:
        tw, th = size
        y0, x0 = (out_h - th) // 2, (out_w - tw) // 2
        sr = sr[y0 : y0 + th, x0 : x0 + tw]
        alpha = None if alpha is None else alpha[y0 : y0 + th, x0 : x0 + tw]
    write_image(job.target, sr, img, alpha)
    return sr.shape[1], sr.shape[0]
