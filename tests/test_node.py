"""The Node.js example (examples/node/upscale.mjs, onnxruntime-node) against ``metasr upscale``: the same pixels.

Skips with the reason when node or the example's node_modules are missing
(``npm ci --ignore-scripts --prefix examples/node`` installs them; CI does)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path
from metasr.runtime.ort_cpu import ENV
from PIL import Image

from metasr.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node.js 18 or later)")
    if not (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip(f"{EXAMPLE / 'node_modules'} is missing: npm ci --ignore-scripts --prefix examples/node")
    return node


def _pair(art: Path, src: Path, tmp: Path, graph: str, target: str, flag: str) -> tuple[np.ndarray, np.ndarray]:
    """(Node.js output, metasr upscale output) for one image. Both run the graphs as exported: the Python runtime's
    NCHWc variant of the body (runtime/ort_cpu.py, ONNX Runtime's CPU kernels only) sums in another order, which
    moves a rare pixel by one level (tests/test_ort_cpu.py holds it to the standard body)."""
    node_out, cli_out = tmp / f"{src.stem}.node.png", tmp / f"{src.stem}.cli.png"
    run = subprocess.run([_node(), str(EXAMPLE / "upscale.mjs"), str(art / graph), str(src), str(node_out), target],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with pytest.MonkeyPatch.context() as m:
        m.setenv(ENV, "0")
        assert main(["upscale", str(src), "-o", str(cli_out), flag, target, "--artifacts", str(art)]) == 0
    return np.asarray(Image.open(node_out).convert("RGB")), np.asarray(Image.open(cli_out).convert("RGB"))


@pytest.mark.parametrize(("graph", "target", "flag"), [
    ("metasr.portable.onnx", "2.3", "--scale"), ("metasr.portable.size.onnx", "576x400", "--size")])  # fmt: skip
def test_node_example_equals_metasr_upscale(bundled_artifacts, tmp_path, graph, target, flag):
    got, ref = _pair(bundled_artifacts, data_path("Set5", "bird.png"), tmp_path, graph, target, flag)
    assert got.shape == ref.shape and np.array_equal(got, ref)


def test_node_example_refuses_a_missing_target(bundled_artifacts):
    run = subprocess.run([_node(), str(EXAMPLE / "upscale.mjs"), str(bundled_artifacts / "metasr.portable.onnx")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "usage: node upscale.mjs MODEL.onnx IN.png OUT.png SCALE|WxH"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["2", "3.3"])
def test_node_example_on_set5_and_set14(bundled_artifacts, tmp_path, scale, monkeypatch):
    """Every Set5 and Set14 image (19): identical to the two-graph runtime's RGB output (``metasr upscale`` writes
    the one grey image, Set14 bridge, as grey, the example writes RGB; prints the count), both running the graphs
    as exported (see ``_pair``)."""
    from metasr.runtime.pipeline import Pipeline

    monkeypatch.setenv(ENV, "0")
    images = [p for s in ("Set5", "Set14") for p in sorted(data_path(s).glob("*.png"))]
    same = 0
    with Pipeline(bundled_artifacts) as pipe:
        for src in images:
            out = tmp_path / f"{src.stem}.node.png"
            graph = bundled_artifacts / "metasr.portable.onnx"
            run = subprocess.run([_node(), str(EXAMPLE / "upscale.mjs"), str(graph), str(src), str(out), scale],
                                 capture_output=True, text=True, timeout=600)  # fmt: skip
            assert run.returncode == 0, run.stderr
            got = np.asarray(Image.open(out).convert("RGB"))
            ref = pipe(np.asarray(Image.open(src).convert("RGB")), float(scale))
            same += got.shape == ref.shape and np.array_equal(got, ref)
    print(f"node x{scale}: {same}/{len(images)} images identical to the two-graph runtime")
    assert same == len(images)
