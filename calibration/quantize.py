"""INT8 Q/DQ graphs in two forms from one set of ranges, and keeping chosen tensors in float.

* :data:`TENSORRT`: symmetric signed int8 everywhere (every zero point 0), weights per output channel
  (axis 0), activations per tensor: what TensorRT's explicit quantization accepts (opset >= 13).
* :data:`ORT_CPU`: uint8 activations (asymmetric), int8 symmetric per-channel weights: the Q/DQ form ONNX
  Runtime's CPU provider fuses into fast integer kernels (the TensorRT form runs slower than FP32 there).

Both are made with ONNX Runtime's QDQ quantizer from the same :class:`~metasr.calibration.ranges.TensorRanges`,
with a dedicated Q/DQ pair per consumer (so keeping a tensor in float for one consumer, e.g. a skip connection's
Add, does not leave another consumer reading its rounded copy) and float biases. :func:`keep_float` then
removes the Q/DQ pairs of named activations: those tensors reach every consumer in float.
:mod:`metasr.calibration.int8_rules` says which convolutions each form's runtime runs as INT8 kernels and gives
the others their float32 weights back, and adds the CPU form's exact layout anchors.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import onnx
from metasr.calibration.ranges import TensorRanges
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
from onnxruntime.quantization.quant_utils import save_and_reload_model_with_shape_infer
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

__all__ = [
    "EDGE",
    "FORMS",
    "IMAGE_RULE",
    "ORT_CPU",
    "TENSORRT",
    "QuantForm",
    "image_tensors",
    "keep_float",
    "keep_float_weights",
    "quantize_graph",
    "quantized_edges",
    "quantized_tensors",
]


@dataclass(frozen=True)
class QuantForm:
    """One INT8 form: its manifest target, file name and activation type."""

    target: str  # "tensorrt" | "ort-cpu" (runtime.manifest.TARGETS)
    file: str
    activation: str  # "int8" (symmetric) | "uint8" (asymmetric)

    def __post_init__(self) -> None:
        if self.activation not in ("int8", "uint8"):
            raise ValueError(f"activation type must be int8 or uint8, got {self.activation!r}")

    @property
    def symmetric(self) -> bool:
        return self.activation == "int8"


TENSORRT = QuantForm("tensorrt", "feature.int8.trt.onnx", "int8")
ORT_CPU = QuantForm("ort-cpu", "feature.int8.cpu.onnx", "uint8")
FORMS = (TENSORRT, ORT_CPU)


IMAGE_RULE = (
    "the image-facing activations stay float: the graph input and every activation before the first spatial "
    "convolution (0..255 pixels: symmetric int8 drops their last bit; on CPUs without VNNI, ONNX Runtime's "
    "uint8 x int8 kernel saturates its 16-bit pair sums on them; that convolution has only 3 input channels)"
)


def image_tensors(model: onnx.ModelProto) -> list[str]:
    """The float graph's input and the activations computed before its first convolution with a kernel larger
    than 1x1 (for the feature graph: ``lr`` and the mean-shifted image). See :data:`IMAGE_RULE`."""
    init = {i.name: i for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init]
    for n in model.graph.node:
        w = init.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        if w is not None and any(d > 1 for d in w.dims[2:]):
            break
        names += list(n.output)
    return names


def quantize_graph(model: onnx.ModelProto, ranges: TensorRanges, form: QuantForm) -> onnx.ModelProto:
    """``model`` (float32) with Q/DQ on every quantizable op: int8 per-channel weights (axis 0), activations
    of ``form``'s type with ``ranges``; biases stay float. Opset and I/O types are unchanged.

    Every node of ``model`` must have a unique name (the exporter names them all): keeping tensors and weights
    in float finds nodes by name. ``ValueError`` otherwise."""
    names = [n.name for n in model.graph.node]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError("every node of the graph to quantize needs a unique name (export it with metasr)")
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {n: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for n, (lo, hi) in ranges.ranges.items()},
    )
    quantizer = QDQQuantizer(
        save_and_reload_model_with_shape_infer(model),
        True,  # per_channel
        False,  # reduce_range
        QuantType.QInt8,
        QuantType.QInt8 if form.symmetric else QuantType.QUInt8,
        tensors,
        [],  # nodes_to_quantize: all
        [],  # nodes_to_exclude: none (float tensors are chosen afterwards, by keep_float)
        sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
        {
            "ActivationSymmetric": form.symmetric,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
            # Relu stays a node: with uint8 the quantizer would otherwise fold it into the next Q's range, and
            # keeping that tensor in float would silently drop the Relu (ORT still fuses it when quantized)
            "QDQKeepRemovableActivations": True,
            "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
        },
    )
    quantizer.quantize_model()
    out = quantizer.model.model
    out.graph.name = model.graph.name
    _toposort(out.graph)  # the quantizer appends the weights' DequantizeLinear nodes at the end
    return out


def _toposort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` so every node comes after the producers of its inputs (stable otherwise)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(t in ready for t in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near node {rest[0].name}")
        pending = rest
    nodes = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(nodes, ordered, strict=True):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


def _links(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """Each tensor's producing node, and the nodes reading each tensor (in graph order)."""
    produced = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    return produced, readers


def _pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, list[onnx.NodeProto]]]:
    """Each QuantizeLinear of an activation with the DequantizeLinear nodes reading it."""
    init = {i.name for i in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear":
            readers.setdefault(n.input[0], []).append(n)
    return [
        (n, readers.get(n.output[0], []))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in init
    ]


def _float_name(q: onnx.NodeProto, dqs: list[onnx.NodeProto], outputs: set[str]) -> str:
    # a quantized graph output keeps its name on the DequantizeLinear; the producer's output was renamed
    graph_out = [d.output[0] for d in dqs if d.output[0] in outputs]
    return graph_out[0] if graph_out else q.input[0]


EDGE = " -> "  # "tensor -> consumer node": one consumer's Q/DQ pair of a tensor


def _pair_index(model: onnx.ModelProto) -> dict[str, list[tuple[str, onnx.NodeProto, onnx.NodeProto]]]:
    """Float tensor name, and ``tensor -> consumer`` for each consumer, to its (float name, Q, DQ) pairs."""
    outputs = {o.name for o in model.graph.output}
    readers = _links(model.graph)[1]
    index: dict[str, list[tuple[str, onnx.NodeProto, onnx.NodeProto]]] = {}
    for q, dqs in _pairs(model):
        name = _float_name(q, dqs, outputs)
        for d in dqs:
            index.setdefault(name, []).append((name, q, d))
            for c in readers.get(d.output[0], []):
                index.setdefault(f"{name}{EDGE}{c.name}", []).append((name, q, d))
    return index


def quantized_tensors(model: onnx.ModelProto) -> list[str]:
    """The activations that have Q/DQ pairs in ``model`` (names of the float graph), in graph order."""
    return [k for k in _pair_index(model) if EDGE not in k]


def quantized_edges(model: onnx.ModelProto) -> list[str]:
    """``"tensor -> consumer"`` for every consumer of the activations that have more than one (with a
    dedicated Q/DQ pair per consumer, one of them can read the float tensor while the others stay INT8)."""
    index = _pair_index(model)
    return [k for k in index if EDGE in k and len(index[k.split(EDGE)[0]]) > 1]


def keep_float(
    model: onnx.ModelProto, tensors: Collection[str], float_model: onnx.ModelProto | None = None
) -> onnx.ModelProto:
    """A copy of quantized ``model`` in which the named activations (see :func:`quantized_tensors`) lose their
    Q/DQ pairs (their consumers read the float tensor), ``"tensor -> consumer"`` names (:func:`quantized_edges`)
    lose that consumer's pair only, and the named weights (initializers of ``float_model``, see
    :func:`quantized_weights`) are read in float32 again. Unknown names raise ``KeyError``."""
    weights = {i.name for i in float_model.graph.initializer} if float_model is not None else set()
    if weights.intersection(tensors):
        model = keep_float_weights(model, float_model, [t for t in tensors if t in weights])
        tensors = [t for t in tensors if t not in weights]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    index = _pair_index(out)
    missing = set(tensors) - set(index)
    if missing:
        raise KeyError(f"not quantized activations: {sorted(missing)}")
    rename: dict[str, str] = {}  # each tensor's replacement; a graph output keeps its own name
    drop: set[int] = set()
    for key in tensors:
        for name, _, d in index[key]:
            drop.add(id(d))
            if d.output[0] != name:
                rename[d.output[0]] = name
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            readers.setdefault(n.input[0], []).append(n)
    for pairs in index.values():  # a QuantizeLinear goes when every DequantizeLinear reading it went
        for name, q, _ in pairs:
            if all(id(d) in drop for d in readers.get(q.output[0], [])):
                drop.add(id(q))
                if q.input[0] != name:
                    rename[q.input[0]] = name
    kept = [n for n in g.node if id(n) not in drop]
    for n in kept:
        n.input[:] = [rename.get(t, t) for t in n.input]
        n.output[:] = [rename.get(t, t) for t in n.output]
    del g.node[:]
    g.node.extend(kept)
    used = {t for n in g.node for t in n.input}
    unused = [i for i in g.initializer if i.name not in used]
    for i in unused:
        g.initializer.remove(i)
    return out


def _weight_uses(quantized: onnx.ModelProto, float_model: onnx.ModelProto) -> dict[str, list[tuple[str, int]]]:
    """Float weight name -> (node name, input position) where ``quantized`` reads it through DequantizeLinear."""
    weights = {i.name for i in float_model.graph.initializer}
    dq_out = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    q_nodes = {n.name: n for n in quantized.graph.node}
    uses: dict[str, list[tuple[str, int]]] = {}
    for n in float_model.graph.node:
        for i, t in enumerate(n.input):
            if t in weights and n.name in q_nodes and q_nodes[n.name].input[i] in dq_out:
                uses.setdefault(t, []).append((n.name, i))
    return uses


def keep_float_weights(
    quantized: onnx.ModelProto, float_model: onnx.ModelProto, weights: Collection[str]
) -> onnx.ModelProto:
    """A copy of ``quantized`` whose named weights are read in float32 again (from ``float_model``)."""
    uses = _weight_uses(quantized, float_model)
    missing = set(weights) - set(uses)
    if missing:
        raise KeyError(f"not quantized weights: {sorted(missing)}")
    out = onnx.ModelProto()
    out.CopyFrom(quantized)
    nodes = {n.name: n for n in out.graph.node}
    floats = {i.name: i for i in float_model.graph.initializer}
    present = {i.name for i in out.graph.initializer}
    for w in weights:
        for node, i in uses[w]:
            nodes[node].input[i] = w
        if w not in present:
            out.graph.initializer.append(floats[w])
    read = {t for n in out.graph.node for t in n.input} | {o.name for o in out.graph.output}
    keep = [n for n in out.graph.node if n.op_type != "DequantizeLinear" or n.output[0] in read]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    read = {t for n in out.graph.node for t in n.input}
    for i in [i for i in out.graph.initializer if i.name not in read]:
        out.graph.initializer.remove(i)
    return out
