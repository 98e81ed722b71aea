"""Encoding results: to files (atomically) or to bytes, through one writer (numpy + Pillow; no PyTorch).

Rows arrive band by band (:class:`ImageWriter`): PNG is compressed as the bands come
(:mod:`metasr.runtime.png`), other formats are assembled as 8/16-bit integers (never a full-size float copy)
and saved by Pillow when the last row is in. :func:`open_encoder` writes into any binary file object;
:func:`open_writer` into a path (a temporary file renamed over it only when every row arrived) and
:func:`encode_image` returns the encoded bytes (the service path: nothing touches the disk).

:func:`check_output` refuses, before anything is written, a format that cannot hold the input's kind
(16-bit in WebP/JPEG/BMP, alpha in JPEG/BMP) and returns notes on what the target drops. ICC profiles are
carried to PNG (``iCCP``), TIFF, JPEG and WebP when the profile's colour space fits the output (an RGB
profile for RGB/RGBA, a grey one for grey kinds); :func:`carried_icc` decides, with a note when it cannot.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from metasr.runtime.image_io import ImageError, ImageInfo, LoadedImage
from metasr.runtime.png import DEFAULT_COMPRESS_LEVEL, PngWriter
from PIL import Image

from metasr.fileio import atomic_path
from metasr.metrics import quantize

__all__ = [
    "ALPHA_KINDS",
    "FORMATS",
    "IMAGE_SUFFIXES",
    "ImageWriter",
    "carried_icc",
    "check_output",
    "check_side",
    "encode_image",
    "held_bytes",
    "open_encoder",
    "open_writer",
    "output_format",
    "write_image",
]

FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
IMAGE_SUFFIXES = tuple(FORMATS)  # the files `metasr upscale` reads from folders and writes
# the output kinds each format holds without loss of kind (WebP stores grey as RGB, which is lossless)
_HOLDS = {
    "PNG": {"L", "LA", "RGB", "RGBA", "I;16"},
    "TIFF": {"L", "LA", "RGB", "RGBA", "I;16"},
    "JPEG": {"L", "RGB"},
    "BMP": {"L", "RGB"},
    "WEBP": {"L", "LA", "RGB", "RGBA"},
}
_KIND_NAMES = {"L": "greyscale", "LA": "greyscale + alpha", "RGB": "RGB", "RGBA": "RGBA", "I;16": "16-bit greyscale"}
_CHANNELS = {"L": (), "LA": (2,), "RGB": (3,), "RGBA": (4,), "I;16": ()}  # trailing dims of the rows
ALPHA_KINDS = frozenset({"LA", "RGBA"})
_ICC_SPACE = {"L": b"GRAY", "LA": b"GRAY", "I;16": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB "}
_HOLDS_ICC = {"PNG", "TIFF", "JPEG", "WEBP"}
# the largest side each format's encoder writes (libjpeg's JPEG_MAX_DIMENSION, libwebp's WEBP_MAX_DIMENSION);
# past them Pillow fails only after the whole upscale, as a 500 in the service ("broken data stream") and a
# second line from libjpeg on stderr, so the writer refuses the size before any row is computed
MAX_SIDES = {"JPEG": 65_500, "WEBP": 16_383}


def output_format(target: str | os.PathLike[str]) -> str:
    """Pillow's format name for an output path's suffix (or a format name / suffix given as such);
    :class:`ImageError` for what we do not write."""
    text = os.fspath(target)
    if text.upper() in _HOLDS:
        return text.upper()
    suffix = text.lower() if text.startswith(".") and "/" not in text else Path(text).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ImageError(f"cannot write {suffix or 'files without a suffix'}; use one of {sorted(FORMATS)}")
    return fmt


def carried_icc(icc: bytes | None, kind: str, fmt: str) -> tuple[bytes | None, str | None]:
    """The ICC profile an output of ``kind`` in ``fmt`` gets (or None) and a note when one is dropped."""
    if not icc:
        return None, None
    space = icc[16:20]  # the profile header's data colour space
    if fmt not in _HOLDS_ICC:
        return None, f"{fmt} cannot hold the input's ICC profile: it is dropped (write PNG, TIFF, JPEG or WebP)"
    if space != _ICC_SPACE[kind]:
        name = space.decode("latin-1").strip() or "unknown"
        return None, f"the input's ICC profile ({name}) does not fit the {_KIND_NAMES[kind]} output: dropped"
    return icc, None


def check_output(info: ImageInfo, target: str | os.PathLike[str]) -> tuple[str, ...]:
    """Raise :class:`ImageError` unless ``target``'s format can hold the kind ``info`` comes back as; returns
    notes on what the target drops."""
    fmt = output_format(target)
    if info.kind not in _HOLDS[fmt]:
        can = sorted(f for f, kinds in _HOLDS.items() if info.kind in kinds)
        raise ImageError(
            f"{target}: {fmt} cannot hold the {_KIND_NAMES[info.kind]} result of {info.path.name}; "
            f"write {' or '.join(can)}"
        )
    note = carried_icc(info.icc, info.kind, fmt)[1]
    return (f"{info.path.name} -> {Path(target).name}: {note}",) if note else ()


def check_side(fmt: str, size: tuple[int, int]) -> None:
    """Raise :class:`ImageError` when a ``size`` (w, h) result is wider or taller than ``fmt`` can encode."""
    limit = MAX_SIDES.get(fmt)
    if limit is not None and max(size) > limit:
        can = sorted(f for f in _HOLDS if f not in MAX_SIDES)
        raise ImageError(
            f"{fmt} holds at most {limit:,} pixels a side; the {size[0]}x{size[1]} result does not fit: "
            f"write {' or '.join(can)}"
        )


def _to_kind(rgb: np.ndarray, alpha: np.ndarray | None, kind: str) -> np.ndarray:
    """Float RGB rows (n, W, 3) on 0..255 (+ uint8 alpha (n, W)) -> the output's integer rows."""
    if kind in ("L", "LA", "I;16"):
        luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (n, W)
        if kind == "I;16":
            return np.round(np.clip(luma, 0, 255) * np.float32(257.0)).astype(np.uint16)
        gray = quantize(luma)
        return gray if kind == "L" else np.stack([gray, alpha], axis=-1)
    out = quantize(rgb)
    return out if kind == "RGB" else np.concatenate([out, alpha[..., None]], axis=-1)


def held_bytes(fmt: str, kind: str, size: tuple[int, int]) -> int:
    """Bytes a writer holds for a whole image: 0 for PNG (streamed), else the integer image and Pillow's own
    copy of it while saving (4 bytes per pixel for 8-bit kinds with several channels)."""
    if fmt == "PNG":
        return 0
    w, h = size
    rows = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 2}[kind]
    pillow = {"L": 1, "LA": 4, "RGB": 4, "RGBA": 4, "I;16": 2}[kind]
    return w * h * (rows + pillow)


class ImageWriter:
    """Receives an image's rows top to bottom (:meth:`write`), in the output kind of its input."""

    def __init__(
        self,
        f: BinaryIO,
        fmt: str,
        kind: str,
        size: tuple[int, int],
        png_compress: int = DEFAULT_COMPRESS_LEVEL,
        icc: bytes | None = None,
    ):
        self.fmt, self.kind, self.size, self.icc = fmt, kind, size, icc
        w, h = size
        if fmt == "PNG":
            self._png: PngWriter | None = PngWriter(f, w, h, kind, png_compress, icc=icc)
        else:
            self._png = None
            self._rows = np.empty((h, w, *_CHANNELS[kind]), dtype=np.uint16 if kind == "I;16" else np.uint8)
        self._f = f
        self._next = 0

    def write(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """``rgb`` float (n, W, 3) on 0..255, unclamped; ``alpha`` uint8 (n, W) when the kind has alpha."""
        if (alpha is None) != (self.kind not in ALPHA_KINDS):
            raise ValueError(f"{self.kind} output needs {'an' if alpha is None else 'no'} alpha channel")
        rows = _to_kind(rgb, alpha, self.kind)
        if self._png is not None:
            self._png.write(rows)
        else:
            self._rows[self._next : self._next + rows.shape[0]] = rows
        self._next += rows.shape[0]

    def finish(self) -> None:
        if self._next != self.size[1]:
            raise ValueError(f"image of height {self.size[1]} finished after {self._next} rows")
        if self._png is not None:
            self._png.close()
            return
        options: dict = {"quality": 95} if self.fmt in ("JPEG", "WEBP") else {}
        if self.icc:
            options["icc_profile"] = self.icc
        image = Image.fromarray(self._rows)
        del self._rows  # Pillow holds its own copy now
        image.save(self._f, format=self.fmt, **options)


@contextmanager
def open_encoder(
    f: BinaryIO,
    fmt: str,
    kind: str,
    size: tuple[int, int],
    png_compress: int = DEFAULT_COMPRESS_LEVEL,
    icc: bytes | None = None,
) -> Iterator[ImageWriter]:
    """An :class:`ImageWriter` encoding ``fmt`` into the binary file ``f``; the image is finished (every row
    checked to have arrived) when the block ends without error."""
    fmt = output_format(fmt)
    if kind not in _HOLDS[fmt]:
        raise ImageError(f"{fmt} cannot hold a {_KIND_NAMES.get(kind, kind)} image")
    check_side(fmt, size)
    writer = ImageWriter(f, fmt, kind, size, png_compress, icc)
    yield writer
    writer.finish()


@contextmanager
def open_writer(
    path: str | os.PathLike[str],
    kind: str,
    size: tuple[int, int],
    png_compress: int = DEFAULT_COMPRESS_LEVEL,
    icc: bytes | None = None,
) -> Iterator[ImageWriter]:
    """An :class:`ImageWriter` for ``path`` (format from the suffix), ``size`` (w, h), replacing ``path``
    atomically when the block ends without error (all rows written); nothing is left behind otherwise."""
    fmt = output_format(path)
    if kind not in _HOLDS[fmt]:
        raise ImageError(f"{path}: {fmt} cannot hold a {_KIND_NAMES.get(kind, kind)} image")
    check_side(fmt, size)
    with atomic_path(path) as tmp, open(tmp, "wb") as f, open_encoder(f, fmt, kind, size, png_compress, icc) as w:
        yield w


def encode_image(
    rgb: np.ndarray,
    kind: str,
    fmt: str,
    alpha: np.ndarray | None = None,
    *,
    icc: bytes | None = None,
    png_compress: int = DEFAULT_COMPRESS_LEVEL,
) -> bytes:
    """A whole float RGB result (H, W, 3) on the 0..255 scale (alpha uint8 (H, W) for kinds with alpha)
    encoded as ``fmt`` ("PNG", "JPEG", "WEBP", "TIFF", "BMP" or a suffix) in ``kind``."""
    h, w = rgb.shape[:2]
    buf = io.BytesIO()
    with open_encoder(buf, fmt, kind, (w, h), png_compress, icc) as writer:
        writer.write(rgb, alpha)
    return buf.getvalue()


def write_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    source: LoadedImage,
    alpha: np.ndarray | None,
    png_compress: int = DEFAULT_COMPRESS_LEVEL,
) -> Path:
    """Write a whole float RGB result (H, W, 3) on the 0..255 scale in ``source``'s kind (alpha float (H, W)
    0..255 when it has one), atomically, in the format the suffix names, with ``source``'s ICC profile where
    it fits (:func:`carried_icc`)."""
    h, w = rgb.shape[:2]
    a = None if alpha is None else quantize(alpha)
    icc = carried_icc(source.info.icc, source.info.kind, output_format(path))[0]
    with open_writer(path, source.info.kind, (w, h), png_compress, icc) as writer:
        writer.write(rgb, a)
    return Path(path)
