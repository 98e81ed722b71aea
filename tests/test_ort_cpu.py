"""ONNX Runtime's CPU variant of the ``MetaUpscale`` body (``runtime/ort_cpu.py``): the convolution on its NCHWc
kernels.

Oracle: the body's grouped path (``tests/test_upscale_body.py``'s, the same graph with its path ``If`` forced),
which has no convolution at all, on the same plans; and the standard body, which the variant must equal to float32
rounding. The variant must also be taken where it applies (outputs that are not bit-identical to the standard
body's: another summation order) and refused where it does not: unknown bodies, FP16 graphs, the switch, a probe
that disagrees.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
import onnx
import onnx.inliner
import onnxruntime as ort
from metasr.runtime import ort_cpu
from metasr.runtime.backends import OrtBackend
from metasr.runtime.feeds import axis_feeds, check_hints, conv_path, plan_feeds, tile_feeds
from metasr.runtime.manifest import Manifest
from metasr.runtime.projection import project

from tests.test_upscale_body import CASES, _permute_row_slots, cpu_session, grouped_model


@pytest.fixture(scope="module")
def sessions(bundled_artifacts, block):
    """(the exported upscale graph, its NCHWc variant, the graph forced onto the grouped path)."""
    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    variant, said = ort_cpu.specialize(raw, "fp32")
    assert said == f"{ort_cpu.VARIANT} (block {block}, interleave by Col2Im; {ort_cpu.WHERE}; {ort_cpu.PHASE})"
    return cpu_session(raw), cpu_session(variant), cpu_session(grouped_model(raw))


def _big_case(name: str) -> tuple[dict[str, np.ndarray], int, int]:
    """``tests/test_upscale_body.py``'s cases on features large enough for the variant (>= MIN_BLOCKS member
    blocks per call: 72 x 66 has 4752 one-pixel and 1188 two-pixel blocks), tiles in proportion; and 2-pixel
    blocks forced at x3 and x4 (valid hints: K = 6 and 8, the last slot counts)."""
    h, w = (23, 19) if name == "small x2" else (72, 66)  # 23 x 19: 437 blocks, under MIN_BLOCKS
    scale = {"x2": 2.0, "x3": 3.0, "x4": 4.0, "x1.5": 1.5, "x2.5": 2.5, "x3.5": 3.5}.get(name.split()[0], 2.0)
    plan = project(h, w, scale)
    feeds = plan_feeds(plan)
    if name.endswith("2-pixel blocks"):
        feeds.update(axis_feeds("row", plan.rows.src, plan.rows.offset_index, 2))
        feeds.update(axis_feeds("col", plan.cols.src, plan.cols.offset_index, 2))
        check_hints(feeds)
    if name == "narrow tile":
        feeds = tile_feeds(feeds, slice(4, 140), slice(6, 7))
    if name == "tile x2":
        feeds = tile_feeds(feeds, slice(10, 100), slice(12, 110))
    if name == "one pixel":
        feeds = tile_feeds(feeds, slice(6, 7), slice(6, 7))
    if name == "row slots reversed":
        feeds = _permute_row_slots(feeds)
    return feeds, h, w


BIG_CASES = [*CASES, "small x2", "x3 2-pixel blocks", "x4 2-pixel blocks"]


@pytest.mark.parametrize("name", BIG_CASES)
def test_nchwc_body_equals_the_grouped_path_and_runs_where_it_applies(sessions, name):
    standard, variant, grouped = sessions
    feeds, h, w = _big_case(name)
    assert conv_path(feeds), name
    n = 2 if "batch" in name else 1
    feeds = {"features": np.random.default_rng(1).standard_normal((n, 32, h, w)).astype(np.float32) * 3, **feeds}
    got, std, want = (s.run(None, feeds)[0] for s in (variant, standard, grouped))
    # measured: at most 1.5e-5 on outputs of magnitude ~130 (as the standard body's conv path)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), name
    k_r, k_c = feeds["row_slots"].shape[1], feeds["col_slots"].shape[1]
    if name.endswith("2-pixel blocks"):
        assert k_r == k_c == {"x3": 6, "x4": 8}[name.split()[0]]  # the variant's last slot counts
    takes = k_r == k_c in ort_cpu_slots() and name != "small x2"
    # the NCHWc kernels sum in another order than im2col + GEMM: where they run, some output differs in its last
    # bits; where they do not (slot counts differ per axis, none of the variant's branches, a small call),
    # nothing does (the Col2Im interleave moves the same values as DepthToSpace)
    assert (not np.array_equal(got, std)) == takes, name


def ort_cpu_slots() -> tuple[int, ...]:
    from metasr.export.metaupscale_body import D2S_SLOTS

    return D2S_SLOTS


def _spec(art, kind):
    manifest = Manifest.from_json((art / "manifest.json").read_text())
    return next(g for g in manifest.graphs if (g.kind, g.format, g.precision) == (kind, "onnx", "fp32"))


def test_backend_says_which_body_it_runs(bundled_artifacts, block, monkeypatch):
    art = bundled_artifacts
    spec = _spec(art, "upscale")
    raw = (art / spec.file).read_bytes()
    be = OrtBackend(raw, spec, ["CPUExecutionProvider"])
    assert be.body.startswith(ort_cpu.VARIANT)
    monkeypatch.setenv(ort_cpu.ENV, "0")
    assert OrtBackend(raw, spec, ["CPUExecutionProvider"]).body == "standard MetaUpscale body (METASR_ORT_NCHWC=0)"
    from metasr.runtime.pipeline import Pipeline

    with Pipeline(art) as p:
        assert p.upscale_body == "standard MetaUpscale body (METASR_ORT_NCHWC=0)"
    monkeypatch.setenv(ort_cpu.ENV, "1")
    for graph in ("two", "portable"):
        with Pipeline(art, graph=graph) as p:
            assert p.upscale_body == be.body, graph
    feat = _spec(art, "feature")
    assert OrtBackend((art / feat.file).read_bytes(), feat, ["CPUExecutionProvider"]).body == "no MetaUpscale node"


def test_only_this_versions_float32_body_is_rewritten(bundled_artifacts, block):
    raw = (bundled_artifacts / "upscale.onnx").read_bytes()
    fp16 = "standard MetaUpscale body (FP16 graph: the NCHWc kernels are float32)"
    assert ort_cpu.specialize(raw, "fp16") == (raw, fp16)
    model = onnx.load_from_string(raw)
    node = next(n for n in model.functions[0].node if n.op_type == "Mul")
    node.input[0], node.input[1] = node.input[1], node.input[0]  # the same product, another body
    changed = model.SerializeToString()
    other = "standard MetaUpscale body (not this version's: left as it is)"
    assert ort_cpu.specialize(changed, "fp32") == (changed, other)


def test_a_probe_that_disagrees_keeps_the_standard_body(bundled_artifacts, block, monkeypatch):
    """Filters packed for the wrong block size (what a changed kernel layout would look like) fail the probe."""
    ort_cpu._probe.cache_clear()
    try:
        monkeypatch.setattr(ort_cpu, "_block_size", lambda: 8 if block != 8 else 16)
        reason = ort_cpu.nchwc_block()
        assert isinstance(reason, str) and reason.startswith("its convolution differs from numpy's"), reason
        raw = (bundled_artifacts / "upscale.onnx").read_bytes()
        assert ort_cpu.specialize(raw, "fp32") == (raw, f"standard MetaUpscale body ({reason})")
    finally:
        ort_cpu._probe.cache_clear()


def test_pipeline_output_is_the_standard_bodys(bundled_artifacts, block, monkeypatch):
    """The whole runtime, both bodies, integer and half-integer scales, tiled and not."""
    from metasr.runtime.pipeline import Pipeline

    img = np.random.default_rng(2).integers(0, 256, (40, 33, 3)).astype(np.float32)
    outs: dict[str, list[np.ndarray]] = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(ort_cpu.ENV, flag)
        for budget in (64.0, 0.25):  # untiled; tiles of a few rows
            with Pipeline(bundled_artifacts, upscale_budget_mb=budget) as p:
                if budget < 1:
                    assert len(p.tiles(40, 33, 2.0)) > 1
                outs.setdefault(flag, []).extend(p(img, s) for s in (2.0, 1.5, 3.0))
    for a, b in zip(outs["1"], outs["0"], strict=True):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-3  # measured ~2e-5 on 0..255 outputs (float32 summation order)


def test_proto_builders_equal_onnx_helpers():
    """``export/onnx_proto.py`` stands in for ``onnx.helper`` in the body: field for field the same messages."""
    from metasr.export import onnx_proto as lite
    from onnx import TensorProto, helper

    graph_l = lite.make_graph([lite.make_node("Relu", ["a"], ["b"])], "g", [], [lite.protos().ValueInfoProto(name="b")])
    graph_h = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g", [], [onnx.ValueInfoProto(name="b")])
    tensor = ("t", [2], [3, -4])
    pairs = [
        (lite.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 2, 2], strides=[2, 2], group=1, name="n"),
         helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 2, 2], strides=[2, 2], group=1, name="n")),
        (lite.make_node("DepthToSpace", ["x"], ["y"], blocksize=3, mode="CRD", domain=""),
         helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=3, mode="CRD", domain="")),
        (lite.make_node("If", ["c"], ["b"], then_branch=graph_l, else_branch=graph_l),
         helper.make_node("If", ["c"], ["b"], then_branch=graph_h, else_branch=graph_h)),
        (lite.make_node("Constant", [], ["t"], value=lite.make_tensor_int64(*tensor)),
         helper.make_node("Constant", [], ["t"], value=helper.make_tensor(tensor[0], TensorProto.INT64, *tensor[1:]))),
        (lite.make_node("ReorderOutput", ["x"], ["y"], domain="com.microsoft.nchwc", channels=27, channels_last=0),
         helper.make_node("ReorderOutput", ["x"], ["y"], domain="com.microsoft.nchwc", channels=27, channels_last=0)),
        (lite.make_tensor_value_info("x", 1, [None, 32, "h", 0]),
         helper.make_tensor_value_info("x", 1, [None, 32, "h", 0])),
        (lite.make_tensor_value_info("x", 7, []), helper.make_tensor_value_info("x", 7, [])),
        (lite.make_tensor_value_info("x", 7, None), helper.make_tensor_value_info("x", 7, None)),
        (lite.make_function("d", "f", ["a"], ["b"], [], [lite.make_opsetid("", 17)], ["k"]),
         helper.make_function("d", "f", ["a"], ["b"], [], [helper.make_opsetid("", 17)], attributes=["k"])),
    ]  # fmt: skip
    for got, want in pairs:
        assert got.SerializeToString() == want.SerializeToString(), want
    with pytest.raises(TypeError):
        lite.make_node("Foo", [], [], alpha=0.5)  # float attributes are not built here (the body has none)


def test_the_rewrite_never_imports_onnx(bundled_artifacts):
    """ONNX's classes come from its generated module alone (``import onnx`` costs ~0.7 s: ml_dtypes); a later
    ``import onnx`` in the same process shares that module."""
    import subprocess
    import sys

    code = f"""
import sys
from metasr.runtime.ort_cpu import nchwc_block, specialize
raw = open({str(bundled_artifacts / "upscale.onnx")!r}, "rb").read()
new, said = specialize(raw, "fp32")
assert isinstance(nchwc_block(), str) or new != raw, said
assert "onnx" not in sys.modules and "ml_dtypes" not in sys.modules, sorted(m for m in sys.modules if "onnx" in m)
import onnx
model = onnx.load_from_string(new)
assert type(model) is onnx.ModelProto and model.SerializeToString() == new
onnx.checker.check_model(onnx.load_from_string(raw))
print(said)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_variant_that_does_not_load_falls_back_to_the_graph_as_exported(bundled_artifacts, block, monkeypatch):
    spec = _spec(bundled_artifacts, "upscale")
    raw = (bundled_artifacts / spec.file).read_bytes()
    monkeypatch.setattr(ort_cpu, "specialize", lambda model, precision: (b"not a model", "NCHWc (pretend)"))
    be = OrtBackend(raw, spec, ["CPUExecutionProvider"])
    assert be.body.startswith("standard MetaUpscale body (the NCHWc variant did not load: ")
    assert be.session.get_inputs()[0].name == "features"


def _ops(model: onnx.ModelProto) -> set[str]:
    from metasr.runtime.ort_cpu import _nodes

    return {n.op_type for g in (model.graph, *model.functions) for n in _nodes(g) if n.domain in ("", "ai.onnx")}


def test_opset_18_changes_nothing_the_exported_graphs_hold(bundled_artifacts):
    """The variant's interleave is ``Col2Im`` (opset 18): the rewrite raises an opset-17 graph to 18 unless a node
    would read differently there. Against onnx's own schemas: every operator in the exported graphs (the portable
    ones hold the feature stage too) whose schema changed at 18 is one whose change keeps old graphs' meaning, or
    a reduction that the rewrite checks for an ``axes`` attribute."""
    from onnx import defs

    backward_compatible_18 = {"Pad", "Resize", "ScatterElements", "ScatterND", "LpPool"}  # optional additions
    seen = set()
    for path in sorted(bundled_artifacts.glob("*.onnx")):
        model = onnx.load(str(path))
        seen |= _ops(model)
    changed = {op for op in seen if defs.get_schema(op, 18).since_version == 18}
    assert changed <= backward_compatible_18 | ort_cpu.AXES_TO_INPUT_18 | {"Split"}, changed
    assert {op for op in ort_cpu.AXES_TO_INPUT_18 if defs.get_schema(op, 18).since_version != 18} == set()
    assert {"Pad", "ReduceMax"} <= seen  # what the body holds (ReduceMax without axes: every axis, both forms)


def test_a_graph_that_opset_18_would_change_keeps_depth_to_space(bundled_artifacts, block):
    model = onnx.load(str(bundled_artifacts / "upscale.onnx"))
    extra = onnx.helper.make_node("ReduceMean", ["features"], ["unused_mean"], axes=[1], keepdims=1)
    model.graph.node.append(extra)  # an opset-17 form: axes as an attribute
    raw = model.SerializeToString()
    variant, said = ort_cpu.specialize(raw, "fp32")
    assert "interleave by DepthToSpace;" in said
    new = onnx.load_from_string(variant)
    assert next(o.version for o in new.opset_import if o.domain == "") == 17
    feeds, h, w = _big_case("x2")
    feeds = {"features": np.random.default_rng(3).standard_normal((1, 32, h, w)).astype(np.float32), **feeds}
    make = lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"])  # noqa: E731
    names = {i.name for i in make(raw).get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    got, want = make(variant).run(["sr"], feeds)[0], make(raw).run(["sr"], feeds)[0]
    assert not np.array_equal(got, want)  # the NCHWc convolution ran
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_a_graph_whose_channels_are_not_whole_blocks_is_left_alone(bundled_artifacts, block):
    model = onnx.load(str(bundled_artifacts / "upscale.onnx"))
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    assert model.graph.input[0].name == "features" and dim.dim_value == 32
    dim.dim_value = block + 8  # (the graph's other shapes do not matter here: nothing runs)
    raw = model.SerializeToString()
    said = f"standard MetaUpscale body ({block + 8} feature channels: not whole NCHWc blocks of {block})"
    assert ort_cpu.specialize(raw, "fp32") == (raw, said)


def test_bytes_that_are_no_model_are_left_to_onnx_runtime(block):
    raw = b"MetaUpscale" + bytes(range(256)) * 4  # what a truncated or damaged graph could hold
    assert ort_cpu.specialize(raw, "fp32") == (raw, "standard MetaUpscale body (the graph does not parse)")


def _python(code: str, tmp_path, env: dict[str, str] | None = None) -> str:
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})}, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_threads_creating_backends_at_once_all_get_the_variant(bundled_artifacts, block, tmp_path):
    """The probe and the protobuf module load once, under a lock (threads once saw a half-loaded module and the
    process kept "no NCHWc kernels" for good)."""
    code = f"""
import threading
from metasr.runtime.pipeline import Pipeline
bodies = []
def make():
    with Pipeline({str(bundled_artifacts)!r}) as p:
        bodies.append(p.upscale_body)
threads = [threading.Thread(target=make) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
make()
print("\\n".join(bodies))
"""
    bodies = _python(code, tmp_path).splitlines()
    assert len(bodies) == 5 and all(b.startswith(ort_cpu.VARIANT) for b in bodies), bodies


def test_an_onnx_whose_protobuf_module_does_not_load_leaves_the_standard_body(bundled_artifacts, tmp_path):
    """E.g. onnx's generated code needing a newer protobuf than ONNX Runtime's: a reason, never a traceback."""
    fake = tmp_path / "fake" / "onnx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "onnx_ml_pb2.py").write_text("raise RuntimeError('Detected incompatible Protobuf Gencode/Runtime')\n")
    code = f"""
import numpy as np
from metasr.runtime.pipeline import Pipeline
with Pipeline({str(bundled_artifacts)!r}) as p:
    print(p.upscale_body)
    assert p(np.zeros((8, 8, 3), np.uint8), 2.0).shape == (16, 16, 3)
"""
    out = _python(code, tmp_path, {"PYTHONPATH": str(tmp_path / "fake")}).strip()
    assert out == "standard MetaUpscale body (onnx's protobuf module does not load (Detected incompatible Protobuf " \
        "Gencode/Runtime))", out


@pytest.mark.parametrize(
    ("opset", "node", "want"),
    [
        (17, None, 18),
        (17, ("ReduceMean", {"axes": [1]}, 1), 17),
        (17, ("ReduceMean", {}, 1), 18),  # no axes: every axis at 17 and at 18
        (17, ("Split", {}, 2), 17),  # equal parts by output count: 18 wants num_outputs
        (17, ("Split", {"axis": 1}, 2), 17),
        (16, None, 16),  # older graphs are not raised (16 -> 18 crosses 17's changes)
        (18, ("Split", {}, 2), 18),
        (20, None, 20),
    ],
)
def test_the_opset_the_variant_runs_at(opset, node, want):
    from onnx import helper

    nodes = []
    if node is not None:
        op, attrs, n_out = node
        nodes.append(helper.make_node(op, ["x"], [f"y{i}" for i in range(n_out)], **attrs))
    graph = helper.make_graph(nodes, "g", [], [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    assert ort_cpu.col2im_opset(model, opset) == want
