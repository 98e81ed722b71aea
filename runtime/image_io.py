"""Image files in and out of the runtime (numpy + Pillow; no PyTorch).

Reading happens in two steps. :func:`probe_image` reads only the header: size (after EXIF orientation),
the pixel mode and the kind of output that mode comes back as; it refuses oversized images (``max_pixels``,
and Pillow's decompression-bomb limit, as one-line :class:`ImageError` messages, never a raw warning) and modes it
does not support, by name, before anything is decoded. :func:`read_image` then decodes.

Supported: 1-bit, 8-bit grey, palette, RGB, RGBX, grey+alpha, RGBA, and 16-bit grey (PNG, TIFF). The model
sees RGB float32 on the 0..255 scale (16-bit values divided by 257). The result comes back in the input's
kind: grey stays grey (ITU-R 601 luma of the RGB result), 16-bit grey stays 16-bit, alpha is resized with
MATLAB bicubic. Pillow decodes 16-bit colour PNGs to 8 bits: those come back 8-bit, with a note saying so.
Refused by name: float (mode F: its value range is not defined), 32-bit integer, CMYK, YCbCr, LAB, HSV and
premultiplied-alpha images. :func:`check_output` refuses, before anything is written, an output format
that cannot hold the input's kind (16-bit in WebP/JPEG/BMP, alpha in JPEG/BMP).

Writing (:func:`open_writer`): rows arrive band by band; PNG is compressed as the bands come
(:mod:`metasr.runtime.png`), other formats are assembled as 8/16-bit integers (never a full-size float copy)
and saved by Pillow. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from metasr.runtime.png import DEFAULT_COMPRESS_LEVEL, PngWriter
from PIL import Image, ImageOps, UnidentifiedImageError

from metasr.fileio import atomic_path
from metasr.metrics import quantize

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageError",
    "ImageInfo",
    "ImageWriter",
    "LoadedImage",
    "check_output",
    "open_writer",
    "output_format",
    "probe_image",
    "read_image",
    "read_rgb8",
    "write_image",
]

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
# the output kinds each format holds without loss of kind (WebP stores grey as RGB, which is lossless)
_HOLDS = {
    "PNG": {"L", "LA", "RGB", "RGBA", "I;16"},
    "TIFF": {"L", "LA", "RGB", "RGBA", "I;16"},
    "JPEG": {"L", "RGB"},
    "BMP": {"L", "RGB"},
    "WEBP": {"L", "LA", "RGB", "RGBA"},
}
_KIND_NAMES = {"L": "greyscale", "LA": "greyscale + alpha", "RGB": "RGB", "RGBA": "RGBA", "I;16": "16-bit greyscale"}
_REFUSED = {
    "F": "32-bit float (mode F) images are not supported: their value range is not defined; save as 8- or 16-bit",
    "I": "32-bit integer (mode I) images are not supported; save as 8- or 16-bit",
    "CMYK": "CMYK images are not supported; convert to RGB first",
    "YCbCr": "YCbCr images are not supported; convert to RGB first",
    "LAB": "LAB images are not supported; convert to RGB first",
    "HSV": "HSV images are not supported; convert to RGB first",
    "RGBa": "premultiplied-alpha (RGBa) images are not supported",
    "La": "premultiplied-alpha (La) images are not supported",
}
DEFAULT_MAX_PIXELS = 100_000_000  # the largest image read by default (inputs, training and calibration images)
_ALPHA_KINDS = frozenset({"LA", "RGBA"})
_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


class ImageError(ValueError):
    """An input that is not a readable or supported image, or an output format that cannot hold the result."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: ``size`` (w, h) as displayed (EXIF orientation applied), Pillow ``mode``,
    the output ``kind`` ("L", "LA", "RGB", "RGBA" or "I;16") and ``notes`` on conversions."""

    path: Path
    size: tuple[int, int]
    mode: str
    kind: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedImage:
    """``rgb`` float32 (h, w, 3) on the 0..255 scale; ``alpha`` float32 (h, w) 0..255 or None."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    info: ImageInfo

    @property
    def grayscale(self) -> bool:
        return self.info.kind in ("L", "LA", "I;16")

    @property
    def bits(self) -> int:
        return 16 if self.info.kind == "I;16" else 8


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` (header only) with Pillow's decompression-bomb warning silenced (our own limit is
    checked instead) and its errors as one-line :class:`ImageError` messages."""
    if not path.is_file():
        raise ImageError(f"no such file: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            raise ImageError(f"{path}: refused as a decompression bomb ({_first_line(e).split(',')[0]})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{path} is not a readable image ({_first_line(e)})") from None
    try:
        yield im
    finally:
        im.close()


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation, read from the header only (PNG's ``getexif`` would decode the whole image)."""
    try:
        if "exif" in im.info:
            exif = Image.Exif()
            exif.load(im.info["exif"])
            return int(exif.get(_ORIENTATION, 1))
        if im.format != "PNG":
            return int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: Pillow's exif_transpose ignores it as well
        return 1
    return 1


def _oriented_by_pillow(im: Image.Image) -> bool:
    """Whether Pillow already reports the displayed size (its TIFF plugin applies the orientation tag itself:
    the size differs from the stored width x height)."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return False
    return (tags.get(256), tags.get(257)) != im.size  # ImageWidth, ImageLength


def _gray_palette(im: Image.Image) -> bool:
    palette = im.palette
    if palette is None or palette.mode != "RGB":
        return False
    entries = np.frombuffer(bytes(palette.palette), dtype=np.uint8)
    entries = entries[: entries.size // 3 * 3].reshape(-1, 3)
    return bool(np.all(entries[:, 0] == entries[:, 1]) and np.all(entries[:, 1] == entries[:, 2]))


def _kind(im: Image.Image, path: Path) -> tuple[str, tuple[str, ...]]:
    mode = im.mode
    rawmode = im.tile[0][3] if im.tile and isinstance(im.tile[0][3], str) else ""
    if mode in ("1", "L"):
        return "L", ()
    if mode == "LA":
        return "LA", ()
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info
        gray = _gray_palette(im)
        return ("LA" if alpha else "L") if gray else ("RGBA" if alpha else "RGB"), ()
    if mode in ("RGB", "RGBX", "RGBA"):
        notes = ()
        if "16" in rawmode:
            notes = (f"{path}: 16-bit colour is decoded to 8 bits per channel by Pillow; the output is 8-bit",)
        return ("RGBA" if mode == "RGBA" else "RGB"), notes
    if mode in ("I;16", "I;16B", "I;16L", "I;16N") or (mode == "I" and im.format == "PNG"):
        return "I;16", ()
    reason = _REFUSED.get(mode, f"images of pixel mode {mode} are not supported")
    raise ImageError(f"{path}: {reason}")


def probe_image(
    path: str | os.PathLike[str], max_pixels: int | None = None, hint: str = " (raise --max-pixels)"
) -> ImageInfo:
    """Read an image's header only (nothing is decoded) and check its size and mode.

    Raises :class:`ImageError` for a missing or unreadable file, more than ``max_pixels`` pixels (the message
    ends with ``hint``), a decompression bomb, or an unsupported mode. The size is as displayed; an EXIF block
    that only follows the pixel data (possible in PNG) is not seen here: :func:`read_image` then reports the
    decoded size.
    """
    path = Path(path)
    with _open(path) as im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"{path}: input {w}x{h} exceeds the pixel limit of {max_pixels:,}{hint}")
        kind, notes = _kind(im, path)
        if _orientation(im) in _SWAPS_AXES and not _oriented_by_pillow(im):
            w, h = h, w
        return ImageInfo(path, (w, h), im.mode, kind, notes)


@contextmanager
def _decoded(path: Path, max_pixels: int | None, hint: str) -> Iterator[tuple[Image.Image, ImageInfo]]:
    """The probed image decoded and oriented, with its info (size as decoded)."""
    info = probe_image(path, max_pixels, hint)
    with _open(path) as im:
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{path} is not a readable image ({_first_line(e)})") from None
        yield im, (info if im.size == info.size else dataclasses.replace(info, size=im.size))


def _pixels(im: Image.Image, info: ImageInfo) -> np.ndarray:
    """A decoded image's values: 16-bit grey as float32 (h, w) on 0..255 (value / 257), else uint8
    (h, w, 3), or (h, w, 4) RGBA for kinds with alpha."""
    if info.kind == "I;16":
        return np.asarray(im).astype(np.float32) / np.float32(257.0)
    return np.asarray(im.convert("RGBA" if info.kind in _ALPHA_KINDS else "RGB"), dtype=np.uint8)


def read_image(
    path: str | os.PathLike[str], max_pixels: int | None = None, hint: str = " (raise --max-pixels)"
) -> LoadedImage:
    """Probe (see :func:`probe_image`), then decode fully (truncated or corrupt files raise
    :class:`ImageError`) and apply the EXIF orientation."""
    with _decoded(Path(path), max_pixels, hint) as (im, info):
        px = _pixels(im, info)
    if info.kind == "I;16":
        return LoadedImage(np.repeat(px[..., None], 3, axis=2), None, info)
    px = px.astype(np.float32)
    alpha = px[..., 3].copy() if info.kind in _ALPHA_KINDS else None
    return LoadedImage(np.ascontiguousarray(px[..., :3]), alpha, info)


def read_rgb8(path: str | os.PathLike[str], max_pixels: int | None = None, hint: str = "") -> np.ndarray:
    """The image as uint8 RGB (H, W, 3), checked and oriented as by :func:`read_image` (alpha dropped; 16-bit
    grey rounded from value / 257), without a float copy of 8-bit images: ``read_image(...).rgb`` quantized,
    bit for bit."""
    with _decoded(Path(path), max_pixels, hint) as (im, info):
        px = _pixels(im, info)
    if info.kind == "I;16":
        return np.repeat(np.round(px).astype(np.uint8)[..., None], 3, axis=2)
    return np.ascontiguousarray(px[..., :3])


def output_format(path: str | os.PathLike[str]) -> str:
    """Pillow's format name for an output path's suffix; :class:`ImageError` for suffixes we do not write."""
    suffix = Path(path).suffix.lower()
    fmt = _WRITABLE.get(suffix)
    if fmt is None:
        raise ImageError(f"cannot write {suffix or 'files without a suffix'}; use one of {sorted(_WRITABLE)}")
    return fmt


def check_output(info: ImageInfo, target: str | os.PathLike[str]) -> None:
    """Raise :class:`ImageError` unless ``target``'s format can hold the kind ``info`` comes back as."""
    fmt = output_format(target)
    if info.kind not in _HOLDS[fmt]:
        can = sorted(f for f, kinds in _HOLDS.items() if info.kind in kinds)
        raise ImageError(
            f"{target}: {fmt} cannot hold the {_KIND_NAMES[info.kind]} result of {info.path.name}; "
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


class ImageWriter:
    """Receives an image's rows top to bottom (:meth:`write`), in the output kind of its input."""

    def __init__(self, f: io.BufferedWriter, fmt: str, kind: str, size: tuple[int, int], png_compress: int):
        self.fmt, self.kind, self.size = fmt, kind, size
        w, h = size
        if fmt == "PNG":
            self._png: PngWriter | None = PngWriter(f, w, h, kind, png_compress)
        else:
            self._png = None
            channels = {"L": (), "LA": (2,), "RGB": (3,), "RGBA": (4,), "I;16": ()}[kind]
            self._rows = np.empty((h, w, *channels), dtype=np.uint16 if kind == "I;16" else np.uint8)
        self._f = f
        self._next = 0

    def write(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """``rgb`` float (n, W, 3) on 0..255, unclamped; ``alpha`` uint8 (n, W) when the kind has alpha."""
        if (alpha is None) != (self.kind not in _ALPHA_KINDS):
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
        options = {"quality": 95} if self.fmt in ("JPEG", "WEBP") else {}
        Image.fromarray(self._rows).save(self._f, format=self.fmt, **options)


@contextmanager
def open_writer(
    path: str | os.PathLike[str], kind: str, size: tuple[int, int], png_compress: int = DEFAULT_COMPRESS_LEVEL
) -> Iterator[ImageWriter]:
    """An :class:`ImageWriter` for ``path`` (format from the suffix), ``size`` (w, h), replacing ``path``
    atomically when the block ends without error (all rows written); nothing is left behind otherwise."""
    fmt = output_format(path)
    if kind not in _HOLDS[fmt]:
        raise ImageError(f"{path}: {fmt} cannot hold a {_KIND_NAMES.get(kind, kind)} image")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = ImageWriter(f, fmt, kind, size, png_compress)
        yield writer
        writer.finish()


def write_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    source: LoadedImage,
    alpha: np.ndarray | None,
    png_compress: int = DEFAULT_COMPRESS_LEVEL,
) -> Path:
    """Write a whole float RGB result (H, W, 3) on the 0..255 scale in ``source``'s kind (alpha float (H, W)
    0..255 when it has one), atomically, in the format the suffix names."""
    h, w = rgb.shape[:2]
    a = None if alpha is None else quantize(alpha)
    with open_writer(path, source.info.kind, (w, h), png_compress) as writer:
        writer.write(rgb, a)
    return Path(path)
