"""Images into the runtime, from files or from bytes, with every check on both (numpy + Pillow; no PyTorch).

    info = probe_image("in.png", max_pixels)              # header only: size as displayed, kind, notes
    img = read_image("in.png", max_pixels)                # decoded, oriented: LoadedImage
    img = read_image_bytes(data, max_pixels, "in.png")    # the same from bytes (a service: no temp files)

Files and bytes go through the same steps (:func:`_open` is the only difference). Reading happens in two
steps. :func:`probe_image` reads the header: size after EXIF orientation (also from a PNG ``eXIf`` chunk after
the pixel data, found by walking the chunk headers), the pixel mode, the kind of output that mode comes back
as, the ICC profile and notes on conversions; it refuses oversized images (``max_pixels``, and Pillow's
decompression-bomb limit, as one-line :class:`ImageError` messages, never a raw warning), unsupported modes by
name, and animated or multi-page images (GIF, APNG, WebP, TIFF: one image per run; a multi-picture JPEG's
primary image is used, with a note), all before anything is decoded. :func:`read_image` then decodes,
orients, and reports the decoded size (which has the last word).

Supported: 1-bit, 8-bit grey, palette, RGB, RGBX, grey+alpha, RGBA, and 16-bit grey (PNG, TIFF). The model
sees RGB float32 on the 0..255 scale (16-bit values divided by 257). The result comes back in the input's
kind: grey stays grey (ITU-R 601 luma of the RGB result), 16-bit grey stays 16-bit, alpha is resized with
MATLAB bicubic. Pillow decodes 16-bit colour and 16-bit grey+alpha PNGs to 8 bits: those come back 8-bit
(RGB / grey+alpha), with a note saying so; palette and 1-bit inputs come back as full 8-bit images, with a
note. Refused by name: float (mode F: its value range is not defined), 32-bit integer, CMYK, YCbCr, LAB, HSV
and premultiplied-alpha images.

A :class:`LoadedImage` holds the pixels compactly (uint8 RGB, or uint16 grey, and uint8 alpha: 3 to 4 bytes
per pixel) and hands out float regions on demand (:meth:`LoadedImage.rgb_region`), so a large input costs no
full-size float copy. Writing: :mod:`metasr.runtime.image_write`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from metasr.runtime.png import find_exif
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DECODE_BYTES_PER_PIXEL",
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageInfo",
    "LoadedImage",
    "probe_image",
    "probe_image_bytes",
    "read_image",
    "read_image_bytes",
    "read_rgb8",
]

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
# peak bytes per pixel while decoding, beyond what the LoadedImage keeps (Pillow's image, a rotated copy under
# an EXIF orientation, the conversion and its export). Measured, the kept pixels included: 14.0 B/px for a
# 6000x4000 RGB PNG, 12.1-16.1 for 3000x2000 RGB / RGBA / palette PNGs and a rotated JPEG; 16 + the 3-4 kept
# leaves a margin
DECODE_BYTES_PER_PIXEL = 16
_ALPHA_KINDS = frozenset({"LA", "RGBA"})
_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


class ImageError(ValueError):
    """An input that is not a readable or supported image, or an output format that cannot hold the result."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: ``size`` (w, h) as displayed (EXIF orientation applied), Pillow ``mode``,
    the output ``kind`` ("L", "LA", "RGB", "RGBA" or "I;16"), ``notes`` on conversions and the ICC profile.
    ``path`` is the file, or the name given with bytes."""

    path: Path
    size: tuple[int, int]
    mode: str
    kind: str
    notes: tuple[str, ...] = ()
    icc: bytes | None = field(default=None, repr=False)

    @property
    def held_bytes(self) -> int:
        """Bytes a :class:`LoadedImage` of this image holds (uint8 RGB or uint16 grey, uint8 alpha)."""
        w, h = self.size
        return w * h * (2 if self.kind == "I;16" else 3 + (self.kind in _ALPHA_KINDS))


@dataclass(frozen=True)
class LoadedImage:
    """A decoded, oriented image: ``pixels`` uint8 (h, w, 3), or uint16 (h, w) for 16-bit grey; ``alpha8``
    uint8 (h, w) or None. The model's view is float32 RGB on the 0..255 scale (:attr:`rgb`, :meth:`rgb_region`)."""

    pixels: np.ndarray
    alpha8: np.ndarray | None
    info: ImageInfo

    @property
    def grayscale(self) -> bool:
        return self.info.kind in ("L", "LA", "I;16")

    @property
    def bits(self) -> int:
        return 16 if self.info.kind == "I;16" else 8

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w)."""
        return self.pixels.shape[0], self.pixels.shape[1]

    def rgb_region(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """A region as float32 (n, m, 3) on the 0..255 scale (16-bit grey: value / 257), converted on demand."""
        px = self.pixels[rows, cols]
        if px.ndim == 2:  # 16-bit grey
            grey = px.astype(np.float32) / np.float32(257.0)
            return np.repeat(grey[..., None], 3, axis=2)
        return px.astype(np.float32)

    @property
    def rgb(self) -> np.ndarray:
        """The whole image as float32 (h, w, 3) on the 0..255 scale (a new array each time)."""
        return self.rgb_region()

    @property
    def rgb8(self) -> np.ndarray:
        """uint8 (h, w, 3): the pixels themselves, 16-bit grey rounded from value / 257 (half to even)."""
        if self.pixels.ndim == 3:
            return self.pixels
        grey = np.round(self.pixels.astype(np.float32) / np.float32(257.0)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)

    @property
    def alpha(self) -> np.ndarray | None:
        """Alpha as float32 (h, w) on 0..255, or None."""
        return None if self.alpha8 is None else self.alpha8.astype(np.float32)


def _first_line(e: BaseException) -> str:
    """The error's first line, without the object reprs Pillow names ("cannot identify image file
    <_io.BytesIO object at 0x7f...>": an address in every service reply)."""
    text = re.sub(r" ?<[\w.]+ object at 0x[0-9a-f]+>", "", str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def _open(source: Path | bytes, name: Path) -> Iterator[Image.Image]:
    """``Image.open`` (header only) on a file or on bytes, with Pillow's decompression-bomb warning silenced
    (our own limit is checked instead) and its errors as one-line :class:`ImageError` messages."""
    if isinstance(source, bytes):
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        try:
            mode = source.stat().st_mode
        except OSError:
            raise ImageError(f"no such file: {source}") from None
        if not stat.S_ISREG(mode):
            raise ImageError(f"{source} is not a regular file")
        stream = source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(stream)
        except Image.DecompressionBombError as e:
            raise ImageError(f"{name}: refused as a decompression bomb ({_first_line(e).split(',')[0]})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{name} is not a readable image ({_first_line(e)})") from None
    try:
        yield im
    finally:
        im.close()


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation, read from the header only (PNG's ``getexif`` would decode the whole image; a PNG
    ``eXIf`` chunk after the pixel data is found by walking the chunk headers)."""
    try:
        if "exif" in im.info:
            data = im.info["exif"]
        elif im.format == "PNG":
            data = find_exif(im.fp)
            if data is None:
                return 1
        else:
            return int(im.getexif().get(_ORIENTATION, 1))
        exif = Image.Exif()
        exif.load(data)
        return int(exif.get(_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: Pillow's exif_transpose ignores it as well
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


def _kind(im: Image.Image, name: Path) -> tuple[str, tuple[str, ...]]:
    """The output kind of an opened image and notes on what that changes."""
    mode = im.mode
    rawmode = im.tile[0][3] if im.tile and isinstance(im.tile[0][3], str) else ""
    if mode == "1":
        return "L", (f"{name}: 1-bit image: the output is 8-bit greyscale",)
    if mode in ("L", "LA"):
        return mode, ()
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info
        kind = ("LA" if alpha else "L") if _gray_palette(im) else ("RGBA" if alpha else "RGB")
        return kind, (f"{name}: palette image: the output is {_NAMES[kind]} (not re-quantized to a palette)",)
    if mode in ("RGB", "RGBX", "RGBA"):
        if rawmode.startswith("LA;16"):  # Pillow opens 16-bit grey+alpha PNGs as 8-bit RGBA
            return "LA", (f"{name}: 16-bit grey+alpha is decoded to 8 bits per channel by Pillow; the output "
                          "is 8-bit grey+alpha",)  # fmt: skip
        if "16" in rawmode:
            return ("RGBA" if mode == "RGBA" else "RGB"), (
                f"{name}: 16-bit colour is decoded to 8 bits per channel by Pillow; the output is 8-bit",
            )
        return ("RGBA" if mode == "RGBA" else "RGB"), ()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N") or (mode == "I" and im.format == "PNG"):
        return "I;16", ()
    reason = _REFUSED.get(mode, f"images of pixel mode {mode} are not supported")
    raise ImageError(f"{name}: {reason}")


_NAMES = {"L": "8-bit greyscale", "LA": "8-bit greyscale + alpha", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA"}


def _frames(im: Image.Image, name: Path) -> tuple[str, ...]:
    """Refuse animated / multi-page images; a multi-picture JPEG (MPO) is used by its primary image."""
    if not getattr(im, "is_animated", False):
        return ()
    frames = getattr(im, "n_frames", 2)
    if im.format == "MPO":
        return (f"{name}: multi-picture JPEG: its primary image is upscaled ({frames - 1} more ignored)",)
    what = "pages" if im.format == "TIFF" else "frames"
    raise ImageError(
        f"{name}: {im.format} with {frames} {what}: metasr upscales single images; extract the one you want first"
    )


def _probe(source: Path | bytes, name: Path, max_pixels: int | None, hint: str) -> ImageInfo:
    with _open(source, name) as im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"{name}: input {w}x{h} exceeds the pixel limit of {max_pixels:,}{hint}")
        kind, notes = _kind(im, name)
        notes += _frames(im, name)
        if _orientation(im) in _SWAPS_AXES and not _oriented_by_pillow(im):
            w, h = h, w
        icc = im.info.get("icc_profile") or None
        return ImageInfo(name, (w, h), im.mode, kind, notes, icc if isinstance(icc, bytes) else None)


def probe_image(
    path: str | os.PathLike[str], max_pixels: int | None = None, hint: str = " (raise --max-pixels)"
) -> ImageInfo:
    """Read an image file's header only (nothing is decoded) and check its size, mode and frame count.

    Raises :class:`ImageError` for a missing, unreadable or non-regular file, more than ``max_pixels``
    pixels (the message ends with ``hint``), a decompression bomb, an unsupported mode, or several frames.
    The size is as displayed (EXIF orientation applied).
    """
    return _probe(Path(path), Path(path), max_pixels, hint)


def probe_image_bytes(data: bytes, max_pixels: int | None = None, name: str = "<bytes>", hint: str = "") -> ImageInfo:
    """:func:`probe_image` for an encoded image in memory; ``name`` stands for it in messages."""
    return _probe(bytes(data), Path(name), max_pixels, hint)


def _pixels(im: Image.Image, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded image's values: uint16 (h, w) for 16-bit grey, else uint8 (h, w, 3), and uint8 alpha."""
    if kind == "I;16":
        return np.asarray(im).astype(np.uint16, copy=False), None
    if kind in _ALPHA_KINDS:
        rgba = np.asarray(im if im.mode == "RGBA" else im.convert("RGBA"), dtype=np.uint8)
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8), None


def _read(source: Path | bytes, name: Path, max_pixels: int | None, hint: str) -> LoadedImage:
    info = _probe(source, name, max_pixels, hint)
    with _open(source, name) as im:
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{name} is not a readable image ({_first_line(e)})") from None
        if im.size != info.size:  # the decoded size has the last word
            info = dataclasses.replace(info, size=im.size)
        pixels, alpha = _pixels(im, info.kind)
    return LoadedImage(pixels, alpha, info)


def read_image(
    path: str | os.PathLike[str], max_pixels: int | None = None, hint: str = " (raise --max-pixels)"
) -> LoadedImage:
    """Probe (see :func:`probe_image`), then decode fully (truncated or corrupt files raise
    :class:`ImageError`) and apply the EXIF orientation; ``info.size`` is the decoded, oriented size."""
    return _read(Path(path), Path(path), max_pixels, hint)


def read_image_bytes(data: bytes, max_pixels: int | None = None, name: str = "<bytes>", hint: str = "") -> LoadedImage:
    """:func:`read_image` for an encoded image in memory (every check of the file reader, same code path);
    ``name`` stands for it in messages."""
    return _read(bytes(data), Path(name), max_pixels, hint)


def read_rgb8(path: str | os.PathLike[str], max_pixels: int | None = None, hint: str = "") -> np.ndarray:
    """The image as uint8 RGB (H, W, 3), checked and oriented as by :func:`read_image` (alpha dropped; 16-bit
    grey rounded from value / 257): ``read_image(...).rgb`` quantized, bit for bit."""
    return read_image(path, max_pixels, hint).rgb8
