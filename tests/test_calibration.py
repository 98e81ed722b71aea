"""FP16 / INT8 calibration: crops, ranges, the two Q/DQ forms' structure, FP16 validity, manifest lookups,
the runtime at every precision, atomicity of `metasr calibrate` and its exit codes."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import onnx
import pytest
from calibration_helpers import tiny, train_dirs
from conftest import data_path
from onnx import numpy_helper
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

import onnxruntime as ort
from metasr.calibration import data as data_mod
from metasr.calibration.calibrate import calibrate
from metasr.calibration.data import CalibrationDataError, FeatureFeeds, calibration_sets
from metasr.calibration.int8_rules import anchor_layout, apply_weight_rule, int8_kernels, quantized_weights
from metasr.calibration.quantize import ORT_CPU, TENSORRT, keep_float, quantize_graph, quantized_tensors
from metasr.calibration.ranges import TensorRanges, collect_ranges
from metasr.calibration.reader import OrtCalibrationReader
from metasr.calibration.sensitivity import BinScore, Score, Scorer, choose_float_tensors
from metasr.export import export_onnx
from metasr.runtime.compare import compare
from metasr.runtime.manifest import GraphSpec, Manifest, ManifestError, content_hash
from metasr.runtime.pipeline import Pipeline

from metasr.checkpoint import load_model
from metasr.data import load_rgb
from metasr.imresize import imresize


@pytest.fixture(scope="module")
def fp32_art(tmp_path_factory):
    from metasr.bundled import bundled_model_path

    out = tmp_path_factory.mktemp("cal") / "fp32"
    export_onnx(load_model(bundled_model_path()), out)
    return out


@pytest.fixture(scope="module")
def art(fp32_art, tmp_path_factory):
    """The bundled model's artifacts with INT8 and FP16 graphs added (tiny calibration)."""
    out = tmp_path_factory.mktemp("cal") / "all"
    shutil.copytree(fp32_art, out)
    assert calibrate(out, tiny("int8")).met
    assert calibrate(out, tiny("fp16")).met
    return out


# -- calibration data -----------------------------------------------------------------------------------------
def test_crops_are_deterministic_varied_and_disjoint():
    a_cal, a_held = calibration_sets(train_dirs(), 12, 4, 7, (1.1, 4.0), (16, 40))
    b_cal, _ = calibration_sets(train_dirs(), 12, 4, 7, (1.1, 4.0), (16, 40))
    assert all(np.array_equal(x.lr, y.lr) and x.scale == y.scale for x, y in zip(a_cal, b_cal, strict=True))
    assert len({c.lr.shape for c in a_cal}) > 6 and len({c.scale for c in a_cal}) > 6
    assert all(1.1 <= c.scale <= 4.0 for c in a_cal + a_held)
    assert not {c.source for c in a_cal} & {c.source for c in a_held}
    c = a_cal[0]  # the LR is MATLAB bicubic of the HR crop at 1 / scale
    assert np.array_equal(c.lr, imresize(c.hr, 1 / c.scale, out_shape=c.lr.shape[:2]))
    feed = FeatureFeeds(a_cal)[0]["lr"]
    assert feed.dtype == np.float32 and feed.shape == (1, 3, *c.lr.shape[:2])


def test_calibration_images_are_read_as_the_runtime_reads_them(tmp_path):
    """16-bit grey gives the crops its 8-bit twin gives (value / 257; Pillow's RGB conversion would saturate it)."""
    grey = np.asarray(Image.open(data_path("T91", "t1.bmp")).convert("L"))
    for bits, array in ((8, grey), (16, grey.astype(np.uint16) * 257)):
        (tmp_path / str(bits)).mkdir()
        Image.fromarray(array).save(tmp_path / str(bits) / "a.png")
        Image.fromarray(array[::-1]).save(tmp_path / str(bits) / "b.png")
    a8, h8 = calibration_sets([str(tmp_path / "8")], 6, 2, 0, (1.1, 4.0), (16, 24))
    a16, h16 = calibration_sets([str(tmp_path / "16")], 6, 2, 0, (1.1, 4.0), (16, 24))
    for x, y in zip(a8 + h8, a16 + h16, strict=True):
        assert np.array_equal(x.hr, y.hr) and np.array_equal(x.lr, y.lr) and x.scale == y.scale
    assert all(np.array_equal(c.hr[..., 0], c.hr[..., 2]) for c in a16) and max(int(c.hr.max()) for c in a16) < 255


def test_small_images_give_crops_at_the_scales_they_allow():
    """T91 has 78-pixel images: at x16 their crops come at the largest grid scale that still gives 8-pixel LR."""
    cal, held = calibration_sets([str(data_path("T91"))], 64, 8, 0, (1.1, 16.0), (16, 24))
    assert all(min(c.lr.shape[:2]) >= 8 and 1.1 <= c.scale <= 16.0 for c in cal + held)
    for c in cal + held:  # the HR crop is the LR's region at that scale (within the image)
        assert all(abs(H - c.scale * h) <= 1 for H, h in zip(c.hr.shape[:2], c.lr.shape[:2], strict=True))
    assert max(c.scale for c in cal) > 9.8  # the large scales are still drawn where the images allow them


def test_a_folder_given_twice_counts_once():
    cal, held = calibration_sets([str(data_path("T91"))] * 2, 12, 4, 0, (1.1, 4.0), (16, 24))
    assert not {c.source for c in cal} & {c.source for c in held}


def test_each_calibration_image_is_decoded_once(monkeypatch):
    decoded = []
    real = data_mod.load_rgb
    monkeypatch.setattr(data_mod, "load_rgb", lambda path, *a: decoded.append(path) or real(path, *a))
    cal, held = calibration_sets(train_dirs(), 40, 10, 3, (1.1, 4.0), (16, 24))
    assert len(decoded) == len(set(decoded)) == len({c.source for c in cal + held})
    assert len(cal) == 40 and len(held) == 10


def test_evaluation_images_are_refused_by_default():
    with pytest.raises(CalibrationDataError, match="evaluation set"):
        calibration_sets([str(data_path("Set5"))], 2, 1, 0, (1.1, 4.0))
    cal, _ = calibration_sets([str(data_path("Set5"))], 2, 1, 0, (1.1, 4.0), allow_evaluation_images=True)
    assert len(cal) == 2


def test_ort_reader_adapter():
    feeds = [{"lr": np.full((1, 3, 4, 4), i, np.float32)} for i in range(5)]
    reader = OrtCalibrationReader(feeds)
    got = [reader.get_next()["lr"][0, 0, 0, 0] for _ in range(5)]
    assert got == [0, 1, 2, 3, 4] and reader.get_next() is None and len(reader) == 5
    reader.set_range(2, 4)
    assert [reader.get_next()["lr"][0, 0, 0, 0] for _ in range(2)] == [2, 3] and reader.get_next() is None


def test_ranges_methods_on_varied_sizes(fp32_art):
    cal, _ = calibration_sets(train_dirs(), 6, 1, 0, (1.1, 4.0), (16, 32))
    model = onnx.load(str(fp32_art / "feature.onnx"))
    lo = min(float(c.lr.min()) for c in cal)
    hi = max(float(c.lr.max()) for c in cal)
    mm = collect_ranges(model, FeatureFeeds(cal), "minmax")
    assert mm.ranges["lr"] == (lo, hi)  # the exact extremes of the input
    for method in ("percentile", "entropy"):
        r = collect_ranges(model, FeatureFeeds(cal), method)
        for name, (a, b) in r.ranges.items():  # clipped ranges lie within the observed extremes
            assert mm.ranges[name][0] - 1e-3 <= a <= b <= mm.ranges[name][1] + 1e-3, (method, name)
    assert TensorRanges.from_json(mm.to_json()) == mm


# -- the two INT8 forms ---------------------------------------------------------------------------------------
def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_tensorrt_form_is_what_tensorrt_accepts(art):
    model = onnx.load(str(art / "feature.int8.trt.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    inits = _inits(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    weights = 0
    for n in qdq:
        assert len(n.input) == 3, f"{n.name} has no explicit zero point"
        zp, scale = inits[n.input[2]], inits[n.input[1]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point {zp.dtype} {zp}"
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # a weight: per output channel, axis 0
            w = inits[n.input[0]]
            assert w.dtype == np.int8 and w.ndim == 4
            assert axis == 0 and scale.shape == (w.shape[0],), n.name
            weights += 1
        else:  # an activation: per tensor
            assert scale.ndim == 0, n.name
    kept = Manifest.read(art).calibration["int8"]["kept"]["tensorrt"]
    # the image rule and the weight rule only (the tiny budget needed no more): the two convolutions that read
    # the float image have float32 weights, every other convolution's weight is int8
    assert kept == ["lr", "/sub_mean/Conv_output_0", "model.sub_mean.weight", "model.backbone.head.0.weight"]
    float_w = {n.name: inits[n.input[1]].dtype for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits}
    assert set(float_w) == {"/sub_mean/Conv", "/backbone/head/head.0/Conv"} and set(float_w.values()) == {
        np.dtype(np.float32)
    }
    assert weights == sum(n.op_type == "Conv" for n in model.graph.node) - 2
    assert len(int8_kernels(model, TENSORRT)) == weights
    assert not [t for t in inits.values() if t.dtype == np.uint8]


def test_cpu_form_has_uint8_activations_int8_weights(art):
    model = onnx.load(str(art / "feature.int8.cpu.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inits = _inits(model)
    acts = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert acts and all(inits[n.input[2]].dtype == np.uint8 for n in acts)
    w_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert w_dq and all(inits[n.input[0]].dtype == np.int8 and not inits[n.input[2]].any() for n in w_dq)


def test_keep_float_restores_the_float_graph(fp32_art):
    """Keeping every quantized activation and weight in float gives back the FP32 graph's output exactly."""
    cal, held = calibration_sets(train_dirs(), 4, 1, 0, (1.1, 4.0), (16, 24))
    model = onnx.load(str(fp32_art / "feature.onnx"))
    quantized = quantize_graph(model, collect_ranges(model, FeatureFeeds(cal), "minmax"), TENSORRT)
    names = quantized_tensors(quantized) + quantized_weights(quantized, model)
    restored = keep_float(quantized, names, model)
    assert not [n for n in restored.graph.node if n.op_type.endswith("QuantizeLinear")]
    feed = FeatureFeeds(held)[0]
    a = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    b = ort.InferenceSession(restored.SerializeToString()).run(None, feed)[0]
    assert np.array_equal(a, b)


def test_sensitivity_pass_keeps_tensors_and_says_why(fp32_art):
    cal, held = calibration_sets(train_dirs(), 6, 2, 0, (1.1, 2.0), (16, 24), held_size=24)
    model = onnx.load(str(fp32_art / "feature.onnx"))
    quantized = quantize_graph(model, collect_ranges(model, FeatureFeeds(cal), "minmax"), TENSORRT)
    scorer = Scorer(str(fp32_art / "feature.onnx"), str(fp32_art / "upscale.onnx"), held, 4.0, 1e-4, threads=1)
    candidates = quantized_tensors(quantized)[:6]
    res = choose_float_tensors(lambda n: keep_float(quantized, n), candidates, scorer, 0.0, 0.0, 2)
    assert not res.met  # a zero budget cannot be met by keeping two tensors
    assert 1 <= len(res.kept) <= 2 and set(res.ranking) == set(candidates)
    # kept in leave-one-out order, each one helping on top of those before it
    ranks = [res.ranking[k.name] for k in res.kept]
    assert all(r > 0 for r in ranks) and ranks == sorted(ranks, reverse=True)
    losses = [res.full.loss_db] + [k.loss_after_db for k in res.kept]
    assert all(b < a for a, b in itertools.pairwise(losses)) and res.final.loss_db == losses[-1]
    assert all(k.reason for k in res.kept)
    assert res.final.loss_db < res.full.loss_db


# -- FP16 -----------------------------------------------------------------------------------------------------
def test_weight_rule_gives_float_convolutions_their_float32_weights(fp32_art):
    """A convolution that cannot run as an INT8 kernel gets float32 weights back: the INT8 kernels stay the
    same, int8 weights remain only on them, and the output moves closer to FP32 (less rounding)."""
    cal, held = calibration_sets(train_dirs(), 4, 2, 0, (1.1, 4.0), (16, 24))
    model = onnx.load(str(fp32_art / "feature.onnx"))
    ranges = collect_ranges(model, FeatureFeeds(cal), "minmax")
    last = "/backbone/body/body.8/Conv_output_0"  # the last body convolution writes it
    for form in (TENSORRT, ORT_CPU):
        plain = keep_float(quantize_graph(model, ranges, form), ["lr", "/sub_mean/Conv_output_0", last], model)
        ruled, restored = apply_weight_rule(plain, model, form)
        head = ["model.sub_mean.weight", "model.backbone.head.0.weight"]  # they read the float image
        # TensorRT runs a Q/DQ convolution with a float output in INT8; ONNX Runtime's CPU fusion needs it quantized
        assert restored == head + ([] if form is TENSORRT else ["model.backbone.body.8.weight"]), form
        kernels = int8_kernels(plain, form)
        assert int8_kernels(ruled, form) == kernels and len(kernels) == 17 - (form is ORT_CPU)
        assert set(quantized_weights(ruled, model)) == set(quantized_weights(plain, model)) - set(restored)
        feeds = FeatureFeeds(held)
        ref = [ort.InferenceSession(model.SerializeToString()).run(None, f)[0] for f in feeds]

        def err(m, ref=ref, feeds=feeds):
            s = ort.InferenceSession(m.SerializeToString())
            return sum(float(np.mean((s.run(None, f)[0] - r) ** 2)) for f, r in zip(feeds, ref, strict=True))

        assert err(ruled) < err(plain), form


def test_layout_anchor_is_exact_and_keeps_onnx_runtime_in_nhwc(fp32_art, tmp_path):
    """The CPU form's identity QLinearConv after the float head: bit-identical output, and ONNX Runtime's
    optimized graph transposes far less (the residual chain stays NHWC); the TensorRT form gets none."""
    cal, held = calibration_sets(train_dirs(), 4, 2, 0, (1.1, 4.0), (16, 24))
    model = onnx.load(str(fp32_art / "feature.onnx"))
    ranges = collect_ranges(model, FeatureFeeds(cal), "minmax")
    rule = ["lr", "/sub_mean/Conv_output_0"]
    trt = apply_weight_rule(keep_float(quantize_graph(model, ranges, TENSORRT), rule, model), model, TENSORRT)[0]
    assert anchor_layout(trt, TENSORRT) == (trt, [])
    plain = apply_weight_rule(keep_float(quantize_graph(model, ranges, ORT_CPU), rule, model), model, ORT_CPU)[0]
    anchored, names = anchor_layout(plain, ORT_CPU)
    assert names == ["/backbone/head/head.0/Conv_output_0"]  # the float head convolution's output
    onnx.checker.check_model(anchored, full_check=True)
    feeds = [*FeatureFeeds(held), {"lr": np.random.default_rng(0).uniform(0, 255, (1, 3, 29, 41)).astype(np.float32)}]
    a, b = (ort.InferenceSession(m.SerializeToString()) for m in (plain, anchored))
    for f in feeds:
        assert np.array_equal(a.run(None, f)[0], b.run(None, f)[0])

    def transposes(m, name):
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / name)
        ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sum(n.op_type == "Transpose" for n in onnx.load(str(tmp_path / name)).graph.node)

    # measured with ONNX Runtime 1.32: 18 -> 2 (one in, one out of the NHWC chain)
    assert transposes(anchored, "anchored.onnx") <= 2 < transposes(plain, "plain.onnx")


class _TableScorer:
    """Stands in for :class:`Scorer`: a "graph" is the frozenset of names kept in float; ``loss`` gives its
    worst-bin loss, ``shares`` each name's share of the deviation (additive: the leave-one-out ranking)."""

    def __init__(self, loss, shares: dict[str, float]) -> None:
        self.loss, self.shares = loss, shares

    def score(self, kept: frozenset[str]) -> Score:
        loss = self.loss(kept)
        return Score((BinScore(1.0, 2.0, 1, 30.0, 30.0 - loss, 60.0, loss),), 1.0 - sum(self.shares[k] for k in kept))


def _xyz_loss(kept: frozenset[str]) -> float:
    """1 - 0.2 (X) - 0.7 (Y) - 0.2 (Z), except that Y covers most of what X fixes (X adds 0.02 on top of Y)."""
    x = 0.02 if "Y" in kept else 0.2
    return 1.0 - 0.7 * ("Y" in kept) - 0.2 * ("Z" in kept) - x * ("X" in kept)


def test_sensitivity_prefers_free_candidates_and_prunes():
    """Free candidates (no INT8 kernel turns float) are tried alone first; only when they cannot meet the budget
    are all used, in leave-one-out order; kept tensors the budget holds without are dropped at the end."""
    costs = {"X": 0, "Y": 1, "Z": 0}
    shares = {"X": 0.5, "Y": 0.3, "Z": 0.1}  # leave-one-out ranks X > Y > Z

    def run(budget, costs=costs, max_kept=8):
        scorer = _TableScorer(_xyz_loss, shares)
        return choose_float_tensors(frozenset, ["X", "Y", "Z"], scorer, budget, 0.0, max_kept, costs=costs)

    free = run(0.65)  # X and Z reach 0.6: the costly Y is not needed
    assert free.met and [k.name for k in free.kept] == ["X", "Z"] and not free.pruned
    assert [k.cost for k in free.kept] == [0, 0] and free.final.loss_db == pytest.approx(0.6)
    blind = run(0.65, costs=None)  # without costs: X, then Y meets it (0.28) and X goes (0.3 without it)
    assert [k.name for k in blind.kept] == ["Y"] and blind.pruned == ("X",)
    assert blind.final.loss_db == pytest.approx(0.3) and blind.kept[0].loss_after_db == pytest.approx(0.3)
    costly = run(0.15)  # free ones reach only 0.6: X, Y, Z in leave-one-out order (0.08), then X is dropped
    assert costly.met and [k.name for k in costly.kept] == ["Y", "Z"] and costly.pruned == ("X",)
    assert costly.kept[0].cost == 1 and "1 INT8 kernel" in costly.kept[0].reason
    assert [k.loss_after_db for k in costly.kept] == pytest.approx([0.3, 0.1])  # re-measured without X
    assert costly.final.loss_db == pytest.approx(0.1)
    tight = run(0.09)  # X, Y, Z give 0.08: nothing can go
    assert tight.met and [k.name for k in tight.kept] == ["X", "Y", "Z"] and not tight.pruned
    assert tight.final.loss_db == pytest.approx(0.08)
    assert not run(0.0).met


def test_sensitivity_keeps_the_better_result_when_the_budget_is_not_met():
    """One tensor allowed: the free A alone (loss 0.5) beats the top-ranked costly B alone (0.9)."""
    scorer = _TableScorer(lambda k: 1.0 - 0.5 * ("A" in k) - 0.1 * ("B" in k), {"A": 0.3, "B": 0.6})
    res = choose_float_tensors(frozenset, ["A", "B"], scorer, 0.0, 0.0, 1, costs={"A": 0, "B": 1})
    assert not res.met and [k.name for k in res.kept] == ["A"] and res.final.loss_db == pytest.approx(0.5)


def test_pruning_drops_the_costliest_first():
    """C (2 kernels) and G (1 kernel) each make the other unnecessary once E is kept: C goes, though it came
    first (leave-one-out ranks C > G > E), and G stays."""
    scorer = _TableScorer(
        lambda k: 1.0 - (0.32 if {"C", "G"} <= k else 0.3 if {"C", "G"} & k else 0.0) - 0.5 * ("E" in k),
        {"C": 0.5, "G": 0.4, "E": 0.3},
    )
    res = choose_float_tensors(frozenset, ["C", "G", "E"], scorer, 0.2, 0.0, 8, costs={"C": 2, "G": 1, "E": 0})
    assert res.met and [k.name for k in res.kept] == ["G", "E"] and res.pruned == ("C",)
    assert res.final.loss_db == pytest.approx(0.2)


def test_fp16_graphs_are_valid_with_float32_io(art):
    for kind in ("feature", "upscale"):
        model = onnx.load(str(art / f"{kind}.fp16.onnx"))
        onnx.checker.check_model(model, full_check=True)
        io = [*model.graph.input, *model.graph.output]
        floats = [v for v in io if v.type.tensor_type.elem_type != onnx.TensorProto.INT64]
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in floats), kind
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer), kind
        names = [n.name for n in model.graph.node]
        assert len(set(names)) == len(names) and "" not in names
    up = onnx.load(str(art / "upscale.fp16.onnx"))
    assert [n.op_type for n in up.graph.node].count("MetaUpscale") == 1
    assert [f.name for f in up.functions] == ["MetaUpscale"]


# -- manifest and runtime -------------------------------------------------------------------------------------
def test_manifest_lookup_by_precision_and_target(art):
    m = Manifest.read(art)
    assert m.graph("feature", "onnx", "int8", "ort-cpu").file == "feature.int8.cpu.onnx"
    assert m.graph("feature", "onnx", "int8", "tensorrt").file == "feature.int8.trt.onnx"
    assert m.graph("upscale", "onnx", "int8", "tensorrt").file == "upscale.onnx"  # the float upscale graph
    assert m.graph("feature", "onnx", "fp16", "tensorrt").file == "feature.fp16.onnx"  # "any" serves every target
    assert m.precisions() == ("fp32", "fp16", "int8")
    with pytest.raises(ManifestError, match="target"):
        m.graph("feature", "onnx", "int8", "any")
    assert set(m.calibration) == {"int8", "fp16"}
    rec = m.calibration["int8"]
    assert rec["ranges_file"] and (art / rec["ranges_file"]).is_file() and (art / rec["report"]).is_file()
    assert set(rec["kept"]) == {"tensorrt", "ort-cpu"}
    with pytest.raises(ManifestError, match="target must be"):
        GraphSpec("a.onnx", "feature", "onnx", "fp32", (), (), "", {}, "gpu")


def test_old_manifest_without_new_fields_loads(fp32_art):
    data = json.loads((fp32_art / "manifest.json").read_text())
    data.pop("calibration")
    for g in data["graphs"]:
        g.pop("target")
    data["content_sha256"] = content_hash(data)
    m = Manifest.from_json(json.dumps(data))
    assert m.graph("feature").target == "any" and m.calibration == {}
    with pytest.raises(ManifestError, match="no onnx int8 graphs") as e:
        m.graph("feature", "onnx", "int8", "ort-cpu")
    assert "\n" not in str(e.value)


def test_every_precision_runs_on_onnx_runtime_cpu(art):
    lr = load_rgb(data_path("Set5", "butterfly.png"))[:64, :80]
    with Pipeline(art) as p:
        ref = p.upscale(p.encode(lr), 2.5)
    # measured here (6-crop calibration, no sensitivity pass) against the FP32 output: fp16 62.1 dB, int8 (CPU
    # form) 44.0 dB; the limits leave ~6 dB for other CPUs / ONNX Runtime versions
    for precision, min_psnr in (("fp16", 55.0), ("int8", 38.0)):
        with Pipeline(art, precision=precision) as p:
            assert p.feature_spec.precision == precision
            sr = p.upscale(p.encode(lr), 2.5)
        result = compare(precision, sr, ref, atol=np.inf, min_uint8_equal=0.0)
        assert result.psnr >= min_psnr, str(result)
    with Pipeline(art, precision="int8") as p:
        assert p.feature_spec.target == "ort-cpu" and p.upscale_spec.file == "upscale.onnx"
