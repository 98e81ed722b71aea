"""The torch-free runtime: parity with PyTorch, tiling, image modes, sizes, bad inputs, no-torch imports."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import data_path, write_manifest
from PIL import Image

pytest.importorskip("onnxruntime")

from metasr.runtime.backends import BackendError
from metasr.runtime.batch import scale_for_size
from metasr.runtime.compare import compare
from metasr.runtime.pipeline import Pipeline
from metasr.runtime.tiling import axis_tiles

from metasr.checkpoint import load_model
from metasr.cli import main
from metasr.data import load_rgb, make_pair


@pytest.fixture(scope="module")
def bundled(bundled_artifacts):
    from metasr.bundled import bundled_model_path

    return load_model(bundled_model_path()), bundled_artifacts


def _torch_sr(model, lr, scale):
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float()[None], scale).numpy()


@pytest.mark.parametrize(
    ("folder", "name", "scale"),
    [("Set5", "baby", 1.5), ("Set14", "barbara", 2.7), ("Set14", "flowers", 3.7), ("Set5", "woman", 4.0)],
)
def test_runtime_equals_pytorch_on_real_images(bundled, folder, name, scale):
    model, art = bundled
    lr, _ = make_pair(load_rgb(data_path(folder, f"{name}.png")), 2.0, "benchmark")
    with Pipeline(art) as p:
        sr = p.upscale(p.encode(lr), scale)
    result = compare(name, sr, _torch_sr(model, lr, scale), atol=1e-2, min_uint8_equal=0.999)
    assert result, str(result)


@pytest.mark.parametrize("nchwc", ["0", "1"])
def test_upscale_tiling_is_bit_identical(bundled, monkeypatch, nchwc):
    """On the exported body (``METASR_ORT_NCHWC=0``) tiles of x3.3 (the grouped path) are bit-identical to the
    whole; the ort backend's variant runs the whole on its phase path and the 2 MB tiles (under its
    ``PHASE_MIN_PIXELS``) on the grouped path, another summation order: equal to float32 rounding."""
    monkeypatch.setenv("METASR_ORT_NCHWC", nchwc)
    _, art = bundled
    lr = load_rgb(data_path("Set14", "comic.png"))[:90, :70]
    with Pipeline(art) as whole, Pipeline(art, upscale_budget_mb=2) as tiled:
        feats = whole.encode(lr)
        assert len(tiled.tiles(90, 70, 3.3)) >= 3 and len(whole.tiles(90, 70, 3.3)) == 1  # really several tiles
        a, b = tiled.upscale(feats, 3.3), whole.upscale(feats, 3.3)
    if nchwc == "0":
        assert np.array_equal(a, b)
    else:  # measured: 1.1e-4 on outputs up to 243 (ONNX Runtime 1.32, AVX-512)
        assert np.abs(a - b).max() <= 1e-3


def test_feature_tiling_is_seam_free(bundled):
    _, art = bundled
    img = load_rgb(data_path("Set14", "lenna.png"))[:200, :170]
    with Pipeline(art) as whole, Pipeline(art, feature_tile=64) as tiled:
        a, b = whole.encode(img), tiled.encode(img)
        assert len(axis_tiles(200, 64, tiled.receptive_radius)) >= 4
    # measured: 0.0 with ONNX Runtime 1.32 CPU (each kept feature sees its whole receptive field)
    assert np.abs(a - b).max() <= 1e-4


def test_axis_tiles_cover_with_margins():
    for n, size, margin in [(100, 40, 8), (513, 128, 18), (64, 64, 10), (300, 271, 131), (1500, 512, 18)]:
        for fixed in (False, True):
            tiles = axis_tiles(n, size, margin, fixed)
            assert tiles[0][2] == 0 and tiles[-1][3] == n
            for (s, e, a, b), nxt in zip(tiles, [*tiles[1:], None], strict=True):
                assert (e - s == size) if fixed else (e - s <= size)
                assert s <= a < b <= e
                assert s == 0 or a - s >= margin  # a kept feature's receptive field ends at the region or the image
                assert e == n or e - b >= margin
                if nxt:
                    assert nxt[2] == b
            if not fixed:  # equal cores; regions reach only the margin beyond them
                cores = [b - a for _, _, a, b in tiles]
                assert max(cores) - min(cores) <= 1
                assert all(s == max(0, a - margin) and e == min(n, b + margin) for s, e, a, b in tiles)


def test_feature_tiles_of_a_large_image_compute_little_twice():
    """1500x1000 in 512-pixel tiles: the issue measured 2.1x the image's pixels with the last tile shifted
    inward; equal cores with the 18-pixel overlap need ~1.15x."""
    rows, cols = axis_tiles(1000, 512, 18), axis_tiles(1500, 512, 18)
    computed = sum(e - s for s, e, _, _ in rows) * sum(e - s for s, e, _, _ in cols)
    assert computed / (1000 * 1500) < 1.16


def test_continuous_zoom_reuses_features_and_plans(bundled):
    _, art = bundled
    lr = load_rgb(data_path("Set5", "bird.png"))[:48, :40]
    with Pipeline(art) as p:
        feats = p.encode(lr)
        outs = [p.upscale(feats, s) for s in (1.3, 2.0, 3.7, 1.3)]
        assert [o.shape[2:] for o in outs] == [(62, 52), (96, 80), (177, 148), (62, 52)]
        assert np.array_equal(outs[0], outs[3])
        assert p._plan.cache_info().hits >= 1


def test_feeds_are_checked_against_the_manifest(bundled):
    _, art = bundled
    with Pipeline(art) as p, pytest.raises(BackendError, match="float32"):
        p._feature.infer({"lr": np.zeros((1, 3, 8, 8), dtype=np.float64)})


@pytest.mark.parametrize(("w", "h", "tw", "th"), [(288, 288, 600, 600), (228, 344, 500, 700), (100, 50, 333, 140)])
def test_size_gives_at_least_the_target(w, h, tw, th):
    r = scale_for_size(h, w, tw, th, 4.0)
    assert int(r * h) >= th and int(r * w) >= tw
    assert int(np.nextafter(r, 0) * h) < th or int(np.nextafter(r, 0) * w) < tw  # the smallest such scale


def _cli(args):
    return main(["upscale", *args])


def test_cli_scale_and_size(bundled, tmp_path):
    _, art = bundled
    src = data_path("Set5", "bird.png")  # 288x288
    assert _cli([str(src), "-o", str(tmp_path / "a.png"), "--scale", "2.3", "--artifacts", str(art)]) == 0
    assert Image.open(tmp_path / "a.png").size == (int(2.3 * 288), int(2.3 * 288))
    assert _cli([str(src), "-o", str(tmp_path / "b.png"), "--size", "700x500", "--artifacts", str(art)]) == 0
    assert Image.open(tmp_path / "b.png").size == (700, 500)
    assert _cli([str(data_path("Set5")), "-o", str(tmp_path / "dir"), "--scale", "1.5", "--artifacts", str(art)]) == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == sorted(p.name for p in data_path("Set5").iterdir())


def _write(path, array):
    Image.fromarray(array).save(path)  # the mode follows from dtype and shape
    return path


def test_image_modes_round_trip(bundled, tmp_path):
    _, art = bundled
    rgb = load_rgb(data_path("Set5", "head.png"))[:40, :30]
    rng = np.random.default_rng(0)
    cases = {
        "rgb.png": (rgb, None, "RGB", (30, 40)),
        "gray.png": (rgb[..., 1].copy(), None, "L", (30, 40)),
        "gray16.png": ((rgb[..., 1].astype(np.uint16) * 257), None, "I;16", (30, 40)),
        "photo.jpg": (rgb, None, "RGB", (30, 40)),
        "rgba.png": (np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)]), None, "RGBA", (30, 40)),
    }
    for name, (arr, _, out_mode, size) in cases.items():
        src = _write(tmp_path / name, arr)
        dst = tmp_path / "out" / name
        assert _cli([str(src), "-o", str(dst), "--scale", "2", "--artifacts", str(art)]) == 0, name
        out = Image.open(dst)
        assert out.mode == out_mode, name
        assert out.size == (2 * size[0], 2 * size[1]), name
    a = np.asarray(Image.open(tmp_path / "out" / "rgba.png"))[..., 3]
    src_alpha = cases["rgba.png"][0][..., 3]
    assert abs(float(a.mean()) - float(src_alpha.mean())) < 3  # alpha resized, not dropped or regenerated
    g16 = np.asarray(Image.open(tmp_path / "out" / "gray16.png"))
    assert g16.max() > 255  # still 16-bit


def test_exif_orientation_is_applied(bundled, tmp_path):
    _, art = bundled
    rgb = load_rgb(data_path("Set5", "head.png"))[:40, :30]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif)
    assert (
        _cli([str(tmp_path / "rot.jpg"), "-o", str(tmp_path / "o.png"), "--scale", "2", "--artifacts", str(art)]) == 0
    )
    assert Image.open(tmp_path / "o.png").size == (80, 60)  # displayed 40x30 (w x h) -> doubled


def _bad(capsys, tmp_path, args):
    out = tmp_path / "out.png"
    code = _cli([*args[:1], "-o", str(out), *args[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("metasr: error: "), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.png")]
    return err[0]


def test_bad_inputs(bundled, tmp_path, capsys):
    _, art = bundled
    good = str(data_path("Set5", "bird.png"))
    a = ["--artifacts", str(art)]
    assert "no such file" in _bad(capsys, tmp_path, [str(tmp_path / "missing.png"), "--scale", "2", *a])
    (tmp_path / "text.png").write_text("not an image")
    assert "not a readable image" in _bad(capsys, tmp_path, [str(tmp_path / "text.png"), "--scale", "2", *a])
    png = tmp_path / "whole.png"
    Image.fromarray(load_rgb(good)).save(png)
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    assert "not a readable image" in _bad(capsys, tmp_path, [str(tmp_path / "cut.png"), "--scale", "2", *a])
    for s in ("0", "-1.5", "nan", "4.5"):
        assert "scale must be" in _bad(capsys, tmp_path, [good, "--scale", s, *a])
    assert "pixel limit" in _bad(capsys, tmp_path, [good, "--scale", "4", "--max-pixels", "100000", *a])
    assert "needs scale" in _bad(capsys, tmp_path, [good, "--size", "100x100", *a])


def test_tampered_artifact_is_refused(bundled, tmp_path, capsys):
    import shutil

    _, art = bundled
    bad_art = tmp_path / "art"
    shutil.copytree(art, bad_art)
    data = bytearray((bad_art / "upscale.onnx").read_bytes())
    data[-10] ^= 1
    (bad_art / "upscale.onnx").write_bytes(bytes(data))
    msg = _bad(capsys, tmp_path, [str(data_path("Set5", "bird.png")), "--scale", "2", "--artifacts", str(bad_art)])
    assert "sha256" in msg


def test_input_is_not_overwritten_without_force(bundled, tmp_path, capsys):
    _, art = bundled
    src = tmp_path / "in.png"
    Image.fromarray(load_rgb(data_path("Set5", "bird.png"))[:20, :20]).save(src)
    before = src.read_bytes()
    assert _cli([str(src), "-o", str(src), "--scale", "2", "--artifacts", str(art)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert src.read_bytes() == before
    assert _cli([str(src), "-o", str(src), "--scale", "2", "--artifacts", str(art), "--force"]) == 0
    assert Image.open(src).size == (40, 40)


def test_runtime_runs_without_torch(bundled, tmp_path):
    """Block every import of torch, then run the Pipeline and the upscale command."""
    _, art = bundled
    out = tmp_path / "o.png"
    code = f"""
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
import numpy as np
from metasr.runtime.pipeline import Pipeline
with Pipeline({str(art)!r}) as p:
    assert p(np.zeros((12, 10, 3), np.float32), 2.5).shape == (30, 25, 3)
from metasr.cli import main
assert main(["upscale", {str(data_path("Set5", "bird.png"))!r}, "-o", {str(out)!r}, "--scale", "1.5",
             "--artifacts", {str(art)!r}]) == 0
assert not [m for m in sys.modules if m.startswith("torch") and sys.modules[m] is not None]
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert Image.open(out).size == (432, 432)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((8, 8), np.uint8), "shape"),
        (np.zeros((8, 8, 4), np.uint8), "shape"),
        (np.zeros((0, 8, 3), np.uint8), "h, w >= 1"),
        (np.zeros((8, 8, 3), np.int32), "dtype"),
        (np.full((8, 8, 3), np.nan, np.float32), "non-finite"),
        (np.full((8, 8, 3), 300.0, np.float32), "0..255"),
        (np.full((8, 8, 3), -1.0, np.float64), "0..255"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_pipeline_validates_arrays(bundled, image, match):
    _, art = bundled
    with Pipeline(art) as p, pytest.raises(ValueError, match=match):
        p(image, 2.0)


def test_pipeline_validates_features_and_options(bundled):
    _, art = bundled
    with Pipeline(art) as p:
        for bad in (
            np.zeros((1, 32, 4, 4), np.float64),
            np.zeros((32, 4, 4), np.float32),
            np.zeros((1, 16, 4, 4), np.float32),
        ):
            with pytest.raises(ValueError, match="features"):
                p.upscale(bad, 2.0)
    for kw, match in (
        ({"threads": -1}, "threads"),
        ({"upscale_budget_mb": 0}, "budget"),
        ({"feature_tile": 30}, "feature_tile"),
    ):
        with pytest.raises(ValueError, match=match):
            Pipeline(art, **kw)


def test_png_compression_level_is_an_option(bundled, tmp_path):
    _, art = bundled
    src = str(data_path("Set5", "bird.png"))
    sizes = {}
    for level in ("0", "9"):
        out = tmp_path / f"l{level}.png"
        assert _cli([src, "-o", str(out), "--scale", "2", "--artifacts", str(art), "--png-compress", level]) == 0
        sizes[level] = out.stat().st_size
    assert sizes["9"] < sizes["0"] / 2
    assert np.array_equal(np.asarray(Image.open(tmp_path / "l0.png")), np.asarray(Image.open(tmp_path / "l9.png")))
    assert (
        _cli([src, "-o", str(tmp_path / "x.png"), "--scale", "2", "--artifacts", str(art), "--png-compress", "10"]) == 2
    )


def test_eight_threads_sharing_a_pipeline_match_serial_runs(bundled):
    from concurrent.futures import ThreadPoolExecutor

    _, art = bundled
    img = load_rgb(data_path("Set14", "comic.png"))[:60, :50]
    jobs = [(img[k : k + 40, : 30 + k], s) for k in range(4) for s in (1.7, 3.3)]
    with Pipeline(art, upscale_budget_mb=4) as p:  # several tiles per image
        serial = [p(a, s) for a, s in jobs]
        with ThreadPoolExecutor(8) as pool:
            shared = list(pool.map(lambda job: p(*job), jobs * 2))
    for got, want in zip(shared, serial * 2, strict=True):
        assert np.array_equal(got, want)


def test_manifests_cannot_reach_outside_their_directory(bundled, tmp_path):
    import json
    import shutil

    from metasr.runtime.manifest import ManifestError

    _, art = bundled
    for name in ("../feature.onnx", "/etc/passwd", "sub/feature.onnx", ".."):
        bad = tmp_path / f"a{abs(hash(name))}"
        shutil.copytree(art, bad)
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["graphs"][0]["file"] = name
        write_manifest(bad, manifest)
        with pytest.raises(ManifestError, match="plain file name"):
            Pipeline(bad)
    linked = tmp_path / "linked"
    shutil.copytree(art, linked)
    outside = tmp_path / "outside.onnx"
    (linked / "feature.onnx").rename(outside)
    (linked / "feature.onnx").symlink_to(outside)  # same bytes, but through a link: refused
    with pytest.raises(ManifestError, match=r"cannot read feature\.onnx"):
        Pipeline(linked)


@pytest.mark.parametrize("scale", [2.0, 2.5, 3.3])  # the convolution path, with 2-pixel blocks, the grouped path
def test_tile_bytes_bounds_the_measured_peak(scale):
    """``tile_bytes`` (what the Pipeline sizes its tiles by) against the measured peak of one 256x256 output tile
    (fresh process, VmHWM, the tile's window copy included; benchmarks/ort_upscale_memory.py; the graph as the ort
    backend loads it: on this CPU the NCHWc variant, runtime/ort_cpu.py). Measured (C = 64, estimate / peak):
    x2 10.5 / 4.5 MiB, x2.5 10.9 / 6.8, grouped x3.3 103.8 / 30.2, x1.5 14.2 / 8.5 (with METASR_ORT_NCHWC=0: 5.2
    at x2.5, 3.9 at x2): never below the peak, and not so far above that tiles get needlessly small. The grouped
    path's count holds every buffer at once; since the sessions run without ONNX Runtime's memory pattern
    (runtime/backends.py) it frees the patch matrix's inputs early, so x3.3 peaks 3.4x under the count (55.3 MiB
    with the pattern); the variant runs this path only for the float32 exception scales, where the count is
    1.6-1.9x the peak (x2.3 91.8 / 48.3, x2.357 5175 / 3241). (x3 and x4 are not checked at
    this size: their lean convolution path peaks at 1.4-3.5 MiB, inside heap that glibc reuses; at 512 px tiles
    estimate / peak is 4.5 and 4.7, an upper bound as if no buffer were freed, while ONNX Runtime's planner
    reuses them.)"""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ort_upscale_memory.py"
    cmd = [sys.executable, str(script), "--child", "--tile", "256", "--scales", str(scale)]
    # x3.3 on the grouped path: the graph as exported (the variant runs it on its phase path: below)
    env = dict(os.environ, METASR_ORT_NCHWC="0") if scale == 3.3 else None
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["path"] == ("grouped" if scale == 3.3 else "conv")
    slack = 4.0 if scale == 3.3 else 2.5  # measured 3.4 (grouped) and 2.3 / 1.6 (conv): see above
    assert r["peak_mib"] <= r["estimate_mib"] <= slack * r["peak_mib"] + 8, r


@pytest.mark.parametrize("scale", [1.1, 3.3, 3.9])
def test_tile_bytes_bounds_the_phase_paths_peak(scale):
    """The variant's phase path (``export/metaupscale_phase.py``) has no patch matrix; the tiler sizes its tiles by
    the grouped path's count, which bounds it. Measured (C = 64, 256x256 tile): x1.1 23.5 / 194.9 MiB, x3.3 25.1 /
    103.8, x3.9 43.6 / 107.3 (peak / estimate): tiles are smaller than they need to be there, never too big."""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ort_upscale_memory.py"
    cmd = [sys.executable, str(script), "--child", "--tile", "256", "--scales", str(scale)]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    assert r["peak_mib"] <= r["estimate_mib"], r
