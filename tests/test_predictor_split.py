"""The upscale graph cut at its filter table (runtime/predictor_split.py) and the plan's table computed once
(``OrtBackend.filters``, ``Pipeline``'s whole-table tiles): the same outputs, one predictor run per plan."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnx
import onnxruntime as ort
from metasr.runtime.feeds import plan_feeds
from metasr.runtime.predictor_split import ENV, FilterCache, PredictorSplit, split_predictor, split_upscale
from metasr.runtime.projection import project
from onnx import helper


def _session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _features(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 32, h, w)).astype(np.float32)


@pytest.fixture(scope="module")
def upscale_bytes(bundled_artifacts) -> bytes:
    return (bundled_artifacts / "upscale.onnx").read_bytes()


@pytest.fixture(scope="module")
def split(upscale_bytes) -> PredictorSplit:
    s = split_predictor(upscale_bytes)
    assert isinstance(s, PredictorSplit), s
    return s


def test_split_graphs_have_the_expected_io(split, upscale_bytes):
    whole = onnx.load_from_string(upscale_bytes)
    pred, body = onnx.load_from_string(split.predictor), onnx.load_from_string(split.body)
    assert split.table == "weights" and split.inputs == ("inv_scale", "row_offsets", "col_offsets")
    assert [v.name for v in pred.graph.input] == list(split.inputs)
    assert [v.name for v in pred.graph.output] == ["weights"]
    body_inputs = [v.name for v in body.graph.input]
    assert "weights" in body_inputs and not set(split.inputs) & set(body_inputs)
    kept = [v.name for v in whole.graph.input if v.name not in split.inputs]
    assert sorted(body_inputs) == sorted([*kept, "weights"])
    assert [n.op_type for n in body.graph.node] == ["MetaUpscale", "Add"]  # the body and add_mean
    assert len(pred.graph.node) + len(body.graph.node) == len(whole.graph.node)
    assert not pred.functions and len(body.functions) == len(whole.functions)
    onnx.checker.check_model(pred)
    onnx.checker.check_model(body)


@pytest.mark.parametrize("scale", [2.0, 1.5, 3.3, 2.35, 4.0])
def test_split_is_bit_identical_to_the_whole_graph(split, upscale_bytes, scale):
    whole, pred, body = _session(upscale_bytes), _session(split.predictor), _session(split.body)
    feats = _features(23, 31, seed=int(scale * 10))
    feeds = {"features": feats, **plan_feeds(project(23, 31, scale))}
    want = whole.run(None, feeds)[0]
    table = pred.run(None, {n: feeds[n] for n in split.inputs})[0]
    rest = {k: v for k, v in feeds.items() if k not in split.inputs} | {"weights": table}
    got = body.run(None, rest)[0]
    np.testing.assert_array_equal(got, want)


def _graph(nodes, inputs, outputs, inits=()) -> bytes:
    f = onnx.TensorProto.FLOAT
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, f, None) for n in inputs],
        [helper.make_tensor_value_info(n, f, None) for n in outputs],
        list(inits),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("metasr", 1)])
    return m.SerializeToString()


def _mu(table: str) -> onnx.NodeProto:
    return helper.make_node("MetaUpscale", ["features", table], ["sr"], domain="metasr")


_RELU_X = helper.make_node("Relu", ["x"], ["t"])
_RELU_XU, _RELU_UV = helper.make_node("Relu", ["x"], ["u"]), helper.make_node("Relu", ["u"], ["v"])  # v reads u
_ADD_TU = helper.make_node("Add", ["t", "u"], ["t2"])
_REFUSED = [
    ([_RELU_X, _mu("t")], ["features"], "no graph input"),  # x: not a graph input
    ([helper.make_node("Relu", ["features"], ["t"]), _mu("t")], ["features"], "reads the features"),
    ([_mu("x")], ["features", "x"], "not computed in the graph"),
    ([_RELU_X, _RELU_XU, _ADD_TU, _RELU_UV, _mu("t2")], ["features", "x"], "read elsewhere"),
    ([_RELU_X, helper.make_node("Add", ["features", "x"], ["y"]), _mu("t")], ["features", "x"], "inputs are read"),
    ([_RELU_X], ["features", "x"], "not one MetaUpscale"),
]


@pytest.mark.parametrize(("nodes", "inputs", "reason"), _REFUSED)
def test_split_refuses_what_it_cannot_cut(nodes, inputs, reason):
    got = split_predictor(_graph(nodes, inputs, ["sr"]))
    assert isinstance(got, str) and reason in got, got


def test_split_upscale_gates(upscale_bytes, monkeypatch):
    assert split_upscale(b"not a model") == "no MetaUpscale node"
    assert split_predictor(b"\xffMetaUpscale garbage") == "the graph does not parse"
    monkeypatch.setenv(ENV, "0")
    assert split_upscale(upscale_bytes) == f"{ENV}=0"
    monkeypatch.delenv(ENV)
    assert isinstance(split_upscale(upscale_bytes), PredictorSplit)


def test_filter_cache_keys_on_the_predictor_inputs():
    calls = []

    def compute(feeds):
        calls.append(feeds)
        return feeds["a"].astype(np.float32) * 2

    cache = FilterCache(("a",), compute)
    a = np.arange(3, dtype=np.float32)
    t1 = cache.table({"a": a, "other": np.zeros(2)})
    t2 = cache.table({"a": a.copy(), "other": np.ones(2)})  # other feeds do not matter
    assert t1 is t2 and (cache.hits, cache.misses) == (1, 1) and len(calls) == 1
    assert not t1.flags.writeable
    cache.table({"a": a.astype(np.float64)})  # same values, another dtype: another key
    cache.table({"a": a[:2]})  # another shape
    cache.table({"a": a + 1})
    assert cache.misses == 4
    cache.clear()
    cache.table({"a": a + 1})
    assert cache.misses == 5


def test_filter_cache_under_threads_gives_each_plan_its_table():
    cache = FilterCache(("a",), lambda feeds: feeds["a"] * 10)
    errors = []

    def work(k: int) -> None:
        for i in range(200):
            a = np.full(4, float((k + i) % 3), np.float32)
            if not np.array_equal(cache.table({"a": a}), a * 10):
                errors.append((k, i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and cache.hits + cache.misses == 800


def _pipelines(art):
    from metasr.runtime.pipeline import Pipeline

    cached = Pipeline(art, backend="ort")
    os.environ[ENV] = "0"
    try:
        plain = Pipeline(art, backend="ort")
    finally:
        del os.environ[ENV]
    return cached, plain


def test_backend_splits_the_upscale_graph_only(bundled_artifacts):
    cached, plain = _pipelines(bundled_artifacts)
    assert cached._upscale.filters is not None and plain._upscale.filters is None
    assert all(b.filters is None for _, b in cached._features)  # the feature graph: no MetaUpscale
    assert "NCHWc variant" in cached._upscale.body  # the body still gets the CPU variant


@pytest.mark.parametrize(("scale", "budget_mb"), [(3.3, 32), (2.35, 64), (4.0, 8), (1.7, 8), (3.9, 48)])
def test_tiles_share_one_table_and_match_the_uncached_pipeline(bundled_artifacts, scale, budget_mb):
    cached, plain = _pipelines(bundled_artifacts)
    for p in (cached, plain):
        p.upscale_budget_mb = budget_mb
    feats = _features(120, 170, seed=3)
    tiles = cached.tiles(120, 170, scale)
    assert len(tiles) > 3  # the budget makes a tiled plan
    assert cached._plan(120, 170, scale, budget_mb * 2**20)[3] is False  # whole-table tiles
    got, want = cached.upscale(feats, scale), plain.upscale(feats, scale)
    filters = cached._upscale.filters
    assert (filters.misses, filters.hits) == (1, len(tiles) - 1)
    # whole-table tiles against per-tile tables: the same filters per pair, the predictor's sums may differ in
    # the last bit (matrix products of another size); measured max |d| 0 .. 6e-5 on the 0..255 scale
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)


def test_a_large_table_keeps_per_tile_tables(bundled_artifacts):
    from metasr.runtime.tiling import FULL_TABLE_BYTES, full_table_fits

    cached, _ = _pipelines(bundled_artifacts)
    _, feeds, _, compact = cached._plan(300, 400, 3.19, 512 * 2**20)  # offsets hardly repeat
    pairs = feeds["row_offsets"].size * feeds["col_offsets"].size
    assert pairs * 27 * 32 * 4 > FULL_TABLE_BYTES and compact is True
    # the budget counts too: an eighth of it at most
    small = {"row_offsets": np.zeros(16), "col_offsets": np.zeros(16)}  # 0.84 MiB
    assert full_table_fits(small, 32, 8 * 2**20) and not full_table_fits(small, 32, 8 * 2**20 / 10)


def test_planned_tiles_fit_the_budget_with_the_feeds_they_get(bundled_artifacts):
    from metasr.runtime.tiling import tile_bytes, window_feeds

    cached, _ = _pipelines(bundled_artifacts)
    budget = 48 * 2**20
    for scale in (3.3, 1.7, 3.9):
        _, feeds, tiles, compact = cached._plan(200, 260, scale, budget)
        assert compact is False
        for t in tiles:
            fed = window_feeds(feeds, t, compact_offsets=compact)
            assert fed["row_offsets"].size == feeds["row_offsets"].size  # the whole table
            size = (t.in_rows.stop - t.in_rows.start, t.in_cols.stop - t.in_cols.start)
            assert tile_bytes(fed, 32, *size) <= budget


def _profiled(model: bytes, feeds: dict[str, np.ndarray], tmp_path) -> tuple[np.ndarray, str]:
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "p")
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    out = s.run(None, feeds)[0]
    path = s.end_profiling()
    text = open(path).read()
    os.remove(path)
    return out, text


@pytest.mark.parametrize(("scale", "pad"), [(3.3, 20), (3.9, 25), (1.1, 12), (3.3, 2)])
def test_the_phase_path_reads_a_whole_plans_table_the_same(split, scale, pad, tmp_path):
    """A tile fed the plan's whole table (more pairs than it reads) takes the phase path's cut branch (the pairs
    it reads gathered first) and gives bit for bit what its own table gives; a table only a little larger is
    read whole (``pad`` 2: fewer pairs than the entries read)."""
    from metasr.runtime import ort_cpu

    body, said = ort_cpu.specialize(split.body, "fp32")
    if "phase path" not in said:
        pytest.skip(f"no phase path here: {said}")
    feeds = {"features": _features(40, 52, seed=5), **plan_feeds(project(40, 52, scale))}
    table = _session(split.predictor).run(None, {n: feeds[n] for n in split.inputs})[0]
    rest = {k: v for k, v in feeds.items() if k not in split.inputs}
    want, prof = _profiled(body, rest | {"weights": table}, tmp_path)
    assert "phase_used_table" not in prof and "phase_whole_table" in prof  # the phase path, its table whole
    rng = np.random.default_rng(7)
    big = rng.standard_normal((table.shape[0] + 2 * pad, table.shape[1] + 2 * pad, table.shape[2]))
    big = big.astype(np.float32) * 100
    big[pad : pad + table.shape[0], pad : pad + table.shape[1]] = table  # junk around the plan's pairs
    moved = rest | {"weights": big, "row_idx": rest["row_idx"] + pad, "col_idx": rest["col_idx"] + pad}
    got, prof = _profiled(body, moved, tmp_path)
    entries = 100 * rest["row_slots"].shape[1] * rest["col_slots"].shape[1]  # q^2 K_r K_c, q = 10
    cut = big.shape[0] * big.shape[1] > entries
    assert cut == (pad > 2)
    assert ("phase_used_table" in prof) == cut and ("phase_whole_table" in prof) != cut
    np.testing.assert_array_equal(got, want)


def _upscale_spec(art, **changes):
    import dataclasses

    from metasr.runtime.manifest import Manifest

    return dataclasses.replace(Manifest.read(art).graph("upscale", "onnx", "fp32", "ort-cpu"), **changes)


def test_an_initializer_listed_as_input_is_not_fed(bundled_artifacts):
    """Exporters may list initializers among the graph's inputs (``keep_initializers_as_inputs``): the predictor
    keeps its weights, the cache keys on the fed inputs only (review: every call raised KeyError 'w1')."""
    from metasr.runtime.backends import OrtBackend

    m = onnx.load(bundled_artifacts / "upscale.onnx")
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    m.graph.input.append(helper.make_tensor_value_info("w1", w1.data_type, list(w1.dims)))
    split = split_predictor(m.SerializeToString())
    assert isinstance(split, PredictorSplit) and split.inputs == ("inv_scale", "row_offsets", "col_offsets")
    backend = OrtBackend(m.SerializeToString(), _upscale_spec(bundled_artifacts), ["CPUExecutionProvider"])
    assert backend.filters is not None
    feeds = {"features": _features(20, 30), **plan_feeds(project(20, 30, 3.3))}
    want = _session((bundled_artifacts / "upscale.onnx").read_bytes()).run(None, feeds)[0]
    np.testing.assert_allclose(backend.infer(feeds)["sr"], want, rtol=0, atol=1e-4)


def test_an_fp16_graph_splits_with_a_float16_table(bundled_artifacts):
    """FP16 graphs keep float32 inputs and cast the predictor's table to float16 before MetaUpscale: the table is
    declared float16 (review: declared float32, neither half loaded and the graph ran whole)."""
    pytest.importorskip("onnxconverter_common")
    from metasr.calibration.fp16 import convert_fp16, plan_only_nodes
    from metasr.runtime.backends import OrtBackend

    m = onnx.load(bundled_artifacts / "upscale.onnx")
    fp16 = convert_fp16(m, plan_only_nodes(m)).SerializeToString()
    split = split_predictor(fp16)
    assert isinstance(split, PredictorSplit)
    table_type = onnx.load_from_string(split.predictor).graph.output[0].type.tensor_type.elem_type
    assert table_type == onnx.TensorProto.FLOAT16
    spec = _upscale_spec(bundled_artifacts, precision="fp16", file="upscale.fp16.onnx")
    backend = OrtBackend(fp16, spec, ["CPUExecutionProvider"])
    assert backend.filters is not None, backend.filters_note
    feeds = {"features": _features(20, 30), **plan_feeds(project(20, 30, 3.3))}
    np.testing.assert_array_equal(backend.infer(feeds)["sr"], _session(fp16).run(None, feeds)[0])


def test_backend_says_why_and_refuses_after_close(bundled_artifacts, monkeypatch):
    from metasr.runtime.backends import BackendError, OrtBackend

    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    spec = _upscale_spec(bundled_artifacts)
    backend = OrtBackend(raw, spec, ["CPUExecutionProvider"])
    assert backend.filters_note == "the filter table computed once per plan"
    backend.close()
    assert backend.filters is None
    feeds = {"features": _features(8, 8), **plan_feeds(project(8, 8, 2.0))}
    with pytest.raises(BackendError, match="closed"):
        backend.infer(feeds)
    monkeypatch.setenv(ENV, "0")
    assert OrtBackend(raw, spec, ["CPUExecutionProvider"]).filters_note == f"{ENV}=0"
