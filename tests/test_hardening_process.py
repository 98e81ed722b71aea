"""The second red team's cases (issue 16), part 2: hostile paths and files, terminals, interrupts, a runtime
without torch.

As in tests/test_hardening.py: each is one line on stderr and a nonzero exit (130 / 143 for an interrupt) before
any work, and each test fails on the code before the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path, one_line_error
from PIL import Image

pytest.importorskip("onnxruntime")


from metasr.cli import main
from metasr.data import list_images


@pytest.fixture
def loop_folder(tmp_path):
    """Four real images and a symlink loop ``a.png -> b.png -> a.png`` in one folder."""
    folder = tmp_path / "train"
    folder.mkdir()
    for name in ("bird", "baby", "head", "woman"):
        shutil.copy(data_path("Set5", f"{name}.png"), folder / f"{name}.png")
    (folder / "a.png").symlink_to("b.png")
    (folder / "b.png").symlink_to("a.png")
    return folder


def test_a_symlink_loop_in_an_image_folder_is_one_line(loop_folder, bundled_artifacts, tmp_path, capsys):
    """``RuntimeError: Symlink loop`` traceback in calibrate before; a misleading "no such file" elsewhere."""
    commands = {
        "calibrate": ["calibrate", "--artifacts", str(bundled_artifacts), "--precision", "int8"],
        "eval": ["eval", "--scales", "2", "--out", str(tmp_path / "eval")],
        "train": ["train", "--set", "iterations=1", "--out", str(tmp_path / "run")],
    }
    flags = {"calibrate": "--images", "eval": "--data", "train": "--train-dir"}
    for command, argv in commands.items():
        code = main([*argv, flags[command], str(loop_folder)])
        message = one_line_error(capsys, code)
        assert f"{loop_folder / 'a.png'}: cannot be read (Too many levels of symbolic links)" in message, command
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval").exists()


def test_special_files_named_like_images_are_refused_when_listed(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    os.mkfifo(tmp_path / "pipe.png")  # reading it would block forever
    with pytest.raises(ValueError, match=r"pipe\.png is not a regular file"):
        list_images(tmp_path)
    (tmp_path / "pipe.png").unlink()
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ValueError, match=r"gone\.png: cannot be read"):
        list_images(tmp_path)


# -- progress: a bar on a terminal only -------------------------------------------------------------------------
def test_a_batch_into_a_pipe_prints_one_plain_line_per_image(bundled_artifacts, tmp_path, capsys):
    """tqdm redrew its bar 14 times into a pipe for a 3-image batch; now: the output names, nothing else."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("bird", "baby", "head"):
        img = np.asarray(Image.open(data_path("Set5", f"{name}.png")).convert("RGB"))[:24, :20]
        Image.fromarray(img).save(src / f"{name}.png")
    code = main(
        ["upscale", str(src), "-o", str(tmp_path / "out"), "--scale", "2", "--artifacts", str(bundled_artifacts)]
    )
    out = capsys.readouterr()
    assert code == 0
    assert out.err == "" and "\r" not in out.out
    assert out.out.splitlines() == [f"{tmp_path / 'out' / n}.png (40x48)" for n in ("baby", "bird", "head")]


class _Terminal:
    """A stream that says it is a terminal and keeps what was written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_progress_draws_on_a_terminal_only(monkeypatch):
    import io

    import metasr.progress as progress

    monkeypatch.setattr(progress, "REDRAW_S", 0.0)
    tty = _Terminal()
    assert list(progress.Progress(range(3), "crops", unit="crop", stream=tty)) == [0, 1, 2]
    assert tty.text.count("\r") >= 3 and "crops  3/3 crop" in tty.text
    assert tty.text.endswith("\r")  # erased: the next line starts clean
    pipe = io.StringIO()
    assert list(progress.Progress(range(3), "crops", stream=pipe)) == [0, 1, 2] and pipe.getvalue() == ""
    tty = _Terminal()
    assert list(progress.Progress(range(3), stream=tty, enabled=False)) == [0, 1, 2] and tty.text == ""


# -- interrupts ---------------------------------------------------------------------------------------------------
# A SIGTERM that lands while a C extension initialises reaches Python as pybind11's ImportError("initialization
# failed") with the interrupt as its cause. This sitecustomize reproduces that for onnxruntime, deterministically.
_INTERRUPTED_IMPORT = """
import os, signal, sys, time

class _Interrupted:
    def find_spec(self, name, path=None, target=None):
        if name != "onnxruntime":
            return None
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        except BaseException as e:
            raise ImportError("initialization failed") from e  # what pybind11 does with it
        return None

sys.meta_path.insert(0, _Interrupted())
"""


def _run_with_sitecustomize(tmp_path: Path, code: str, argv: list[str], env: dict | None = None, timeout: float = 180):
    """``metasr ARGV`` in a fresh interpreter that runs ``code`` first (a ``sitecustomize`` on its path)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(code))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    cmd = [sys.executable, "-c", "import sys; from metasr.cli import main; sys.exit(main())", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_an_interrupted_import_is_reported_as_an_interrupt(bundled_artifacts, tmp_path):
    """Before: "the ort backends need ONNX Runtime (pip install ...)", exit 2."""
    img = tmp_path / "in.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    argv = ["upscale", str(img), "-o", str(tmp_path / "o.png"), "--scale", "2", "--artifacts", str(bundled_artifacts)]
    res = _run_with_sitecustomize(tmp_path, _INTERRUPTED_IMPORT, argv)
    assert res.returncode == 143, res.stderr
    assert res.stderr.strip().splitlines() == ["metasr: terminated"], res.stderr
    assert not (tmp_path / "o.png").exists()


def test_sigterm_at_any_moment_of_start_up_is_an_interrupt(bundled_artifacts, tmp_path):
    """The real thing, at a few moments of start-up (whichever import or step it lands in): the process dies
    by the signal before the handler exists, else says "terminated" with 143; never another message."""
    import signal
    import time

    img = tmp_path / "in.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    argv = ["upscale", str(img), "-o", str(tmp_path / "o.png"), "--scale", "2", "--artifacts", str(bundled_artifacts)]
    cmd = [sys.executable, "-c", "import sys; from metasr.cli import main; sys.exit(main())", *argv]
    for delay in (0.3, 0.8, 1.5):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished before the signal (a fast machine)
            continue
        assert proc.returncode in (-signal.SIGTERM, 143), (delay, proc.returncode, err)
        assert err.strip() in ("", "metasr: terminated"), (delay, err)


# -- the torch-free install -----------------------------------------------------------------------------------
_NO_TORCH = """
import atexit, os, sys

LOG = os.environ["METASR_IMPORT_LOG"]

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "safetensors", "onnx", "polygraphy", "triton"):
            with open(LOG, "a") as f:
                f.write(f"attempt {name}\\n")
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())

@atexit.register
def _loaded():
    with open(LOG, "a") as f:
        f.write("loaded " + " ".join(m for m in ("torch", "onnx", "safetensors") if m in sys.modules) + "\\n")
"""


def test_runtime_commands_work_where_torch_cannot_be_imported(bundled_artifacts, tmp_path):
    """``metasr upscale`` never tries to import torch; ``metasr bench --backend ort --artifacts`` runs the
    runtime's columns alone (its memory run in a child process too) and says so in one line."""
    log = tmp_path / "imports.log"
    env = {"METASR_IMPORT_LOG": str(log)}
    img = tmp_path / "in.png"
    Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(img)
    argv = ["upscale", str(img), "-o", str(tmp_path / "o.png"), "--scale", "2", "--artifacts", str(bundled_artifacts)]
    res = _run_with_sitecustomize(tmp_path, _NO_TORCH, argv, env)
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "o.png").size == (20, 24)
    # torch never tried; onnx tried once (ONNX Runtime's CPU variant of the MetaUpscale body is built with it),
    # and without it the standard body runs: nothing of either loaded
    lines = log.read_text().splitlines()
    assert lines[-1] == "loaded " and all(x.startswith("attempt onnx") for x in lines[:-1]), lines

    log.unlink()
    bench = ["bench", "--backend", "ort", "--artifacts", str(bundled_artifacts), "--lr-size", "8x8", "--repeats", "1"]
    res = _run_with_sitecustomize(tmp_path, _NO_TORCH, [*bench, "--memory-output", "32x32"], env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines() == ["metasr: note: PyTorch is not installed: the runtime's columns only"]
    assert "| ONNX Runtime |" in res.stdout and "PyTorch eager" not in res.stdout
    assert "Peak resident memory" in res.stdout
    lines = log.read_text().splitlines()
    assert lines.count("loaded ") == 2
    assert all(x.startswith(("attempt torch", "attempt onnx")) or x == "loaded " for x in lines), lines

    res = _run_with_sitecustomize(tmp_path, _NO_TORCH, ["bench", "--lr-size", "8x8"], env)
    assert res.returncode == 2 and "needs PyTorch, which is not installed" in res.stderr


# -- calibration folders: as given and resolved ------------------------------------------------------------------
def test_calibration_records_folders_as_given_and_resolved(bundled_artifacts, tmp_path, monkeypatch):
    from metasr.calibration.calibrate import CalibrationConfig, calibrate
    from metasr.runtime.manifest import Manifest

    work = tmp_path / "art"
    shutil.copytree(bundled_artifacts, work)
    t91 = data_path("T91")
    monkeypatch.chdir(t91.parent)
    config = CalibrationConfig(
        image_dirs=("T91",), precision="fp16", crops=2, held_apart=2, lr_sizes=(16, 16), budget_db=10.0
    )
    result = calibrate(work, config)
    assert result.met
    record = Manifest.read(work).calibration["fp16"]
    assert record["images"] == ["T91"] and record["images_resolved"] == [str(t91.resolve())]
    assert result.report["images_resolved"] == [str(t91.resolve())]
    assert str(t91.resolve()) in result.report_md.read_text()


# -- the Triton interpreter, then compile_ptx, in one process ---------------------------------------------------
_INTERPRET_THEN_PTX = """
import os, sys
os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported: its own @jit library becomes interpreted
import numpy as np, torch
from metasr.runtime.projection import project
from metasr.kernels import KernelConfig, compile_ptx, meta_upscale_triton

plan = project(5, 6, 2.0)
c = 4
feats = torch.randn(1, c, 5, 6)
weights = torch.randn(plan.rows.offsets.size, plan.cols.offsets.size, 27 * c)
axes = (plan.rows.src, plan.rows.offset_index, plan.cols.src, plan.cols.offset_index)
idx = [torch.from_numpy(a.astype(np.int64)) for a in axes]
out = meta_upscale_triton(feats, weights, *idx, KernelConfig(block_h=8, block_w=32, block_c=16, num_warps=4))
assert out.shape == (1, 3, 10, 12)
sys.stdout.write(compile_ptx(80).ptx)
"""


def test_compile_ptx_after_the_interpreter_in_one_process():
    """Before: "Unsupported function referenced" (compile_ptx met the interpreter's objects)."""
    pytest.importorskip("triton")
    from metasr.kernels import compile_ptx

    res = subprocess.run([sys.executable, "-c", _INTERPRET_THEN_PTX], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == compile_ptx(80).ptx  # the same PTX as a process that never interpreted
