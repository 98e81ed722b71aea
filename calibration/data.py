"""Calibration data: LR crops made from HR training images with the project's MATLAB bicubic (numpy, no torch).

Each crop is an HR region and its LR image at a scale drawn uniformly over the model's range, at a varied LR
size, deterministic for a seed. The feature graph sees the LR crops as feed dicts ``{"lr": float32 (1, 3, h, w)
on 0..255}``: a plain iterable, separate from any backend (:mod:`metasr.calibration.reader` adapts it to ONNX
Runtime). The HR crops serve the accuracy measurements (Y-PSNR against ground truth).

Images are split *by image* into a calibration part (ranges are computed on it) and a held-apart part (the
sensitivity pass and the reported loss are measured on it), so no measurement scores data the ranges saw.
Folders named like the standard evaluation sets (Set5, Set14, ...) are refused unless allowed explicitly.

Images are read as the runtime reads them (:func:`metasr.data.load_rgb`: EXIF orientation applied, 16-bit grey
scaled to 0..255, alpha dropped; unsupported modes, decompression bombs, truncated files and images over
100 Mpx refused as one-line errors naming the file). Every image's header is checked before anything is
decoded (:func:`metasr.data.check_images`); an image too small for the smallest LR crop at the smallest scale is
refused by name. Images are decoded one at a time, each once, so memory holds one image and the crops, however
many images there are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metasr.data import check_images, list_images, load_rgb
from metasr.imresize import imresize

__all__ = [
    "EVALUATION_SETS",
    "MIN_LR",
    "CalibrationCrop",
    "CalibrationDataError",
    "FeatureFeeds",
    "calibration_sets",
    "make_crops",
]

# folder names of the usual SR test sets (case-insensitive): calibrating on them would let the reported
# accuracy be measured on the calibration data
EVALUATION_SETS = frozenset({"set5", "set14", "b100", "bsd100", "urban100", "manga109", "div2k_valid"})
MIN_LR = 8  # the smallest LR crop side


class CalibrationDataError(ValueError):
    """No usable calibration images, or evaluation images given without being allowed."""


@dataclass(frozen=True)
class CalibrationCrop:
    """One calibration sample: ``lr`` uint8 (h, w, 3), ``hr`` uint8 (H, W, 3) with H ~ scale * h, the scale
    the LR was made at (MATLAB bicubic with the kernel at exactly 1 / scale), and the source image."""

    lr: np.ndarray
    hr: np.ndarray
    scale: float
    source: str

    def __post_init__(self) -> None:
        if self.lr.dtype != np.uint8 or self.hr.dtype != np.uint8 or self.lr.ndim != 3 or self.hr.ndim != 3:
            raise ValueError("crops are uint8 (h, w, 3) images")
        if self.scale <= 1.0:
            raise ValueError(f"crop scale must be > 1, got {self.scale}")

    def feed(self) -> dict[str, np.ndarray]:
        """The feature graph's feed: ``{"lr": float32 (1, 3, h, w)}`` on the 0..255 scale."""
        return {"lr": np.ascontiguousarray(self.lr.transpose(2, 0, 1), dtype=np.float32)[None]}


class FeatureFeeds(Sequence[dict[str, np.ndarray]]):
    """The crops as feature-graph feed dicts: a re-iterable, indexable, plain sequence of ``{"lr": ...}``."""

    def __init__(self, crops: Sequence[CalibrationCrop]) -> None:
        self.crops = tuple(crops)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [c.feed() for c in self.crops[i]]
        return self.crops[i].feed()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (c.feed() for c in self.crops)


def _image_paths(image_dirs: Sequence[str | os.PathLike[str]], allow_evaluation_images: bool) -> list[Path]:
    paths: list[Path] = []
    for folder in image_dirs:
        folder = Path(folder)
        if folder.name.lower() in EVALUATION_SETS and not allow_evaluation_images:
            raise CalibrationDataError(
                f"{folder} looks like an evaluation set ({folder.name}): calibrate on training images, "
                "or allow evaluation images explicitly"
            )
        found = list_images(folder)
        if not found:
            raise CalibrationDataError(f"no images in {folder}")
        paths += found
    # a folder given twice (or under two names) would put its images on both sides of the held-apart split
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _sizes(paths: Sequence[Path], min_side: int) -> list[tuple[int, int]]:
    """Each image's (H, W) as displayed, from its header only (:func:`~metasr.data.check_images`); one with a
    side under ``min_side`` raises :class:`CalibrationDataError` naming the file."""
    sizes = check_images(paths)
    for path, (h, w) in zip(paths, sizes, strict=True):
        if min(h, w) < min_side:
            raise CalibrationDataError(
                f"{path}: {w}x{h} is too small for calibration crops (each side needs at least {min_side} pixels)"
            )
    return sizes


def _min_side(scale_range: tuple[float, float]) -> int:
    """The shortest image side that gives an LR crop of :data:`MIN_LR` at the smallest scale."""
    return math.ceil(MIN_LR * scale_range[0] - 1e-9)


def make_crops(
    paths: Sequence[Path],
    count: int,
    seed: int,
    scale_range: tuple[float, float],
    lr_sizes: tuple[int, int] = (32, 96),
) -> list[CalibrationCrop]:
    """``count`` crops from ``paths``, deterministic for ``seed``.

    Per crop: an image, a scale uniform in ``scale_range`` on the training grid (0.1 steps: the model was trained
    at those scales, and a scale p/q with a large q has up to q distinct offsets per axis, which only makes
    the measurements slower; lowered to the largest grid scale at which the image still gives an LR crop of
    :data:`MIN_LR`), an LR size uniform in ``lr_sizes`` per side (shrunk where the image is too small for it at
    that scale, never below :data:`MIN_LR`), an HR region of ``round(scale * lr)`` pixels at a random position,
    and its LR made with MATLAB bicubic at 1 / scale. Every image needs ``ceil(MIN_LR * min scale)`` pixels a
    side. The crops are drawn from the headers' sizes first, then each picked image is decoded once and cut.
    """
    if not paths:
        raise CalibrationDataError("no calibration images")
    return _cut(paths, _sizes(paths, _min_side(scale_range)), count, seed, scale_range, lr_sizes)


def _cut(
    paths: Sequence[Path],
    sizes: Sequence[tuple[int, int]],
    count: int,
    seed: int,
    scale_range: tuple[float, float],
    lr_sizes: tuple[int, int],
) -> list[CalibrationCrop]:
    """:func:`make_crops` for images whose (H, W) ``sizes`` were checked."""
    lo, hi = scale_range
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(paths), size=count)
    plans: dict[int, list[tuple]] = {}  # per picked image, in order of first use: its crops' plans
    for i, k in enumerate(picks.tolist()):
        dims = sizes[k]
        cap = math.floor(min(dims) / MIN_LR * 10 + 1e-9) / 10  # the largest grid scale the image allows
        scale = max(lo, min(round(float(rng.uniform(lo, hi)), 1), hi, cap))
        size = rng.integers(lr_sizes[0], lr_sizes[1] + 1, size=2)
        h, w = (max(MIN_LR, min(int(s), math.floor(dim / scale))) for s, dim in zip(size, dims, strict=True))
        hr_h, hr_w = min(round(scale * h), dims[0]), min(round(scale * w), dims[1])
        y, x = int(rng.integers(dims[0] - hr_h + 1)), int(rng.integers(dims[1] - hr_w + 1))
        plans.setdefault(k, []).append((i, scale, (h, w), slice(y, y + hr_h), slice(x, x + hr_w)))
    crops: list[CalibrationCrop | None] = [None] * count
    for k, cuts in plans.items():  # each picked image decoded once
        img = load_rgb(paths[k])
        if img.shape[:2] != sizes[k]:
            raise CalibrationDataError(f"{paths[k]}: decodes to {img.shape[1]}x{img.shape[0]}, not its header's size")
        for i, scale, lr_hw, rows, cols in cuts:
            hr = img[rows, cols].copy()  # a copy: the crops keep nothing of the decoded image alive
            lr = imresize(hr, 1 / scale, out_shape=lr_hw)
            crops[i] = CalibrationCrop(lr, hr, scale, f"{paths[k].parent.name}/{paths[k].name}")
        del img  # before the next image is decoded: one decoded image in memory at a time
    return crops  # type: ignore[return-value]  # every crop is filled: each belongs to one picked image


def calibration_sets(
    image_dirs: Sequence[str | os.PathLike[str]],
    crops: int,
    held_apart: int,
    seed: int,
    scale_range: tuple[float, float],
    lr_sizes: tuple[int, int] = (32, 96),
    allow_evaluation_images: bool = False,
    held_size: int = 48,
) -> tuple[list[CalibrationCrop], list[CalibrationCrop]]:
    """Calibration crops and held-apart crops, drawn from disjoint images of ``image_dirs``.

    Every image's header is checked first (see :func:`make_crops`), before any is decoded. The images are
    shuffled with ``seed``; every fourth one is held apart (at least one); ``crops`` crops of varied sizes come
    from the rest, ``held_apart`` crops from the held-apart images, all at one LR size ``held_size`` (where the
    image allows) so the repeated measurements reuse one feature-graph shape.
    """
    paths = _image_paths(image_dirs, allow_evaluation_images)
    if len(paths) < 2:
        raise CalibrationDataError(f"need at least 2 calibration images, found {len(paths)}")
    sizes = _sizes(paths, _min_side(scale_range))
    order = np.random.default_rng(seed).permutation(len(paths))
    held = [int(i) for i in order[::4]]
    calib = [int(i) for j, i in enumerate(order) if j % 4]
    return (
        _cut([paths[i] for i in calib], [sizes[i] for i in calib], crops, seed, scale_range, lr_sizes),
        _cut([paths[i] for i in held], [sizes[i] for i in held], held_apart, seed + 1, scale_range, (held_size,) * 2),
    )
