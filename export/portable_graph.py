"""The portable graphs: the upscale graph with its plan computed inside (:mod:`metasr.export.portable_plan`), and
the feature graph composed with it (image in, image out). Contract (docs/portable.md):

``upscale.portable.onnx``       ``features`` float32 (1, C, h, w), ``scale`` float64 [] -> ``sr`` float32 (1, 3, H', W')
``upscale.portable.size.onnx``  ``features``, ``size`` int64 [2] = (H', W')             -> ``sr`` likewise
``metasr.portable.onnx``        ``image`` uint8 (h, w, 3) RGB, ``scale`` float64 []  -> ``sr_image`` uint8 (H', W', 3)
``metasr.portable.size.onnx``   ``image``, ``size`` int64 [2]                        -> ``sr_image`` likewise
``upscale.portable.inv.onnx``   ``features``, ``out_size`` int64 [2], ``inv_scale`` float32 [1] -> ``sr`` likewise
``metasr.portable.inv.onnx``    ``image``, ``out_size`` int64 [2], ``inv_scale`` float32 [1]    -> ``sr_image`` likewise

The "inv" form has no float64 (for OpenVINO, whose CPU plugin computes float64 in float32): the caller computes
``out_size = (int(scale * h), int(scale * w))`` and ``inv_scale = float32(1 / scale)`` in float64 itself.

``sr`` is what the two-graph upscale returns (0..255 scale, unclamped); ``sr_image`` is ``sr`` clamped to
[0, 255], rounded half-to-even and cast, as :meth:`metasr.runtime.pipeline.Pipeline.__call__` does. With a scale,
H' = int(scale * h) (float64); with a size, the output of the smallest scale covering it, centre-cropped, as
``metasr upscale --size``. The graphs do not validate their inputs (the Python side does; docs/portable.md).
"""

from __future__ import annotations

import numpy as np
import onnx
from metasr.export.portable_plan import plan_nodes
from metasr.runtime.feeds import UPSCALE_PLAN_INPUTS
from onnx import TensorProto, compose, helper

__all__ = ["FORMS", "PORTABLE_FILES", "compose_portable", "portable_upscale"]

FORMS = ("scale", "size", "inv")
# manifest kind -> file name stem (precision tags go before ".onnx")
PORTABLE_FILES = {
    "upscale-portable": "upscale.portable",
    "upscale-portable-size": "upscale.portable.size",
    "portable": "metasr.portable",
    "portable-size": "metasr.portable.size",
    "upscale-portable-inv": "upscale.portable.inv",
    "portable-inv": "metasr.portable.inv",
}


def _target_inputs(form: str) -> list[onnx.ValueInfoProto]:
    if form == "scale":
        return [helper.make_tensor_value_info("scale", TensorProto.DOUBLE, [])]
    if form == "inv":  # inv_scale: the upscale graph's own input, kept
        return [helper.make_tensor_value_info("out_size", TensorProto.INT64, [2])]
    return [helper.make_tensor_value_info("size", TensorProto.INT64, [2])]


def portable_upscale(upscale: onnx.ModelProto, form: str, merge_tol: float) -> onnx.ModelProto:
    """``upscale`` (a two-graph upscale graph, any precision) with its plan inputs computed inside from
    ``scale``, ``size`` or ``out_size`` and ``inv_scale`` (``form``)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    proto = onnx.ModelProto()
    proto.CopyFrom(upscale)
    g = proto.graph
    computed = set(UPSCALE_PLAN_INPUTS) - ({"inv_scale"} if form == "inv" else set())
    kept = [v for v in g.input if v.name not in computed]
    inv = [v for v in kept if v.name == "inv_scale"]
    del g.input[:]
    g.input.extend([*[v for v in kept if v.name != "inv_scale"], *_target_inputs(form), *inv])
    nodes = [*plan_nodes(form, merge_tol), *g.node]
    del g.node[:]
    g.node.extend(nodes)
    g.name = f"metasr_upscale_portable_{form}"
    return proto


def _image_in_out(features: onnx.ModelProto, upscale: onnx.ModelProto, barrier: bool) -> onnx.ModelProto:
    """The feature graph fed from ``image`` uint8 (h, w, 3) and the portable upscale graph's ``sr`` returned as
    ``sr_image`` uint8 (H', W', 3) (clamped, rounded half-to-even). ``barrier``: the features pass through
    ``Max(features, -inf)`` (exact) on their way to the upscale nodes, so that OpenVINO does not carry an INT8
    feature graph's dequantization into the upscale stage (it did, and 0.012% of the values came out 1 level
    off the two-graph runtime's; with the barrier, identical)."""
    pre = [
        helper.make_node("Cast", ["image"], ["image_f"], name="io/cast_in", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f"], ["image_chw"], name="io/to_chw", perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["image_chw", "io/axis0"], ["lr"], name="io/batch"),
    ]
    post = [
        helper.make_node("Squeeze", ["sr", "io/axis0"], ["sr_chw"], name="io/unbatch"),
        helper.make_node("Transpose", ["sr_chw"], ["sr_hwc"], name="io/to_hwc", perm=[1, 2, 0]),
        helper.make_node("Clip", ["sr_hwc", "io/lo", "io/hi"], ["sr_clip"], name="io/clip"),
        helper.make_node("Round", ["sr_clip"], ["sr_round"], name="io/round"),  # half-to-even, as np.round
        helper.make_node("Cast", ["sr_round"], ["sr_image"], name="io/cast_out", to=TensorProto.UINT8),
    ]
    consts = [
        helper.make_tensor("io/axis0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("io/lo", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("io/hi", TensorProto.FLOAT, [], [255.0]),
    ]
    fg, ug = features.graph, onnx.GraphProto()
    ug.CopyFrom(upscale.graph)
    if barrier:
        ftype = next(v for v in fg.output if v.name == "features").type.tensor_type.elem_type
        consts.append(helper.make_tensor("io/neg_inf", ftype, [], [-np.inf]))
        pre.append(helper.make_node("Max", ["features", "io/neg_inf"], ["io/features"], name="io/barrier"))
        for node in ug.node:
            node.input[:] = ["io/features" if x == "features" else x for x in node.input]
    sr_type = ug.output[0].type.tensor_type.elem_type
    if sr_type != TensorProto.FLOAT:  # an FP16 upscale graph: the clamp runs in float32
        post.insert(0, helper.make_node("Cast", ["sr"], ["sr_f32"], name="io/sr_f32", to=TensorProto.FLOAT))
        post[1].input[0] = "sr_f32"
    target = [v for v in ug.input if v.name != "features"]
    graph = helper.make_graph(
        [*pre[:3], *fg.node, *pre[3:], *ug.node, *post],
        "metasr_portable",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["h", "w", 3]), *target],
        [helper.make_tensor_value_info("sr_image", TensorProto.UINT8, ["H", "W", 3])],
        [*fg.initializer, *ug.initializer, *consts],
    )
    opsets: dict[str, int] = {}
    for o in [*features.opset_import, *upscale.opset_import]:
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        functions=list(upscale.functions),
        producer_name="metasr",
    )
    model.ir_version = min(features.ir_version, upscale.ir_version, 10) or 10
    return model


def compose_portable(
    features: onnx.ModelProto, upscale_portable: onnx.ModelProto, barrier: bool = False
) -> onnx.ModelProto:
    """One graph: ``image`` and the portable upscale graph's target inputs in, ``sr_image`` out. The feature
    graph's names are prefixed with ``feature/`` (its ``lr`` input and ``features`` output excepted); ``barrier``:
    see :func:`_image_in_out` (the inv form, OpenVINO's)."""
    feats = compose.add_prefix(features, "feature/", rename_inputs=False, rename_outputs=False)
    return _image_in_out(feats, upscale_portable, barrier)
