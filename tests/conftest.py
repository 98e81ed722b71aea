"""Shared fixtures: paths to the shared data (never copied into the project) and seeded models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the oracle module lives beside the tests

DATA = Path(os.environ.get("METASR_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def data_path(*parts: str) -> Path:
    """A path under the shared data folder; skips the test (with the reason) when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set METASR_DATA)")
    return path


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
