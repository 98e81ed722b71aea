"""Artifacts under concurrency and interruption: re-exports while Pipelines open, concurrent exports,
SIGTERM, leftovers of killed runs, and no process-wide umask changes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_path
from PIL import Image

pytest.importorskip("onnxruntime")

import metasr.export.onnx_export as ex
from metasr.export import export_onnx
from metasr.runtime.pipeline import Pipeline

from metasr.bundled import bundled_model_path
from metasr.checkpoint import load_model
from metasr.data import load_rgb
from metasr.fileio import atomic_path, make_temp_dir


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """Two exports whose feature and upscale graphs both differ, so a mix of them is recognisable."""
    root = tmp_path_factory.mktemp("two")
    model = load_model(bundled_model_path())
    export_onnx(model, root / "a")
    with torch.no_grad():
        model.sub_mean.bias += 3.0  # changes the features
        model.add_mean.bias += 1.0  # changes the upscale graph
    export_onnx(model, root / "b")
    return root / "a", root / "b"


def _sr(feature_dir: Path, upscale_dir: Path, img: np.ndarray) -> np.ndarray:
    with Pipeline(feature_dir) as f, Pipeline(upscale_dir) as u:
        return u.upscale(f.encode(img), 2.0)


def test_pipelines_opened_during_a_reexport_loop_run_one_export(tmp_path, two_exports):
    a, b = two_exports
    img = load_rgb(data_path("Set5", "bird.png"))[:24, :20]
    want = {"a": _sr(a, a, img), "b": _sr(b, b, img)}
    mixes = [_sr(a, b, img), _sr(b, a, img)]
    assert all(not np.array_equal(m, w) for m in mixes for w in want.values())  # a mix would be seen
    target = tmp_path / "art"
    shutil.copytree(a, target)
    stop, swaps, errors = threading.Event(), [0], []

    def reexport() -> None:  # the exporter's final step, as fast as the disk allows
        try:
            while not stop.is_set():
                for source in (b, a):
                    tmp = make_temp_dir(tmp_path, "art")
                    for f in source.iterdir():
                        shutil.copy(f, tmp / f.name)
                    ex._replace_dir(tmp, target)
                    swaps[0] += 1
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    thread = threading.Thread(target=reexport)
    thread.start()
    seen = {"a": 0, "b": 0}
    try:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            with Pipeline(target) as p:
                sr = p.upscale(p.encode(img), 2.0)
            matches = [k for k, w in want.items() if np.array_equal(sr, w)]
            assert len(matches) == 1, "a Pipeline ran graphs of two different exports"
            seen[matches[0]] += 1
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert swaps[0] >= 20 and seen["a"] + seen["b"] >= 20, (swaps, seen)
    assert _leftovers(tmp_path) == []


def test_concurrent_directory_swaps_never_fail_or_leave_old_folders(tmp_path):
    target = tmp_path / "art"
    errors = []

    def worker(k: int) -> None:
        try:
            for i in range(40):
                tmp = make_temp_dir(tmp_path, "art")
                (tmp / "manifest.json").write_text(f"{k}-{i}")
                ex._replace_dir(tmp, target)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _leftovers(tmp_path) == []
    assert [p.name for p in target.iterdir()] == ["manifest.json"]


def test_two_concurrent_exports_of_one_directory(tmp_path):
    """Two `metasr export-onnx` processes (torch's exporter is not thread-safe, processes are the real case)."""
    procs = [_metasr("export-onnx", "--out", str(tmp_path / "art"), "--no-verify") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert _leftovers(tmp_path) == []
    forms = ("", ".size", ".inv")
    portable = [f"{stem}{form}.onnx" for stem in ("metasr.portable", "upscale.portable") for form in forms]
    expected = sorted(["feature.onnx", "manifest.json", "upscale.onnx", *portable])
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == expected
    Pipeline(tmp_path / "art").close()  # whole and consistent


def _wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _metasr(*args: str) -> subprocess.Popen:
    code = "import sys; from metasr.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True)


def test_sigterm_during_export_removes_its_temporary_folder(tmp_path):
    proc = _metasr("export-onnx", "--model", "small", "--out", str(tmp_path / "art"))
    started = _wait_for(lambda: any(p.name.startswith(".art.tmp-") for p in tmp_path.iterdir()))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert started, err
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["metasr: terminated"]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_while_writing_removes_the_temporary_file(tmp_path, bundled_artifacts):
    src = tmp_path / "in.png"
    big = np.tile(load_rgb(data_path("Set5", "baby.png")), (2, 2, 1))  # 1024x1024 -> 4096x4096, slow to write
    Image.fromarray(big).save(src)
    out = tmp_path / "out"
    out.mkdir()
    proc = _metasr("upscale", str(src), "-o", str(out / "o.png"), "--scale", "4", "--artifacts", str(bundled_artifacts))
    started = _wait_for(lambda: any(p.name.startswith(".o.png.") for p in out.iterdir()))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert started, err
    assert proc.returncode == 143, err
    assert list(out.iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(tmp_path, bundled_artifacts):
    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "60"])
    try:
        stale_file = tmp_path / f".o.png.{dead}-0badc0de.tmp"
        live_file = tmp_path / f".o.png.{live.pid}-12345678.tmp"
        other = tmp_path / f".other.png.{dead}-0badc0de.tmp"  # another target's: not ours to judge now
        for p in (stale_file, live_file, other):
            p.write_bytes(b"partial")
        src = data_path("Set5", "bird.png")
        args = ["upscale", str(src), "-o", str(tmp_path / "o.png"), "--scale", "1.5"]
        from metasr.cli import main

        assert main([*args, "--artifacts", str(bundled_artifacts)]) == 0
        assert not stale_file.exists() and live_file.exists() and other.exists()

        stale_dirs = [tmp_path / f".art.tmp-{dead}-0badc0de", tmp_path / f".art.old-{dead}-cafef00d"]
        live_dir = tmp_path / f".art.tmp-{live.pid}-12345678"
        for d in (*stale_dirs, live_dir):
            d.mkdir()
            (d / "feature.onnx").write_bytes(b"partial")
        export_onnx(load_model(bundled_model_path()), tmp_path / "art")
        assert not any(d.exists() for d in stale_dirs) and live_dir.exists()
    finally:
        live.kill()
        live.wait()


def test_files_get_umask_permissions_without_touching_the_umask(tmp_path, monkeypatch):
    umask = int(
        next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:")).split()[1], 8
    )

    def forbidden(*_: object) -> int:
        raise AssertionError("os.umask changes the whole process (other threads' files)")

    monkeypatch.setattr(os, "umask", forbidden)
    with atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    export_onnx(load_model(bundled_model_path()), tmp_path / "art")
    assert (tmp_path / "art").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "art" / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~umask
