"""Working memory of a feature graph per input pixel, from the graph itself (onnx; recorded in the manifest).

``metasr upscale`` bounds the memory of a whole run (:mod:`metasr.runtime.memory`); the feature stage's share
is its tile's area times the bytes the graph holds per input pixel. :func:`work_bytes_per_pixel` computes
that figure once, at export or calibration, where the graph can be inspected: the graph's input is fixed to
a probe size, shapes are inferred, and the nodes are walked in order with every tensor alive from its
producer to its last consumer (graph inputs and outputs included, initializers not: the weights are part of
the process's resident size before the run). While a convolution with a kernel larger than 1x1 runs, ONNX
Runtime's CPU kernel (MLAS) also holds its im2col buffer, ``k*k*C_in`` values per output pixel: for the
bundled model's 32-channel 3x3 convolutions 1152 bytes per pixel, more than the activations (512). The peak
of the live bytes plus that buffer, divided by the probe's pixels and multiplied by :data:`RUNTIME_FACTOR`, is
the figure: every activation of these backbones has the input's spatial size, so it scales with the pixels.
"""

from __future__ import annotations

import math

import onnx
from onnx import shape_inference

__all__ = ["PROBE", "RUNTIME_FACTOR", "live_bytes_peak", "work_bytes_per_pixel"]

PROBE = (64, 64)
# ONNX Runtime 1.32 (CPU, memory arena) against this count (1664 B/px for the bundled model): after ten runs
# of 256..512-pixel tiles the process held 1736-1792 B per tile pixel above the session (arena growth and
# fragmentation, 1.04-1.08x); the factor leaves a margin for other allocators and versions (docs/memory.md).
# Since the runtime turned ONNX Runtime's memory pattern off (runtime/backends.py) the same ten runs hold 686 B
# per pixel of a 512 tile (957 with it, on another machine): the figure is an upper bound, kept
RUNTIME_FACTOR = 1.25


def _bytes(value: onnx.ValueInfoProto) -> int | None:
    t = value.type.tensor_type
    if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
        return None
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return math.prod(d.dim_value for d in t.shape.dim) * itemsize


def _im2col_bytes(node: onnx.NodeProto, weights: dict[str, tuple[int, ...]], sizes: dict[str, int]) -> int:
    """The im2col buffer of a Conv with a kernel larger than 1x1: ``k*k*C_in/group`` values per output value
    of one output channel, i.e. its output's bytes times ``k*k*C_in/group / C_out``."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
        return 0
    c_out, c_in, *kernel = weights[node.input[1]]  # (C_out, C_in / group, kh, kw)
    taps = math.prod(kernel)
    if taps <= 1 or c_out == 0:
        return 0
    return sizes.get(node.output[0], 0) * taps * c_in // c_out


def live_bytes_peak(model: onnx.ModelProto, size: tuple[int, int] | None = PROBE) -> int:
    """The most bytes of tensors alive at once while ``model``'s nodes run in order (plus a convolution's im2col
    buffer while it runs), with its one image input's symbolic dims fixed to ``(1, C, *size)`` (a static graph
    keeps its own); tensors of unknown size count 0."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    init = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in init]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ValueError("expected a graph with one (N, C, h, w) input")
    dims = inputs[0].type.tensor_type.shape.dim
    for d, value in zip(dims, (1, 3, *(size or PROBE)), strict=True):
        if not d.HasField("dim_value"):
            d.dim_value = value
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    sizes = {
        v.name: _bytes(v) or 0 for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    last_use: dict[str, int] = {}
    for i, node in enumerate(inferred.graph.node):
        for name in node.input:
            last_use[name] = i
    keep = {o.name for o in inferred.graph.output}
    live = {inputs[0].name: sizes.get(inputs[0].name, 0)}
    peak = sum(live.values())
    weights = {i.name: tuple(i.dims) for i in inferred.graph.initializer}
    for node in inferred.graph.node:  # Q/DQ graphs: a convolution's weight is a dequantized initializer
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    for i, node in enumerate(inferred.graph.node):
        for name in node.output:
            live[name] = sizes.get(name, 0)
        peak = max(peak, sum(live.values()) + _im2col_bytes(node, weights, sizes))
        for name in node.input:
            if last_use.get(name) == i and name not in keep:
                live.pop(name, None)
    return peak


def work_bytes_per_pixel(model: onnx.ModelProto) -> float:
    """Working bytes per input pixel of a feature graph on ONNX Runtime (see the module docstring)."""
    image = next(v for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer})
    h, w = (d.dim_value or p for d, p in zip(image.type.tensor_type.shape.dim[2:], PROBE, strict=True))
    return round(RUNTIME_FACTOR * live_bytes_peak(model, (h, w)) / (h * w), 1)
