"""Images that must not come out wrong with exit 0 (issue 21): EXIF orientation after the pixel data, ICC
profiles, multi-frame inputs, mode changes; and the bytes-in / bytes-out API that shares the file path."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import data_path
from PIL import Image, ImageCms, ImageFile, ImageOps

pytest.importorskip("onnxruntime")

from metasr.runtime.image_io import ImageError, probe_image, probe_image_bytes, read_image, read_image_bytes
from metasr.runtime.image_write import carried_icc, encode_image, write_image

from metasr.cli import main
from metasr.data import load_rgb


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _exif_after_idat(rgb: np.ndarray, orientation: int) -> bytes:
    """A PNG of ``rgb`` whose eXIf chunk (orientation) sits after the pixel data, before IEND."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    png = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    end = png.rindex(b"IEND") - 4
    return png[:end] + _chunk(b"eXIf", exif.tobytes()) + png[end:]


@pytest.fixture
def stored(tmp_path):
    """A 32x48 (w x h) image stored with orientation 6 after IDAT (displayed 48x32), and the displayed one."""
    rgb = load_rgb(data_path("Set5", "bird.png"))[100:148, 100:132]  # (48, 32, 3)
    (tmp_path / "exif6.png").write_bytes(_exif_after_idat(rgb, 6))
    displayed = ImageOps.exif_transpose(Image.open(tmp_path / "exif6.png"))
    displayed.save(tmp_path / "displayed.png")
    return tmp_path / "exif6.png", tmp_path / "displayed.png"


def _run(*args) -> int:
    return main(["upscale", *map(str, args)])


def test_exif_after_the_pixel_data_is_seen_from_the_header(stored, monkeypatch):
    path, _ = stored
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded while probing"))
    assert probe_image(path).size == (48, 32)  # before: (32, 48), the stored size


@pytest.mark.parametrize("size", ["96x64", "64x96"])
def test_size_is_computed_from_the_oriented_image(stored, tmp_path, bundled_artifacts, size):
    """Before: --size 96x64 gave a centre crop of an x3 result (exit 0, max diff 255 here), --size 64x96
    failed mid-write ("image of height 96 finished after 64 rows")."""
    path, displayed = stored
    art = ("--artifacts", bundled_artifacts)
    tw, th = map(int, size.split("x"))
    scale = max(tw / 48, th / 32)  # from the displayed 48x32
    assert _run(displayed, "-o", tmp_path / "ref.png", "--scale", scale, *art) == 0
    assert _run(path, "-o", tmp_path / "got.png", "--size", size, *art) == 0
    ref = np.asarray(Image.open(tmp_path / "ref.png"))
    y0, x0 = (ref.shape[0] - th) // 2, (ref.shape[1] - tw) // 2
    got = np.asarray(Image.open(tmp_path / "got.png"))
    assert np.array_equal(got, ref[y0 : y0 + th, x0 : x0 + tw])


def test_batch_uses_the_scale_of_the_oriented_image(stored, tmp_path, bundled_artifacts):
    path, displayed = stored
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(path.read_bytes())
    Image.open(displayed).save(tmp_path / "in" / "b.png")
    assert _run(tmp_path / "in", "-o", tmp_path / "out", "--size", "96x64", "--artifacts", bundled_artifacts) == 0
    a, b = (np.asarray(Image.open(tmp_path / "out" / n)) for n in ("a.png", "b.png"))
    assert a.shape == (64, 96, 3) and np.array_equal(a, b)


# -- ICC profiles --------------------------------------------------------------------------------------------
def _profile(kind: str) -> bytes:
    if kind == "RGB":
        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # a non-RGB colour space


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".webp"])
def test_icc_profiles_are_carried(tmp_path, bundled_artifacts, suffix):
    icc = _profile("RGB")
    Image.fromarray(load_rgb(data_path("Set5", "bird.png"))[:24, :32]).save(tmp_path / "in.png", icc_profile=icc)
    out = tmp_path / f"out{suffix}"
    assert _run(tmp_path / "in.png", "-o", out, "--scale", "2", "--artifacts", bundled_artifacts) == 0
    assert Image.open(out).info.get("icc_profile") == icc  # before: dropped


def test_a_profile_an_output_cannot_hold_is_dropped_with_a_note(tmp_path, bundled_artifacts, capsys):
    icc = _profile("RGB")
    Image.fromarray(load_rgb(data_path("Set5", "bird.png"))[:24, :32]).save(tmp_path / "in.png", icc_profile=icc)
    assert _run(tmp_path / "in.png", "-o", tmp_path / "o.bmp", "--scale", "2", "--artifacts", bundled_artifacts) == 0
    assert "BMP cannot hold the input's ICC profile" in capsys.readouterr().err
    dropped = "the input's ICC profile (RGB) does not fit the greyscale output: dropped"
    assert carried_icc(icc, "L", "PNG") == (None, dropped)
    assert carried_icc(_profile("LAB"), "RGB", "PNG")[0] is None
    assert carried_icc(icc, "RGBA", "WEBP") == (icc, None)


# -- frames and modes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "what"),
    [("a.gif", "GIF with 3 frames"), ("a.png", "PNG with 3 frames"), ("a.webp", "WEBP with 3 frames"),
     ("a.tif", "TIFF with 3 pages")],
)  # fmt: skip
def test_multi_frame_inputs_are_refused(tmp_path, capsys, bundled_artifacts, name, what):
    frames = [Image.fromarray(np.full((16, 20, 3), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
    code = _run(tmp_path / name, "-o", tmp_path / "o.png", "--scale", "2", "--artifacts", bundled_artifacts)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and what in err[0], err  # before: frame 0 upscaled, exit 0
    assert not (tmp_path / "o.png").exists()


def test_the_primary_image_of_a_multi_picture_jpeg_is_used_with_a_note(tmp_path):
    a, b = (Image.fromarray(np.full((16, 20, 3), v, np.uint8)) for v in (40, 200))
    a.save(tmp_path / "photo.jpg", format="MPO", save_all=True, append_images=[b])
    info = probe_image(tmp_path / "photo.jpg")
    assert "primary image" in info.notes[-1] and abs(float(read_image(tmp_path / "photo.jpg").rgb.mean()) - 40) < 3


def test_16_bit_grey_alpha_comes_back_grey_alpha_with_a_true_note(tmp_path, bundled_artifacts, capsys):
    rows = b"".join(b"\0" + (np.arange(32 * 2, dtype=">u2") * 999).tobytes() for _ in range(24))
    ihdr = struct.pack(">IIBBBBB", 32, 24, 16, 4, 0, 0, 0)
    (tmp_path / "la16.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    )
    out = tmp_path / "o.png"
    assert _run(tmp_path / "la16.png", "-o", out, "--scale", "2", "--artifacts", bundled_artifacts) == 0
    err = capsys.readouterr().err
    assert "16-bit grey+alpha is decoded to 8 bits" in err and "16-bit colour" not in err  # before: "colour"
    assert Image.open(out).mode == "LA"  # before: RGBA


# -- bytes in, bytes out ---------------------------------------------------------------------------------------
def test_bytes_reader_is_the_file_reader(tmp_path, stored):
    rgb = load_rgb(data_path("Set5", "bird.png"))[:20, :24]
    alpha = np.tile(np.arange(24, dtype=np.uint8) * 10, (20, 1))
    files = {
        "rgba.png": Image.fromarray(np.dstack([rgb, alpha])),
        "p.png": Image.fromarray(rgb).convert("P"),
        "g16.png": Image.fromarray(rgb[..., 2].astype(np.uint16) * 251 + 7),
        "photo.jpg": Image.fromarray(rgb),
    }
    for name, im in files.items():
        im.save(tmp_path / name)
    for path in [*(tmp_path / n for n in files), stored[0]]:
        a, b = read_image(path), read_image_bytes(path.read_bytes(), name=str(path))
        assert a.info == b.info and np.array_equal(a.pixels, b.pixels), path.name
        assert (a.alpha8 is None) == (b.alpha8 is None)
    with pytest.raises(ImageError, match="not a readable image"):
        read_image_bytes(b"not an image", name="upload.png")
    with pytest.raises(ImageError, match="exceeds the pixel limit"):
        probe_image_bytes((tmp_path / "rgba.png").read_bytes(), max_pixels=100, name="upload.png")


def test_encode_image_is_the_file_writer(tmp_path):
    img = read_image_bytes(_png_with_profile(), name="x.png")
    for fmt, suffix in (("PNG", ".png"), ("TIFF", ".tif"), ("WEBP", ".webp"), ("JPEG", ".jpg")):
        path = write_image(tmp_path / f"o{suffix}", img.rgb, img, None)
        data = encode_image(img.rgb, img.info.kind, fmt, icc=img.info.icc)
        assert data == path.read_bytes(), fmt
        assert Image.open(io.BytesIO(data)).info.get("icc_profile") == img.info.icc


def _png_with_profile() -> bytes:
    buf = io.BytesIO()
    rgb = load_rgb(data_path("Set5", "bird.png"))[:20, :24]
    Image.fromarray(rgb).save(buf, format="PNG", icc_profile=_profile("RGB"))
    return buf.getvalue()


def test_upscale_bytes_is_the_file_run(tmp_path, stored, bundled_artifacts):
    """The service path (bytes in, bytes out) gives the very bytes `metasr upscale` writes, EXIF and ICC
    included, and refuses what the command refuses."""
    from metasr.runtime.batch import UpscaleOptions, upscale_bytes
    from metasr.runtime.memory import MemoryBudgetError
    from metasr.runtime.pipeline import Pipeline

    (tmp_path / "icc.png").write_bytes(_png_with_profile())
    with Pipeline(bundled_artifacts) as p:
        for src, size in ((stored[0], (64, 96)), (tmp_path / "icc.png", None)):
            opts = UpscaleOptions(scale=None if size else 2.5, size=size)
            data, info, _ = upscale_bytes(p, src.read_bytes(), opts, "PNG", name=src.name)
            assert info.size == ((48, 32) if size else (24, 20))  # the decoded, oriented size
            extra = ["--size", "64x96"] if size else ["--scale", "2.5"]
            assert _run(src, "-o", tmp_path / "file.png", *extra, "--artifacts", bundled_artifacts) == 0
            assert data == (tmp_path / "file.png").read_bytes(), src.name
        with pytest.raises(MemoryBudgetError, match="the bound is 128 MiB"):
            upscale_bytes(p, (tmp_path / "icc.png").read_bytes(), UpscaleOptions(scale=2, memory_mb=128), "PNG")
