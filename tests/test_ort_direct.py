"""The convolution path without the body's plan logic (``runtime/ort_direct.py``).

Oracles: the NCHWc variant of the body (``runtime/ort_cpu.py``) on the split graph, which the direct path must equal
bit for bit (the same kernels on the same filters; add_mean's bias added inside the convolution instead of after
the interleave rounds the same here, measured: 0 differing values over every case), and the body forced onto the
grouped path (no convolution at all), within the tolerance ``tests/test_ort_cpu.py`` holds the variant to. The
direct path must also be taken exactly where the variant takes its NCHWc convolution and the output is a window
of the interleaved image, and leave every other call to the graph.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
import onnx
import onnx.inliner
import onnxruntime as ort
from metasr.export.metaupscale_body import D2S_SLOTS
from metasr.export.metaupscale_nchwc import MIN_BLOCKS
from metasr.runtime import ort_cpu, ort_direct
from metasr.runtime.backends import OrtBackend
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.predictor_split import split_upscale
from metasr.runtime.projection import project

from tests.test_ort_cpu import BIG_CASES, _big_case, _spec
from tests.test_upscale_body import cpu_session, grouped_model


def split_parts(raw: bytes, block: int) -> tuple:
    """The upscale graph ``raw`` split at its filter table, the split body's NCHWc variant (bytes) and what
    ``specialize`` said of it, and the direct paths of that body (sessions on the CPU provider)."""
    split = split_upscale(raw)
    variant, said = ort_cpu.specialize(split.body, "fp32")
    bias = ort_direct.mean_bias(split.body, "sr")
    assert bias is not None and bias.shape == (3,)
    return split, variant, said, ort_direct.DirectPaths(bias, block, cpu_session)


@pytest.fixture(scope="module")
def parts(bundled_artifacts, block):
    """(predictor session, the split body's variant, the whole graph on the grouped path, DirectPaths, split)."""
    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    split, variant, said, direct = split_parts(raw, block)
    assert said.startswith(ort_cpu.VARIANT), said
    return cpu_session(split.predictor), cpu_session(variant), cpu_session(grouped_model(raw)), direct, split


def _run(parts, feeds):
    predictor, variant, grouped, direct, split = parts
    table = predictor.run(None, {k: feeds[k] for k in split.inputs})[0]
    body_feeds = {k: v for k, v in feeds.items() if k not in split.inputs} | {split.table: table}
    return direct.run(feeds, table), variant.run(None, body_feeds)[0], grouped.run(None, feeds)[0]


@pytest.mark.parametrize("name", BIG_CASES)
def test_direct_path_equals_the_variant_where_it_is_taken(parts, name):
    feeds, h, w = _big_case(name)
    n = 2 if "batch" in name else 1
    feeds = {"features": np.random.default_rng(1).standard_normal((n, 32, h, w)).astype(np.float32) * 3, **feeds}
    got, body, want = _run(parts, feeds)
    k_r, k_c = feeds["row_slots"].shape[1], feeds["col_slots"].shape[1]
    # taken: the variant's NCHWc convolution (K_r = K_c one of its branches, >= MIN_BLOCKS blocks; "small x2" has
    # 437) and output rows that are one run of the interleaved image (not so with the slots reversed)
    takes = k_r == k_c in D2S_SLOTS and name not in ("small x2", "row slots reversed")
    assert (got is not None) == takes, name
    if got is None:
        return
    assert got.shape == body.shape and got.dtype == np.float32
    assert np.array_equal(got, body), (name, float(np.abs(got - body).max()))
    # the grouped path: no convolution; measured at most 1.5e-5 on outputs of magnitude ~130 (test_ort_cpu.py)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), name


@pytest.mark.parametrize("scale", [1.1, 1.7, 2.3, 3.3])
def test_off_the_convolution_path_the_graph_runs(parts, scale):
    feeds = {"features": np.zeros((1, 32, 48, 40), np.float32), **plan_feeds(project(48, 40, scale))}
    assert ort_direct.plan(feeds, parts[3].block) is None


def test_features_the_variant_cannot_take_run_the_graph(parts):
    feeds = plan_feeds(project(48, 40, 2.0))
    f = np.zeros((1, 32, 48, 40), np.float32)
    block = parts[3].block
    assert ort_direct.plan({"features": f, **feeds}, block) is not None
    assert ort_direct.plan({"features": f.astype(np.float16), **feeds}, block) is None
    assert ort_direct.plan({"features": np.zeros((1, 24, 48, 40), np.float32), **feeds}, block) is None
    small = plan_feeds(project(30, 30, 2.0))  # 900 blocks < MIN_BLOCKS
    assert ort_direct.plan({"features": np.zeros((1, 32, 30, 30), np.float32), **small}, block) is None


def test_a_direct_graph_that_does_not_load_leaves_the_call_to_the_graph(parts, monkeypatch):
    bias, block = parts[3].bias, parts[3].block
    broken = ort_direct.DirectPaths(bias, block, lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]))
    monkeypatch.setattr(ort_direct, "_model", lambda k, s: b"not a model")
    feeds = {"features": np.zeros((1, 32, 48, 40), np.float32), **plan_feeds(project(48, 40, 2.0))}
    assert broken.run(feeds, np.zeros((1, 1, 27 * 32), np.float32)) is None
    assert not broken.taken


def test_mean_bias_reads_only_the_exported_tail(parts):
    split = parts[4]
    model = onnx.load_from_string(split.body)
    assert ort_direct.mean_bias(split.body, "upscaled") is None  # not an Add
    add = next(n for n in model.graph.node if n.op_type == "Add")
    add.op_type = "Sub"
    assert ort_direct.mean_bias(model.SerializeToString(), "sr") is None
    model = onnx.load_from_string(split.body)
    init = next(t for t in model.graph.initializer if t.name == "mean_b")
    init.CopyFrom(onnx.numpy_helper.from_array(np.zeros((1, 3, 1, 2), np.float32), "mean_b"))
    assert ort_direct.mean_bias(model.SerializeToString(), "sr") is None


@pytest.mark.parametrize(("scale", "budget_mb"), [(2.0, 512), (1.5, 512), (3.0, 8), (2.5, 8), (3.3, 8)])
def test_the_backend_takes_it_and_pipelines_give_the_same_images(bundled_artifacts, block, monkeypatch, scale,
                                                                 budget_mb):  # fmt: skip
    from metasr.runtime.pipeline import Pipeline

    h, w = 100, 150
    features = np.random.default_rng(3).standard_normal((1, 32, h, w)).astype(np.float32)
    monkeypatch.setenv(ort_direct.ENV, "0")
    with Pipeline(bundled_artifacts, upscale_budget_mb=budget_mb) as p:
        assert p._upscale.direct is None
        want = p.upscale(features, scale)
    monkeypatch.setenv(ort_direct.ENV, "1")
    with Pipeline(bundled_artifacts, upscale_budget_mb=budget_mb) as p:
        direct = p._upscale.direct
        tiles = p.tiles(h, w, scale)
        got = p.upscale(features, scale)
    assert np.array_equal(got, want)
    # calls on the convolution path go direct (x3.3 has none), but for tiles of fewer than MIN_BLOCKS blocks of s
    # pixels (the variant gives them the standard convolution); a small budget cuts several tiles
    s = plan_feeds(project(h, w, scale))["row_groups"].shape[2]
    big = sum(
        -(-(t.in_rows.stop - t.in_rows.start) // s) * -(-(t.in_cols.stop - t.in_cols.start) // s) >= MIN_BLOCKS
        for t in tiles
    )
    assert direct.taken["conv"] == (0 if scale == 3.3 else big) and (len(tiles) > 1) == (budget_mb < 512)
    assert big > 0 or scale == 3.3


def test_backend_without_the_variant_has_no_direct_path(bundled_artifacts, block, monkeypatch):
    spec = _spec(bundled_artifacts, "upscale")
    raw = (bundled_artifacts / spec.file).read_bytes()
    assert OrtBackend(raw, spec, ["CPUExecutionProvider"]).direct is not None
    monkeypatch.setenv(ort_cpu.ENV, "0")
    assert OrtBackend(raw, spec, ["CPUExecutionProvider"]).direct is None
    monkeypatch.setenv(ort_cpu.ENV, "1")
    be = OrtBackend(raw, spec, ["CPUExecutionProvider"])
    be.close()
    assert be.direct is None


def test_a_session_that_runs_out_of_memory_is_tried_again(parts):
    make, calls = parts[3]._make, []

    def flaky(model: bytes) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError
        return make(model)

    paths = ort_direct.DirectPaths(parts[3].bias, parts[3].block, flaky)
    feeds = {"features": np.zeros((1, 32, 48, 40), np.float32), **plan_feeds(project(48, 40, 2.0))}
    table = np.zeros((2, 2, 27 * 32), np.float32)
    assert paths.run(feeds, table) is None  # this call: the graph
    assert paths.run(feeds, table) is not None and len(calls) == 2  # the next: created
