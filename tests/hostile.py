"""Hostile and odd request bodies for the upscale service's tests (numpy + Pillow only)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def bomb_png() -> bytes:
    """A 69-byte PNG whose header claims 100000x100000 RGB pixels."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return body + _chunk(b"IEND", b"")


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` (uint8 RGB, or uint16 grey) as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def big_grey_png(w: int = 5000, h: int = 4000) -> bytes:
    """A valid, decodable all-black greyscale PNG of w x h pixels (20 Mpx by default; a few KB)."""
    return png_bytes(np.zeros((h, w), dtype=np.uint8))


def grey16_png(h: int = 24, w: int = 20) -> bytes:
    """A 16-bit greyscale PNG with values using all 16 bits."""
    rng = np.random.default_rng(16)
    return png_bytes(rng.integers(0, 65536, (h, w), dtype=np.uint16))


def small_rgb(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# (query, content type, body factory, expected status, a fragment of the error) for the 4xx cases
def hostile_cases(good: bytes) -> list[tuple[str, dict, str, bytes, int, str]]:
    return [
        ("bomb", {"scale": "2"}, "image/png", bomb_png(), 413, "decompression bomb"),
        ("truncated", {"scale": "2"}, "image/png", good[: len(good) // 2], 400, "not a readable image"),
        ("16-bit to jpeg", {"scale": "2", "format": "jpeg"}, "image/png", grey16_png(), 400, "JPEG cannot hold"),
        ("huge image", {"scale": "2"}, "image/png", big_grey_png(), 413, "pixel limit"),
        ("huge output", {"scale": "4"}, "image/png", big_grey_png(2100, 2100), 413, "pixel limit"),
        ("huge size", {"size": "60000x60000"}, "image/png", good, 400, "needs scale"),
        ("scale nan", {"scale": "nan"}, "image/png", good, 400, "scale must be a finite number"),
        ("scale 0", {"scale": "0"}, "image/png", good, 400, "scale must be a finite number > 1"),
        ("scale 100", {"scale": "100"}, "image/png", good, 400, "scale"),
        ("no scale", {}, "image/png", good, 400, "exactly one of scale"),
        ("bad size", {"size": "12xab"}, "image/png", good, 400, "size must look like"),
        ("bad format", {"scale": "2", "format": "gif"}, "image/png", good, 400, "format must be one of"),
        ("bad precision", {"scale": "2", "precision": "int4"}, "image/png", good, 400, "precision must be"),
        ("unknown param", {"scale": "2", "zoom": "3"}, "image/png", good, 400, "unknown parameter"),
        ("empty body", {"scale": "2"}, "image/png", b"", 400, "body is empty"),
        ("wrong content type", {"scale": "2"}, "text/plain", good, 415, "must be an image"),
        ("no content type", {"scale": "2"}, "", good, 415, "must be an image"),
        ("not an image", {"scale": "2"}, "image/png", b"hello, world" * 10, 400, "not a readable image"),
        # past libjpeg's / libwebp's largest side: a 500 ("broken data stream") after the whole upscale before
        ("jpeg too wide", {"size": "65535x2", "format": "jpeg"}, "image/png", big_grey_png(16384, 1), 400,
         "JPEG holds at most 65,500 pixels a side"),
        ("webp too wide", {"scale": "4", "format": "webp"}, "image/png", big_grey_png(4100, 2), 400,
         "WEBP holds at most 16,383 pixels a side"),
    ]
