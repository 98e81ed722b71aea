"""The portable graphs (docs/portable.md): the plan computed in the graph equals the runtime's, bit for bit, and
the image-in / image-out graph equals the two-graph pipeline."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import data_path

ort = pytest.importorskip("onnxruntime")

from metasr.runtime.batch import scale_for_size  # noqa: E402
from metasr.runtime.feeds import UPSCALE_PLAN_INPUTS, check_hints, plan_feeds, signature_hints  # noqa: E402
from metasr.runtime.manifest import Manifest  # noqa: E402
from metasr.runtime.ort_cpu import specialize  # noqa: E402
from metasr.runtime.pipeline import Pipeline  # noqa: E402
from metasr.runtime.projection import project  # noqa: E402

PLAN = list(UPSCALE_PLAN_INPUTS)
# (h, w) x scales: the projection's float32 edge cases (1.4 x 45: int(1.4 * 45) == 62; 2.3 x 50: 114 not 115;
# x2.3 / x2.7 / x3.7: rows projected onto the row before with offset ~0.99999), odd and long axes
SIZES = [(8, 9), (45, 45), (50, 50), (17, 333), (80, 120)]
SCALES = [1.1, 1.4, 1.5, 2.0, 2.3, 2.7, 3.3, 3.7, 4.0]


def _f64(x: float) -> np.ndarray:
    return np.array(x, dtype=np.float64)  # the scale input: a float64 scalar (shape [])


def _session(proto: onnx.ModelProto):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def plan_session(bundled_artifacts):
    """The portable upscale graph with its computed plan inputs exposed as outputs."""
    proto = onnx.load(str(bundled_artifacts / "upscale.portable.onnx"))
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in PLAN)
    return _session(proto)


def test_manifest_lists_the_portable_graphs(bundled_artifacts):
    m = Manifest.read(bundled_artifacts)
    for kind, name, target in [
        ("upscale-portable", "upscale.portable.onnx", ("scale", "float64", ())),
        ("upscale-portable-size", "upscale.portable.size.onnx", ("size", "int64", (2,))),
        ("portable", "metasr.portable.onnx", ("scale", "float64", ())),
        ("portable-size", "metasr.portable.size.onnx", ("size", "int64", (2,))),
    ]:
        g = m.graph(kind)
        assert g.file == name and len(g.inputs) == 2 and len(g.outputs) == 1
        assert (g.inputs[1].name, g.inputs[1].dtype, g.inputs[1].shape) == target
        if kind.startswith("portable"):
            assert (g.inputs[0].dtype, g.inputs[0].shape) == ("uint8", ("h", "w", 3))
            assert (g.outputs[0].dtype, g.outputs[0].shape) == ("uint8", ("H", "W", 3))


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_plan_in_the_graph_equals_the_runtime(plan_session, h, w):
    feats = np.random.default_rng(h * w).standard_normal((1, 32, h, w)).astype(np.float32)
    for scale in SCALES:
        out = plan_session.run(None, {"features": feats, "scale": _f64(scale)})
        got = dict(zip(["sr", *PLAN], out, strict=True))
        ref = plan_feeds(project(h, w, scale))
        for name in PLAN[:7]:  # the projection and the merged offsets: bit for bit
            assert got[name].dtype == ref[name].dtype and np.array_equal(got[name], ref[name]), (scale, name)
        check_hints(got)  # the graph's own (simpler) grouping hints are valid, and the ones Python estimates with
        for axis in ("row", "col"):
            ref_hints = signature_hints(got[f"{axis}_src"], got[f"{axis}_idx"])
            for name, a in zip(("groups", "slots", "pick"), ref_hints, strict=True):
                assert np.array_equal(got[f"{axis}_{name}"], a), (scale, axis, name)


def test_merge_follows_the_sequential_rule_on_long_axes(plan_session):
    """On long axes offsets chain: clusters split where a value lies more than merge_tol above the cluster's
    first one, not at gaps (measured: 1,987 of 79,200 (n, r) cells differ between the two rules, all n >= 93)."""
    feats = np.zeros((1, 32, 1, 2048), dtype=np.float32)
    for scale in (1.01, 1.03, 1.04):
        got = plan_session.run(["col_offsets", "col_idx"], {"features": feats, "scale": _f64(scale)})
        ref = plan_feeds(project(1, 2048, scale))
        assert np.array_equal(got[0], ref["col_offsets"]) and np.array_equal(got[1], ref["col_idx"])


def test_portable_image_equals_the_pipeline(bundled_artifacts):
    from PIL import Image

    img = np.asarray(Image.open(data_path("Set5", "baby.png")).convert("RGB"))[:60, :90]
    # with the body the pipeline's ort backend loads (runtime/ort_cpu.py: the NCHWc variant where it exists)
    graph, _ = specialize((bundled_artifacts / "metasr.portable.onnx").read_bytes(), "fp32")
    sess = _session(onnx.load_from_string(graph))
    with Pipeline(bundled_artifacts) as p:
        for scale in (2.0, 3.3):
            out = sess.run(None, {"image": img, "scale": _f64(scale)})[0]
            ref = p(img, scale)
            assert out.dtype == np.uint8 and out.shape == ref.shape
            assert np.array_equal(out, ref), scale


@pytest.mark.parametrize(("h", "w", "th", "tw"), [(60, 90, 140, 333), (45, 45, 62, 62), (50, 37, 115, 90)])
def test_size_form_is_the_covering_scale_centre_cropped(bundled_artifacts, h, w, th, tw):
    feats = np.random.default_rng(0).standard_normal((1, 32, h, w)).astype(np.float32)
    size_sess = _session(onnx.load(str(bundled_artifacts / "upscale.portable.size.onnx")))
    scale_sess = _session(onnx.load(str(bundled_artifacts / "upscale.portable.onnx")))
    got = size_sess.run(None, {"features": feats, "size": np.array([th, tw], dtype=np.int64)})[0]
    r = scale_for_size(h, w, tw, th, 4.0)
    full = scale_sess.run(None, {"features": feats, "scale": _f64(r)})[0]
    y0, x0 = (full.shape[2] - th) // 2, (full.shape[3] - tw) // 2
    assert got.shape == (1, 3, th, tw)
    np.testing.assert_array_equal(got, full[:, :, y0 : y0 + th, x0 : x0 + tw])


def test_cli_graph_portable_equals_two(bundled_artifacts, tmp_path):
    from PIL import Image

    from metasr.cli import main

    src = data_path("Set5", "bird.png")  # 288x288
    for target in (["--scale", "2.3"], ["--size", "576x400"]):  # x2, centre-cropped
        outs = []
        for graph in ("two", "portable"):
            out = tmp_path / f"{graph}.png"
            args = ["upscale", str(src), "-o", str(out), *target, "--artifacts", str(bundled_artifacts)]
            assert main([*args, "--graph", graph, "--force"]) == 0
            outs.append(np.asarray(Image.open(out)))
        assert outs[0].shape == outs[1].shape and np.array_equal(outs[0], outs[1]), target


@pytest.mark.parametrize("scale", [0.0, 1.0, float("nan"), 4.5])
def test_portable_pipeline_refuses_bad_scales(bundled_artifacts, scale):
    from metasr.runtime.projection import UnsupportedScaleError

    with Pipeline(bundled_artifacts, graph="portable") as p, pytest.raises(UnsupportedScaleError, match="scale must"):
        p(np.zeros((8, 8, 3), dtype=np.uint8), scale)


def test_calibrate_adds_portable_variants(calibrated_artifacts):
    """FP16 (both stages) and INT8 (each form's feature graph with the FP32 upscale stage): every precision has a
    portable form, and it gives the two-graph runtime's pixels."""
    m = Manifest.read(calibrated_artifacts)
    files = {g.file for g in m.graphs}
    for name in ("metasr.portable.fp16.onnx", "metasr.portable.size.fp16.onnx", "upscale.portable.fp16.onnx",
                 "upscale.portable.size.fp16.onnx", "metasr.portable.int8.trt.onnx", "metasr.portable.int8.cpu.onnx",
                 "metasr.portable.size.int8.trt.onnx", "metasr.portable.size.int8.cpu.onnx"):  # fmt: skip
        assert name in files
    img = (np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)
    for precision in ("fp16", "int8"):
        with Pipeline(calibrated_artifacts, precision=precision) as two, \
                Pipeline(calibrated_artifacts, precision=precision, graph="portable") as portable:  # fmt: skip
            tag = "fp16" if precision == "fp16" else "int8.cpu"  # ort runs the CPU INT8 form
            assert portable._portable.spec.file == f"metasr.portable.{tag}.onnx"
            for scale in (2.0, 2.7):
                a, b = two(img, scale), portable(img, scale)
                assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1, (precision, scale)


def test_parity_runs_the_portable_graphs(bundled_artifacts, tmp_path):
    from PIL import Image

    from metasr.parity import run_parity

    (tmp_path / "imgs").mkdir()
    Image.open(data_path("Set5", "bird.png")).crop((0, 0, 96, 64)).save(tmp_path / "imgs" / "bird.png")
    run = run_parity(bundled_artifacts, [tmp_path / "imgs"], [2.3], backends=["ort"], graph="portable")
    assert run.passed and [c.backend for c in run.cases] == ["ort+portable"]


def test_bench_runs_the_portable_graphs(bundled_artifacts):
    from metasr.bench import format_bench, run_bench

    res = run_bench(None, (24, 32), 2.0, repeats=1, memory_output=None, artifacts=bundled_artifacts, graph="portable")
    assert res["graph"] == "portable" and res["ort"]["e2e_s"] > 0
    assert "ONNX Runtime (portable graphs)" in format_bench(res)


@pytest.mark.parametrize("target", [["--scale", "0"], ["--scale", "1"], ["--scale", "nan"], ["--scale", "4.5"],
                                    ["--size", "0x0"], ["--size", "5000x5000"]])  # fmt: skip
def test_cli_portable_refuses_bad_targets_in_one_line(bundled_artifacts, tmp_path, capsys, target):
    from conftest import one_line_error

    from metasr.cli import main

    src = data_path("Set5", "bird.png")
    try:
        code = main(["upscale", str(src), "-o", str(tmp_path / "o.png"), *target, "--graph", "portable",
                     "--artifacts", str(bundled_artifacts)])  # fmt: skip
    except SystemExit as e:  # argparse refuses the option itself
        code = e.code
    one_line_error(capsys, code)
    assert not (tmp_path / "o.png").exists()


def test_cli_portable_refuses_what_does_not_fit_memory_whole(bundled_artifacts, tmp_path, capsys):
    """Not tiled: an input whose upscale stage does not fit --memory-mb in one call is refused before any work
    (the two-graph runtime tiles the same input within the bound)."""
    from conftest import one_line_error
    from metasr.runtime.memory import MIB, resident_bytes

    from metasr.cli import main

    src = data_path("Set5", "baby.png")  # 512x512 -> 2048x2048: the portable upscale stage ~480 MiB at once
    bound = str(resident_bytes() // MIB + 250)  # this process (the test session's) plus 250 MiB
    args = ["upscale", str(src), "--scale", "4", "--artifacts", str(bundled_artifacts), "--memory-mb", bound]
    code = main([*args, "-o", str(tmp_path / "p.png"), "--graph", "portable"])
    assert "needs at least" in one_line_error(capsys, code) and not (tmp_path / "p.png").exists()
    assert main([*args, "-o", str(tmp_path / "t.png")]) == 0
