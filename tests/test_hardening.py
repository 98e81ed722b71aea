"""The second red team's cases (issue 16): absurd numbers, hostile checkpoints, unreadable paths, interrupts.

Each is one line on stderr and exit 2 (or 130 / 143 for an interrupt), before any work; the library entry
points the commands call refuse the same values. Each test fails on the code before the fix (a traceback, a
hang, a silent exit 0 or a misleading message).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_path, one_line_error
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

pytest.importorskip("onnxruntime")

from metasr.runtime.backends import open_backend
from metasr.runtime.pipeline import Pipeline

from metasr.bundled import bundled_model_path
from metasr.checkpoint import CheckpointError, load_model, official_state_dict
from metasr.cli import main
from metasr.config import PRESETS, ModelConfig
from metasr.data import list_images
from metasr.model import MetaSR


def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit code, argparse's usage errors (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


# -- numeric options: refused when the command line is parsed --------------------------------------------------
NUMERIC_CASES = [
    (["eval", "--data", "{tmp}", "--scales", "0"], "--scales"),  # ZeroDivisionError before
    (["demo", "--out", "{tmp}/d", "--scales", "inf"], "--scales"),
    (["upscale", "{tmp}/in.png", "-o", "{tmp}/o.png", "--scale", "2", "--threads", "100000"], "--threads"),
    (["upscale", "{tmp}/in.png", "-o", "{tmp}/o.png", "--scale", "2", "--threads", "5000"], "--threads"),
    (["upscale", "{tmp}/in.png", "-o", "{tmp}/o.png", "--scale", "2", "--upscale-budget-mb", "inf"], "budget"),
    (["upscale", "{tmp}/in.png", "-o", "{tmp}/o.png", "--scale", "2", "--feature-tile", "1000000000"], "tile"),
    (["upscale", "{tmp}/in.png", "-o", "{tmp}/o.png", "--scale", "2", "--max-pixels", "10**15"], "--max-pixels"),
    (["upscale", "{tmp}/in.png", "-o", "{tmp}/o.png", "--size", "1000000000x1000000000"], "--size"),
    (["upscale", "{tmp}/in.png", "-o", "{tmp}/o.png", "--scale", "2", "--png-compress", "99"], "--png-compress"),
    (["bench", "--memory-output", "100000x100000"], "--memory-output"),  # CalledProcessError before
    (["bench", "--memory-output", "20000x20000"], "pixels"),  # 400 Mpx: over the memory run's bound
    (["bench", "--repeats", "100000000"], "--repeats"),
    (["bench", "--lr-size", "-3x8"], "--lr-size"),
    (["calibrate", "--artifacts", "{tmp}", "--images", "{tmp}", "--precision", "int8", "--budget-db", "inf"], "budget"),
    (["calibrate", "--artifacts", "{tmp}", "--images", "{tmp}", "--precision", "int8", "--percentile", "nan"], "perc"),
    (["calibrate", "--artifacts", "{tmp}", "--images", "{tmp}", "--precision", "int8", "--crops", "10**9"], "--crops"),
    (["export-onnx", "--out", "{tmp}/x", "--opset", "1000"], "--opset"),  # RuntimeError traceback before
    (["export-onnx", "--out", "{tmp}/x", "--lr-size", "100000x100000"], "--lr-size"),  # a 120 GB allocation
    (["build-engine", "--artifacts", "{tmp}", "--workspace-mb", "10**9"], "--workspace-mb"),
    (["parity", "--artifacts", "{tmp}", "--images", "{tmp}", "--threshold", "fp32.atol=inf"], "atol"),
    (["parity", "--artifacts", "{tmp}", "--images", "{tmp}", "--threshold", "fp16.min_psnr_db=1e309"], "min_psnr"),
    (["train", "--train-dir", "{tmp}", "--out", "{tmp}/r", "--set", "threads=100000"], "threads"),
    (["train", "--train-dir", "{tmp}", "--out", "{tmp}/r", "--set", "lr=nan"], "lr"),
    (["train", "--train-dir", "{tmp}", "--out", "{tmp}/r", "--set", "batch=100000"], "batch"),
]


@pytest.mark.parametrize("argv, fragment", NUMERIC_CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in NUMERIC_CASES])
def test_absurd_numbers_are_one_line_errors_before_any_work(argv, fragment, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path).replace("10**15", str(10**15)).replace("10**9", str(10**9)) for a in argv]
    message = one_line_error(capsys, _exit_code(argv))
    assert fragment in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_library_entry_points_refuse_the_same_values(bundled_artifacts, tmp_path):
    from metasr.calibration.calibrate import CalibrationConfig, CalibrationError
    from metasr.export import ExportError, export_onnx
    from metasr.export.trt_build import EngineBuildConfig
    from metasr.runtime.manifest import Manifest

    from metasr.bench import run_bench
    from metasr.parity import ParityError, Thresholds
    from metasr.train import TrainConfig

    with pytest.raises(ValueError, match="threads"):
        Pipeline(bundled_artifacts, threads=4 * (os.cpu_count() or 1) + 1)  # metasr.limits.MAX_THREADS + 1
    spec = Manifest.read(bundled_artifacts).graph("feature")
    with pytest.raises(ValueError, match="threads"):
        open_backend("ort", spec, b"", threads=100_000)
    for field, value in (("budget_db", math.inf), ("percentile", math.nan), ("crops", 10**9), ("threads", 10**5)):
        with pytest.raises(CalibrationError, match=field):
            CalibrationConfig(image_dirs=("x",), precision="int8", **{field: value})
    for field, value in (("threads", 10**5), ("lr", math.nan), ("iterations", 0), ("betas", (0.9, math.inf))):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="workspace"):
        EngineBuildConfig(workspace_mb=10**9)
    model = load_model(bundled_model_path())
    with pytest.raises(ExportError, match="opset"):
        export_onnx(model, tmp_path / "x", opset=1000)
    with pytest.raises(ExportError, match="static LR size"):
        export_onnx(model, tmp_path / "x", lr_size=(100_000, 100_000))
    with pytest.raises(ParityError, match="atol"):
        Thresholds(atol=math.inf)
    with pytest.raises(ValueError, match="repeats"):
        run_bench(None, (8, 8), 2.0, repeats=0, artifacts=bundled_artifacts)
    assert not (tmp_path / "x").exists()


# -- checkpoints: config checked before anything is built, weights checked once read ---------------------------
@contextlib.contextmanager
def _address_space_cap(extra_bytes: int):
    """Cap this process's address space at its current size + ``extra_bytes`` (a runaway allocation raises
    MemoryError instead of waking the OOM killer on a shared machine); the soft limit is restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize:")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _checkpoint(path: Path, config: dict | None = None, metadata: dict | None = None, tensors=None) -> Path:
    """The bundled checkpoint rewritten with another config / metadata / tensors."""
    src = bundled_model_path()
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    if config is not None:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    meta.update(metadata or {})
    save_file(tensors if tensors is not None else load_file(str(src)), str(path), metadata=meta)
    return path


def _bundled_config() -> dict:
    with safe_open(str(bundled_model_path()), "pt") as f:
        return json.loads(f.metadata()["config"])


def test_hostile_checkpoint_configs_are_refused_before_anything_is_built(tmp_path, capsys):
    max_parameters = 2**28  # metasr.model.MAX_PARAMETERS
    params = _bundled_config()["backbone_params"]
    cases = {  # file -> (config change, what the one-line error says)
        "channels.safetensors": ({"backbone_params": {**params, "channels": 10**12}}, "channels must be in 1..1024"),
        "blocks.safetensors": ({"backbone_params": {**params, "n_blocks": 10**7}}, "n_blocks must be in 1..256"),
        "huge.safetensors": (  # every size in range, together 4.8 G parameters
            {"backbone_params": {**params, "channels": 1024, "n_blocks": 256}, "features": 1024},
            f"at most {max_parameters:,}",
        ),
        "features.safetensors": ({"features": 10**9}, "features must be in 1..1024"),
        "unknown.safetensors": ({"backbone_params": {**params, "depth": 3}}, "depth"),
    }
    for name, (config, fragment) in cases.items():
        path = _checkpoint(tmp_path / name, config=config)
        with _address_space_cap(2 << 30):  # before the fix: "Storage size calculation overflowed" / OOM
            code = main(["export-onnx", "--model", str(path), "--out", str(tmp_path / "out"), "--no-verify"])
        assert fragment in one_line_error(capsys, code), name
    assert not (tmp_path / "out").exists()


def test_parameter_count_matches_the_built_model():
    """The count the size check uses, from the config alone, equals the built model's (every preset and a few
    odd shapes): the check refuses what would be built, no more, no less."""
    from metasr.model import parameter_count

    configs = [
        *PRESETS.values(),
        ModelConfig("rdn", {"channels": 8, "n_blocks": 3, "n_layers": 2, "growth": 5, "kernel_size": 5}, 8, hidden=7),
        ModelConfig("edsr", {"channels": 5, "n_blocks": 1, "res_scale": 0.5, "kernel_size": 1}, 5, hidden=3),
    ]
    for config in configs:
        with torch.device("meta"):
            built = sum(p.numel() for p in MetaSR(config).parameters())
        assert parameter_count(config) == built, config.name


def test_checkpoint_metadata_is_parsed_with_bounded_depth_and_size(tmp_path, capsys):
    # 30,000 deep: 60 kB, under the size bound; json.loads raised RecursionError before
    deep = _checkpoint(tmp_path / "deep.safetensors", metadata={"config": "[" * 30_000 + "]" * 30_000})
    code = main(["export-onnx", "--model", str(deep), "--out", str(tmp_path / "out")])
    assert "nested 30000 levels deep; at most 4 are read" in one_line_error(capsys, code)
    big = _checkpoint(tmp_path / "big.safetensors", metadata={"config": json.dumps({"name": "x" * 200_000})})
    assert "characters" in one_line_error(capsys, main(["eval", "--model", str(big), "--data", str(tmp_path)]))


def test_the_memory_a_checkpoint_needs_is_checked_before_loading(tmp_path, monkeypatch):
    import metasr.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "_available_bytes", lambda: 1 << 20)  # a machine with 1 MiB free
    with pytest.raises(CheckpointError, match="GiB available"):
        load_model(bundled_model_path())


def test_non_finite_weights_are_refused_at_load(tmp_path, capsys):
    """A NaN checkpoint exported and evaluated without a word before (every image it made was garbage)."""
    state = load_file(str(bundled_model_path()))
    name = "head.0.weight"
    for value in (math.nan, math.inf):
        bad = {k: v.clone() for k, v in state.items()}
        bad[name].view(-1)[7] = value
        path = _checkpoint(tmp_path / "bad.safetensors", tensors=bad)
        code = main(["export-onnx", "--model", str(path), "--out", str(tmp_path / "out")])
        assert f"non-finite weights (NaN or inf) in {name}" in one_line_error(capsys, code)
    official = {k: v.clone() for k, v in official_state_dict(load_model(bundled_model_path())).items()}
    official["P2W.meta_block.0.bias"][0] = math.nan
    torch.save(official, tmp_path / "official.pt")
    with pytest.raises(CheckpointError, match=r"P2W\.meta_block\.0\.bias"):
        load_model(tmp_path / "official.pt", "small")
    assert not (tmp_path / "out").exists()


def test_a_fifo_checkpoint_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    code = main(["export-onnx", "--model", str(fifo), "--out", str(tmp_path / "out")])
    assert "is not a regular file" in one_line_error(capsys, code)


# -- paths checked before the work starts ----------------------------------------------------------------------
def test_bench_json_target_is_checked_before_the_benchmark_runs(tmp_path, capsys):
    base = ["bench", "--model", "small", "--lr-size", "8x8", "--repeats", "1", "--no-memory"]
    for target, fragment in (
        ("/proc/metasr-bench.json", "cannot be written"),  # unwritable even for root
        (str(tmp_path), "is a folder"),
        ("/dev/null", "is not a regular file"),  # would be replaced by a regular file
        (str(tmp_path / "missing" / "b.json"), "there is no folder"),
    ):
        code = main([*base, "--json", target])
        out = capsys.readouterr()
        assert code == 2 and out.out == "", (target, out)  # before the fix: the whole benchmark, then the error
        assert out.err.startswith("metasr: error: --json") and fragment in out.err, out.err
    assert Path("/dev/null").is_char_device()


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
