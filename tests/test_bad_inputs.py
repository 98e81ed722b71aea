"""Every class of bad input is one line on stderr, exit 2, before any work: no output file, no traceback."""

from __future__ import annotations

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import data_path, one_line_error, write_manifest
from PIL import Image, ImageFile

pytest.importorskip("onnxruntime")

from metasr.runtime.png import PngWriter

from metasr.cli import main
from metasr.data import load_rgb


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _bomb_png(path):
    """A 69-byte PNG whose header claims 100000x100000 RGB pixels."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(data + _chunk(b"IEND", b""))
    return path


def _big_valid_png(path, side=12_000):
    """A valid, fully decodable greyscale PNG of side x side pixels (144 Mpx; ~140 KB on disk)."""
    with open(path, "wb") as f:
        w = PngWriter(f, side, side, "L", compress_level=9)
        zeros = np.zeros((1000, side), dtype=np.uint8)
        for y in range(0, side, 1000):
            w.write(zeros[: min(1000, side - y)])
        w.close()
    return path


def _save(path, array, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


@pytest.fixture
def art(bundled_artifacts):
    return str(bundled_artifacts)


@pytest.fixture
def good(tmp_path):
    return _save(tmp_path / "good.png", load_rgb(data_path("Set5", "bird.png"))[:40, :30])


def _upscale(capsys, inputs, out, *extra):
    return one_line_error(capsys, main(["upscale", *map(str, inputs), "-o", str(out), *map(str, extra)]))


def test_decompression_bomb_file(tmp_path, capsys, art):
    msg = _upscale(capsys, [_bomb_png(tmp_path / "bomb.png")], tmp_path / "o.png", "--scale", "2", "--artifacts", art)
    assert "decompression bomb" in msg and "10000000000 pixels" in msg
    assert not (tmp_path / "o.png").exists()


def test_decompression_bomb_in_a_folder_stops_the_batch_before_any_output(tmp_path, capsys, art, good):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(good, folder / "a_good.png")
    _bomb_png(folder / "b_bomb.png")
    msg = _upscale(capsys, [folder], tmp_path / "out", "--scale", "2", "--artifacts", art)
    assert "b_bomb.png" in msg and "decompression bomb" in msg
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_decompression_bomb_in_demo(tmp_path, capsys):
    code = main(["demo", "--image", str(_bomb_png(tmp_path / "bomb.png")), "--out", str(tmp_path / "demo")])
    assert "decompression bomb" in one_line_error(capsys, code)
    assert not (tmp_path / "demo").exists()


def test_huge_valid_png_is_refused_from_its_header(tmp_path, capsys, art, monkeypatch):
    big = _big_valid_png(tmp_path / "big.png")

    def no_decoding(self):
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    msg = _upscale(capsys, [big], tmp_path / "o.png", "--scale", "2", "--artifacts", art)
    assert "12000x12000" in msg and "pixel limit" in msg


def test_16_bit_input_to_webp_is_refused(tmp_path, capsys, art):
    src = _save(tmp_path / "g16.png", (load_rgb(data_path("Set5", "bird.png"))[:20, :20, 1].astype(np.uint16) * 257))
    assert Image.open(src).mode == "I;16"
    msg = _upscale(capsys, [src], tmp_path / "o.webp", "--scale", "2", "--artifacts", art)
    assert "WEBP cannot hold the 16-bit greyscale" in msg and "PNG or TIFF" in msg
    assert not (tmp_path / "o.webp").exists()


@pytest.mark.parametrize(
    ("name", "make", "expect"),
    [
        ("float.tif", lambda: Image.fromarray(np.full((12, 10), 0.5, np.float32)), "mode F"),
        ("int32.tif", lambda: Image.fromarray(np.full((12, 10), 70000, np.int32)), "mode I"),
        ("cmyk.jpg", lambda: Image.new("CMYK", (10, 12)), "CMYK"),
    ],
)
def test_unsupported_modes_are_refused_by_name(tmp_path, capsys, art, name, make, expect):
    src = tmp_path / name
    make().save(src)
    msg = _upscale(capsys, [src], tmp_path / "o.png", "--scale", "2", "--artifacts", art)
    assert expect in msg
    assert not (tmp_path / "o.png").exists()


def test_mixed_batch_writes_nothing_when_a_later_input_is_bad(tmp_path, capsys, art, good):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(good, folder / "a.png")
    _save(folder / "b.png", np.full((12, 10), 3000, np.uint16))  # fine: 16-bit PNG stays 16-bit PNG
    Image.fromarray(np.full((12, 10), 0.5, np.float32)).save(folder / "c.tif")
    msg = _upscale(capsys, [folder], tmp_path / "out", "--scale", "2", "--artifacts", art)
    assert "c.tif" in msg
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # the same with a truncated file last: found by the full decode that precedes any output
    (folder / "c.tif").unlink()
    png = (folder / "a.png").read_bytes()
    (folder / "d.png").write_bytes(png[: len(png) // 2])
    msg = _upscale(capsys, [folder], tmp_path / "out", "--scale", "2", "--artifacts", art)
    assert "d.png" in msg and "not a readable image" in msg
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_alpha_to_jpeg_is_refused_before_work(tmp_path, capsys, art):
    rgba = np.dstack([load_rgb(data_path("Set5", "bird.png"))[:20, :20], np.full((20, 20), 128, np.uint8)])
    msg = _upscale(capsys, [_save(tmp_path / "a.png", rgba)], tmp_path / "o.jpg", "--scale", "2", "--artifacts", art)
    assert "JPEG cannot hold the RGBA result" in msg


def test_gif_output_is_refused_not_made_a_folder(tmp_path, capsys, art, good):
    msg = _upscale(capsys, [good], tmp_path / "result.gif", "--scale", "2", "--artifacts", art)
    assert "cannot write .gif" in msg
    assert not (tmp_path / "result.gif").exists()


def test_demo_options_are_checked_before_work(tmp_path, capsys):
    for scales in (["0"], ["2", "9"], ["nan"]):
        code = main(["demo", "--scales", *scales, "--out", str(tmp_path / "demo")])
        assert "scale must be" in one_line_error(capsys, code)
    assert not (tmp_path / "demo").exists()
    code = main(["demo", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "demo")])
    assert "no such file" in one_line_error(capsys, code)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m["graphs"][0].__setitem__("extra", []), "extra"),
        (lambda m: m["graphs"][0]["extra"].__setitem__("lr_size", "270x480"), "lr_size"),
        (lambda m: m["graphs"][0]["extra"].__setitem__("receptive_radius", -1), "receptive_radius"),
        (lambda m: m.__setitem__("scale_max", float("inf")), "scale_max"),  # json writes Infinity
        (lambda m: m.__setitem__("scale_max", 100.0), "scale range"),
        (lambda m: m.__setitem__("merge_tol", 1.0), "merge_tol"),
        (lambda m: m.__setitem__("merge_tol", 0), "merge_tol"),
        (lambda m: m.__setitem__("opset", "17"), "opset"),
        (lambda m: m["model"].__setitem__("features", "32"), "features"),
        (lambda m: m["graphs"][1].__setitem__("sha256", 123), "sha256"),
        (lambda m: m["graphs"][1].__setitem__("inputs", {"a": 1}), "inputs"),
        (lambda m: m["graphs"][1]["inputs"][0].__setitem__("shape", [1, 0, "h"]), "dims"),
        (lambda m: m.__setitem__("graphs", "feature.onnx"), "graphs"),
    ],
)
def test_mistyped_manifest_fields(tmp_path, capsys, bundled_artifacts, good, edit, field):
    bad = tmp_path / "art"
    shutil.copytree(bundled_artifacts, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    edit(manifest)
    write_manifest(bad, manifest)
    msg = _upscale(capsys, [good], tmp_path / "o.png", "--scale", "2", "--artifacts", bad)
    assert field in msg
    assert not (tmp_path / "o.png").exists()


def test_corrupt_graph_with_a_matching_hash(tmp_path, capsys, bundled_artifacts, good):
    from metasr.runtime.manifest import sha256_file

    bad = tmp_path / "art"
    shutil.copytree(bundled_artifacts, bad)
    (bad / "upscale.onnx").write_bytes(b"not an onnx graph at all")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["graphs"][1]["sha256"] = sha256_file(bad / "upscale.onnx")
    write_manifest(bad, manifest)
    msg = _upscale(capsys, [good], tmp_path / "o.png", "--scale", "2", "--artifacts", bad)
    assert "upscale.onnx: ONNX Runtime cannot load it" in msg


def test_allocation_failure_inside_onnx_runtime(tmp_path, bundled_artifacts):
    """Under a 1.5 GB address-space limit, one upscale tile of ~2.7 GB (1024x1024 at x3.3: the grouped path's
    patch matrix; tile_bytes counts 2.7 GiB) fails inside ONNX Runtime: one line."""
    import subprocess
    import sys

    big = _save(tmp_path / "big.png", np.tile(load_rgb(data_path("Set5", "baby.png")), (2, 2, 1)))
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1500 * 2**20, resource.RLIM_INFINITY))
from metasr.cli import main
sys.exit(main(["upscale", {str(big)!r}, "-o", {str(tmp_path / "o.png")!r}, "--scale", "3.3",
               "--artifacts", {str(bundled_artifacts)!r}, "--upscale-budget-mb", "100000"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and "out of memory" in err[0], err
    assert not (tmp_path / "o.png").exists()


def test_tiny_checkpoint_with_a_huge_config_is_refused_before_allocating(tmp_path, capsys):
    from safetensors.torch import save_file

    from metasr.checkpoint import CheckpointError, load_model
    from metasr.config import preset
    from metasr.measure import reset_peak_rss, status_kib

    config = {**json.loads(preset("small").to_json()), "backbone_params": {"channels": 100_000, "n_blocks": 64}}
    config["features"] = 100_000  # as built: ~7.7e11 parameters, 2.8 TB of float32
    path = tmp_path / "huge.safetensors"
    meta = {"format": "metasr-checkpoint", "format_version": "1", "config": json.dumps(config)}
    save_file({"sub_mean.weight": torch.zeros(1)}, str(path), metadata=meta)
    assert path.stat().st_size < 1000
    with pytest.raises(CheckpointError):  # warm-up: PyTorch's lazy initialisation is not the checkpoint's cost
        load_model(path)
    base = reset_peak_rss()
    with pytest.raises(CheckpointError, match=r"features must be in 1\.\.1024"):  # its ranges, before its shapes
        load_model(path)
    assert (status_kib("VmHWM") - base) / 1024 < 16  # MiB; measured 0.06
    code = main(["export-onnx", "--model", str(path), "--out", str(tmp_path / "o")])
    assert "features must be in 1..1024" in one_line_error(capsys, code)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "config",
    [
        {"features": "32"},
        {"backbone_params": {"channels": 32, "n_blocks": 8, "no_such_option": 1}},
        {"backbone": "transformer"},
        {"rgb_mean": [0.4, 0.4]},
    ],
)
def test_bad_checkpoint_configs_are_one_line(tmp_path, capsys, config):
    from safetensors.torch import save_file

    from metasr.config import preset

    path = tmp_path / "bad.safetensors"
    meta = {"format": "metasr-checkpoint", "format_version": "1"}
    meta["config"] = json.dumps({**json.loads(preset("small").to_json()), **config})
    save_file({"x": torch.zeros(1)}, str(path), metadata=meta)
    code = main(["export-onnx", "--model", str(path), "--out", str(tmp_path / "o")])
    one_line_error(capsys, code)
    assert not (tmp_path / "o").exists()


# -- calibration images ---------------------------------------------------------------------------------------
def _truncated_png(path):
    """A PNG cut in the middle of its pixel data (the header reads; decoding fails)."""
    data = (_save(path, load_rgb(data_path("Set5", "bird.png"))[:64, :64])).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_bomb_png, "decompression bomb"),
        (_truncated_png, "not a readable image"),
        (lambda p: _save(p, np.zeros((8, 40, 3), np.uint8)), "too small for calibration crops"),
        (_big_valid_png, "exceeds the pixel limit"),
        (lambda p: _save(p.with_suffix(".tif"), np.zeros((64, 64), np.float32)), "float"),
        (lambda p: p.write_bytes(b"not a png") and p, "not a readable image"),
    ],
    ids=["bomb", "truncated", "tiny", "over-100-Mpx", "float-tiff", "not-an-image"],
)
def test_bad_calibration_image_is_named_and_changes_nothing(tmp_path, capsys, bundled_artifacts, make, says):
    work = tmp_path / "art"
    shutil.copytree(bundled_artifacts, work)
    before = sorted((p.name, p.read_bytes()) for p in work.iterdir())
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(data_path("T91", "t1.bmp"), folder / "t1.bmp")  # two images: one each side of the split, both read
    bad = make(folder / "zz_bad.png")
    args = ["--artifacts", str(work), "--images", str(folder), "--precision", "int8", "--crops", "8"]
    code = main(["calibrate", *args, "--held-apart", "2"])
    msg = one_line_error(capsys, code)
    assert says in msg and bad.name in msg, msg
    assert sorted((p.name, p.read_bytes()) for p in work.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "images"]  # no report either: refused before work
