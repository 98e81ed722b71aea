"""Image files: the streaming PNG writer, header probing without decoding, kinds and formats."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import data_path, one_line_error
from metasr.runtime.image_io import ImageError, probe_image, read_image, read_rgb8
from metasr.runtime.image_write import check_output, write_image
from metasr.runtime.png import PngWriter
from PIL import Image, ImageFile

from metasr.cli import main
from metasr.data import load_rgb
from metasr.metrics import quantize


@pytest.mark.parametrize(
    ("mode", "shape", "dtype"),
    [
        ("L", (), np.uint8),
        ("LA", (2,), np.uint8),
        ("RGB", (3,), np.uint8),
        ("RGBA", (4,), np.uint8),
        ("I;16", (), np.uint16),
    ],
)
@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_writer_round_trips_through_pillow(mode, shape, dtype, level):
    rng = np.random.default_rng(0)
    img = rng.integers(0, np.iinfo(dtype).max + 1, size=(37, 23, *shape), dtype=np.int64).astype(dtype)
    buf = io.BytesIO()
    w = PngWriter(buf, 23, 37, mode, level)
    for a, b in ((0, 1), (1, 11), (11, 12), (12, 37)):  # uneven bands, a single-row one included
        w.write(img[a:b])
    w.close()
    back = Image.open(io.BytesIO(buf.getvalue()))
    assert back.mode == mode
    assert np.array_equal(np.asarray(back), img)


def test_png_writer_checks_what_it_is_given():
    w = PngWriter(io.BytesIO(), 4, 3, "RGB")
    with pytest.raises(ValueError, match="uint8"):
        w.write(np.zeros((1, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="uint8"):
        w.write(np.zeros((1, 5, 3), np.uint8))
    w.write(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="closed after 2 rows"):
        w.close()
    with pytest.raises(ValueError, match="more than 3 rows"):
        w.write(np.zeros((2, 4, 3), np.uint8))
    for bad in ({"mode": "P"}, {"compress_level": 10}):
        with pytest.raises(ValueError):
            PngWriter(io.BytesIO(), 4, 3, **{"mode": "RGB", **bad})


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _rgb16_png(path, h=6, w=5):
    rows = b"".join(b"\0" + (np.arange(w * 3, dtype=">u2") * 4000).tobytes() for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    )
    return path


def test_probe_reads_headers_only(tmp_path, monkeypatch):
    rgb = load_rgb(data_path("Set5", "bird.png"))[:12, :10]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(rgb[..., 0]).convert("P").save(tmp_path / "graypal.png")
    Image.fromarray(np.full((12, 10), 4000, np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(np.full((12, 10), 4000, np.uint16)).save(tmp_path / "g16.tif")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.webp", lossless=True)
    _rgb16_png(tmp_path / "rgb16.png")
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded while probing"))
    kinds = {p: probe_image(tmp_path / p).kind for p in ("rgb.png", "pal.png", "graypal.png", "g16.png", "g16.tif")}
    assert kinds == {"rgb.png": "RGB", "pal.png": "RGB", "graypal.png": "L", "g16.png": "I;16", "g16.tif": "I;16"}
    assert probe_image(tmp_path / "rgba.webp").kind == "RGBA"
    info = probe_image(tmp_path / "rgb16.png")
    assert info.kind == "RGB" and info.size == (5, 6) and "decoded to 8 bits" in info.notes[0]


def test_16_bit_colour_png_comes_back_8_bit_with_a_note(tmp_path, bundled_artifacts, capsys):
    from metasr.cli import main

    src = _rgb16_png(tmp_path / "rgb16.png")
    assert (
        main(
            ["upscale", str(src), "-o", str(tmp_path / "o.png"), "--scale", "2", "--artifacts", str(bundled_artifacts)]
        )
        == 0
    )
    assert "metasr: note:" in capsys.readouterr().err
    assert Image.open(tmp_path / "o.png").mode == "RGB"


def test_output_formats_hold_the_kind_or_are_refused(tmp_path):
    Image.fromarray(np.full((6, 5), 4000, np.uint16)).save(tmp_path / "g16.png")
    info = probe_image(tmp_path / "g16.png")
    for ok in ("o.png", "o.tif", "o.tiff"):
        check_output(info, tmp_path / ok)
    for bad in ("o.webp", "o.jpg", "o.bmp"):
        with pytest.raises(ImageError, match="16-bit greyscale"):
            check_output(info, tmp_path / bad)
    with pytest.raises(ImageError, match=r"cannot write \.gif"):
        check_output(info, tmp_path / "o.gif")


@pytest.mark.parametrize(("suffix", "args"), [(".jpg", ["--size", "65535x2"]), (".webp", ["--scale", "4"])])
def test_a_result_wider_than_the_format_is_refused_first(tmp_path, capsys, bundled_artifacts, suffix, args):
    """JPEG (65,500) and WebP (16,383) sides: Pillow failed after the whole upscale ("broken data stream" and a
    second stderr line from libjpeg); now one line before any row is computed, and no file."""
    src = tmp_path / "wide.png"
    Image.fromarray(np.zeros((1, 16384) if suffix == ".jpg" else (2, 4100), np.uint8)).save(src)
    out = tmp_path / f"o{suffix}"
    code = main(["upscale", str(src), "-o", str(out), "--artifacts", str(bundled_artifacts), *args])
    assert "pixels a side" in one_line_error(capsys, code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.png"]


@pytest.mark.parametrize(("suffix", "mode"), [(".png", "I;16"), (".tif", "I;16")])
def test_16_bit_grey_is_written_losslessly(tmp_path, suffix, mode):
    g = np.arange(30, dtype=np.uint16).reshape(6, 5) * 2000  # values above 255: really 16-bit
    Image.fromarray(g).save(tmp_path / f"in{suffix}")
    img = read_image(tmp_path / f"in{suffix}")
    write_image(tmp_path / f"out{suffix}", img.rgb, img, None)  # identity "upscale"
    out = Image.open(tmp_path / f"out{suffix}")
    assert out.mode == mode and np.array_equal(np.asarray(out), g)


@pytest.mark.parametrize("suffix", [".tif", ".jpg", ".png", ".webp"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_probed_size_is_the_decoded_size_under_exif_orientation(tmp_path, suffix, orientation):
    """Pillow's TIFF plugin reports the oriented size itself (the probe must not swap it again)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{suffix}"
    Image.fromarray(load_rgb(data_path("Set5", "bird.png"))[:30, :50]).save(path, exif=exif.tobytes())
    w, h = probe_image(path).size
    img = read_image(path)
    assert img.rgb.shape[:2] == (h, w) == ((50, 30) if orientation in (6, 8) else (30, 50))
    assert img.info.size == (w, h) and read_rgb8(path).shape[:2] == (h, w)


def test_read_rgb8_is_read_image_quantized(tmp_path):
    rgb = load_rgb(data_path("Set5", "bird.png"))[:20, :24]
    alpha = np.tile(np.arange(24, dtype=np.uint8) * 10, (20, 1))
    images = {
        "rgb.png": Image.fromarray(rgb),
        "l.png": Image.fromarray(rgb[..., 1]),
        "la.png": Image.fromarray(np.dstack([rgb[..., 1], alpha]), "LA"),
        "rgba.png": Image.fromarray(np.dstack([rgb, alpha])),
        "p.png": Image.fromarray(rgb).convert("P"),
        "one.png": Image.fromarray(rgb[..., 0] > 100),
        "g16.png": Image.fromarray(rgb[..., 2].astype(np.uint16) * 251 + 7),
    }
    for name, im in images.items():
        im.save(tmp_path / name)
        got = read_rgb8(tmp_path / name)
        assert got.dtype == np.uint8 and np.array_equal(got, quantize(read_image(tmp_path / name).rgb)), name
