"""Image files in and out of the runtime (numpy + Pillow; no PyTorch).

Reading: EXIF orientation applied; 8-bit grayscale, palette, RGB, RGBA and 16-bit grayscale (Pillow decodes
16-bit RGB PNGs to 8 bits, so those come back as 8-bit RGB). The model sees RGB float32 on
the 0..255 scale (16-bit values divided by 257). Writing returns the input's kind: grayscale stays grayscale
(ITU-R 601 luma of the RGB result), 16-bit stays 16-bit, RGBA keeps an alpha channel resized with MATLAB
bicubic to the output size; JPEG has no alpha or 16-bit, so those are rejected there. Files are written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from metasr.fileio import atomic_path
from metasr.metrics import quantize

__all__ = ["IMAGE_SUFFIXES", "ImageError", "LoadedImage", "read_image", "write_image"]

_WRITABLE = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
IMAGE_SUFFIXES = tuple(_WRITABLE)  # the files `metasr upscale` reads from folders and writes


class ImageError(ValueError):
    """An input that is not a readable image, or an output format that cannot hold the result."""


@dataclass(frozen=True)
class LoadedImage:
    """``rgb`` float32 (h, w, 3) on the 0..255 scale; ``alpha`` float32 (h, w) 0..255 or None."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool
    bits: int  # 8 or 16


def read_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Decode an image file fully (truncated or corrupt files raise :class:`ImageError`)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no such file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{path} is not a readable image ({reason})") from None
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        bits = 16 if a.max(initial=0) > 255 or mode.startswith("I;16") else 8
        g = (a / 257.0 if bits == 16 else a).astype(np.float32)
        return LoadedImage(np.repeat(g[..., None], 3, axis=2), None, True, bits)
    if mode in ("RGB;16", "RGBA;16"):  # rare raw modes: go through numpy
        raise ImageError(f"{path}: unsupported pixel mode {mode}")
    grayscale = mode in ("L", "LA", "1") or (mode == "P" and _palette_is_gray(im))
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
    rgba = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32)
    alpha = rgba[..., 3].copy() if has_alpha else None
    return LoadedImage(np.ascontiguousarray(rgba[..., :3]), alpha, grayscale, 8)


def _palette_is_gray(im: Image.Image) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))


def _quantize(x: np.ndarray, bits: int) -> np.ndarray:
    if bits == 16:
        return np.round(np.clip(x, 0, 255) * 257.0).astype(np.uint16)
    return quantize(x)


def encode_image(rgb: np.ndarray, source: LoadedImage, alpha: np.ndarray | None, fmt: str) -> Image.Image:
    """A PIL image of the result in the source's kind (see the module docstring)."""
    if source.grayscale:
        luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if source.bits == 16:
            if fmt == "JPEG":
                raise ImageError("JPEG cannot hold 16-bit images; write PNG or TIFF")
            return Image.fromarray(_quantize(luma, 16))  # uint16 (h, w) -> "I;16"
        if alpha is not None:
            return Image.fromarray(np.stack([_quantize(luma, 8), _quantize(alpha, 8)], axis=-1))  # -> "LA"
        return Image.fromarray(_quantize(luma, 8))  # -> "L"
    if alpha is not None:
        if fmt == "JPEG":
            raise ImageError("JPEG cannot hold an alpha channel; write PNG")
        return Image.fromarray(np.concatenate([_quantize(rgb, 8), _quantize(alpha, 8)[..., None]], axis=-1))  # RGBA
    if source.bits == 16:
        raise ImageError("16-bit RGB output is not supported by Pillow; write 8-bit")
    return Image.fromarray(_quantize(rgb, 8))  # -> "RGB"


def write_image(path: str | os.PathLike[str], rgb: np.ndarray, source: LoadedImage, alpha: np.ndarray | None) -> Path:
    """Write the float RGB result (H, W, 3), 0..255 scale, atomically in the format the suffix names."""
    path = Path(path)
    fmt = _WRITABLE.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot write {path.suffix or 'files without a suffix'}; use one of {sorted(_WRITABLE)}")
    im = encode_image(rgb, source, alpha, fmt)
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path
