"""Images, LR/HR pairs at any scale (MATLAB bicubic, cached on disk), and the paper's training sampler."""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from metasr.fileio import atomic_path
from metasr.imresize import imresize, metasr_crop, modcrop, official_scale_value
from metasr.runtime.image_io import DEFAULT_MAX_PIXELS, ImageError, probe_image, read_rgb8

__all__ = [
    "IMAGE_SUFFIXES",
    "TRAIN_SCALES",
    "PairCache",
    "TrainSampler",
    "check_images",
    "list_images",
    "load_rgb",
    "make_pair",
]

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
# what load_rgb decodes: cached LR images made from other pixels are not reused (2: the runtime's reader,
# with EXIF orientation and 16-bit grey at value / 257)
READER_VERSION = 2
TRAIN_SCALES = tuple(round(1.1 + 0.1 * k, 1) for k in range(30))  # 1.1, 1.2, ..., 4.0
Convention = Literal["metasr", "benchmark"]


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name, each checked to be a regular file once
    links are followed: a link loop, a dangling link or a FIFO named like an image raises ``ImageError``
    naming it, before any work starts (a FIFO would block its reader forever)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder at {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in paths:
        try:
            mode = path.stat().st_mode  # follows links
        except OSError as e:  # ELOOP: a link loop; ENOENT: a dangling link
            raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
        if not stat.S_ISREG(mode):
            raise ImageError(f"{path} is not a regular file")
    return paths


def load_rgb(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3), as the runtime reads its inputs
    (:func:`metasr.runtime.image_io.read_image`): EXIF orientation applied, grey and palette expanded to RGB,
    16-bit grey rounded from value / 257, alpha dropped. A missing, truncated or unsupported file, a
    decompression bomb or more than ``max_pixels`` pixels raises ``ImageError`` (a ``ValueError``) naming it.
    Refused by name as there: float (mode F), 32-bit integer, CMYK, YCbCr, LAB, HSV, premultiplied alpha."""
    return read_rgb8(path, max_pixels)


def check_images(paths: Sequence[Path], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[tuple[int, int]]:
    """Read every image's header (nothing is decoded) and return each (H, W) as displayed: a file that is not
    a supported image, a decompression bomb or one over ``max_pixels`` pixels raises ``ImageError`` naming it,
    before a run that would meet it hours in. (A file truncated in its pixel data is found when it is first
    decoded, by :func:`load_rgb`.)"""
    return [probe_image(path, max_pixels, hint="").size[::-1] for path in paths]


def make_pair(hr: np.ndarray, scale: float, convention: Convention = "metasr") -> tuple[np.ndarray, np.ndarray]:
    """LR/HR uint8 pair for ``scale`` from an HR image (H, W, 3).

    ``"metasr"``: the official Meta-SR data (4-pixel crop rule, edge-clamped MATLAB bicubic, LR size
    ``ceil(dim / r)``, grid scales at the value the official script used: :func:`official_scale_value`).
    ``"benchmark"``: integer scales only, mod-crop and MATLAB's own (mirrored) bicubic, the EDSR/RCAN
    convention.
    """
    if convention == "benchmark":
        if scale != int(scale):
            raise ValueError(f"the benchmark convention needs an integer scale, got {scale}")
        hr = modcrop(hr, int(scale))
        return imresize(hr, 1 / scale, border="symmetric"), hr
    value = official_scale_value(scale)
    hr = metasr_crop(hr, value)
    return imresize(hr, 1 / value, border="replicate"), hr


@dataclass
class PairCache:
    """LR images of an HR folder at any scale, generated once and kept as PNG under ``cache_dir``.

    The cache key includes the HR file's size and mtime, :data:`READER_VERSION`, the convention and the scale.
    """

    cache_dir: Path
    convention: Convention = "metasr"

    def lr_path(self, hr_path: Path, scale: float) -> Path:
        st = hr_path.stat()
        source = f"{hr_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|reader{READER_VERSION}"
        key = hashlib.sha256(source.encode()).hexdigest()[:16]
        return Path(self.cache_dir) / self.convention / f"x{scale:.2f}" / f"{hr_path.stem}-{key}.png"

    def pair(self, hr_path: Path, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(LR, cropped HR) as uint8 (h, w, 3) and (H, W, 3)."""
        hr = load_rgb(hr_path)
        cached = self.lr_path(hr_path, scale)
        if self.convention == "metasr":
            hr_cropped = metasr_crop(hr, official_scale_value(scale))
        else:
            hr_cropped = modcrop(hr, int(scale))
        if cached.is_file():
            return load_rgb(cached), hr_cropped
        lr, hr_cropped = make_pair(hr, scale, self.convention)
        with atomic_path(cached, suffix=".png") as tmp:
            Image.fromarray(lr).save(tmp, format="PNG")
        return lr, hr_cropped


class TrainSampler:
    """The paper's batches: one scale per batch drawn uniformly from ``scales``; ``batch`` LR patches of
    ``patch x patch`` with HR patches of ``int(r * patch)`` at ``int(r * x)`` offsets; random horizontal
    flip, vertical flip and transpose (p = 0.5 each, per patch).

    Yields ``(scale, lr, hr)``: lr float32 (B, 3, patch, patch), hr float32 (B, 3, int(r*patch), same) on the
    0..255 scale, as numpy arrays. LR images are made on first use and cached in memory and on disk.
    """

    def __init__(
        self,
        hr_paths: Sequence[Path],
        cache: PairCache,
        scales: Sequence[float] = TRAIN_SCALES,
        batch: int = 16,
        patch: int = 50,
        seed: int = 0,
    ) -> None:
        if not hr_paths:
            raise ValueError("no training images")
        self.hr_paths, self.cache, self.scales = list(hr_paths), cache, tuple(scales)
        self.batch, self.patch = batch, patch
        self.rng = np.random.default_rng(seed)
        self._memory: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}

    def _pair(self, index: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        key = (index, scale)
        if key not in self._memory:
            self._memory[key] = self.cache.pair(self.hr_paths[index], scale)
        return self._memory[key]

    def _patch(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        p, hp = self.patch, int(scale * self.patch)
        for _ in range(100):
            lr, hr = self._pair(int(self.rng.integers(len(self.hr_paths))), scale)
            h, w = lr.shape[:2]
            if h < p or w < p:
                continue
            y, x = int(self.rng.integers(h - p + 1)), int(self.rng.integers(w - p + 1))
            hy, hx = int(scale * y), int(scale * x)
            if hy + hp > hr.shape[0] or hx + hp > hr.shape[1]:
                continue
            lp, hpatch = lr[y : y + p, x : x + p], hr[hy : hy + hp, hx : hx + hp]
            if self.rng.random() < 0.5:
                lp, hpatch = lp[:, ::-1], hpatch[:, ::-1]
            if self.rng.random() < 0.5:
                lp, hpatch = lp[::-1], hpatch[::-1]
            if self.rng.random() < 0.5:
                lp, hpatch = lp.transpose(1, 0, 2), hpatch.transpose(1, 0, 2)
            return lp, hpatch
        raise ValueError(f"no training image is large enough for {p}x{p} patches at x{scale}")

    def __iter__(self) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        while True:
            scale = float(self.scales[int(self.rng.integers(len(self.scales)))])
            pairs = [self._patch(scale) for _ in range(self.batch)]
            # C-contiguous NCHW whatever the patches' layout: kernels (and so the last bits of the results)
            # depend on memory layout, and layouts would otherwise differ between fresh and cached LR images
            lr = np.ascontiguousarray(np.stack([lp for lp, _ in pairs]).transpose(0, 3, 1, 2), dtype=np.float32)
            hr = np.ascontiguousarray(np.stack([hp for _, hp in pairs]).transpose(0, 3, 1, 2), dtype=np.float32)
            yield scale, lr, hr


def shave(scale: float) -> int:
    """Border pixels excluded from scoring: ``ceil(r)``."""
    return math.ceil(scale)
