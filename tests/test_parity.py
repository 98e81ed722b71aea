"""`metasr parity`: passes on the exported bundled model, fails on a perturbed graph, usage errors exit 2,
and its Polygraphy files load in Polygraphy and drive `polygraphy run`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import data_path, write_manifest
from onnx import numpy_helper

pytest.importorskip("onnxruntime")
pytest.importorskip("polygraphy")

from metasr.runtime.backends import backend_available
from metasr.runtime.manifest import GraphSpec, Manifest, sha256_file

from metasr.cli import main
from metasr.parity import DEFAULT_THRESHOLDS, ParityError, candidate_pairs, parse_threshold

# the CPU backends parity runs by default where they are installed (openvino: the metasr[openvino] extra)
CPU_BACKENDS = [b for b in ("ort", "openvino") if backend_available(b) is None]


def _parity(capsys, *args):
    code = main(["parity", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_parity_passes_on_the_bundled_model(capsys, tmp_path, bundled_artifacts):
    report = tmp_path / "report.json"
    code, out, err = _parity(
        capsys, "--artifacts", bundled_artifacts, "--images", data_path("Set5"), "--scales", 2, 3.3, "--report", report
    )
    assert code == 0, out + err
    for backend in CPU_BACKENDS:
        assert f"| {backend} | fp32 | Set5 | x2 | 5 |" in out and f"| {backend} | fp32 | Set5 | x3.3 | 5 |" in out
    assert f"all {10 * len(CPU_BACKENDS)} cases pass" in out
    assert "skipped trt/*" in out and "skipped ort-cuda/*" in out  # unavailable backends, with a reason
    doc = json.loads(report.read_text())
    assert doc["passed"] and len(doc["cases"]) == 10 * len(CPU_BACKENDS)
    for case in doc["cases"]:
        assert case["max_abs"] <= 1e-2 and case["uint8_equal"] >= 0.999
        assert abs(case["psnr_y"] - case["ref_psnr_y"]) < 0.01  # Y-PSNR against ground truth, both sides
        assert 0 < case["ssim_y"] <= 1


def _perturbed(tmp_path, bundled_artifacts, delta):
    """A copy of the artifacts whose upscale graph adds ``delta`` to the output (add_mean bias), rehashed."""
    art = tmp_path / "perturbed"
    shutil.copytree(bundled_artifacts, art)
    proto = onnx.load(str(art / "upscale.onnx"))
    init = next(i for i in proto.graph.initializer if i.name == "mean_b")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(delta), "mean_b"))
    onnx.save(proto, str(art / "upscale.onnx"))
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["graphs"][1]["sha256"] = sha256_file(art / "upscale.onnx")
    write_manifest(art, manifest)
    return art


def test_a_perturbed_graph_fails_parity(capsys, tmp_path, bundled_artifacts):
    # 0.05 on the 0..255 scale: invisible in an image, five times the FP32 limit
    art = _perturbed(tmp_path, bundled_artifacts, 0.05)
    code, out, _ = _parity(capsys, "--artifacts", art, "--images", data_path("Set5"), "--scales", 2)
    assert code == 1
    n = 5 * len(CPU_BACKENDS)
    assert "**FAIL**" in out and f"{n} of {n} cases fail" in out
    for backend in CPU_BACKENDS:
        assert f"- FAIL {backend}/fp32 Set5/baby x2: max|d| 0.05" in out


def test_thresholds_can_be_overridden(capsys, bundled_artifacts):
    args = ["--artifacts", bundled_artifacts, "--images", data_path("Set5"), "--scales", 2]
    code, out, _ = _parity(capsys, *args, "--threshold", "fp32.atol=1e-9")
    assert code == 1 and "max|d|" in out  # measured max |d| ~1.5e-4: above a 1e-9 limit
    code, out, _ = _parity(capsys, *args, "--threshold", "fp32.min_psnr_db=200", "--threshold", "fp32.atol=none")
    assert code == 1 and "PSNR" in out


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--images", "/no/such/folder"], "no image folder"),
        (["--scales", "5"], "scale must be"),
        (["--threshold", "fp32.atol"], "--threshold must look like"),
        (["--threshold", "fp64.atol=1"], "unknown precision"),
        (["--threshold", "fp32.rtol=1"], "unknown limit"),
        (["--threshold", "fp32.atol=-1"], "must be a finite number in [0, 255]"),
        (["--threshold", "fp32.atol=inf"], "must be a finite number in [0, 255]"),  # a check that cannot fail
        (["--backends", "tpu"], "unknown backend"),
        (["--precisions", "fp64"], "unknown precisions"),
        (["--backends", "trt"], "no backend x precision could run here"),
    ],
)
def test_bad_usage_exits_2(capsys, bundled_artifacts, args, expect):
    base = {"--images": str(data_path("Set5")), "--scales": "2"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = ["--artifacts", bundled_artifacts, *[x for k, v in {**base, **given}.items() for x in (k, v)]]
    code, out, err = _parity(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expect in lines[0], (out, err)


def test_reference_must_be_the_exported_checkpoint(capsys, tmp_path, bundled_artifacts):
    import torch

    from metasr.bundled import bundled_model_path
    from metasr.checkpoint import load_model, save_model

    model = load_model(bundled_model_path())
    with torch.no_grad():
        model.add_mean.bias += 1
    other = save_model(model, tmp_path / "other.safetensors")
    code, _, err = _parity(capsys, "--artifacts", bundled_artifacts, "--images", data_path("Set5"), "--model", other)
    assert code == 2 and "not the checkpoint these artifacts were exported from" in err
    art = tmp_path / "art"
    shutil.copytree(bundled_artifacts, art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["checkpoint_sha256"] = ""  # as exported from a preset
    write_manifest(art, manifest)
    code, _, err = _parity(capsys, "--artifacts", art, "--images", data_path("Set5"))
    assert code == 2 and "give --model" in err


def test_backend_x_precision_pairs_follow_the_manifest(bundled_artifacts):
    m = Manifest.read(bundled_artifacts)
    fp16 = [GraphSpec(**{**g.__dict__, "file": f"{g.kind}_fp16.onnx", "precision": "fp16"}) for g in m.graphs]
    m16 = Manifest(**{**m.__dict__, "graphs": (*m.graphs, *fp16)})
    run, skipped = candidate_pairs(m16)
    assert run == [(b, p) for b in CPU_BACKENDS for p in ("fp32", "fp16")]  # FP16 joins as soon as it exists
    assert {b for b, _, _ in skipped} == {"ort-cuda", "trt", "ort", "openvino"} - set(CPU_BACKENDS)
    run, _ = candidate_pairs(m16, precisions=["fp16"])
    assert run == [(b, "fp16") for b in CPU_BACKENDS]


def test_threshold_parsing():
    table = parse_threshold("fp16.min_psnr_db=45", DEFAULT_THRESHOLDS)
    assert table["fp16"].min_psnr_db == 45 and DEFAULT_THRESHOLDS["fp16"].min_psnr_db == 50
    assert parse_threshold("fp32.atol=none", table)["fp32"].atol is None
    with pytest.raises(ParityError):
        parse_threshold("fp32.min_uint8_equal=2", table)


def test_polygraphy_files_load_and_check_the_graphs(capsys, tmp_path, bundled_artifacts):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    args = ["--artifacts", bundled_artifacts, "--images", data_path("Set5"), "--scales", 2.5]
    saved = ["--save-inputs", tmp_path / "in.json", "--save-outputs", tmp_path / "out.json"]
    code, out, _ = _parity(capsys, *args, *saved)
    assert code == 0, out
    assert "[I]" not in out  # Polygraphy's own logging stays out of the report
    feeds = load_json(str(tmp_path / "in.upscale.json"))
    results = RunResults.load(str(tmp_path / "out.upscale.json"))
    assert len(feeds) == 5 and set(feeds[0]) >= {"features", "row_src", "col_groups", "col_slots"}
    assert list(results.keys()) == ["pytorch"] and len(results["pytorch"]) == 5
    assert results["pytorch"][0]["sr"].shape[2:] == (feeds[0]["row_src"].size, feeds[0]["col_src"].size)
    assert set(load_json(str(tmp_path / "in.feature.json"))[0]) == {"lr"}
    polygraphy = shutil.which("polygraphy", path=str(Path(sys.executable).parent)) or "polygraphy"
    for graph in ("feature", "upscale"):  # the command in docs/parity.md, on ONNX Runtime here
        cmd = [polygraphy, "run", str(bundled_artifacts / f"{graph}.onnx"), "--onnxrt"]
        cmd += ["--load-inputs", str(tmp_path / f"in.{graph}.json")]
        cmd += ["--load-outputs", str(tmp_path / f"out.{graph}.json")]
        cmd += ["--atol", "1e-2", "--rtol", "0", "--check-error-stat", "max"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "PASSED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
