"""Shared fixtures: paths to the shared data (never copied into the project) and seeded models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (a CI result must not depend on the draw); explore new
# ones locally with `pytest --hypothesis-profile=explore`. Failures print the example and its reproduce blob.
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("default")

sys.path.insert(0, str(Path(__file__).parent))  # the oracle module lives beside the tests

DATA = Path(os.environ.get("METASR_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def data_path(*parts: str) -> Path:
    """A path under the shared data folder; skips the test (with the reason) when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set METASR_DATA)")
    return path


def one_line_error(capsys, code: int) -> str:
    """Assert exit 2 and exactly one stderr line of the form ``metasr: error: ...``; return it."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("metasr: error: "), err
    return err[0]


def write_manifest(directory: Path, data: dict) -> None:
    """Write a manifest dict edited by a test with its content hash recomputed, as a tool that writes manifests
    would: the checks behind the hash are tested this way (the hash itself in test_integrity.py)."""
    from metasr.runtime.manifest import content_hash

    data = {k: v for k, v in data.items() if k != "content_sha256"}
    (Path(directory) / "manifest.json").write_text(json.dumps({**data, "content_sha256": content_hash(data)}))


@pytest.fixture(scope="session")
def bundled_artifacts(tmp_path_factory) -> Path:
    """The bundled model exported once per test session (read-only: copy it before changing anything)."""
    pytest.importorskip("onnxruntime")
    from metasr.export import export_onnx
    from metasr.runtime.manifest import sha256_file

    from metasr.bundled import bundled_model_path
    from metasr.checkpoint import load_model

    out = tmp_path_factory.mktemp("bundled") / "art"
    path = bundled_model_path()
    export_onnx(load_model(path), out, checkpoint_sha256=sha256_file(path))
    return out


@pytest.fixture(scope="session")
def block() -> int:
    """The CPU's NCHWc channel block (16 with AVX-512, 8 with AVX2) where ONNX Runtime's CPU variant of the
    MetaUpscale body runs (``metasr.runtime.ort_cpu``); the test is skipped where its kernels are missing."""
    pytest.importorskip("onnxruntime")
    from metasr.runtime import ort_cpu

    b = ort_cpu.nchwc_block()
    if isinstance(b, str) and "NCHWc kernels" in b:  # missing here (not x86-64, or an ONNX Runtime without them)
        pytest.skip(f"no NCHWc variant here: {b}")
    assert isinstance(b, int), b  # a variant that fails its own probe is a bug in it, not a skip
    return b


@pytest.fixture(scope="session")
def calibrated_artifacts(bundled_artifacts, tmp_path_factory) -> Path:
    """A copy of :func:`bundled_artifacts` with INT8 (both forms) and FP16 graphs added by a tiny calibration
    (6 crops, no sensitivity pass: the calibration's rules only; read-only)."""
    pytest.importorskip("onnxconverter_common")
    import shutil

    from metasr.calibration.calibrate import CalibrationConfig, calibrate

    out = tmp_path_factory.mktemp("calibrated") / "art"
    shutil.copytree(bundled_artifacts, out)
    dirs = (str(data_path("T91")), str(data_path("BSD200")))
    for precision in ("int8", "fp16"):
        config = CalibrationConfig(
            dirs, precision, crops=6, held_apart=3, lr_sizes=(16, 32), budget_db=10.0, min_psnr_db=0.0
        )
        assert calibrate(out, config).met
    return out
