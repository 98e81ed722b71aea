"""The portable graphs (docs/portable.md): the plan computed in the graph equals the runtime's, bit for bit, and
the image-in / image-out graph equals the two-graph pipeline."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import data_path

ort = pytest.importorskip("onnxruntime")

from metasr.runtime.batch import scale_for_size  # noqa: E402
from metasr.runtime.feeds import UPSCALE_PLAN_INPUTS, check_hints, plan_feeds  # noqa: E402
from metasr.runtime.manifest import Manifest  # noqa: E402
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
        check_hints(got)  # the graph's own (simpler) grouping hints are valid


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
    sess = _session(onnx.load(str(bundled_artifacts / "metasr.portable.onnx")))
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
