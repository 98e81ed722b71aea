"""Which convolutions of an INT8 Q/DQ graph run as INT8 kernels, float32 weights for the others, and the CPU
form's layout anchors (split from :mod:`metasr.calibration.quantize`, whose graphs these rules take).

:func:`int8_kernels` says which convolutions each form's runtime runs as INT8 kernels, and
:func:`apply_weight_rule` gives the others their float32 weights back (:data:`WEIGHT_RULE`);
:func:`ruled_graph` keeps chosen tensors (and the image tensors of :data:`~metasr.calibration.quantize.IMAGE_RULE`)
in float with that rule applied; :func:`anchor_layout` adds the CPU form's exact layout anchors
(:data:`LAYOUT_ANCHOR`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from metasr.calibration.quantize import (
    QuantForm,
    _links,
    _toposort,
    _weight_uses,
    image_tensors,
    keep_float,
    keep_float_weights,
    quantized_tensors,
)

__all__ = [
    "LAYOUT_ANCHOR",
    "WEIGHT_RULE",
    "anchor_layout",
    "apply_weight_rule",
    "float_run_weights",
    "image_rule_tensors",
    "int8_kernels",
    "quantized_weights",
    "ruled_graph",
]


def quantized_weights(quantized: onnx.ModelProto, float_model: onnx.ModelProto) -> list[str]:
    """The weights (initializers of ``float_model``) that ``quantized`` stores in int8, in graph order."""
    return list(_weight_uses(quantized, float_model))


WEIGHT_RULE = (
    "a weight read only by convolutions that cannot run as INT8 kernels stays float32: one that reads a float "
    "activation (either form) or whose output is not quantized (the ONNX Runtime CPU form) runs in float, so int8 "
    "storage would only add rounding error and a dequantization on every call (and it keeps ONNX Runtime "
    "from pre-packing the weight for its blocked float kernels)"
)

# the ops each form's runtime runs as INT8 kernels from Q/DQ (ONNX Runtime 1.32's CPU QDQ fusions have no
# ConvTranspose: it runs in float there)
_INT8_OPS = {True: ("Conv", "ConvTranspose", "MatMul", "Gemm"), False: ("Conv", "MatMul", "Gemm")}


def int8_kernels(quantized: onnx.ModelProto, form: QuantForm) -> set[str]:
    """Names of ``quantized``'s convolutions (and matrix products) that ``form``'s runtime runs as INT8 kernels.

    TensorRT fuses a Q/DQ convolution from its quantized input and weight (its output may stay float); ONNX
    Runtime's CPU QDQ fusion (``QLinearConv``) also needs the output to go only to ``QuantizeLinear``."""
    produced, readers = _links(quantized.graph)
    outputs = {o.name for o in quantized.graph.output}

    def dequantized(t: str) -> bool:
        return t in produced and produced[t].op_type == "DequantizeLinear"

    kernels = set()
    for n in quantized.graph.node:
        if n.op_type not in _INT8_OPS[form.symmetric] or not (dequantized(n.input[0]) and dequantized(n.input[1])):
            continue
        out = n.output[0]
        if not form.symmetric and (out in outputs or any(r.op_type != "QuantizeLinear" for r in readers.get(out, []))):
            continue
        kernels.add(n.name)
    return kernels


def float_run_weights(quantized: onnx.ModelProto, float_model: onnx.ModelProto, form: QuantForm) -> list[str]:
    """The int8 weights (initializers of ``float_model``) of ``quantized`` read only by nodes that do not run
    as INT8 kernels (:func:`int8_kernels`): the ones :data:`WEIGHT_RULE` keeps in float32."""
    kernels = int8_kernels(quantized, form)
    return [w for w, uses in _weight_uses(quantized, float_model).items() if all(u not in kernels for u, _ in uses)]


def apply_weight_rule(
    quantized: onnx.ModelProto, float_model: onnx.ModelProto, form: QuantForm
) -> tuple[onnx.ModelProto, list[str]]:
    """``quantized`` with :data:`WEIGHT_RULE` applied, and the weights it restored to float32."""
    weights = float_run_weights(quantized, float_model, form)
    return (keep_float_weights(quantized, float_model, weights) if weights else quantized), weights


def image_rule_tensors(quantized: onnx.ModelProto, float_model: onnx.ModelProto) -> list[str]:
    """The tensors :data:`IMAGE_RULE` keeps in float that ``quantized`` quantizes."""
    return [t for t in image_tensors(float_model) if t in quantized_tensors(quantized)]


def ruled_graph(
    quantized: onnx.ModelProto, float_model: onnx.ModelProto, form: QuantForm, names: Sequence[str] = ()
) -> tuple[onnx.ModelProto, list[str]]:
    """``quantized`` with the image rule's tensors and ``names`` kept in float and :data:`WEIGHT_RULE` applied,
    and the weights the rule restored. Without ``names``: the graph of the rules alone (before
    :func:`anchor_layout`)."""
    keep = image_rule_tensors(quantized, float_model) + list(names)
    return apply_weight_rule(keep_float(quantized, keep, float_model), float_model, form)


LAYOUT_ANCHOR = (
    "in the ONNX Runtime CPU form, an INT8 activation written by a convolution that runs in float is passed "
    "through an exact 1x1 identity QLinearConv on its own scale (int8 weight 127, scale 1/127; bit-identical "
    "output): ONNX Runtime runs QLinearConv in NHWC, and with the chain's first input coming out of one, its "
    "layout optimizer keeps the whole residual chain behind it in NHWC instead of transposing around every "
    "QLinearAdd"
)


def _values(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for i in model.graph.initializer:
        if i.name == name:
            return onnx.numpy_helper.to_array(i)
    return None


def anchor_layout(quantized: onnx.ModelProto, form: QuantForm) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``quantized`` with :data:`LAYOUT_ANCHOR` applied (CPU form only; the TensorRT form is returned
    as is), and the activations it anchored. An activation qualifies when a float-running ``Conv`` writes it,
    all its ``QuantizeLinear`` nodes share one scale and zero point, and an INT8 kernel reads it; its
    ``DequantizeLinear`` readers then read the identity convolution's output instead."""
    if form.symmetric:
        return quantized, []
    out = onnx.ModelProto()
    out.CopyFrom(quantized)
    g = out.graph
    kernels = int8_kernels(out, form)
    produced, readers = _links(g)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        src = produced.get(n.input[0])
        if n.op_type == "QuantizeLinear" and src is not None and src.op_type == "Conv" and src.name not in kernels:
            groups.setdefault(n.input[0], []).append(n)
    anchored = []
    for tensor, qs in groups.items():
        params = [(_values(out, q.input[1]), _values(out, q.input[2])) for q in qs]
        if any(s is None or z is None or s.ndim or z.ndim for s, z in params) or any(
            s != params[0][0] or z != params[0][1] for s, z in params
        ):
            continue  # per-channel or differing quantization: no single identity on one scale
        dqs = [d for q in qs for d in readers.get(q.output[0], []) if d.op_type == "DequantizeLinear"]
        if not any(c.name in kernels for d in dqs for c in readers.get(d.output[0], [])):
            continue
        weight = _values(out, produced[tensor].input[1])
        if weight is None:
            continue
        channels, q, stem = weight.shape[0], qs[0], f"{tensor}/layout_anchor"
        identity = np.zeros((channels, channels, 1, 1), np.int8)
        identity[np.arange(channels), np.arange(channels)] = 127
        g.initializer.extend(
            [
                onnx.numpy_helper.from_array(identity, f"{stem}/weight_quantized"),
                onnx.numpy_helper.from_array(np.full(channels, 1 / 127, np.float32), f"{stem}/weight_scale"),
                onnx.numpy_helper.from_array(np.zeros(channels, np.int8), f"{stem}/weight_zero_point"),
            ]
        )
        sz = list(q.input[1:3])
        g.node.extend(
            [
                onnx.helper.make_node("DequantizeLinear", [q.output[0], *sz], [f"{stem}/input"], f"{stem}/dq"),
                onnx.helper.make_node(
                    "DequantizeLinear",
                    [f"{stem}/weight_quantized", f"{stem}/weight_scale", f"{stem}/weight_zero_point"],
                    [f"{stem}/weight"],
                    f"{stem}/weight_dq",
                    axis=0,
                ),
                onnx.helper.make_node("Conv", [f"{stem}/input", f"{stem}/weight"], [f"{stem}/output"], f"{stem}/conv"),
                onnx.helper.make_node("QuantizeLinear", [f"{stem}/output", *sz], [f"{stem}/quantized"], f"{stem}/q"),
            ]
        )
        for d in dqs:
            d.input[0] = f"{stem}/quantized"
        for extra in qs[1:]:
            g.node.remove(extra)
        anchored.append(tensor)
    _toposort(g)
    return out, anchored
