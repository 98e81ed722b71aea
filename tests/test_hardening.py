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
from pathlib import Path

import pytest
import torch
from conftest import one_line_error
from safetensors import safe_open
from safetensors.torch import load_file, save_file

pytest.importorskip("onnxruntime")

from metasr.runtime.backends import open_backend
from metasr.runtime.pipeline import Pipeline

from metasr.bundled import bundled_model_path
from metasr.checkpoint import CheckpointError, load_model, official_state_dict
from metasr.cli import main
from metasr.config import PRESETS, ModelConfig
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
